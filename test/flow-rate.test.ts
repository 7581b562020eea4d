/**
 * Rate limits of a queue and of its groups in the gated claim (`QueueConfig.flow.rate`,
 * `flow.groupRate`; migrations/0012's claim_gated over migration 0013's rate windows): a job
 * over the limit is not claimed (available, no attempt spent), the budget is the one a
 * handler's `RateLimiter.consume` uses on the same key, a worker held back by a rate limit
 * claims again when its window frees (not at its poll), and bad rate options are typed errors.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import * as RateLimiter from "effect/persistence/RateLimiter"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig } from "../src/Errors.ts"
import { Job, Jobs, RateLimiterStore, Worker } from "../src/index.ts"
import { type GatedFlow, JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))
const Args = Schema.Struct({ n: Schema.Number })
const hour = 3_600_000

const flow = (over: Partial<GatedFlow>): GatedFlow => ({
  global: undefined,
  perGroup: undefined,
  sequence: false,
  onDead: "block",
  rate: undefined,
  groupRate: undefined,
  ...over
})

const claim = (queue: string, limit: number, f: GatedFlow) =>
  Effect.flatMap(JobStore, (store) =>
    store.jobClaimGated({ queue, limit, now: Date.now(), leaseMillis: 30_000, workerId: "test", flow: f }))

const states = (queue: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ readonly state: string; readonly attempt: number; readonly n: number }>`
      SELECT state, attempt, count(*)::int AS n FROM effect_jobs.jobs WHERE queue = ${queue}
      GROUP BY state, attempt ORDER BY state, attempt`)

layer(TestLayer, { excludeTestServices: true })("flow rate limits", (it) => {
  it.effect("a queue's rate: claims stop at the limit for the window; the rest stay available, no attempt spent; the wait is given", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-queue", { args: Args, queue: "fr-queue" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(J, Array.from({ length: 12 }, (_, n) => ({ n })))
      const f = flow({ rate: { limit: 5, windowMillis: hour } })
      const first = yield* claim("fr-queue", 4, f)
      assert.lengthOf(first.rows, 4)
      const second = yield* claim("fr-queue", 4, f)
      assert.lengthOf(second.rows, 1, "one token was left")
      assert.isAbove(second.waitMillis ?? 0, hour / 2, "used up: wait for the window")
      const third = yield* claim("fr-queue", 4, f)
      assert.lengthOf(third.rows, 0)
      assert.isAbove(third.waitMillis ?? 0, hour / 2)
      assert.deepStrictEqual(yield* states("fr-queue"), [
        { state: "available", attempt: 0, n: 7 },
        { state: "running", attempt: 1, n: 5 }
      ])
    }))

  it.effect("the queue's budget is shared with RateLimiter.consume on RateLimiterStore.queueKey", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-shared", { args: Args, queue: "fr-shared" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(J, Array.from({ length: 10 }, (_, n) => ({ n })))
      const limiter = yield* RateLimiter.make.pipe(Effect.provide(RateLimiterStore.layer))
      yield* limiter.consume({ key: RateLimiterStore.queueKey("fr-shared"), limit: 6, window: "1 hour", tokens: 4, onExceeded: "fail" })
      const f = flow({ rate: { limit: 6, windowMillis: hour } })
      assert.lengthOf((yield* claim("fr-shared", 10, f)).rows, 2, "6 per hour, 4 taken by a handler")
      const over = yield* Effect.flip(
        limiter.consume({ key: RateLimiterStore.queueKey("fr-shared"), limit: 6, window: "1 hour", onExceeded: "fail" })
      )
      assert.strictEqual(over.reason._tag, "RateLimitExceeded")
    }))

  it.effect("a group's rate: at most its limit per group and window; other groups go on", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-group", { args: Args, queue: "fr-group" })
      const jobs = yield* Jobs.Jobs
      for (const group of ["a", "b", "c"]) {
        yield* jobs.enqueueMany(J, Array.from({ length: 4 }, (_, n) => ({ n })), { group })
      }
      const f = flow({ groupRate: { limit: 2, windowMillis: hour } })
      const first = yield* claim("fr-group", 20, f)
      assert.lengthOf(first.rows, 6)
      const again = yield* claim("fr-group", 20, f)
      assert.lengthOf(again.rows, 0)
      const sql = yield* SqlClient.SqlClient
      const perGroup = yield* sql<{ readonly group_key: string; readonly n: number }>`
        SELECT group_key, count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'fr-group' AND state = 'running'
        GROUP BY group_key ORDER BY group_key`
      assert.deepStrictEqual(perGroup, [{ group_key: "a", n: 2 }, { group_key: "b", n: 2 }, { group_key: "c", n: 2 }])
    }))

  it.effect("a worker held back by its rate claims again when the window frees, not at its poll (1 hour here)", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-wake", { args: Args, queue: "fr-wake" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(J, Array.from({ length: 12 }, (_, n) => ({ n })))
      yield* startWorker(
        { pruner: false, queues: { "fr-wake": { concurrency: 4, pollInterval: "1 hour", flow: { rate: { limit: 4, interval: "200 millis" } } } } },
        Layer.merge(Job.toLayer(J, () => Effect.void), Layer.fresh(TestDb.pool({ maxConnections: 4 })))
      )
      const sql = yield* SqlClient.SqlClient
      // Three windows at least; with the poll alone, the second would come an hour later.
      yield* waitFor(
        "12 jobs completed",
        Effect.map(
          sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'fr-wake' AND state = 'completed'`,
          (rows) => rows[0]!.n === 12 ? Option.some(12) : Option.none()
        ),
        { timeout: "30 seconds" }
      )
      // No job ever spent more than its one attempt: over the limit, a job waits unclaimed.
      const attempts = yield* sql<{ readonly max: number }>`SELECT max(attempt)::int AS max FROM effect_jobs.jobs WHERE queue = 'fr-wake'`
      assert.strictEqual(attempts[0]!.max, 1)
    }), { timeout: 40_000 })

  it.effect("flow.global as a Setting: read at startup (an invalid value is InvalidWorkerConfig), and the limit holds", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-setting", { args: Args, queue: "fr-setting" })
      const jobs = yield* Jobs.Jobs
      const handlers = (layer: Layer.Layer<never>) => Layer.merge(layer, Layer.fresh(TestDb.pool({ maxConnections: 4 })))
      const refused = yield* Effect.exit(Effect.scoped(startWorker(
        { pruner: false, queues: { "fr-setting": { concurrency: 4, flow: { global: Effect.succeed(0) } } } },
        handlers(Job.toLayer(J, () => Effect.void))
      )))
      assert.strictEqual(refused._tag, "Failure")
      let active = 0
      let most = 0
      yield* jobs.enqueueMany(J, Array.from({ length: 30 }, (_, n) => ({ n })))
      yield* startWorker(
        { pruner: false, queues: { "fr-setting": { concurrency: 4, flow: { global: Effect.succeed(2) } } } },
        handlers(Job.toLayer(J, () =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              active++
              most = Math.max(most, active)
            }),
            () => Effect.yieldNow,
            () => Effect.sync(() => void active--)
          )))
      )
      const sql = yield* SqlClient.SqlClient
      yield* waitFor(
        "30 jobs completed",
        Effect.map(
          sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'fr-setting' AND state = 'completed'`,
          (rows) => rows[0]!.n === 30 ? Option.some(30) : Option.none()
        ),
        { timeout: "30 seconds" }
      )
      assert.isAtMost(most, 2)
    }), { timeout: 40_000 })

  it.effect("bad rate options: InvalidWorkerConfig, the worker does not start", () =>
    Effect.gen(function*() {
      const J = Job.make("fr-bad", { args: Args, queue: "fr-bad" })
      const bad: ReadonlyArray<unknown> = [
        { limit: 0, interval: "1 second" },
        { limit: -3, interval: "1 second" },
        { limit: 1.5, interval: "1 second" },
        { limit: 10, interval: -1 },
        { limit: 10, interval: "0 millis" },
        { limit: 10 },
        { interval: "1 second" },
        "10 per second"
      ]
      for (const rate of bad) {
        for (const key of ["rate", "groupRate"] as const) {
          const exit = yield* Effect.exit(Effect.scoped(
            startWorker(
              { pruner: false, queues: { "fr-bad": { flow: { [key]: rate } as Worker.FlowOptions } } },
              Layer.merge(Job.toLayer(J, () => Effect.void), Layer.fresh(TestDb.pool({ maxConnections: 4 })))
            )
          ))
          assert.isTrue(exit._tag === "Failure", `${key} ${JSON.stringify(rate)}`)
          if (exit._tag === "Failure") {
            const e = exit.cause.reasons.find((r) => r._tag === "Fail")
            assert.instanceOf(e?._tag === "Fail" ? e.error : undefined, InvalidWorkerConfig, `${key} ${JSON.stringify(rate)}`)
          }
        }
      }
    }))
})

