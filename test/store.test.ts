/**
 * The store's guarantees, statement by statement: claims take leases and bump the
 * fencing token; rescue frees lapsed leases; writes with a stale token change nothing.
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Fiber, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import { JobStore, maxFreeReturns } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { getJob, toPowerOfTen } from "./support/harness.ts"
import { leaseLapsed } from "./support/probes.ts"

const Fenced = Job.make("fenced", { args: Schema.Struct({}), queue: "s-fence" })
const claim = (queue: string, now: number, leaseMillis = 1000) =>
  Effect.flatMap(JobStore, (s) => s.jobClaim({ queue, limit: 10, now, leaseMillis, workerId: "test" }))

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("store", (it) => {
  it.effect("a worker whose lease lapsed cannot overwrite the run that replaced it", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const id = yield* (yield* Jobs.Jobs).enqueue(Fenced, {})
      const now = Date.now()
      const [first] = yield* claim("s-fence", now, 50)
      assert.strictEqual(first?.claim_count, 1)
      assert.lengthOf(yield* claim("s-fence", now), 0, "held: nobody else can claim it")

      // The first worker goes silent; its lease lapses and the job is rescued and claimed again.
      yield* leaseLapsed(id)
      assert.strictEqual(yield* store.jobRescueExpired(now + 5000, 100), 1)
      const [second] = yield* claim("s-fence", now + 5000, 60_000)
      assert.strictEqual(second?.claim_count, 2)
      assert.strictEqual(second?.attempt, 2)

      // The first worker comes back: its heartbeat and its outcome are refused.
      const stale = { id, token: 1 }
      const refused = yield* store.jobHeartbeatMany([stale], 1000)
      assert.isFalse(refused.extended.has(id) || refused.busy.has(id))
      const applied = yield* store.jobFinishMany([{ ...stale, state: "dead", run_at: null, attempt_delta: 0, result: null, error: null }], now + 6000)
      assert.isFalse(applied.has(id))
      assert.strictEqual((yield* getJob(id))?.state, "running")

      // The current holder's outcome is applied.
      assert.isTrue((yield* store.jobHeartbeatMany([{ id, token: 2 }], 1000)).extended.has(id))
      const done = yield* store.jobFinishMany([{ id, token: 2, state: "completed", run_at: null, attempt_delta: 0, result: null, error: null }], now + 6000)
      assert.isTrue(done.has(id))
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.strictEqual(row?.errors[0]?.kind, "LeaseExpired")
      // One format for errors[].at, whoever wrote the entry: ISO 8601 in UTC with "Z", as
      // JavaScript writes it (the rescue's entry used to be Postgres's "+00:00" text).
      assert.strictEqual(row?.errors[0]?.at, new Date(now + 5000).toISOString())
    }))

  it.effect("a rescued job on its last attempt goes to dead", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const id = yield* (yield* Jobs.Jobs).enqueue(Fenced, {}, { queue: "s-last", maxAttempts: 1 })
      const now = Date.now()
      yield* claim("s-last", now, 1)
      yield* leaseLapsed(id)
      assert.strictEqual(yield* store.jobRescueExpired(now + 5000, 100), 1)
      assert.strictEqual((yield* getJob(id))?.state, "dead")
    }))

  it.effect("future jobs are scheduled and promoted when due, not before", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const now = Date.now()
      const id = yield* (yield* Jobs.Jobs).enqueue(Fenced, {}, { queue: "s-sched", runAt: new Date(now + 60_000) })
      assert.strictEqual((yield* getJob(id))?.state, "scheduled")
      assert.lengthOf(yield* claim("s-sched", now + 120_000), 0, "scheduled jobs are not claimable")
      yield* store.jobPromoteScheduled(now + 30_000, 100)
      assert.strictEqual((yield* getJob(id))?.state, "scheduled")
      yield* store.jobPromoteScheduled(now + 60_000, 100)
      assert.strictEqual((yield* getJob(id))?.state, "available")
    }))

  it.effect("a heartbeat skips a row another transaction has locked instead of waiting for it", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* Jobs.Jobs
      const a = yield* jobs.enqueue(Fenced, {}, { queue: "s-beat" })
      const b = yield* jobs.enqueue(Fenced, {}, { queue: "s-beat" })
      const now = Date.now()
      assert.lengthOf(yield* claim("s-beat", now), 2)

      // Someone else (an operator's transaction, say) holds a lock on job a's row.
      const locked = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT id FROM effect_jobs.jobs WHERE id = ${a} FOR UPDATE`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(release)
      })).pipe(Effect.forkChild)
      yield* Deferred.await(locked)

      // The heartbeat does not wait for that lock: b's lease is extended, a is reported busy
      // (still ours, not extended). (The timeout only turns a hang into a failure.)
      // (A lease of 10 minutes, against the claim's 1 s: which leases moved is plain to see.)
      const beat = yield* store.jobHeartbeatMany([{ id: a, token: 1 }, { id: b, token: 1 }], 600_000).pipe(
        Effect.timeout("20 seconds")
      )
      assert.deepStrictEqual([...beat.extended], [b])
      assert.deepStrictEqual([...beat.busy], [a])
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      const leases = yield* sql<{ readonly id: string; readonly lease: Date }>`
        SELECT id::text, lease_expires_at AS lease FROM effect_jobs.jobs WHERE id IN (${a}, ${b}) ORDER BY id`
      assert.deepStrictEqual(leases.map((r) => r.id), [a, b])
      const [leaseA, leaseB] = leases.map((r) => r.lease.getTime())
      assert.isAbove(leaseB! - leaseA!, 500_000, "b's lease was extended (by the database's clock), a's was not")

      // Once the lock is gone, a is extended again.
      const again = yield* store.jobHeartbeatMany([{ id: a, token: 1 }], 600_000)
      assert.deepStrictEqual([...again.extended], [a])
    }))

  it.effect("a dead worker's buffered job gets its attempt back, at most maxFreeReturns times; a job claimed to start at once spends it", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* Jobs.Jobs
      // A registered worker that died: its row, last seen 10 s ago, and nobody holds its lock.
      yield* sql`INSERT INTO effect_jobs.workers (id, queues, concurrency, last_seen_at)
                 VALUES ('ghost', '{s-poison}', 1, now() - interval '10 seconds')`
      const claimAs = (queue: string, workerId: string, startNow: number, leaseMillis = 60_000) =>
        store.jobClaim({ queue, limit: 1, now: Date.now(), leaseMillis, workerId, startNow })
      const rescued = (id: string) =>
        Effect.gen(function*() {
          assert.strictEqual(yield* store.jobRescueExpired(Date.now(), 100), 1)
          const r = (yield* getJob(id))!
          return [r.state, r.attempt, r.errors.at(-1)!.message.includes("died before it was seen to start the job")] as const
        })

      // A job that kills its worker each time it starts from the buffer, before the beat that
      // would clear its mark: given back maxFreeReturns times, then its attempts are spent.
      const poison = yield* jobs.enqueue(Fenced, {}, { queue: "s-poison", maxAttempts: 2 })
      const seen: Array<readonly [string, number, boolean]> = []
      for (let claims = 0; claims < maxFreeReturns + 5 && seen.at(-1)?.[0] !== "dead"; claims++) {
        const [claimed] = yield* claimAs("s-poison", "ghost", 0)
        assert.strictEqual(claimed?.id, poison)
        seen.push(yield* rescued(poison))
      }
      assert.deepStrictEqual(seen, [
        ...Array.from({ length: maxFreeReturns }, () => ["available", 0, true] as const),
        ["available", 1, false],
        ["dead", 2, false]
      ])

      // Claimed among the free slots (not marked): the attempt is spent at once.
      const started = yield* jobs.enqueue(Fenced, {}, { queue: "s-poison-started" })
      yield* claimAs("s-poison-started", "ghost", 1)
      assert.deepStrictEqual(yield* rescued(started), ["available", 1, false])

      // A worker that is not registered (listen: false) has no beat to clear its marks: they
      // are not trusted, its lapsed jobs spend their attempt.
      const unregistered = yield* jobs.enqueue(Fenced, {}, { queue: "s-poison-unregistered" })
      yield* claimAs("s-poison-unregistered", "nobody", 0, 1)
      yield* leaseLapsed(unregistered)
      assert.deepStrictEqual(yield* rescued(unregistered), ["available", 1, false])
      assert.strictEqual((yield* getJob(unregistered))?.errors.at(-1)?.kind, "LeaseExpired")
    }))

  it.effect("claims come back in id order when the ids cross a power of ten (999, 1000, ...)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* toPowerOfTen
      // one enqueueMany: one priority and one run_at, so only the id orders them
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(Fenced, Array.from({ length: 6 }, () => ({})), { queue: "s-order" })
      assert.notStrictEqual(ids[0]!.length, ids[5]!.length, "the ids cross a power of ten")
      const claimed = yield* claim("s-order", Date.now())
      assert.deepStrictEqual(claimed.map((r) => r.id), ids, "FIFO: in id order, compared as numbers")
      yield* sql`DELETE FROM effect_jobs.jobs WHERE queue = 's-order'`
    }))
})
