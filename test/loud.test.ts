/**
 * Loud by default: with no Observer layer, the worker's own failures reach Effect's
 * `Logger` (a worker whose database goes away says so within a poll interval), while
 * job outcomes stay quiet. `add` keeps that logging, `replace` drops it, and with
 * `Observer.logging` in place a worker error is logged once, not twice.
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Clock, Deferred, Effect, Exit, Layer, Logger, type LogLevel, Redacted, References, Schema } from "effect"
import { Job, Jobs, Observer } from "../src/index.ts"
import { adminQuery } from "./support/admin.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"

interface Logged {
  readonly level: LogLevel.LogLevel
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** A logger that records every line, and a Deferred resolved with the first line at Warning or above. */
const captureLogs = Effect.gen(function*() {
  const lines: Array<Logged> = []
  const firstWarning = yield* Deferred.make<Logged>()
  const waiting: Array<{ readonly match: (l: Logged) => boolean; readonly done: Deferred.Deferred<Logged> }> = []
  const logger = Logger.make(({ fiber, logLevel, message }) => {
    const line: Logged = {
      level: logLevel,
      message: (Array.isArray(message) ? message : [message]).map(String).join(" "),
      annotations: fiber.getRef(References.CurrentLogAnnotations)
    }
    lines.push(line)
    if (logLevel === "Warn" || logLevel === "Error" || logLevel === "Fatal") Deferred.doneUnsafe(firstWarning, Exit.succeed(line))
    for (const w of waiting) if (w.match(line)) Deferred.doneUnsafe(w.done, Exit.succeed(line))
  })
  /** The first line (logged from now on or before) that matches. */
  const awaitLine = (match: (l: Logged) => boolean) =>
    Effect.suspend(() => {
      const found = lines.find(match)
      if (found !== undefined) return Effect.succeed(found)
      const done = Deferred.makeUnsafe<Logged>()
      waiting.push({ match, done })
      return Deferred.await(done)
    })
  return { lines, firstWarning, awaitLine, layer: Logger.layer([logger]) }
})

const loud = (l: Logged) => l.level === "Warn" || l.level === "Error" || l.level === "Fatal"

describe("the Observer service, without a database", () => {
  const callWorkerError = Effect.flatMap(Observer.Observer, (o) => o.workerError("q1", "claim failed", new Error("boom"), "Warn"))

  it.effect("by default, a worker error is logged at its level, annotated with its queue", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      yield* callWorkerError.pipe(Effect.provide(logs.layer))
      assert.strictEqual(logs.lines.length, 1)
      assert.strictEqual(logs.lines[0]?.level, "Warn")
      assert.strictEqual(logs.lines[0]?.message, "effect-jobs: claim failed: boom")
      assert.deepInclude(logs.lines[0]?.annotations, { queue: "q1" })
      // with no level given, an Error
      yield* Effect.flatMap(Observer.Observer, (o) => o.workerError("*", "something")).pipe(Effect.provide(logs.layer))
      assert.strictEqual(logs.lines[1]?.level, "Error")
    }))

  it.effect("by default, job outcome events log nothing", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      const job: Observer.JobInfo = { id: "1", name: "j", queue: "q", attempt: 1, maxAttempts: 1, runMillis: 3 }
      yield* Effect.gen(function*() {
        const o = yield* Observer.Observer
        yield* o.started(job)
        yield* o.completed(job, 3)
        yield* o.retryScheduled(job, 10, "e")
        yield* o.rescheduled(job, 10, "r")
        yield* o.dead(job, "d")
        yield* o.cancelled(job, "c")
      }).pipe(Effect.provide(logs.layer), Effect.provideService(References.MinimumLogLevel, "All"))
      assert.deepStrictEqual(logs.lines, [])
    }))

  it.effect("add keeps the default logging; replace drops it; replace(noop) is silent", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      const mine: Observer.Events = { ...Observer.noop, workerError: (q, m) => Effect.sync(() => void seen.push(`${q}: ${m}`)) }

      const added = yield* captureLogs
      yield* callWorkerError.pipe(Effect.provide(Observer.add(mine)), Effect.provide(added.layer))
      assert.deepStrictEqual(seen, ["q1: claim failed"])
      assert.strictEqual(added.lines.filter(loud).length, 1)

      const replaced = yield* captureLogs
      yield* callWorkerError.pipe(Effect.provide(Observer.replace(mine)), Effect.provide(replaced.layer))
      assert.deepStrictEqual(seen, ["q1: claim failed", "q1: claim failed"])
      assert.deepStrictEqual(replaced.lines, [])

      const silenced = yield* captureLogs
      yield* callWorkerError.pipe(Effect.provide(Observer.replace(Observer.noop)), Effect.provide(silenced.layer))
      assert.deepStrictEqual(silenced.lines, [])
    }))

  it.effect("with Observer.logging (alone, or stacked with metrics and more), a worker error is logged once", () =>
    Effect.gen(function*() {
      const stacks = [
        Observer.logging,
        Observer.logging.pipe(Layer.provide(Observer.add(Observer.metricsEvents()))),
        Observer.add(Observer.metricsEvents()).pipe(Layer.provide(Observer.logging)),
        Observer.replace(Observer.combine(Observer.defaults, Observer.loggingEvents))
      ]
      for (const stack of stacks) {
        const logs = yield* captureLogs
        yield* callWorkerError.pipe(Effect.provide(stack), Effect.provide(logs.layer))
        assert.strictEqual(logs.lines.filter(loud).length, 1)
      }
    }))
})

const Ping = Job.make("loud-ping", { args: Schema.Struct({}), queue: "loud" })

/** Makes the test database refuse new connections and cuts those of `applicationName`; undone when the scope closes. */
const cutOff = (url: string, applicationName: string) => {
  const database = new URL(url).pathname.slice(1)
  const server = new URL(url)
  server.pathname = "/postgres"
  const allow = (yes: boolean) => adminQuery(server.toString(), (sql) => sql.unsafe(`ALTER DATABASE "${database}" ALLOW_CONNECTIONS ${yes}`))
  return Effect.acquireRelease(
    Effect.andThen(
      allow(false),
      adminQuery(server.toString(), (sql) =>
        sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${database} AND application_name = ${applicationName}`)
    ),
    () => Effect.orDie(allow(true))
  )
}

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("a worker with no Observer layer", (it) => {
  it.effect("is quiet while jobs run, and logs a warning within a poll interval once its database goes away", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const logs = yield* captureLogs
      const pollMillis = 300
      // A pool of its own, named, so that only its connections are cut.
      const WorkerPool = Layer.fresh(PgClient.layer({ url: Redacted.make(url), applicationName: "loud-worker", maxConnections: 5 }))
      yield* startWorker(
        { queues: { loud: { pollInterval: `${pollMillis} millis` } }, maintenanceInterval: "200 millis", pruner: false },
        Job.toLayer(Ping, () => Effect.log("ping ran")).pipe(Layer.provideMerge(WorkerPool))
      ).pipe(
        Effect.provideService(Layer.CurrentMemoMap, Layer.makeMemoMapUnsafe()),
        Effect.provide(logs.layer)
      )

      // Healthy: the job runs (its own log line is there), and the worker says nothing of it.
      const jobs = yield* Jobs.Jobs
      yield* jobs.await(Ping, yield* jobs.enqueue(Ping, {}), { timeout: "30 seconds" })
      yield* logs.awaitLine((l) => l.message === "ping ran")
      assert.deepStrictEqual(logs.lines.filter((l) => l.message !== "ping ran"), [], "no line about the job's outcome")

      // The database goes away for this worker.
      const cutAt = yield* Clock.currentTimeMillis
      yield* cutOff(url, "loud-worker")
      const first = yield* Deferred.await(logs.firstWarning).pipe(Effect.timeout("20 seconds"))
      expect(first.message).toMatch(/^effect-jobs: /)
      // The claim of the queue fails at its next poll, and says so, with the queue.
      const claim = yield* logs.awaitLine((l) => loud(l) && l.message.startsWith("effect-jobs: claim failed")).pipe(
        Effect.timeout("20 seconds")
      )
      const after = (yield* Clock.currentTimeMillis) - cutAt
      assert.deepInclude(claim.annotations, { queue: "loud" })
      // with the database's reason (the connection cut, or refused)
      expect(claim.message).toMatch(/terminat|not currently accepting connections/)
      // one poll interval (jittered by up to 10 %), plus slack for a busy machine
      assert.isBelow(after, pollMillis * 1.1 + 2000, `the claim failure was logged ${after} ms after the cut`)
    }), 60_000)
})
