/**
 * Defects of the worker's engine (issue 14, part 2), each with a test that fails on the
 * code before its fix. The races are driven through the database's state (a lease taken
 * away by hand, as the rescuer would; a claim held by an advisory lock in a trigger) and
 * Deferreds, not by timing.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Option, Queue, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Observer, Worker } from "../src/index.ts"
import { TestSignals } from "../src/internal/worker/TestSignals.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

/**
 * Takes a job away from the worker that holds it, as the rescuer does when its lease lapses
 * (no longer `running`, no lease, no holder), and parks it: `scheduled` a day ahead, so that
 * no claim takes it again before the test lets it (`unpark`, as the promoter would).
 */
const takeAway = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`UPDATE effect_jobs.jobs SET state = 'scheduled', run_at = now() + interval '1 day', lease_expires_at = NULL, locked_by = NULL
        WHERE id = ${id}::bigint AND state = 'running'`).pipe(Effect.orDie)

const unpark = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`UPDATE effect_jobs.jobs SET state = 'available', run_at = now()
        WHERE id = ${id}::bigint AND state = 'scheduled'`).pipe(Effect.orDie)

/**
 * An observer that reports, per job id, that the worker found its lease lost, and the
 * jobs it completed (in order).
 */
const makeWatcher = Effect.gen(function*() {
  const lost = new Map<string, Deferred.Deferred<void>>()
  const lostOf = (id: string) => {
    let d = lost.get(id)
    if (d === undefined) lost.set(id, d = Deferred.makeUnsafe<void>())
    return d
  }
  const completed = yield* Queue.unbounded<string>()
  const layer = Observer.replace({
    ...Observer.noop,
    completed: (job) => Queue.offer(completed, job.id).pipe(Effect.asVoid),
    workerError: (_queue, message) => {
      const m = /^lost the lease of job (\d+)/.exec(message)
      return m === null ? Effect.void : Deferred.succeed(lostOf(m[1]!), undefined).pipe(Effect.asVoid)
    }
  })
  return {
    layer,
    /** Waits until the worker found the lease of `id` lost (at its heartbeat). */
    awaitLost: (id: string) => Deferred.await(lostOf(id)),
    /** Waits for the next job the worker reported completed. */
    nextCompleted: Queue.take(completed)
  }
})

const leases: Partial<Worker.Options> = { lease: "1 second", heartbeatInterval: "50 millis", maintenanceInterval: "50 millis" }

layer(TestLayer, { excludeTestServices: true })("worker defects", (it) => {
  it.effect("a buffered job whose lease was lost is dropped from the buffer and never started", () =>
    Effect.gen(function*() {
      const releaseBlocker = yield* Deferred.make<void>()
      const blockerStarted = yield* Deferred.make<void>()
      const Blocker = Job.make("d-blocker", { args: Schema.Struct({}), queue: "d-buffered" })
      const Buffered = Job.make("d-buffered", { args: Schema.Struct({}), queue: "d-buffered" })
      /** The fencing token (`runs`) of every run of the buffered job. */
      const runs: Array<number> = []
      const jobs = yield* Jobs.Jobs
      const blocker = yield* jobs.enqueue(Blocker, {})
      const buffered = yield* jobs.enqueue(Buffered, {})
      const watcher = yield* makeWatcher
      // One slot, one buffered job: the first claim takes both, runs the blocker, buffers the other.
      const context = yield* startWorker(
        { queues: { "d-buffered": { concurrency: 1, prefetch: 1, pollInterval: "20 millis" } }, ...leases },
        Layer.mergeAll(
          Job.toLayer(Blocker, () => Effect.andThen(Deferred.succeed(blockerStarted, undefined), Deferred.await(releaseBlocker))),
          Job.toLayer(Buffered, (_args, job) => Effect.sync(() => void runs.push(job.runs))),
          watcher.layer
        )
      )
      yield* Effect.addFinalizer(() => Deferred.succeed(releaseBlocker, undefined))
      const worker = Context.get(context, Worker.Worker)
      yield* Deferred.await(blockerStarted)
      assert.strictEqual((yield* worker.status)[0]?.buffered, 1, "the second job waits in the buffer")

      // The lease of the buffered job is taken away (as the rescuer does when it lapses);
      // the next heartbeat finds it lost. Then it may be claimed again.
      yield* takeAway(buffered)
      yield* watcher.awaitLost(buffered)
      yield* unpark(buffered)

      // Its slot frees: the run it was claimed for (token 1) must not start; the job is
      // claimed again (token 2, as another worker would) and runs once.
      yield* Deferred.succeed(releaseBlocker, undefined)
      const done = [yield* watcher.nextCompleted, yield* watcher.nextCompleted]
      assert.sameMembers(done, [blocker, buffered])
      assert.deepStrictEqual(runs, [2], "the buffered job ran only under its new claim")
      const row = yield* getJob(buffered)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.claim_count, 2)
    }))

  it.effect("a job lost and claimed again by the same worker gets the outcome of its new run written", () =>
    Effect.gen(function*() {
      const releaseFirst = yield* Deferred.make<void>()
      const firstStarted = yield* Deferred.make<void>()
      const Slow = Job.make("d-reclaim", { args: Schema.Struct({}), queue: "d-reclaim" })
      const runs: Array<number> = []
      const id = yield* (yield* Jobs.Jobs).enqueue(Slow, {})
      const watcher = yield* makeWatcher
      yield* startWorker(
        { queues: { "d-reclaim": { concurrency: 2, prefetch: 0, pollInterval: "20 millis" } }, ...leases },
        Layer.mergeAll(
          Job.toLayer(Slow, (_args, job) =>
            Effect.suspend(() => {
              runs.push(job.runs)
              // The first run cannot be stopped (an uninterruptible step) until the test lets it go.
              return job.runs === 1
                ? Effect.andThen(Deferred.succeed(firstStarted, undefined), Effect.uninterruptible(Deferred.await(releaseFirst)))
                : Effect.void
            })),
          watcher.layer
        )
      )
      yield* Effect.addFinalizer(() => Deferred.succeed(releaseFirst, undefined))
      yield* Deferred.await(firstStarted)

      // Taken away and parked, so that the job is claimed again only after the heartbeat
      // found it lost; then the same worker claims it again (a free slot, polling).
      yield* takeAway(id)
      yield* watcher.awaitLost(id)
      yield* unpark(id)

      // The second run (token 2) completes while the first, lost, is still being stopped.
      assert.strictEqual(yield* watcher.nextCompleted, id)
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.claim_count, 2, "written by the second run, not after a rescue and a third")
      assert.deepStrictEqual(runs, [1, 2])
      yield* Deferred.succeed(releaseFirst, undefined)
    }))

  it.effect("shutdown during a claim: the claimed jobs are given back with their attempt, none left running", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // The claim of queue d-shutdown waits, row by row, for an advisory lock the test holds.
      // A cancel of the statement is caught and the wait goes on: the claim commits whenever
      // the lock is released, as a claim whose response is already on its way would.
      yield* sql.unsafe(`
        CREATE FUNCTION effect_jobs.test_hold_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.queue = 'd-shutdown' AND OLD.state = 'available' AND NEW.state = 'running' THEN
            BEGIN
              PERFORM pg_advisory_xact_lock(4242);
            EXCEPTION WHEN query_canceled THEN
              PERFORM pg_advisory_xact_lock(4242);
            END;
          END IF;
          RETURN NEW;
        END $$`)
      yield* sql.unsafe(`CREATE TRIGGER test_hold_claim BEFORE UPDATE ON effect_jobs.jobs
                         FOR EACH ROW EXECUTE FUNCTION effect_jobs.test_hold_claim()`)
      yield* Effect.addFinalizer(() =>
        Effect.andThen(
          sql.unsafe(`DROP TRIGGER test_hold_claim ON effect_jobs.jobs`),
          sql.unsafe(`DROP FUNCTION effect_jobs.test_hold_claim()`)
        ).pipe(Effect.ignore))
      const locked = yield* Deferred.make<void>()
      const unlock = yield* Deferred.make<void>()
      const holder = yield* sql.withTransaction(
        Effect.andThen(sql`SELECT pg_advisory_xact_lock(4242)`, Effect.andThen(Deferred.succeed(locked, undefined), Deferred.await(unlock)))
      ).pipe(Effect.orDie, Effect.forkChild)
      yield* Deferred.await(locked)

      const Task = Job.make("d-shutdown", { args: Schema.Struct({ n: Schema.Number }), queue: "d-shutdown" })
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(Task, [{ n: 1 }, { n: 2 }, { n: 3 }])
      const interrupting = yield* Deferred.make<void>()
      const scope = yield* Scope.fork(yield* Effect.scope)
      yield* startWorker(
        { queues: { "d-shutdown": { concurrency: 3 } }, pruner: false },
        Layer.mergeAll(
          Job.toLayer(Task, () => Effect.void),
          Layer.succeed(TestSignals, {
            producersInterrupted: Deferred.succeed(interrupting, undefined).pipe(Effect.asVoid),
            maintained: Effect.void
          })
        )
      ).pipe(Effect.provideService(Scope.Scope, scope))

      // The claim is under way, waiting for the lock.
      yield* waitFor("the claim to wait for the advisory lock", Effect.map(
        sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_locks
                                    WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted`,
        (rows) => (rows[0]!.n > 0 ? Option.some(true) : Option.none())
      ))
      // Shut the worker down; once its producer has been told to stop, let the claim finish.
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* Deferred.await(interrupting)
      yield* Deferred.succeed(unlock, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(closing)

      for (const id of ids) {
        const row = yield* getJob(id)
        assert.strictEqual(row?.state, "available", `job ${id} was given back, not left running until its lease lapses`)
        assert.strictEqual(row?.attempt, 0, `job ${id} has its attempt back`)
      }
    }))
})
