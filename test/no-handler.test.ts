/**
 * Jobs no live worker can run (issue 14, safe rolling deploys; src/internal/maintenance/NoHandler.ts,
 * src/internal/Unserved.ts, migrations/0008): a job whose name no live worker of its queue has
 * a handler for goes `dead` (`NoHandler`) once that has lasted `noHandlerTimeout`, and not
 * before; a queue no live worker serves keeps its jobs, is listed by `JobsAdmin.unserved` and
 * logged once by the maintenance leader.
 *
 * The maintenance leader runs on a TestClock (the database stays live): every test waits for
 * the leader's rounds through the worker's test signal (`noHandlerChecked`, told the round's
 * start time), so "not before" is what the leader decided at a round within the timeout, and
 * no test depends on how fast real time passes.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Exit, Layer, Option, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig, Job, Jobs, JobsAdmin, Worker } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import { offersByQueue, survey } from "../src/internal/Unserved.ts"
import { TestSignals } from "../src/internal/worker/TestSignals.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { advanceUntil, makeProbe, row, startOfNextSecond, waitFor, withTestClock } from "./support/probes.ts"

const args = Schema.Struct({})
const Known = Job.make("nh-known", { args })
/** No worker anywhere has its handler. */
const Gone = Job.make("nh-gone", { args })
/** The handler comes later. */
const Late = Job.make("nh-late", { args })
/** Renamed: rows stored as "nh-old" are run by "nh-renamed"'s handler. */
const Old = Job.make("nh-old", { args })
const Renamed = Job.make("nh-renamed", { args, aliases: ["nh-old"] })
const Elsewhere = Job.make("nh-elsewhere", { args })
const Orphan = Job.make("nh-orphan", { args })

// Three workers at once keep up to 10 connections for themselves (LISTEN, registration, leader lock).
const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(
  Layer.provideMerge(TestDb.layer({ maxConnections: 20 }))
)

/** The leader's settings in these tests: a round every second (±10 %) of the TestClock. */
const leader = { pruner: { interval: "1 second", electionInterval: "1 second" } } as const
/** Workers that never lead. */
const follower = { pruner: false } as const

/**
 * The no-handler rounds of a worker, through its test signal: `through(t)` moves the TestClock
 * until a round that started at `t` or later has ended, and returns that round's start.
 */
const makeRounds = Effect.sync(() => {
  let last = Number.NEGATIVE_INFINITY
  const layer = Layer.succeed(TestSignals, {
    producersInterrupted: Effect.void,
    noHandlerChecked: (now: number) =>
      Effect.sync(() => {
        last = Math.max(last, now)
      })
  })
  const through = (t: number) =>
    advanceUntil(Effect.sync(() => (last >= t ? Option.some(last) : Option.none())), { step: "100 millis" })
  /** The next round: one that started after now. */
  const next = Effect.flatMap(Clock.currentTimeMillis, (now) => through(now + 1))
  return { layer, through, next }
})

const handlers = (...jobs: ReadonlyArray<Job.Any>): Layer.Layer<any> =>
  Layer.mergeAll(...(jobs.map((job) => Job.toLayer(job as typeof Known, () => Effect.void)) as unknown as [Layer.Layer<any>]))

/** The last error of a job's row. */
const lastError = (id: string) => Effect.map(row(id), (r) => r.errors.at(-1))

/** A worker started in a scope of its own, to stop it before the test ends (or, at the latest, when it ends). */
const startStoppable = (options: Worker.Options, layers: Layer.Layer<any>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Scope.Scope)
    const context = yield* startWorker(options, layers).pipe(Scope.provide(scope))
    return { worker: Context.get(context, Worker.Worker), stop: Scope.close(scope, Exit.void) }
  })

layer(TestLayer, { excludeTestServices: true })("no handler", (it) => {
  it.effect("a job whose name no live worker of its queue handles goes dead (NoHandler) after the timeout, not before", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const q = "nh-dead"
        const jobs = yield* Jobs.Jobs
        const gone = yield* jobs.enqueueMany(Gone, [{}, {}, {}], { queue: q })
        const known = yield* jobs.enqueue(Known, {}, { queue: q })
        const rounds = yield* makeRounds
        const probe = yield* makeProbe
        yield* startWorker(
          { queues: { [q]: {} }, noHandlerTimeout: "1 minute", ...leader },
          Layer.mergeAll(handlers(Known), rounds.layer, probe.layer)
        )
        assert.strictEqual((yield* probe.next(known))._tag, "completed")
        // The leader's first round sees the jobs: the clock starts then.
        const first = yield* rounds.through(start)

        // 50 s later (rounds every second meanwhile), within the minute: still waiting, untouched.
        yield* rounds.through(first + 50_000)
        for (const id of gone) {
          const r = yield* row(id)
          assert.strictEqual(r.state, "available", `job ${id} before the timeout`)
          assert.deepStrictEqual(r.errors, [])
        }
        assert.isTrue(Option.isNone(yield* probe.poll(gone[0]!)), "no outcome reported")

        // The first round a minute after the first sight sends them to dead.
        yield* rounds.through(first + 60_000)
        for (const id of gone) {
          const r = yield* row(id)
          assert.strictEqual(r.state, "dead", `job ${id} after the timeout`)
          assert.strictEqual(r.attempt, 0, "never ran")
          const e = r.errors.at(-1)!
          assert.strictEqual(e.kind, "NoHandler")
          assert.include(e.message, `"nh-gone"`)
          assert.include(e.message, `queue "${q}"`)
          assert.include(e.message, `since ${new Date(first).toISOString()}`)
          const outcome = yield* probe.next(id)
          assert.strictEqual(outcome._tag, "dead", "reported to the Observer")
        }
        const logged = probe.workerErrors.filter((m) => m.includes(`jobs "nh-gone" go to dead (NoHandler)`))
        assert.lengthOf(logged, 1, probe.workerErrors.join("\n"))
        assert.isTrue(logged[0]!.startsWith(`${q}: `), "annotated with its queue")
      })
    )
  }, { timeout: 60_000 })

  it.effect("names a live worker of the queue offers, by name or alias, keep their jobs; a handler on another queue does not", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const q = "nh-offered"
        const rounds = yield* makeRounds
        const probe = yield* makeProbe
        yield* startWorker(
          { queues: { [q]: {} }, noHandlerTimeout: "10 seconds", ...leader },
          Layer.mergeAll(handlers(Known), rounds.layer, probe.layer)
        )
        // Another worker of the queue has the handlers of "nh-elsewhere" and (as an alias) "nh-old",
        // but claims nothing for now: paused on the queue, it still serves it.
        const other = yield* startStoppable({ queues: { [q]: {} }, ...follower }, Layer.mergeAll(handlers(Renamed, Elsewhere), probe.layer))
        yield* other.worker.pause(q)
        // A third one has the handler of "nh-orphan", on another queue only: none of q's workers can run it.
        yield* startWorker({ queues: { "nh-offered-other": {} }, ...follower }, handlers(Orphan))

        const jobs = yield* Jobs.Jobs
        const old = yield* jobs.enqueue(Old, {}, { queue: q })
        const elsewhere = yield* jobs.enqueue(Elsewhere, {}, { queue: q })
        const gone = yield* jobs.enqueue(Gone, {}, { queue: q })
        const orphan = yield* jobs.enqueue(Orphan, {}, { queue: q })

        const first = yield* rounds.through(start)
        yield* rounds.through(first + 30_000)
        for (const id of [old, elsewhere]) {
          const r = yield* row(id)
          assert.strictEqual(r.state, "available", `job ${r.name} is offered: untouched`)
          assert.strictEqual(r.attempt, 0)
          assert.deepStrictEqual(r.errors, [])
        }
        for (const id of [gone, orphan]) {
          const r = yield* row(id)
          assert.strictEqual(r.state, "dead", `job ${r.name}: no worker of ${q} handles it`)
          assert.strictEqual(r.errors.at(-1)?.kind, "NoHandler")
        }

        // The paused worker resumes: it runs the jobs it offered.
        yield* other.worker.resume(q)
        assert.strictEqual((yield* probe.next(old))._tag, "completed")
        assert.strictEqual((yield* probe.next(elsewhere))._tag, "completed")
      })
    )
  }, { timeout: 60_000 })

  it.effect("a worker with the handler that comes before the timeout runs the job; once it is gone, the clock starts over", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const q = "nh-late"
        const jobs = yield* Jobs.Jobs
        const rounds = yield* makeRounds
        const probe = yield* makeProbe
        yield* startWorker(
          { queues: { [q]: {} }, noHandlerTimeout: "10 seconds", ...leader },
          Layer.mergeAll(handlers(Known), rounds.layer, probe.layer)
        )
        const late = yield* jobs.enqueue(Late, {}, { queue: q })
        const first = yield* rounds.through(start)
        yield* rounds.through(first + 5_000)
        assert.strictEqual((yield* row(late)).state, "available")

        // The worker with its handler comes up: it claims the job at once.
        const newer = yield* startStoppable({ queues: { [q]: {} }, ...follower }, Layer.mergeAll(handlers(Late), probe.layer))
        assert.strictEqual((yield* probe.next(late)).job.id, late)
        assert.strictEqual((yield* row(late)).state, "completed")
        // Long after the first sight, rounds see "nh-late" offered: nothing is sent to dead.
        const served = yield* rounds.through(first + 20_000)
        assert.deepStrictEqual(probe.workerErrors, [])

        // It leaves; a job of that name comes. It waits a whole timeout from the first round
        // without the handler, not from the first sight before the worker came.
        yield* newer.stop
        const again = yield* jobs.enqueue(Late, {}, { queue: q })
        const unhandled = yield* rounds.next
        yield* rounds.through(unhandled + 8_000)
        assert.strictEqual((yield* row(again)).state, "available", "within the timeout of the worker leaving")
        yield* rounds.through(unhandled + 10_000)
        const r = yield* row(again)
        assert.strictEqual(r.state, "dead")
        const since = Date.parse(/since (\S+) /.exec((yield* lastError(again))?.message ?? "")?.[1] ?? "")
        assert.isAtLeast(since, served, "since the worker left")
      })
    )
  }, { timeout: 60_000 })

  it.effect("no live worker registered at all (the whole fleet down): nothing goes dead, nothing is logged", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const q = "nh-fleet"
        const jobs = yield* Jobs.Jobs
        const gone = yield* jobs.enqueue(Gone, {}, { queue: q })
        const orphan = yield* jobs.enqueue(Orphan, {}, { queue: "nh-fleet-nobody" })
        const rounds = yield* makeRounds
        const probe = yield* makeProbe
        // The leader itself does not register (listen: false): the registry shows no live worker.
        yield* startWorker(
          { queues: { [q]: {} }, listen: false, noHandlerTimeout: "2 seconds", ...leader },
          Layer.mergeAll(handlers(Known), rounds.layer, probe.layer)
        )
        const first = yield* rounds.through(start)
        yield* rounds.through(first + 10_000)
        assert.strictEqual((yield* row(gone)).state, "available")
        assert.strictEqual((yield* row(orphan)).state, "available")
        assert.deepStrictEqual(probe.workerErrors, [])
      })
    )
  }, { timeout: 60_000 })

  it.effect("unserved queues: listed by JobsAdmin.unserved at once, logged once at Warn after the timeout, kept; logged again after being served", () => {
    const start = startOfNextSecond()
    return withTestClock(
      start,
      Effect.gen(function*() {
        const q = "nh-served"
        const nobody = "nh-nobody"
        const jobs = yield* Jobs.Jobs
        const admin = yield* JobsAdmin.JobsAdmin
        const orphans = yield* jobs.enqueueMany(Orphan, [{}, {}], { queue: nobody })
        const gone = yield* jobs.enqueue(Gone, {}, { queue: q })
        const rounds = yield* makeRounds
        const probe = yield* makeProbe
        yield* startWorker(
          { queues: { [q]: {} }, noHandlerTimeout: "5 seconds", ...leader },
          Layer.mergeAll(handlers(Known), rounds.layer, probe.layer)
        )
        // (only this test's queues: the tests before left jobs in theirs)
        const mine = Effect.map(admin.unserved, (u) => ({
          queues: u.queues.filter((e) => e.queue === nobody),
          names: u.names.filter((e) => e.queue === q)
        }))
        assert.deepStrictEqual(yield* mine, {
          queues: [{ queue: nobody, available: 2 }],
          names: [{ queue: q, name: "nh-gone", available: 1 }]
        })
        const linesOf = () => probe.workerErrors.filter((m) => m.startsWith(`${nobody}: `))

        const first = yield* rounds.through(start)
        yield* rounds.through(first + 3_000)
        assert.deepStrictEqual(linesOf(), [], "not before the timeout")
        yield* rounds.through(first + 20_000)
        const lines = linesOf()
        assert.lengthOf(lines, 1, probe.workerErrors.join("\n"))
        assert.include(lines[0]!, `queue "${nobody}" has available jobs and no live worker has served it since ${new Date(first).toISOString()}`)
        for (const id of orphans) assert.strictEqual((yield* row(id)).state, "available", "an unserved queue keeps its jobs")
        assert.strictEqual((yield* row(gone)).state, "dead", "while a served queue's unhandled name goes dead")
        assert.deepStrictEqual(yield* mine, { queues: [{ queue: nobody, available: 2 }], names: [] })

        // A worker of the queue comes and runs its jobs, and leaves; new jobs wait: logged once more.
        const serving = yield* startStoppable({ queues: { [nobody]: {} }, ...follower }, Layer.mergeAll(handlers(Orphan), probe.layer))
        for (const id of orphans) assert.strictEqual((yield* probe.next(id))._tag, "completed")
        const served = yield* rounds.next
        yield* serving.stop
        const more = yield* jobs.enqueue(Orphan, {}, { queue: nobody })
        yield* rounds.through(served + 20_000)
        assert.lengthOf(linesOf(), 2, probe.workerErrors.join("\n"))
        assert.strictEqual((yield* row(more)).state, "available")
      })
    )
  }, { timeout: 60_000 })

  it.effect("a worker's row lists its job names (aliases included) and the queues it serves now", () =>
    Effect.gen(function*() {
      const admin = yield* JobsAdmin.JobsAdmin
      const { worker } = yield* startStoppable(
        { queues: { "nh-reg-a": {} }, workerId: "nh-registered", ...follower },
        handlers(Known, Renamed)
      )
      const mine = (yield* admin.workers).find((w) => w.id === "nh-registered")
      assert.deepStrictEqual(mine?.names, ["nh-known", "nh-old", "nh-renamed"])
      assert.deepStrictEqual(mine?.queues, ["nh-reg-a"])
      yield* worker.reconfigure({ "nh-reg-a": {}, "nh-reg-b": {} })
      const queues = yield* waitFor(
        "the row to list the queue added by reconfigure",
        Effect.map(admin.workers, (ws) => {
          const queues = ws.find((w) => w.id === "nh-registered")?.queues ?? []
          return queues.includes("nh-reg-b") ? Option.some([...queues].sort()) : Option.none()
        })
      )
      assert.deepStrictEqual(queues, ["nh-reg-a", "nh-reg-b"])
    }))

  it.effect("a queue where an unregistered worker holds running jobs counts as served, by one that may run any name", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const store = yield* JobStore
      // A registered worker serving another queue, so that the registry is in use.
      yield* startWorker({ queues: { "nh-reg-c": {} }, ...follower }, handlers(Known))
      yield* sql`INSERT INTO effect_jobs.jobs (name, queue, args, state, attempt, locked_by, lease_expires_at, attempted_at)
                 VALUES ('nh-ghost-job', 'nh-ghost', '{}', 'running', 1, 'ghost', now() + interval '1 hour', now())`
      yield* sql`INSERT INTO effect_jobs.jobs (name, queue, args) VALUES ('nh-anything', 'nh-ghost', '{}'),
                 ('nh-anything', 'nh-reg-c', '{}'), ('nh-anything', 'nh-ghost-nobody', '{}')`
      const s = yield* survey(store, Date.now() + 1000)
      assert.isTrue(s.registered)
      assert.strictEqual(s.served.get("nh-ghost"), "any")
      // (only this test's queues: the tests before left jobs in theirs)
      assert.deepStrictEqual(s.unserved.filter((queue) => queue.startsWith("nh-ghost")), ["nh-ghost-nobody"])
      assert.deepStrictEqual(s.unhandled.filter((u) => u.queue === "nh-reg-c" || u.queue.startsWith("nh-ghost")), [
        { queue: "nh-reg-c", name: "nh-anything", n: 1 }
      ])
    }))

  it.effect("a positive duration or Duration.infinity; anything else is an InvalidWorkerConfig naming the option", () =>
    Effect.gen(function*() {
      for (const bad of [0, -1, "nonsense", Number.NaN] as const) {
        const e = yield* Effect.flip(
          Effect.scoped(startWorker({ queues: { "nh-config": {} }, noHandlerTimeout: bad as never }, handlers(Known)))
        )
        assert.instanceOf(e, InvalidWorkerConfig)
        assert.include((e as InvalidWorkerConfig).message, "noHandlerTimeout", String(bad))
      }
      yield* Effect.scoped(startWorker({ queues: { "nh-config": {} }, noHandlerTimeout: Duration.infinity }, handlers(Known)))
    }))
})

describe("offersByQueue", () => {
  it("unions the names offered on each queue; a worker that does not say makes it any name", () => {
    const served = offersByQueue([
      { queues: ["a", "b"], names: ["x"] },
      { queues: ["b"], names: ["y"] },
      { queues: ["c"], names: null },
      { queues: ["c"], names: ["z"] }
    ])
    assert.deepStrictEqual([...(served.get("a") as ReadonlySet<string>)], ["x"])
    assert.deepStrictEqual([...(served.get("b") as ReadonlySet<string>)].sort(), ["x", "y"])
    assert.strictEqual(served.get("c"), "any")
    assert.isUndefined(served.get("d"))
  })
})
