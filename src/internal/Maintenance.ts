/**
 * Maintenance: the work only one node should do at a time — today, pruning
 * finished jobs whose retention ran out.
 *
 * Leadership is a Postgres session advisory lock (`pg_try_advisory_lock`) taken
 * on a connection reserved for it and held as long as that connection lives.
 * Every node running maintenance tries to take it every `electionInterval`; the
 * one that holds it is the leader and prunes every `interval`. The lock belongs
 * to the session, so leadership ends with it:
 *
 *   - the leader shuts down: its scope closes, the lock is released (unlocked,
 *     then the connection goes back to the pool);
 *   - the leader's process dies or loses its connection: Postgres ends the
 *     session and drops the lock by itself.
 *
 * Either way another node takes over at its next attempt. A leader also checks
 * its session before every round, so a leader whose connection was cut stops
 * leading and competes again.
 *
 * Two leaders at once (the old one has not noticed yet) are harmless: pruning
 * deletes with `SKIP LOCKED`, and deleting what is already gone does nothing.
 *
 * Pruning reads only rows whose `prune_at` has passed, through the partial index
 * `jobs_prune_idx`, in batches of `batchSize`, so a million retained rows
 * cost nothing until they expire. Times come from Effect's `Clock`: `TestClock`
 * decides what has expired in tests.
 */
import { Cause, Clock, Duration, Effect, Latch, Option } from "effect"
import { InvalidWorkerConfig } from "../Errors.ts"
import type { Pruner, PrunerOptions } from "../Worker.ts"
import { JobStore } from "./Store.ts"

/** The advisory lock key of the maintenance leader ("ej-maint" in ASCII). */
export const leaderLockKey = 0x656a2d6d61696e74n

/** The pruner's settings: `Worker.PrunerOptions`. */
export type Options = PrunerOptions

interface Resolved {
  readonly intervalMillis: number
  readonly batchSize: number
  readonly electionMillis: number
}

/** What a node's pruner offers: `Worker.Pruner`. */
export type Maintenance = Pruner

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

const jitter = (ms: number) => Math.round(ms * (0.9 + Math.random() * 0.2))

/**
 * Starts competing for leadership in the current scope; while leading, prunes.
 * Closing the scope gives leadership up.
 */
export const make = Effect.fnUntraced(function*(
  options: Options,
  onError: (message: string, cause: unknown) => Effect.Effect<void>
) {
  const config = yield* validate(options)
  const store = yield* JobStore
  const leading = yield* Latch.make(false)
  const following = yield* Latch.make(true)
  let leader = false
  let pruned = 0
  let lastPrunedAt: number | undefined

  const setLeader = (value: boolean) =>
    Effect.suspend(() => {
      leader = value
      return value
        ? Effect.andThen(following.close, leading.open)
        : Effect.andThen(leading.close, following.open)
    })

  const pruneDue = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    while (true) {
      const n = yield* store.jobPruneExpired(now, config.batchSize)
      pruned += n
      if (n > 0) yield* Effect.logDebug("pruned finished jobs past their retention", { count: n })
      if (n < config.batchSize) break
    }
    lastPrunedAt = now
  })

  /** One term: take the lock or return at once; while it is held, prune every interval. */
  const term = Effect.scoped(Effect.gen(function*() {
    const session = yield* store.leaderTryAcquire(leaderLockKey)
    if (session === undefined) return
    yield* Effect.addFinalizer(() => setLeader(false))
    yield* setLeader(true)
    yield* Effect.logDebug("maintenance leader", { pid: session.pid })
    while (true) {
      // A connection that died took the lock with it: stop leading, compete again.
      yield* session.check
      yield* pruneDue
      yield* Effect.sleep(jitter(config.intervalMillis))
    }
  }))

  yield* Effect.forkScoped(
    Effect.forever(
      Effect.andThen(
        term.pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : onError("maintenance (pruning) failed", Cause.squash(cause))
          )
        ),
        Effect.suspend(() => Effect.sleep(jitter(config.electionMillis)))
      )
    ).pipe(Effect.annotateLogs({ module: "effect-jobs/Maintenance" }))
  )

  return {
    isLeader: Effect.sync(() => leader),
    awaitLeader: leading.await,
    awaitFollower: following.await,
    pruned: Effect.sync(() => pruned),
    lastPrunedAt: Effect.sync(() => lastPrunedAt)
  } satisfies Maintenance
})
