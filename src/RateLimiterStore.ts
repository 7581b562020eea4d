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
 * Not supported: adaptive limiting (`adaptiveConsume`, `adaptiveFeedback`). This store keeps
 * no adaptive state: `adaptiveConsume` always answers a zero delay in the `"inactive"` phase
 * (what Effect's stores answer for a key without adaptive state) and `adaptiveFeedback`
 * records nothing.
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
      // No adaptive state is kept (see the module's documentation): what a store answers for a
      // key without adaptive state.
      adaptiveConsume: () => Effect.succeed({ delay: Duration.zero, epoch: 0, phase: "inactive" as const }),
      adaptiveFeedback: () => Effect.void
    })
  })

/**
 * The store as a layer, for `RateLimiter.layer`; needs a `PgClient` (and the migrations of
 * `Migrations.run`, 0013 and later). Reads `PgSchema` like the library's other layers.
 */
export const layer: Layer.Layer<RateLimiter.RateLimiterStore, never, SqlClient.SqlClient | PgClient.PgClient> = Layer
  .effect(RateLimiter.RateLimiterStore, make)
