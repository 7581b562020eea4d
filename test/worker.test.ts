import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Latch, Layer, Option, Queue, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { Database, InvalidWorkerConfig, Job, Jobs, Observer, Worker } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { countByState, getJob, startWorker } from "./support/harness.ts"
import { makeProbe, waitFor } from "./support/probes.ts"
import * as WorkerConfig from "../src/internal/worker/Config.ts"

const Task = Job.make("worker-task", { args: Schema.Struct({ n: Schema.Number }), queue: "w-shutdown" })

const TestLayer = Layer.mergeAll(Jobs.layer, Layer.empty).pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("worker", (it) => {
  it.effect("graceful shutdown: a job that finishes within the grace period completes", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const proceed = yield* Latch.make(false)
      // The worker's scope, closed below to shut the worker down. A child of the test's scope:
      // a test that fails before that shuts it down too, instead of leaving it on the file's pool.
      const scope = yield* Scope.fork(yield* Effect.scope)
      yield* startWorker(
        { queues: { "w-shutdown": { concurrency: 1 } }, gracePeriod: "10 seconds" },
        Job.toLayer(Task, () => Effect.andThen(Deferred.succeed(started, undefined), proceed.await))
      ).pipe(Effect.provideService(Scope.Scope, scope))
      const id = yield* (yield* Jobs.Jobs).enqueue(Task, { n: 1 })
      yield* Deferred.await(started)
      // The job finishes while the worker is shutting down: this finalizer, the scope's newest,
      // is the first thing the close does. (Regression: runs forked straight into the worker's
      // scope were interrupted by their own, newer finalizers before the grace period began.)
      yield* Scope.addFinalizer(scope, proceed.open)
      yield* Scope.close(scope, Exit.void)
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.attempt, 1)
    }))

  it.effect("backpressure: while outcomes cannot be written, the worker stops claiming at maxPendingOutcomes", () =>
    Effect.gen(function*() {
      const Quick = Job.make("worker-bp", { args: Schema.Struct({ n: Schema.Number }), queue: "w-bp" })
      const firstStarted = yield* Deferred.make<void>()
      const releaseFirst = yield* Deferred.make<void>()
      const allCompleted = yield* Deferred.make<void>()
      let runs = 0
      let completed = 0
      const context = yield* startWorker(
        { queues: { "w-bp": { concurrency: 2, prefetch: 0 } }, maxCompletionBatch: 1, maxPendingOutcomes: 5, pruner: false },
        Layer.merge(
          Job.toLayer(Quick, ({ n }) =>
            Effect.suspend(() => {
              runs++
              return n === 0 ? Effect.andThen(Deferred.succeed(firstStarted, undefined), Deferred.await(releaseFirst)) : Effect.void
            })),
          // Reported once each outcome is written: the signal that the backlog has drained.
          Observer.add({
            ...Observer.noop,
            completed: () => Effect.suspend(() => (++completed === 51 ? Deferred.succeed(allCompleted, undefined) : Effect.void))
          })
        )
      )
      const worker = Context.get(context, Worker.Worker)
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      const first = yield* jobs.enqueue(Quick, { n: 0 })
      yield* Deferred.await(firstStarted)
      // Lock the first job's row: the statement writing its outcome waits for the lock, and
      // every later outcome waits behind it (one outcome per statement here).
      const locked = yield* Deferred.make<void>()
      const unlock = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT id FROM effect_jobs.jobs WHERE id = ${first}::bigint FOR UPDATE`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(unlock)
      })))
      yield* Deferred.await(locked)
      yield* Deferred.succeed(releaseFirst, undefined)
      yield* jobs.enqueueMany(Quick, Array.from({ length: 50 }, (_, i) => ({ n: i + 1 })))

      // The worker runs jobs until 5 outcomes wait, then stops claiming and says so. It says so
      // only in `Worker.status` (no event marks the moment), so the flag is re-read until it is set.
      yield* waitFor(
        "the queue to show waitingForOutcomes",
        Effect.map(worker.status, (queues) => (queues.some((q) => q.waitingForOutcomes) ? Option.some(queues) : Option.none()))
      )
      const blockedAt = runs
      // 5 outcomes pending (the first, blocked, among them) plus at most the 2 claimed meanwhile
      assert.isAtMost(blockedAt, 5 + 2, `ran ${blockedAt} jobs while their outcomes could not be written`)
      const waiting = yield* countByState("w-bp")
      assert.isAtLeast(waiting["available"] ?? 0, 51 - blockedAt, "the rest were not claimed")

      // Once the outcomes can be written, everything completes.
      yield* Deferred.succeed(unlock, undefined)
      yield* Fiber.join(holder)
      yield* Deferred.await(allCompleted)
      assert.deepStrictEqual(yield* countByState("w-bp"), { completed: 51 })
      assert.strictEqual(runs, 51, "each job ran once")
    }))

  it.effect("graceful shutdown: a job still running after the grace period is returned, attempt not spent", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const scope = yield* Scope.fork(yield* Effect.scope) // closed below, or with the test's scope
      const Stuck = Job.make("worker-stuck", { args: Schema.Struct({}), queue: "w-stuck" })
      yield* startWorker(
        { queues: { "w-stuck": { concurrency: 1 } }, gracePeriod: "50 millis" },
        Job.toLayer(Stuck, () =>
          Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
            Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
          ))
      ).pipe(Effect.provideService(Scope.Scope, scope))
      const id = yield* (yield* Jobs.Jobs).enqueue(Stuck, {})
      yield* Deferred.await(started)
      assert.strictEqual((yield* getJob(id))?.state, "running")
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(yield* Deferred.isDone(interrupted), "the handler was interrupted")
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "available")
      assert.strictEqual(row?.attempt, 0, "the attempt is given back")
      assert.strictEqual(row?.claim_count, 1)
    }))

  it.effect("a worker killed with SIGKILL: its job is rescued and another worker finishes it", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const Sleepy = Job.make("sleepy", { args: Schema.Struct({ n: Schema.Number }), queue: "w-rescue" })
      const id = yield* (yield* Jobs.Jobs).enqueue(Sleepy, { n: 7 })
      // 1. a worker process claims it and hangs in the handler
      const child = spawn(process.execPath, ["test/support/worker-process.ts", url, "w-rescue", "1000"], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      const line = yield* Effect.callback<string>((resume) => {
        createInterface({ input: child.stdout! }).once("line", (l) => resume(Effect.succeed(l)))
      })
      assert.strictEqual(line, `started ${id}`)
      // 2. kill it: no shutdown, no release
      const exited = Effect.callback<void>((resume) => {
        child.once("exit", () => resume(Effect.void))
      })
      child.kill("SIGKILL")
      yield* exited
      assert.strictEqual((yield* getJob(id))?.state, "running", "still held by the dead worker")
      // 3. another worker rescues it (its lock is gone, or its lease of 1 s has lapsed), and runs it. The rescue and
      //    the rerun are this process's own worker: its Observer reports the outcome once written.
      const done = yield* Deferred.make<number>()
      const probe = yield* makeProbe
      yield* startWorker(
        { queues: { "w-rescue": { concurrency: 1, pollInterval: "100 millis" } }, maintenanceInterval: "100 millis" },
        Layer.merge(Job.toLayer(Sleepy, (_args, ctx) => Deferred.succeed(done, ctx.attempt)), probe.layer)
      )
      assert.strictEqual(yield* Deferred.await(done), 2, "second attempt")
      const outcome = yield* probe.next(id)
      assert.strictEqual(outcome._tag, "completed")
      assert.strictEqual(outcome.job.attempt, 2)
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.errors.length, 1, "one error entry: the rescue of the first attempt")
      // WorkerDied: the dead process's registration lock was gone (migrations/0006); LeaseExpired
      // if the rescuer's first round came before its sessions had ended and the lease lapsed first.
      assert.oneOf(row?.errors[0]?.kind, ["WorkerDied", "LeaseExpired"])
    }), { timeout: 30_000 })

  it.effect("NOTIFY wakes an idle worker whose poll interval is an hour", () =>
    Effect.gen(function*() {
      const Ping = Job.make("ping", { args: Schema.Struct({ n: Schema.Number }), queue: "w-notify" })
      const seen = yield* Queue.unbounded<number>()
      yield* startWorker(
        { queues: { "w-notify": { pollInterval: "1 hour" } }, maintenanceInterval: "1 hour" },
        Job.toLayer(Ping, (args) => Queue.offer(seen, args.n))
      )
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueue(Ping, { n: 1 })
      assert.strictEqual(yield* Queue.take(seen), 1)
      yield* jobs.enqueue(Ping, { n: 2 }) // the worker is idle now: only a NOTIFY can wake it
      assert.strictEqual(yield* Queue.take(seen), 2)
    }))

  it.effect("without LISTEN the worker finds jobs by polling", () =>
    Effect.gen(function*() {
      const Ping = Job.make("ping-poll", { args: Schema.Struct({ n: Schema.Number }), queue: "w-poll" })
      const seen = yield* Queue.unbounded<number>()
      yield* startWorker(
        { queues: { "w-poll": { pollInterval: "20 millis" } }, listen: false },
        Job.toLayer(Ping, (args) => Queue.offer(seen, args.n))
      )
      const jobs = yield* Jobs.Jobs
      for (const n of [1, 2, 3]) {
        yield* jobs.enqueue(Ping, { n })
        assert.strictEqual(yield* Queue.take(seen), n)
      }
    }))

  it.effect("an observer that throws does not stop outcomes from being written", () =>
    Effect.gen(function*() {
      const Thrown = Job.make("observer-throws", { args: Schema.Struct({ n: Schema.Number }), queue: "w-observer" })
      const seen = yield* Queue.unbounded<number>()
      const scope = yield* Scope.fork(yield* Effect.scope) // closed below, or with the test's scope
      yield* startWorker(
        { queues: { "w-observer": { concurrency: 1 } } },
        Layer.merge(
          Job.toLayer(Thrown, (args) => Queue.offer(seen, args.n)),
          Observer.replace({
            ...Observer.noop,
            completed: () => {
              throw new Error("observer bug")
            },
            workerError: () => Effect.die("and the error reporter fails too")
          })
        )
      ).pipe(Effect.provideService(Scope.Scope, scope))
      const jobs = yield* Jobs.Jobs
      const first = yield* jobs.enqueue(Thrown, { n: 1 })
      assert.strictEqual(yield* Queue.take(seen), 1)
      const second = yield* jobs.enqueue(Thrown, { n: 2 })
      assert.strictEqual(yield* Queue.take(seen), 2)
      yield* Scope.close(scope, Exit.void) // graceful shutdown waits for every outcome: it must not hang
      assert.strictEqual((yield* getJob(first))?.state, "completed")
      assert.strictEqual((yield* getJob(second))?.state, "completed")
    }))

  it.effect("3 workers with separate pools drain 5,000 jobs: every job runs exactly once", () =>
    Effect.gen(function*() {
      const Drain = Job.make("drain", { args: Schema.Struct({ i: Schema.Number }), queue: "w-drain", retention: "1 hour" })
      const runs = new Map<string, number>()
      const total = 5000
      const allDone = yield* Deferred.make<void>()
      let completed = 0
      const observer: Observer.Events = {
        ...Observer.noop,
        completed: () =>
          Effect.suspend(() => (++completed === total ? Deferred.succeed(allDone, undefined) : Effect.void))
      }
      const handler = Job.toLayer(Drain, (_args, ctx) =>
        Effect.sync(() => {
          runs.set(ctx.id, (runs.get(ctx.id) ?? 0) + 1)
        }))
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(Drain, Array.from({ length: total }, (_, i) => ({ i })))
      for (let w = 0; w < 3; w++) {
        yield* startWorker(
          { queues: { "w-drain": { concurrency: 8 } } },
          Layer.mergeAll(handler, Observer.replace(observer), Layer.fresh(TestDb.pool({ maxConnections: 5 })))
        )
      }
      yield* Deferred.await(allDone)
      assert.strictEqual(runs.size, total)
      for (const id of ids) assert.strictEqual(runs.get(id), 1, `job ${id} ran once`)
      assert.deepStrictEqual(yield* countByState("w-drain"), { completed: total })
    }), { timeout: 120_000 })
})

describe("configuration errors", () => {
  const bad: ReadonlyArray<[string, Worker.Options]> = [
    ["concurrency 0", { queues: { q: { concurrency: 0 } } }],
    ["concurrency 1.5", { queues: { q: { concurrency: 1.5 } } }],
    ["negative poll interval", { queues: { q: { pollInterval: -5 } } }],
    ["no queues", { queues: {} }],
    ["empty queue name", { queues: { "": {} } }],
    ["heartbeat not shorter than lease", { queues: { q: {} }, lease: "1 second", heartbeatInterval: "2 seconds" }]
  ]
  for (const [label, options] of bad) {
    it.effect(`rejects ${label} with InvalidWorkerConfig`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(WorkerConfig.validate(options))
        expect(error).toBeInstanceOf(InvalidWorkerConfig)
        expect(error.message.length).toBeGreaterThan(10)
      }))
  }

  for (const url of ["", "not a url", "mysql://localhost/x", "postgres://localhost:99999/x", "postgres:///nohost"]) {
    it.effect(`rejects the database URL ${JSON.stringify(url)} with InvalidDatabaseUrl`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Database.parseUrl(url))
        expect(error._tag).toBe("InvalidDatabaseUrl")
      }))
  }

  it.effect("a malformed URL fails the layer with a typed error that hides the password", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(Database.layer("postgres://u:secret@host:notaport/db")))
      assert.isTrue(Exit.isFailure(exit))
      const text = String(Exit.isFailure(exit) ? exit.cause : "")
      expect(text).toContain("InvalidDatabaseUrl")
      expect(text).not.toContain("secret")
    }))
})
