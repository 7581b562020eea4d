/**
 * RateLimiterStore: a Postgres store for Effect's `RateLimiter` (`effect/persistence`).
 *
 * `RateLimiter.layer` from Effect, given this store, limits calls across every process
 * that shares the database, as its Redis store does:
 *
 * ```ts
 * const Limiter = RateLimiter.layer.pipe(Layer.provide(RateLimiterStore.layer))
 *
 * const limiter = yield* RateLimiter.RateLimiter
 * yield* RateLimiter.sleep(limiter, { key: "crm-api", limit: 100, window: "1 second" })
 * ```
 *
 * `fixedWindow` and `tokenBucket` have the semantics of Effect's memory and Redis stores,
 * each one statement on the tables of migrations/0013 that locks the key's row and reads
 * the database's clock, so several processes agree on windows and never grant more than
 * the limit together. The worker's queue rate limits (docs/flow-control.md, "Rate limits")
 * count on the same rows: `queueKey(name)` is a queue's key, so a handler that consumes
 * from it shares the queue's budget.
 *
 * Adaptive limiting (`adaptiveConsume`, `adaptiveFeedback`: a limit learned from `429`
 * responses) is the Redis store's, ported to SQL: the phases, epochs and delays of Effect's
 * memory store for the same calls.
 *
 * Keys are at most `maxKeyLength` characters, without NUL or unpaired surrogates (Postgres
 * text cannot hold a NUL, and an unpaired surrogate would be stored as U+FFFD, mixing keys);
 * token counts and rates must be finite and not negative. Anything else fails with a
 * `RateLimiterError` whose reason is a `RateLimitStoreError`, and nothing is written. A
 * database error is a `RateLimitStoreError` too (with the `SqlError` as its cause).
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer } from "effect"
import { RateLimiter } from "effect/persistence"
import { SqlClient, type SqlError } from "effect/sql"
import { PgSchema } from "./PgSchema.ts"
import { assertValid } from "./internal/schemaName.ts"
import { makeRateLimits } from "./internal/Store.ts"

/** The longest key accepted, in UTF-16 code units (the table's own check counts characters). */
export const maxKeyLength = 1000

/**
 * The key of a queue's rate limit, as the worker's claim names it: `queue:<name>`.
 * Consuming from it in a handler counts against the queue's budget.
 */
export const queueKey = (queue: string): string => `queue:${queue}`

/**
 * The key of the rate limit of one group of a queue: `queue-group:<n>:<queue>:<group>`, where
 * `<n>` is the number of characters (code points) of the queue's name, so that no queue or
 * group name, colons included, can make two pairs share a key.
 */
export const groupKey = (queue: string, group: string): string => `queue-group:${[...queue].length}:${queue}:${group}`

const storeError = (message: string, cause?: unknown) =>
  new RateLimiter.RateLimiterError({
    reason: new RateLimiter.RateLimitStoreError(cause === undefined ? { message } : { message, cause })
  })

/** Why a key or number is refused, or undefined when the call can go to the database. */
const problem = (key: string, numbers: Record<string, number | undefined>): string | undefined => {
  if (typeof key !== "string") return "the rate limit key must be a string"
  if (key.length > maxKeyLength) return `the rate limit key is longer than ${maxKeyLength} characters`
  if (key.includes("\u0000")) return "the rate limit key contains a NUL character"
  // With the `u` flag, \p{Surrogate} matches only a surrogate that is not part of a pair.
  if (/\p{Surrogate}/u.test(key)) return "the rate limit key contains an unpaired surrogate"
  for (const [name, value] of Object.entries(numbers)) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      return `${name} must be a finite number, not negative: ${String(value)}`
    }
  }
  return undefined
}

/** Checks the input, then runs the statement; a refused input or a database error is a `RateLimitStoreError`. */
const guarded = <A>(
  operation: string,
  key: string,
  numbers: Record<string, number | undefined>,
  run: () => Effect.Effect<A, SqlError.SqlError>
): Effect.Effect<A, RateLimiter.RateLimiterError> =>
  Effect.suspend(() => {
    const reason = problem(key, numbers)
    if (reason !== undefined) return Effect.fail(storeError(`${operation}: ${reason}`))
    return Effect.mapError(run(), (cause) => storeError(`${operation}: the rate limit statement failed`, cause))
  })

// Effect's own constants for adaptive state (effect/persistence/RateLimiter, not exported):
// a state outlives its phase by a minute, and no learned window or cooldown exceeds an hour.
const adaptiveGraceMillis = 60_000
const adaptiveMaxWindowMillis = 60 * 60 * 1000
const clampAdaptiveMillis = (millis: number): number =>
  Number.isNaN(millis) || millis <= 0 ? 1 : Math.min(millis, adaptiveMaxWindowMillis)

/** The refill interval as milliseconds, which must be more than 0 (a zero one would divide by zero). */
const refillMillis = (refillRate: Duration.Duration): number => {
  const millis = Duration.toMillis(refillRate)
  return millis > 0 ? millis : Number.NaN
}

/**
 * Builds the store on the `SqlClient` (a Postgres one) and schema (`PgSchema`) it finds.
 * Use `layer` unless you need the service value itself.
 */
export const make: Effect.Effect<RateLimiter.RateLimiterStore["Service"], never, SqlClient.SqlClient | PgClient.PgClient> =
  Effect.gen(function*() {
    // Needs sql-pg's client, not just any SqlClient (the statements are Postgres').
    yield* PgClient.PgClient
    // The library's queries name their columns exactly; user-configured name transforms must not apply.
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const store = makeRateLimits(sql, assertValid(yield* PgSchema))
    return RateLimiter.RateLimiterStore.of({
      fixedWindow: (options) => {
        const refill = refillMillis(options.refillRate)
        return guarded(
          "fixedWindow",
          options.key,
          { tokens: options.tokens, refillRate: refill, limit: options.limit },
          () => store.rateFixedWindow(options.key, options.tokens, refill, options.limit)
        ).pipe(Effect.map((row) => [row.count, row.ttl_ms] as const))
      },
      tokenBucket: (options) => {
        const refill = refillMillis(options.refillRate)
        return guarded(
          "tokenBucket",
          options.key,
          { tokens: options.tokens, refillRate: refill, limit: options.limit },
          () => store.rateTokenBucket(options.key, options.tokens, options.limit, refill, options.allowOverflow)
        ).pipe(Effect.map((row) => [row.remaining, row.elapsed_ms] as const))
      },
      adaptiveConsume: (options) =>
        guarded(
          "adaptiveConsume",
          options.key,
          { tokens: options.tokens, fallbackWindow: Duration.toMillis(options.fallbackWindow) },
          () =>
            store.rateAdaptiveConsume(options.key, options.tokens, Duration.toMillis(options.fallbackWindow), adaptiveGraceMillis)
        ).pipe(Effect.map((row) => ({
          delay: row.delay_ms <= 0 ? Duration.zero : Duration.millis(row.delay_ms),
          epoch: row.epoch,
          phase: row.phase
        }))),
      adaptiveFeedback: (options) => {
        // Only a 429 with a Retry-After teaches anything (as in Effect's stores).
        if (options.status !== 429 || options.retryAfter === undefined) return Effect.void
        const retryAfterMillis = clampAdaptiveMillis(Duration.toMillis(options.retryAfter))
        return guarded(
          "adaptiveFeedback",
          options.key,
          { tokens: options.tokens, epoch: options.epoch },
          () =>
            store.rateAdaptiveFeedback({
              key: options.key,
              epoch: options.epoch,
              tokens: options.tokens,
              retryAfterMillis,
              graceMillis: adaptiveGraceMillis,
              maxWindowMillis: adaptiveMaxWindowMillis
            })
        )
      }
    })
  })

/**
 * The store as a layer, for `RateLimiter.layer`; needs a `PgClient` (and the migrations of
 * `Migrations.run`, 0013 and later). Reads `PgSchema` like the library's other layers.
 */
export const layer: Layer.Layer<RateLimiter.RateLimiterStore, never, SqlClient.SqlClient | PgClient.PgClient> = Layer
  .effect(RateLimiter.RateLimiterStore, make)
