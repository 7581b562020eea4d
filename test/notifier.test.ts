/**
 * The process's one LISTEN session (src/internal/Notifier.ts): a worker, `Jobs.await` and two
 * bundle finishers composed in one app share one session on one connection, for all four
 * channels; after that connection is terminated the session is back and every part is
 * notified again; a worker with `listen: false` and nothing else listening opens none; the
 * session closes with its last subscriber.
 *
 * Each app runs on a pool of its own with an application name (a process of its own), on a
 * TestClock that moves only when the test moves it: every poll (the worker's, the finishers',
 * the await's 1-second re-check) is an hour or a second away, so what the test waits for after
 * the setup can only come by NOTIFY.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Option, Queue, Redacted, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Bundle, Job, Jobs, JobsAdmin, Observer, Worker } from "../src/index.ts"
import * as Notifier from "../src/internal/Notifier.ts"
import * as TestDb from "./support/db.ts"
import { startOfNextSecond, waitFor, withTestClock } from "./support/probes.ts"

const Work = Job.make("nt-work", { args: Schema.Struct({}), queue: "nt-work", maxAttempts: 1 })
const Idle = Job.make("nt-idle", { args: Schema.Struct({}), queue: "nt-nobody", maxAttempts: 1 })
const AlbumA = Bundle.make("nt-album-a")
const AlbumB = Bundle.make("nt-album-b")

/** A pool of its own, named (so the test can count and cut its connections); usable on a TestClock. */
const namedPool = (applicationName: string) =>
  Layer.fresh(Layer.unwrap(Effect.map(TestDb.TestDb, ({ url }) =>
    PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections: 6, connectTimeout: Duration.infinity }))))

/** Backends of `applicationName` whose last statement was a LISTEN: the app's LISTEN sessions. */
const listenSessions = (applicationName: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly pid: number }>`
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = ${applicationName} AND query LIKE 'LISTEN%'`,
      (rows) => rows.map((r) => r.pid)
    )).pipe(Effect.orDie)

/**
 * A worker, the client (with `Jobs.await`) and two bundle finishers in one app, as a user
 * composes them, with `Notifier.layer` merged in so the test sees the instance the parts use.
 * Every bundle finish and worker error is handed to the test.
 */
const composedApp = (applicationName: string) =>
  Effect.gen(function*() {
    const finished = yield* Queue.unbounded<string>()
    const errors = yield* Queue.unbounded<string>()
    const observer = Observer.add({
      ...Observer.noop,
      workerError: (queue, message) => Effect.asVoid(Queue.offer(errors, `${queue}: ${message}`)),
      bundleFinished: (b) => Effect.asVoid(Queue.offer(finished, `${b.name}:${b.id}`))
    })
    const app = Layer.mergeAll(
      Worker.layer({
        queues: { "nt-work": { pollInterval: "1 hour" } },
        maintenanceInterval: "1 hour",
        pruner: false
      }).pipe(Layer.provide(Job.toLayer(Work, () => Effect.void))),
      Jobs.layer,
      JobsAdmin.layer,
      Bundle.toLayer(AlbumA, undefined, { pollInterval: "1 hour" }),
      Bundle.toLayer(AlbumB, undefined, { pollInterval: "1 hour" }),
      Notifier.layer
    ).pipe(Layer.provide(observer), Layer.provideMerge(namedPool(applicationName)))
    const ctx = yield* Layer.build(app)
    const get = <I, S>(tag: Context.Key<I, S>) => Context.get(ctx as Context.Context<I>, tag)
    const jobs = get(Jobs.Jobs)
    const admin = get(JobsAdmin.JobsAdmin)
    // Starts the await's subscription (on first use): an await of a job already finished.
    const idle = yield* jobs.enqueue(Idle, {})
    yield* admin.cancel(idle)
    assert.strictEqual((yield* Effect.flip(jobs.await(Idle, idle)))._tag, "JobCancelled")

    /**
     * A subscription of the test's own on the app's session. The session LISTENs on every
     * channel subscribed to before it tells anyone `Established`, so its `Established` says the
     * parts' channels (subscribed earlier) are all in place on that session.
     */
    const probe = yield* get(Notifier.Notifier).subscribe("effect_jobs.done").pipe(
      Effect.provideService(PgClient.PgClient, get(PgClient.PgClient))
    )
    const established = Effect.gen(function*() {
      while ((yield* Queue.take(probe))._tag !== "Established") {}
    })

    /** One of each: a job woken by NOTIFY on `new`, its await by `done`, a bundle of each kind by `bundle`. */
    const everyPartNotified = Effect.gen(function*() {
      const a = yield* jobs.enqueueBundle(AlbumA, [Jobs.entry(Work, {})])
      const b = yield* jobs.enqueueBundle(AlbumB, [Jobs.entry(Work, {})])
      const id = yield* jobs.enqueue(Work, {})
      yield* jobs.await(Work, id)
      assert.sameMembers([yield* Queue.take(finished), yield* Queue.take(finished)], [
        `nt-album-a:${a.bundleId}`,
        `nt-album-b:${b.bundleId}`
      ])
    })
    return { established, everyPartNotified, errors }
  })

/**
 * Moves the TestClock on in 50 ms steps, at most 1 s in all, until one session other than
 * `gone` listens for `applicationName`. (Between steps, a few real milliseconds for the
 * reconnect's SQL to land.)
 */
const reconnected = (applicationName: string, gone: number, what: string) =>
  Effect.gen(function*() {
    for (let moved = 0; ; moved += 50) {
      const pids = yield* listenSessions(applicationName)
      if (pids.length === 1 && pids[0] !== gone) return
      if (moved >= 1000) return assert.fail(`${what}: not listening again 1 s (virtual) after the cut: ${pids}`)
      yield* TestClock.adjust("50 millis")
      yield* TestClock.withLive(Effect.sleep("5 millis"))
    }
  })

layer(TestDb.layer(), { excludeTestServices: true })("the process's LISTEN session", (it) => {
  it.effect("a worker, Jobs.await and two bundle finishers composed in one app hold one LISTEN session", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const app = yield* composedApp("nt-composed")
        yield* app.established
        // Before this change: 2 for the worker, 1 for the await, 1 per bundle finisher (and 1 for the probe).
        assert.strictEqual((yield* listenSessions("nt-composed")).length, 1, "one LISTEN session for every channel")
        yield* app.everyPartNotified
        assert.strictEqual((yield* listenSessions("nt-composed")).length, 1)
        assert.isTrue(Option.isNone(yield* Queue.poll(app.errors)), "no worker error")
      })
    ), { timeout: 30_000 })

  it.effect("after its backend is terminated the session is back, and the worker, the await and both finishers are notified", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const app = yield* composedApp("nt-cut")
        yield* app.established
        yield* app.everyPartNotified
        for (let cut = 1; cut <= 3; cut++) {
          const [pid] = yield* listenSessions("nt-cut")
          yield* sql`SELECT pg_terminate_backend(${pid!}::int)`
          // Reported once (one session), naming its channels.
          const report = yield* Queue.take(app.errors)
          assert.match(report, /^\*: LISTEN session lost; reconnecting \(/, `cut ${cut}`)
          for (const channel of ["new", "cancel", "done", "bundle"]) assert.include(report, `effect_jobs.${channel}`)
          // Opened again about 100 ms (virtual) after the cut: move the clock until it is.
          const back = yield* Effect.forkChild(app.established)
          yield* reconnected("nt-cut", pid!, `cut ${cut}`)
          yield* Fiber.join(back)
          // The parts' own reactions to the reconnect (a claim, a check, a drain) are over after
          // one round; the second can only be woken by NOTIFY.
          yield* app.everyPartNotified
          yield* app.everyPartNotified
        }
        assert.strictEqual((yield* listenSessions("nt-cut")).length, 1)
        assert.isTrue(Option.isNone(yield* Queue.poll(app.errors)), "no other worker error")
      })
    ), { timeout: 30_000 })

  it.effect("Worker.listen: false opens no LISTEN session; a session closes with its last subscriber", () =>
    Effect.gen(function*() {
      const seen = yield* Queue.unbounded<void>()
      const ctx = yield* Layer.build(
        Layer.mergeAll(
          Worker.layer({ queues: { "nt-poll": { pollInterval: "20 millis" } }, listen: false, pruner: false }).pipe(
            Layer.provide(Job.toLayer(Job.make("nt-poll", { args: Schema.Struct({}), queue: "nt-poll" }), () => Queue.offer(seen, undefined)))
          ),
          Jobs.layer,
          Notifier.layer
        ).pipe(Layer.provideMerge(namedPool("nt-nolisten")))
      )
      const jobs = Context.get(ctx, Jobs.Jobs)
      const poll = Job.make("nt-poll", { args: Schema.Struct({}), queue: "nt-poll" })
      const id = yield* jobs.enqueue(poll, {})
      yield* Queue.take(seen) // found by polling: the worker is up
      // Its outcome written: the finish statement's own NOTIFY on the done channel (empty
      // payload) went out before the subscription below, not in the middle of what it checks.
      yield* waitFor("the job's outcome written", Effect.map(jobs.status(poll, id), (s) => Option.liftPredicate(s, (x) => x.state === "completed")))
      assert.deepStrictEqual(yield* listenSessions("nt-nolisten"), [], "no LISTEN session")

      // A subscriber opens the session; a second channel joins it, and leaves it, on the same
      // session; the last subscriber to leave closes it.
      const subscribe = (channel: string, scope: Scope.Scope) =>
        Context.get(ctx, Notifier.Notifier).subscribe(channel).pipe(
          Effect.provideService(PgClient.PgClient, Context.get(ctx, PgClient.PgClient)),
          Scope.provide(scope)
        )
      const scope = yield* Scope.make()
      const events = yield* subscribe("effect_jobs.bundle", scope)
      assert.strictEqual((yield* Queue.take(events))._tag, "Established")
      const [pid] = yield* listenSessions("nt-nolisten")
      const other = yield* Scope.make()
      const otherEvents = yield* subscribe("effect_jobs.done", other)
      assert.strictEqual((yield* Queue.take(otherEvents))._tag, "Established")
      const sql = yield* SqlClient.SqlClient
      yield* sql`SELECT pg_notify('effect_jobs.done', 'd1')`
      assert.deepStrictEqual(yield* Queue.take(otherEvents), { _tag: "Notification", payload: "d1" })
      // The last subscriber of a channel leaves: UNLISTEN on the same session, which stays.
      yield* Scope.close(other, Exit.void)
      yield* waitFor("UNLISTEN on the session", Effect.map(
        sql<{ readonly query: string }>`SELECT query FROM pg_stat_activity WHERE pid = ${pid!}::int AND state = 'idle'`,
        (rows) => rows[0]?.query === 'UNLISTEN "effect_jobs.done"' ? Option.some(true) : Option.none()
      ))
      yield* sql`SELECT pg_notify('effect_jobs.bundle', 'b1')`
      assert.deepStrictEqual(yield* Queue.take(events), { _tag: "Notification", payload: "b1" })
      yield* Scope.close(scope, Exit.void)
      // Its connection is closed by then; the backend goes a moment later.
      yield* waitFor("the session's backend gone", Effect.map(
        sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid!}::int`,
        (rows) => rows[0]!.n === 0 ? Option.some(true) : Option.none()
      ))
    }), { timeout: 30_000 })
})
