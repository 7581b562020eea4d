/**
 * Leader election for the work only one node should do at a time: pruning (Pruner.ts) and
 * the no-handler check (NoHandler.ts).
 *
 * Leadership is a Postgres session advisory lock (`pg_try_advisory_lock`) taken
 * on a connection reserved for it and held as long as that connection lives.
 * Every node tries to take it every `electionMillis`; the one that holds it is the
 * leader and runs its `round` every `intervalMillis`. The lock belongs to the
 * session, so leadership ends with it:
 *
 *   - the leader shuts down: its scope closes, the lock is released (unlocked,
 *     then the connection goes back to the pool);
 *   - the leader's process dies or loses its connection: Postgres ends the
 *     session and drops the lock by itself.
 *
 * Either way another node takes over at its next attempt. A leader also checks
 * its session before every round, so a leader whose connection was cut stops
 * leading and competes again. The lock is per schema (`leaderTryAcquire`).
 *
 * @internal
 */
import { Cause, Effect, Latch } from "effect"
import { JobStore } from "../Store.ts"
import { jitter } from "../worker/Config.ts"

/** The advisory lock key of the maintenance leader ("ej-maint" in ASCII). */
export const leaderLockKey = 0x656a2d6d61696e74n

export interface Leadership {
  /** Whether this node leads now. */
  readonly isLeader: Effect.Effect<boolean>
  /** Waits until this node leads (at once if it does). */
  readonly awaitLeader: Effect.Effect<void>
  /** Waits until this node has stopped leading (at once if it does not lead). */
  readonly awaitFollower: Effect.Effect<void>
}

/**
 * Starts competing for leadership in the current scope; while leading, runs `round`
 * every `intervalMillis`. Closing the scope gives leadership up.
 */
export const make = Effect.fnUntraced(function*<E>(options: {
  readonly electionMillis: number
  readonly intervalMillis: number
  readonly round: Effect.Effect<void, E>
  /** Run each time this node is elected, before its first round. */
  readonly onElected?: Effect.Effect<void> | undefined
  readonly onError: (cause: unknown) => Effect.Effect<void>
}) {
  const store = yield* JobStore
  const leading = yield* Latch.make(false)
  const following = yield* Latch.make(true)
  let leader = false

  const setLeader = (value: boolean) =>
    Effect.suspend(() => {
      leader = value
      return value
        ? Effect.andThen(following.close, leading.open)
        : Effect.andThen(leading.close, following.open)
    })

  /** One term: take the lock or return at once; while it is held, run a round every interval. */
  const term = Effect.scoped(Effect.gen(function*() {
    const session = yield* store.leaderTryAcquire(leaderLockKey)
    if (session === undefined) return
    yield* Effect.addFinalizer(() => setLeader(false))
    yield* setLeader(true)
    if (options.onElected !== undefined) yield* options.onElected
    yield* Effect.logDebug("maintenance leader", { pid: session.pid })
    while (true) {
      // A connection that died took the lock with it: stop leading, compete again.
      yield* session.check
      yield* options.round
      yield* Effect.sleep(jitter(options.intervalMillis))
    }
  }))

  yield* Effect.forkScoped(
    Effect.forever(
      Effect.andThen(
        term.pipe(
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : options.onError(Cause.squash(cause))
          )
        ),
        Effect.suspend(() => Effect.sleep(jitter(options.electionMillis)))
      )
    ).pipe(Effect.annotateLogs({ module: "effect-jobs/Maintenance" }))
  )

  return {
    isLeader: Effect.sync(() => leader),
    awaitLeader: leading.await,
    awaitFollower: following.await
  } satisfies Leadership
})
