/**
 * Lease deadlines are on the database's clock (issue 14): the claim and the heartbeat set
 * `lease_expires_at` to the database's `now()` + lease, and the rescue compares it with the
 * database's `now()`. A lease is written by one process and judged by another: judged by the
 * rescuer's own clock, a worker whose clock ran ahead took the live jobs of others. Everything
 * else (`run_at`: delays, retries, promotion) stays on Effect's Clock.
 */
import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Latch, Layer, Option, Queue, Redacted, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, Worker } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import { TestSignals } from "../src/internal/worker/TestSignals.ts"
import * as TestDb from "./support/db.ts"
import { getJob } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

/**
 * Effect's Clock of a process whose system clock runs `offsetMillis` ahead: the live clock
 * plus the offset. Sleeps (and durations) are real.
 */
const clockAhead = (offsetMillis: number) =>
  Layer.effect(
    Clock.Clock,
    Clock.clockWith((base) => {
      const offsetNanos = BigInt(offsetMillis) * 1_000_000n
      const ahead: Clock.Clock = {
        currentTimeMillisUnsafe: () => base.currentTimeMillisUnsafe() + offsetMillis,
        currentTimeMillis: Effect.sync(() => base.currentTimeMillisUnsafe() + offsetMillis),
        currentTimeNanosUnsafe: () => base.currentTimeNanosUnsafe() + offsetNanos,
        currentTimeNanos: Effect.sync(() => base.currentTimeNanosUnsafe() + offsetNanos),
        monotonicTimeNanosUnsafe: () => base.monotonicTimeNanosUnsafe(),
        monotonicTimeNanos: base.monotonicTimeNanos,
        sleep: (duration) => base.sleep(duration)
      }
      return Effect.succeed(ahead)
    })
  )

interface Row {
  readonly id: string
  readonly state: string
  readonly attempt: number
  readonly claim_count: number
  readonly locked_by: string | null
  readonly errors: ReadonlyArray<unknown>
}

const rowsOf = (queue: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<Row>`SELECT id::text, state, attempt, claim_count, locked_by, errors FROM effect_jobs.jobs
             WHERE queue = ${queue} ORDER BY id`)

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("lease deadlines on the database's clock", (it) => {
  it.effect("a worker whose clock runs 10 s ahead runs its rescue while another holds live jobs (5 s lease): it takes none", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const jobs = yield* Jobs.Jobs
      const Hold = Job.make("skew-hold", { args: Schema.Struct({ n: Schema.Number }), queue: "skew" })
      const ids = yield* jobs.enqueueMany(Hold, [{ n: 1 }, { n: 2 }, { n: 3 }])
      const pool = () => Layer.fresh(PgClient.layer({ url: Redacted.make(url), maxConnections: 6 }))

      // The owner: the real clock, a 5 s lease; its runs wait for the test.
      const release = yield* Latch.make(false)
      yield* Layer.buildWithScope(
        Worker.layer({ queues: { skew: { concurrency: 3, prefetch: 0 } }, workerId: "owner", lease: "5 seconds", pruner: false })
          .pipe(Layer.provide(Job.toLayer(Hold, () => release.await)), Layer.provide(pool())),
        yield* Effect.scope
      )
      const held = yield* waitFor("the 3 jobs running on the owner", Effect.map(rowsOf("skew"), (rs) =>
        rs.length === 3 && rs.every((r) => r.state === "running" && r.locked_by === "owner") ? Option.some(rs) : Option.none()))

      // The skewed worker: its clock 10 s ahead (past the owner's leases by its reckoning), on
      // the same queue (it would run a job it took), maintenance every 50 ms; its rounds counted.
      const rounds = yield* Queue.unbounded<void>()
      const ranAhead: Array<number> = []
      yield* Layer.buildWithScope(
        Worker.layer({ queues: { skew: { concurrency: 3 } }, workerId: "ahead", maintenanceInterval: "50 millis", pruner: false })
          .pipe(
            Layer.provide(Layer.mergeAll(
              Job.toLayer(Hold, (args) => Effect.sync(() => void ranAhead.push(args.n))),
              Layer.succeed(TestSignals, {
                producersInterrupted: Effect.void,
                maintained: Queue.offer(rounds, undefined).pipe(Effect.asVoid)
              })
            )),
            Layer.provide(clockAhead(10_000)),
            Layer.provide(pool())
          ),
        yield* Effect.scope
      )
      // Five rounds of its maintenance (promotion, then rescue) while the owner holds the jobs.
      for (let i = 0; i < 5; i++) yield* Queue.take(rounds)

      const after = yield* rowsOf("skew")
      assert.deepStrictEqual(
        after.map((r) => [r.id, r.state, r.claim_count, r.locked_by]),
        held.map((r) => [r.id, "running", 1, "owner"]),
        "no job was taken from the owner"
      )

      // The owner's outcomes are written: each job ran once, there.
      yield* release.open
      const done = yield* waitFor("the 3 jobs completed", Effect.map(rowsOf("skew"), (rs) =>
        rs.every((r) => r.state === "completed") ? Option.some(rs) : Option.none()))
      assert.deepStrictEqual(done.map((r) => r.id), [...ids])
      for (const r of done) {
        assert.strictEqual(r.claim_count, 1, "claimed once")
        assert.strictEqual(r.attempt, 1)
        assert.deepStrictEqual(r.errors, [], "no LeaseExpired entry")
      }
      assert.deepStrictEqual(ranAhead, [], "nothing ran on the skewed worker")
    }), { timeout: 20_000 })

  it.effect("the claim and the heartbeat set the lease by the database's clock, whatever `now` the caller passes", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = yield* SqlClient.SqlClient
      const Hold = Job.make("skew-store", { args: Schema.Struct({}), queue: "skew-store" })
      const id = yield* (yield* Jobs.Jobs).enqueue(Hold, {})
      // A caller whose clock is an hour ahead; the job's run_at is by the real clock, so it is due.
      const ahead = Date.now() + 3_600_000
      const [claimed] = yield* store.jobClaim({ queue: "skew-store", limit: 1, now: ahead, leaseMillis: 60_000, workerId: "test" })
      assert.strictEqual(claimed?.id, id)
      const leaseLeft = sql<{ readonly left: number }>`
        SELECT (extract(epoch FROM lease_expires_at - now()) * 1000)::float8 AS left FROM effect_jobs.jobs WHERE id = ${id}::bigint`
      const left = (yield* leaseLeft)[0]!.left
      assert.isTrue(left > 0 && left <= 60_000, `the lease ends 60 s from the database's now (${left} ms left)`)
      // attempted_at is the caller's clock (like every time but leases)
      const [attempted] = yield* sql<{ readonly at: Date }>`SELECT attempted_at AS at FROM effect_jobs.jobs WHERE id = ${id}::bigint`
      assert.strictEqual(attempted!.at.getTime(), ahead)

      // Rescues by callers whose clocks are far ahead take nothing: the lease is live by the database.
      assert.strictEqual(yield* store.jobRescueExpired(ahead + 3_600_000, 100), 0)
      assert.strictEqual((yield* getJob(id))?.state, "running")

      // The heartbeat moves it from the database's now as well.
      assert.isTrue((yield* store.jobHeartbeatMany([{ id, token: 1 }], 1000)).extended.has(id))
      const afterBeat = (yield* leaseLeft)[0]!.left
      assert.isTrue(afterBeat > 0 && afterBeat <= 1000, `1 s from the database's now (${afterBeat} ms left)`)
    }))
})
