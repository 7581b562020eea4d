/**
 * The Postgres `RateLimiterStore` (src/RateLimiterStore.ts, migrations/0013): the same answers
 * as Effect's memory store for the same calls, `RateLimiter.consume` through it, no more than
 * the limit granted when separate pools hammer one key, `rate_grant` (the worker's claim) on
 * the same budget, bad keys refused with nothing written, expired rows pruned.
 *
 * Windows are one hour unless a test is about time, so the clock cannot move a window during a
 * test; a test about time waits on the database's clock (the store's), never sleeps.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Exit, Layer, Option } from "effect"
import { RateLimiter } from "effect/persistence"
import { SqlClient } from "effect/sql"
import { PgSchema, RateLimiterStore } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { waitFor } from "./support/probes.ts"

type Store = RateLimiter.RateLimiterStore["Service"]

const hour = Duration.hours(1)
const hourMillis = Duration.toMillis(hour)

const memoryStore = Effect.provide(Effect.service(RateLimiter.RateLimiterStore), RateLimiter.layerStoreMemory)
const pgStore = Effect.service(RateLimiter.RateLimiterStore)

/** A fresh pool with the store and a limiter on it: another "process". */
const limiterOnNewPool = Layer.provideMerge(
  RateLimiter.layer,
  Layer.provideMerge(RateLimiterStore.layer, TestDb.pool({ maxConnections: 4 }))
)

const sqlOf = Effect.map(SqlClient.SqlClient, (sql) => sql.withoutTransforms())

const rowCount = (table: "rate_windows" | "rate_buckets" | "rate_adaptive") =>
  Effect.flatMap(sqlOf, (sql) =>
    Effect.map(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql.literal(`effect_jobs.${table}`)}`, (r) => r[0]!.n))

/**
 * Waits until the database's clock has passed the instant the SQL expression `at` gives (read
 * from a row, compared in SQL: a JavaScript Date would drop the microseconds), every 10 ms.
 */
const dbClockPassed = (what: string, at: string) =>
  waitFor(what, Effect.flatMap(sqlOf, (sql) =>
    Effect.map(
      sql<{ readonly passed: boolean }>`SELECT clock_timestamp() > (${sql.literal(at)}) AS passed`,
      (r) => r[0]!.passed ? Option.some(true) : Option.none()
    )).pipe(Effect.orDie), { timeout: "10 seconds" })

/** The end of the window of `key` (a literal key of the test), as SQL. */
const windowEnd = (key: string) => `SELECT expires_at FROM effect_jobs.rate_windows WHERE key = '${key}'`

// ---------------------------------------------------------------------------------------------
// The same calls on the memory store and on Postgres
// ---------------------------------------------------------------------------------------------

interface WindowCall {
  readonly tokens: number
  readonly limit: number | undefined
}

/** [count, ttl in refill intervals] for each call: what does not depend on the milliseconds a test takes. */
const runWindow = (store: Store, key: string, refill: Duration.Duration, calls: ReadonlyArray<WindowCall>) =>
  Effect.forEach(calls, (c) =>
    Effect.map(
      store.fixedWindow({ key, tokens: c.tokens, refillRate: refill, limit: c.limit }),
      ([count, ttl]) => [count, Math.round(ttl / Duration.toMillis(refill))] as const
    ))

interface BucketCall {
  readonly tokens: number
  readonly allowOverflow: boolean
}

/** [remaining, whole refill intervals elapsed] for each call. */
const runBucket = (store: Store, key: string, limit: number, refill: Duration.Duration, calls: ReadonlyArray<BucketCall>) =>
  Effect.forEach(calls, (c) =>
    Effect.map(
      store.tokenBucket({ key, tokens: c.tokens, limit, refillRate: refill, allowOverflow: c.allowOverflow }),
      ([remaining, elapsed]) => [remaining, Math.floor(elapsed / Duration.toMillis(refill))] as const
    ))

const windowSequences: ReadonlyArray<ReadonlyArray<WindowCall>> = [
  // fail mode (a limit): fills up to 5, refuses without counting, takes what still fits
  [3, 1, 2, 1, 1, 4, 5].map((tokens) => ({ tokens, limit: 5 })),
  // delay mode (no limit): counts beyond the limit
  [1, 1, 1, 2, 3, 10].map((tokens) => ({ tokens, limit: undefined })),
  // mixed, fractional tokens, more than the limit at once
  [
    { tokens: 0.5, limit: 2 },
    { tokens: 1.25, limit: 2 },
    { tokens: 0.5, limit: 2 },
    { tokens: 0.25, limit: 2 },
    { tokens: 3, limit: undefined },
    { tokens: 1, limit: 2 }
  ],
  // limit 0 means no limit in Effect's stores
  [{ tokens: 4, limit: 0 }, { tokens: 1, limit: 0 }, { tokens: 7, limit: 1 }]
]

const bucketSequences: ReadonlyArray<{ readonly limit: number; readonly calls: ReadonlyArray<BucketCall> }> = [
  { limit: 5, calls: [2, 2, 2, 1, 1, 1].map((tokens) => ({ tokens, allowOverflow: false })) },
  { limit: 3, calls: [1, 1, 1, 1, 2, 5].map((tokens) => ({ tokens, allowOverflow: true })) },
  {
    limit: 4,
    calls: [
      { tokens: 6, allowOverflow: false },
      { tokens: 1.5, allowOverflow: false },
      { tokens: 3, allowOverflow: false },
      { tokens: 3, allowOverflow: true },
      { tokens: 0.5, allowOverflow: false },
      { tokens: 1, allowOverflow: true }
    ]
  }
]

type AdaptiveStep =
  | { readonly consume: number }
  | {
    readonly feedback: {
      /** "last": the epoch the previous consume returned. */
      readonly epoch: number | "last"
      readonly tokens: number
      readonly status: number
      readonly retryAfter: Duration.Duration | undefined
    }
  }
  /** Consumes (one token) until the phase is no longer "cooldown": the first call after the cooldown ends. */
  | { readonly consumeAfterCooldown: true }

/** [phase, epoch, delay in whole minutes] of each consume. */
const runAdaptive = (store: Store, key: string, steps: ReadonlyArray<AdaptiveStep>) =>
  Effect.gen(function*() {
    const out: Array<readonly [string, number, number]> = []
    let lastEpoch = 0
    const consume = (tokens: number) =>
      Effect.map(
        store.adaptiveConsume({ key, tokens, fallbackLimit: 10, fallbackWindow: Duration.seconds(10) }),
        (r) => {
          lastEpoch = r.epoch
          return [r.phase, r.epoch, Math.round(Duration.toMillis(r.delay) / 60_000)] as const
        }
      )
    for (const step of steps) {
      if ("consume" in step) out.push(yield* consume(step.consume))
      else if ("feedback" in step) {
        const f = step.feedback
        yield* store.adaptiveFeedback({ key, ...f, epoch: f.epoch === "last" ? lastEpoch : f.epoch })
      } else {
        out.push(
          yield* waitFor("the cooldown to end", Effect.map(Effect.orDie(consume(1)), (r) => r[0] === "cooldown" ? Option.none() : Option.some(r)), {
            timeout: "10 seconds"
          })
        )
      }
    }
    return out
  })

const too = (epoch: number | "last", retryAfter: Duration.Duration, tokens = 1) => ({
  feedback: { epoch, tokens, status: 429, retryAfter }
})

const adaptiveSequences: ReadonlyArray<ReadonlyArray<AdaptiveStep>> = [
  // no state; feedback that is not a 429, or of another epoch, is ignored; cooldowns only grow
  [
    { consume: 1 },
    { feedback: { epoch: "last", tokens: 1, status: 200, retryAfter: hour } },
    { feedback: { epoch: "last", tokens: 1, status: 429, retryAfter: undefined } },
    { consume: 1 },
    too(3, hour),
    { consume: 1 },
    too("last", hour),
    { consume: 1 },
    too(0, Duration.minutes(30)),
    { consume: 1 }
  ],
  // cooldown, learning, learned (a window of the 2 accepted tokens per hour), back to cooldown
  [
    too(0, Duration.millis(300)),
    { consume: 1 },
    { consumeAfterCooldown: true },
    { consume: 1 },
    { consume: 1 },
    too("last", hour),
    { consume: 1 },
    { consume: 1 },
    { consume: 1 },
    too(1, hour),
    { consume: 1 },
    too("last", hour),
    { consume: 1 }
  ],
  // learning with nothing accepted before the 429: a cooldown again, same epoch
  [too(0, Duration.millis(300)), { consumeAfterCooldown: true }, too("last", hour), { consume: 1 }]
]

layer(Layer.provideMerge(limiterOnNewPool, TestDb.database), { excludeTestServices: true })("RateLimiterStore", (it) => {
  it.effect("fixedWindow answers as Effect's memory store for the same calls", () =>
    Effect.gen(function*() {
      const memory = yield* memoryStore
      const pg = yield* pgStore
      for (const [i, calls] of windowSequences.entries()) {
        const refill = Duration.divideUnsafe(hour, 5)
        const expected = yield* runWindow(memory, `fw-${i}`, refill, calls)
        const actual = yield* runWindow(pg, `fw-${i}`, refill, calls)
        assert.deepStrictEqual(actual, expected, `sequence ${i}: ${JSON.stringify(calls)}`)
      }
    }))

  it.effect("tokenBucket answers as Effect's memory store for the same calls", () =>
    Effect.gen(function*() {
      const memory = yield* memoryStore
      const pg = yield* pgStore
      for (const [i, { calls, limit }] of bucketSequences.entries()) {
        const refill = Duration.divideUnsafe(hour, limit)
        const expected = yield* runBucket(memory, `tb-${i}`, limit, refill, calls)
        const actual = yield* runBucket(pg, `tb-${i}`, limit, refill, calls)
        assert.deepStrictEqual(actual, expected, `sequence ${i}: ${JSON.stringify(calls)}`)
      }
    }))

  it.effect("adaptiveConsume / adaptiveFeedback answer as Effect's memory store for the same calls", () =>
    Effect.gen(function*() {
      const memory = yield* memoryStore
      const pg = yield* pgStore
      for (const [i, steps] of adaptiveSequences.entries()) {
        const [expected, actual] = yield* Effect.all([
          runAdaptive(memory, `ad-${i}`, steps),
          runAdaptive(pg, `ad-${i}`, steps)
        ], { concurrency: "unbounded" })
        assert.deepStrictEqual(actual, expected, `sequence ${i}`)
      }
      // What the sequences went through, so that they show something.
      const phases = new Set((yield* runAdaptive(memory, "ad-check", adaptiveSequences[1]!)).map((r) => r[0]))
      assert.deepStrictEqual([...phases].sort(), ["cooldown", "learned", "learning"])
    }))

  it.effect("RateLimiter.consume: fail mode fails with RateLimitExceeded, delay mode returns the delay", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      for (const algorithm of ["fixed-window", "token-bucket"] as const) {
        const fail = { key: `consume-fail-${algorithm}`, limit: 2, window: hour, algorithm, onExceeded: "fail" } as const
        assert.strictEqual((yield* limiter.consume(fail)).remaining, 1)
        assert.strictEqual((yield* limiter.consume(fail)).remaining, 0)
        const refused = yield* Effect.flip(limiter.consume(fail))
        assert.strictEqual(refused.reason._tag, "RateLimitExceeded", algorithm)
        if (refused.reason._tag === "RateLimitExceeded") {
          assert.strictEqual(refused.reason.limit, 2)
          // The retry comes within the hour (fixed window: its end; bucket: the next token, half an hour).
          assert.isAbove(Duration.toMillis(refused.reason.retryAfter), 0)
          assert.isAtMost(Duration.toMillis(refused.reason.retryAfter), hourMillis)
        }

        const delay = { ...fail, key: `consume-delay-${algorithm}`, onExceeded: "delay" } as const
        const delays: Array<number> = []
        for (let i = 0; i < 5; i++) delays.push(Duration.toMillis((yield* limiter.consume(delay)).delay))
        // In refill intervals (half an hour): fixed window 0 0 | 2 2 | 4 (one window per pair);
        // token bucket 0 0, then one more interval per call.
        const inHalfHours = delays.map((d) => Math.round(d / (hourMillis / 2)))
        assert.deepStrictEqual(inHalfHours, algorithm === "fixed-window" ? [0, 0, 2, 2, 4] : [0, 0, 1, 2, 3], algorithm)
      }
    }))

  it.effect("a short window: refused until the database's clock passes the window's end, then open again", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const options = { key: "short-window", limit: 2, window: "300 millis", onExceeded: "fail" } as const
      yield* limiter.consume(options)
      yield* limiter.consume(options)
      assert.strictEqual((yield* Effect.flip(limiter.consume(options))).reason._tag, "RateLimitExceeded")
      yield* dbClockPassed("the window to end", windowEnd("short-window"))
      assert.strictEqual((yield* limiter.consume(options)).remaining, 1, "a new window")
    }))

  it.effect("a short token bucket: refused until one refill interval has passed on the database's clock", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.RateLimiter
      const options = { key: "short-bucket", limit: 2, window: "400 millis", algorithm: "token-bucket", onExceeded: "fail" } as const
      yield* limiter.consume(options)
      yield* limiter.consume(options)
      assert.strictEqual((yield* Effect.flip(limiter.consume(options))).reason._tag, "RateLimitExceeded")
      // One token is back one refill interval (200 ms) after the interval started.
      yield* dbClockPassed(
        "one token to be refilled",
        `SELECT refilled_at + interval '200 milliseconds' FROM effect_jobs.rate_buckets WHERE key = 'short-bucket'`
      )
      assert.strictEqual((yield* limiter.consume(options)).remaining, 0, "the refilled token")
    }))

  it.effect("separate pools hammering one key never get more than the limit", () =>
    Effect.gen(function*() {
      const limit = 40
      const hammer = (algorithm: "fixed-window" | "token-bucket", key: string) =>
        Effect.gen(function*() {
          const limiter = yield* RateLimiter.RateLimiter
          const results = yield* Effect.forEach(
            Array.from({ length: 60 }),
            () => Effect.exit(limiter.consume({ key, limit, window: hour, algorithm, onExceeded: "fail" })),
            { concurrency: 8 }
          )
          for (const r of results) {
            if (Exit.isFailure(r)) {
              const error = Option.getOrThrow(Exit.findErrorOption(r))
              assert.strictEqual(error.reason._tag, "RateLimitExceeded", String(error))
            }
          }
          return results.filter(Exit.isSuccess).length
        }).pipe(Effect.provide(limiterOnNewPool))
      for (const algorithm of ["fixed-window", "token-bucket"] as const) {
        const granted = yield* Effect.all(Array.from({ length: 4 }, () => hammer(algorithm, `hammer-${algorithm}`)), {
          concurrency: "unbounded"
        })
        assert.strictEqual(granted.reduce((a, b) => a + b, 0), limit, `${algorithm}: ${JSON.stringify(granted)}`)
      }
    }))

  it.effect("rate_grant: takes what is left of the window, on the budget RateLimiter.consume counts on", () =>
    Effect.gen(function*() {
      const sql = yield* sqlOf
      const grant = (key: string, want: number, lim: number, windowMs: number) =>
        Effect.map(
          sql<{ readonly n: number }>`SELECT effect_jobs.rate_grant(${key}, ${want}, ${lim}, ${windowMs}) AS n`,
          (r) => r[0]!.n
        )
      const key = RateLimiterStore.queueKey("emails")
      assert.strictEqual(key, "queue:emails")
      assert.deepStrictEqual(
        [yield* grant(key, 3, 5, hourMillis), yield* grant(key, 3, 5, hourMillis), yield* grant(key, 3, 5, hourMillis)],
        [3, 2, 0]
      )
      assert.deepStrictEqual([yield* grant("g-zero", 0, 5, hourMillis), yield* grant("g-zero", 3, 0, hourMillis)], [0, 0])

      // A handler's consume and the claim's grant share one window.
      const limiter = yield* RateLimiter.RateLimiter
      const shared = { key: "queue:shared", limit: 5, window: hour, onExceeded: "fail" } as const
      yield* limiter.consume({ ...shared, tokens: 4 })
      assert.strictEqual(yield* grant("queue:shared", 3, 5, hourMillis), 1)
      assert.strictEqual((yield* Effect.flip(limiter.consume(shared))).reason._tag, "RateLimitExceeded")

      // When the window ends (on the database's clock), it grants again.
      assert.strictEqual(yield* grant("g-short", 4, 4, 200), 4)
      assert.strictEqual(yield* grant("g-short", 1, 4, 200), 0)
      yield* dbClockPassed("the window to end", windowEnd("g-short"))
      assert.strictEqual(yield* grant("g-short", 9, 4, 200), 4)
    }))

  it.effect("rate_grant from separate pools never grants more than the limit", () =>
    Effect.gen(function*() {
      const limit = 50
      const grants = (pool: number) =>
        Effect.gen(function*() {
          const sql = yield* sqlOf
          const got = yield* Effect.forEach(Array.from({ length: 30 }), (_, i) =>
            Effect.map(
              sql<{ readonly n: number }>`SELECT effect_jobs.rate_grant('queue:race', ${1 + ((i + pool) % 3)}, ${limit}, ${hourMillis}) AS n`,
              (r) => r[0]!.n
            ), { concurrency: 4 })
          return got.reduce((a, b) => a + b, 0)
        }).pipe(Effect.provide(TestDb.pool({ maxConnections: 4 })))
      // Plus a handler consuming one at a time on the same key.
      const consumed = Effect.gen(function*() {
        const limiter = yield* RateLimiter.RateLimiter
        const results = yield* Effect.forEach(Array.from({ length: 20 }), () =>
          Effect.exit(limiter.consume({ key: "queue:race", limit, window: hour, onExceeded: "fail" })), { concurrency: 4 })
        return results.filter(Exit.isSuccess).length
      }).pipe(Effect.provide(limiterOnNewPool))
      const totals = yield* Effect.all([grants(0), grants(1), grants(2), consumed], { concurrency: "unbounded" })
      assert.strictEqual(totals.reduce((a, b) => a + b, 0), limit, JSON.stringify(totals))
    }))

  it.effect("a bad key is a RateLimitStoreError and writes nothing", () =>
    Effect.gen(function*() {
      const store = yield* pgStore
      const limiter = yield* RateLimiter.RateLimiter
      const windowsBefore = yield* rowCount("rate_windows")
      const bucketsBefore = yield* rowCount("rate_buckets")
      const bad = ["nul\u0000key", "x".repeat(1001), "lone \ud800 surrogate"]
      for (const key of bad) {
        for (const algorithm of ["fixed-window", "token-bucket"] as const) {
          const error = yield* Effect.flip(limiter.consume({ key, limit: 5, window: hour, algorithm }))
          assert.strictEqual(error.reason._tag, "RateLimitStoreError", `${algorithm} ${JSON.stringify(key.slice(0, 20))}`)
        }
      }
      const adaptiveBefore = yield* rowCount("rate_adaptive")
      for (const key of bad) {
        const consumed = yield* Effect.flip(
          limiter.adaptiveConsume({ key, tokens: 1, fallbackLimit: 5, fallbackWindow: hour })
        )
        assert.strictEqual(consumed.reason._tag, "RateLimitStoreError")
        const fed = yield* Effect.flip(limiter.adaptiveFeedback({ key, epoch: 0, tokens: 1, status: 429, retryAfter: hour }))
        assert.strictEqual(fed.reason._tag, "RateLimitStoreError")
      }
      assert.strictEqual(yield* rowCount("rate_adaptive"), adaptiveBefore)
      const negative = yield* Effect.flip(store.fixedWindow({ key: "neg", tokens: -1, refillRate: hour, limit: 5 }))
      assert.strictEqual(negative.reason._tag, "RateLimitStoreError")
      const zeroRefill = yield* Effect.flip(
        store.tokenBucket({ key: "zero", tokens: 1, limit: 5, refillRate: Duration.zero, allowOverflow: false })
      )
      assert.strictEqual(zeroRefill.reason._tag, "RateLimitStoreError")
      assert.strictEqual(yield* rowCount("rate_windows"), windowsBefore)
      assert.strictEqual(yield* rowCount("rate_buckets"), bucketsBefore)
      // 1000 characters is still a key.
      yield* limiter.consume({ key: "y".repeat(1000), limit: 5, window: hour })
    }))

  it.effect("a database error is a RateLimitStoreError, not a defect", () =>
    Effect.gen(function*() {
      // A schema without the migrations: the functions do not exist.
      const store = yield* Effect.provide(RateLimiterStore.make, Layer.succeed(PgSchema.PgSchema, "not_migrated"))
      const exit = yield* Effect.exit(store.fixedWindow({ key: "k", tokens: 1, refillRate: hour, limit: 5 }))
      assert.isTrue(Exit.isFailure(exit))
      const error = Option.getOrThrow(Exit.findErrorOption(exit))
      assert.strictEqual(error.reason._tag, "RateLimitStoreError")
      assert.isDefined(error.reason._tag === "RateLimitStoreError" ? error.reason.cause : undefined, "the SqlError is kept")
    }))

  it.effect("a call that creates a row first deletes up to 10 expired rows of other keys", () =>
    Effect.gen(function*() {
      const sql = yield* sqlOf
      yield* sql`DELETE FROM effect_jobs.rate_windows`
      yield* sql`DELETE FROM effect_jobs.rate_buckets`
      yield* sql`
        INSERT INTO effect_jobs.rate_windows (key, tokens, expires_at)
        SELECT 'old-' || g, 1, clock_timestamp() - interval '1 minute' FROM generate_series(1, 25) g`
      yield* sql`
        INSERT INTO effect_jobs.rate_buckets (key, tokens, refilled_at, expires_at)
        SELECT 'old-' || g, 1, clock_timestamp() - interval '2 minutes', clock_timestamp() - interval '1 minute'
        FROM generate_series(1, 15) g`
      const limiter = yield* RateLimiter.RateLimiter
      const take = (key: string, algorithm: "fixed-window" | "token-bucket" = "fixed-window") =>
        limiter.consume({ key, limit: 5, window: hour, algorithm })
      yield* take("live-1")
      assert.strictEqual(yield* rowCount("rate_windows"), 15 + 1, "10 expired ones deleted, the new one written")
      yield* take("live-1")
      assert.strictEqual(yield* rowCount("rate_windows"), 15 + 1, "a call on a live key deletes nothing")
      yield* take("live-2")
      yield* take("live-3")
      assert.strictEqual(yield* rowCount("rate_windows"), 3, "only the live windows are left")
      yield* take("live-1", "token-bucket")
      yield* take("live-2", "token-bucket")
      assert.strictEqual(yield* rowCount("rate_buckets"), 2, "only the live buckets are left")
    }))
})
