/**
 * The pruner: deletes finished jobs whose retention ran out, and the dashboard's per-minute
 * throughput rows older than 6 hours. One node at a time does it, the leader
 * (internal/maintenance/Leader.ts).
 *
 * Two leaders at once (the old one has not noticed yet) are harmless: pruning
 * deletes with `SKIP LOCKED`, and deleting what is already gone does nothing.
 *
 * Pruning reads only rows whose `prune_at` has passed, through the partial index
 * `jobs_prune_idx`, in batches of `batchSize`, so a million retained rows
 * cost nothing until they expire. Times come from Effect's `Clock`: `TestClock`
 * decides what has expired in tests.
 *
 * @internal
 */
import { Clock, Duration, Effect, Option } from "effect"
import { InvalidWorkerConfig } from "../../Errors.ts"
import type { Pruner, PrunerOptions } from "../../Worker.ts"
import { JobStore } from "../Store.ts"
import * as Leader from "./Leader.ts"

export { leaderLockKey } from "./Leader.ts"

/** The pruner's settings: `Worker.PrunerOptions`. */
export type Options = PrunerOptions

interface Resolved {
  readonly intervalMillis: number
  readonly batchSize: number
  readonly electionMillis: number
}

const positiveMillis = (label: string, input: Duration.Input | undefined, fallback: number): number => {
  if (input === undefined) return fallback
  const d = Duration.fromInput(input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new InvalidWorkerConfig({ message: `pruner: ${label} must be a finite, positive duration, got ${String(input)}` })
  }
  return ms
}

/** Checks the options; every mistake is an `InvalidWorkerConfig` saying which. */
export const validate = (options: Options): Effect.Effect<Resolved, InvalidWorkerConfig> =>
  Effect.try({
    try: () => {
      const batchSize = options.batchSize ?? 10_000
      if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1_000_000) {
        throw new InvalidWorkerConfig({ message: `pruner: batchSize must be an integer in [1, 1000000], got ${String(batchSize)}` })
      }
      return {
        intervalMillis: positiveMillis("interval", options.interval, 5000),
        batchSize,
        electionMillis: positiveMillis("electionInterval", options.electionInterval, 5000)
      }
    },
    catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
  })

/** How long the per-minute `throughput` rows are kept: `JobsAdmin.throughput` reads up to 6 hours back. */
export const throughputKeptMillis = 6 * 60 * 60 * 1000

/** What `Worker.pruner` is on a worker built with `pruner: false`. */
export const none: Pruner = {
  isLeader: Effect.succeed(false),
  awaitLeader: Effect.never,
  awaitFollower: Effect.void,
  pruned: Effect.succeed(0),
  lastPrunedAt: Effect.succeed(undefined)
}

/**
 * Starts competing for leadership in the current scope; while leading, prunes.
 * Closing the scope gives leadership up.
 */
export const make = Effect.fnUntraced(function*(
  options: Options,
  onError: (message: string, cause: unknown) => Effect.Effect<void>,
  /** More work of the leader's (the no-handler check): run each round after pruning, and when elected. */
  alongside?: { readonly round: Effect.Effect<void>; readonly elected: Effect.Effect<void> }
) {
  const config = yield* validate(options)
  const store = yield* JobStore
  let pruned = 0
  let lastPrunedAt: number | undefined

  const pruneDue = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    // The dashboard's per-minute throughput (migrations/0009): a few rows per minute.
    yield* store.throughputPrune(now - throughputKeptMillis)
    while (true) {
      const n = yield* store.jobPruneExpired(now, config.batchSize)
      pruned += n
      if (n > 0) yield* Effect.logDebug("pruned finished jobs past their retention", { count: n })
      if (n < config.batchSize) break
    }
    lastPrunedAt = now
  })

  const leadership = yield* Leader.make({
    electionMillis: config.electionMillis,
    intervalMillis: config.intervalMillis,
    round: alongside === undefined ? pruneDue : Effect.andThen(pruneDue, alongside.round),
    onElected: alongside?.elected,
    onError: (cause) => onError("maintenance (pruning) failed", cause)
  })

  return {
    ...leadership,
    pruned: Effect.sync(() => pruned),
    lastPrunedAt: Effect.sync(() => lastPrunedAt)
  } satisfies Pruner
})
