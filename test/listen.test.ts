/**
 * The LISTEN session (internal/Notifier.ts) of `Jobs.await` and of a bundle finisher, each
 * alone in a process of its own, cut again and again (pg_terminate_backend): each cut is
 * reported to the Observer, and the session is back about 100 ms (virtual) after every cut,
 * not after a backoff that grew with each cut (100, 200, 400, 800, 1600 ms ...: the old loop
 * retried with one Schedule for its whole life).
 * On a TestClock that moves only when the test moves it; after the last cut it stands still,
 * so what the test then waits for can only come by NOTIFY (the polls never come round).
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Fiber, Layer, Option, Queue, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { Bundle, Job, Jobs, JobsAdmin, Observer } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startOfNextSecond, withTestClock } from "./support/probes.ts"

const Idle = Job.make("listen-idle", { args: Schema.Struct({}), queue: "l-nobody", maxAttempts: 1 })

/** How many times each test cuts the session; at the old backoff the 5th reconnect took 1.6 s. */
const cuts = 6
/** Virtual time a reconnect may take after a cut (about 100 ms is due). */
const budgetMillis = 1_000

/** An Observer that hands every `workerError` message to the test (and has the `other` events). */
const errorProbe = (other: Partial<Observer.Events> = {}) => Effect.gen(function*() {
  const errors = yield* Queue.unbounded<string>()
  const layer: Layer.Layer<never> = Observer.add({
    ...Observer.noop,
    ...other,
    workerError: (queue, message) => Effect.asVoid(Queue.offer(errors, `${queue}: ${message}`))
  })
  return { errors, layer }
})

/** Pids of the sessions of this database listening on `channel`, idle (the LISTEN is in place). */
const listeners = (channel: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly pid: number }>`
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND state = 'idle' AND query = ${`LISTEN "${channel}"`}`,
      (rows) => rows.map((r) => r.pid)
    ))

/**
 * Moves the TestClock on in 50 ms steps, at most `budgetMillis` in all, until a session other
 * than those in `gone` listens on `channel`; fails the test if none does within the budget.
 * (Between steps, a few real milliseconds for the reconnect's SQL to land.)
 */
const reconnected = (channel: string, gone: ReadonlyArray<number>, what: string) =>
  Effect.gen(function*() {
    for (let moved = 0; ; moved += 50) {
      const fresh = (yield* listeners(channel)).filter((pid) => !gone.includes(pid))
      if (fresh.length > 0) return fresh
      if (moved >= budgetMillis) return assert.fail(`${what}: not listening again ${budgetMillis} ms (virtual) after the cut`)
      yield* TestClock.adjust("50 millis")
      yield* TestClock.withLive(Effect.sleep("5 millis"))
    }
  })

/** Waits in real time (the clock is stopped) until a session listens on `channel`. */
const listening = (channel: string) =>
  TestClock.withLive(Effect.gen(function*() {
    while (true) {
      const pids = yield* listeners(channel)
      if (pids.length > 0) return pids
      yield* Effect.sleep("10 millis")
    }
  }))

/** Cuts the sessions listening on `channel` `cuts` times; each cut is reported, and reconnects within the budget. */
const cutAgainAndAgain = (channel: string, errors: Queue.Queue<string>, expected: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    let pids = yield* listening(channel)
    for (let cut = 1; cut <= cuts; cut++) {
      yield* sql`SELECT pg_terminate_backend(pid) FROM unnest(${pids}::int[]) AS pid`
      assert.strictEqual(yield* Queue.take(errors), expected, `cut ${cut} reported`)
      pids = yield* reconnected(channel, pids, `cut ${cut}`)
    }
    assert.deepStrictEqual(yield* Queue.clear(errors), [], "one report per cut")
  })

/** A fresh pool (a process of its own) for the layers under test; usable on a TestClock. */
const pool = () => Layer.fresh(TestDb.pool({ maxConnections: 4, connectTimeout: Duration.infinity }))

layer(TestDb.layer(), { excludeTestServices: true })("LISTEN sessions", (it) => {
  it.effect("Jobs.await: a cut LISTEN is reported and back at once, cut after cut; a later await is woken by NOTIFY", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const probe = yield* errorProbe()
        const ctx = yield* Layer.build(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provide([probe.layer, pool()])))
        const { jobs, admin } = yield* Effect.provideContext(
          Effect.all({ jobs: Jobs.Jobs, admin: JobsAdmin.JobsAdmin }),
          ctx as Context.Context<Jobs.Jobs | JobsAdmin.JobsAdmin>
        )
        const first = yield* jobs.enqueue(Idle, {})
        const waiting = yield* Effect.forkChild(jobs.await(Idle, first)) // starts the listener

        yield* cutAgainAndAgain("effect_jobs.done", probe.errors, "*: LISTEN session lost; reconnecting (effect_jobs.done)")

        // The clock stands still from here: only a NOTIFY can wake the awaits.
        const second = yield* jobs.enqueue(Idle, {})
        const later = yield* Effect.forkChild(jobs.await(Idle, second))
        yield* admin.cancel(first, { reason: "first" })
        yield* admin.cancel(second, { reason: "second" })
        const errors = [yield* Effect.flip(Fiber.join(waiting)), yield* Effect.flip(Fiber.join(later))]
        assert.deepStrictEqual(errors.map((e) => [e._tag, e._tag === "JobCancelled" ? e.reason : e.message]), [
          ["JobCancelled", "first"],
          ["JobCancelled", "second"]
        ])
      })
    ), { timeout: 30_000 })

  it.effect("a bundle finisher: a cut LISTEN is reported and back at once, cut after cut; a bundle then finishes by NOTIFY", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const Album = Bundle.make("listen-album")
        const done = yield* Deferred.make<string>()
        const probe = yield* errorProbe({ bundleFinished: (b) => Effect.asVoid(Deferred.succeed(done, b.id)) })
        // The poll comes round once at start, then in an hour: never, here.
        yield* Layer.build(Bundle.toLayer(Album, undefined, { pollInterval: "1 hour" }).pipe(Layer.provide([probe.layer, pool()])))
        const ctx = yield* Layer.build(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provide(pool())))
        const { jobs, admin } = yield* Effect.provideContext(
          Effect.all({ jobs: Jobs.Jobs, admin: JobsAdmin.JobsAdmin }),
          ctx as Context.Context<Jobs.Jobs | JobsAdmin.JobsAdmin>
        )

        yield* cutAgainAndAgain("effect_jobs.bundle", probe.errors, "*: LISTEN session lost; reconnecting (effect_jobs.bundle)")

        const { bundleId, ids } = yield* jobs.enqueueBundle(Album, [Jobs.entry(Idle, {})])
        yield* admin.cancel(ids[0]!, { reason: "the last member ends" }) // the bundle's count reaches 0: NOTIFY
        assert.strictEqual(yield* Deferred.await(done), bundleId)
        assert.isTrue((yield* jobs.bundleProgress(bundleId)).finished)
        assert.isTrue(Option.isNone(yield* Queue.poll(probe.errors)), "no other error")
      })
    ), { timeout: 30_000 })
})
