/**
 * Leases: the heartbeat that extends the lease of every job this worker holds, in one
 * statement, and the lease watch that stops the runs whose lease this worker can no
 * longer vouch for.
 *
 * @internal
 */
import { Cause, Clock, Duration, Effect, Schedule } from "effect"
import type { Events } from "../../Observer.ts"
import type { Running } from "../Running.ts"
import type { JobStore } from "../Store.ts"
import type { Resolved } from "./Config.ts"
import type { HeldJobs } from "./Held.ts"
import type { Producers } from "./Producer.ts"

interface Deps {
  readonly config: Resolved
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly held: HeldJobs
  readonly producers: Producers
  readonly running: Running
}

/** One heartbeat: extends the held leases; a job the database no longer gives us is lost, its run stopped. */
const heartbeat = ({ config, held, observer, running, store }: Deps) =>
  Effect.gen(function*() {
    if (held.tokens.size === 0) return
    const snapshot = Array.from(held.tokens, ([id, token]) => ({ id, token }))
    const now = yield* Clock.currentTimeMillis
    const { busy, extended } = yield* store.jobHeartbeatMany(snapshot, now, config.leaseMillis)
    for (const id of extended) if (held.tokens.has(id)) held.leaseUntil.set(id, now + config.leaseMillis)
    // (a busy job, its row locked by someone else just now, is still ours but its lease was not
    // extended: nothing to do; if that lasts a whole lease, the lease watch below stops its run)
    for (const { id, token } of snapshot) {
      // Only a run we still think we hold (same token) and the database does not: it was rescued.
      // (An outcome being written may have just finished the job: nothing to stop then; a
      // run that really lost its lease gets its write refused by the fencing token.)
      if (!extended.has(id) && !busy.has(id) && held.tokens.get(id) === token && held.writing.get(id) !== token) {
        held.lost.add(id)
        yield* observer.workerError("*", `lost the lease of job ${id}; its run here is stopped`, undefined, "Error")
        yield* running.interrupt(id).pipe(Effect.forkDetach)
      }
    }
  }).pipe(Effect.catchCause((cause) => observer.workerError("*", "heartbeat failed", Cause.squash(cause), "Warn")))

/**
 * The lease watch. A worker whose heartbeats have not reached the database for a whole
 * lease (it is down, or unreachable) must assume its jobs were rescued and are running
 * elsewhere: it stops those runs and writes nothing for them, as for a lease found lost.
 * Buffered jobs are dropped. This runs apart from the heartbeat, so a heartbeat statement
 * that hangs cannot keep it from running.
 */
const leaseWatch = ({ held, observer, producers, running }: Deps) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const id of held.leaseUntil.keys()) if (!held.tokens.has(id)) held.leaseUntil.delete(id)
    for (const [id, until] of held.leaseUntil) {
      if (until > now) continue
      held.leaseUntil.delete(id)
      held.tokens.delete(id)
      if (held.writing.has(id)) continue // its run is over; the write is refused if the job was rescued
      yield* observer.workerError(
        "*",
        `the lease of job ${id} ran out with no heartbeat reaching the database; its run here is stopped`,
        undefined,
        "Error"
      )
      if (producers.takeBuffered(id) === undefined) {
        held.lost.add(id)
        yield* running.interrupt(id).pipe(Effect.forkDetach)
      }
    }
  })

/** Forks the heartbeat and the lease watch in the current scope, each every `heartbeatInterval`. */
export const start = Effect.fnUntraced(function*(deps: Deps) {
  const every = Schedule.spaced(Duration.millis(deps.config.heartbeatMillis))
  return [
    yield* Effect.forkScoped(Effect.repeat(heartbeat(deps), every)),
    yield* Effect.forkScoped(Effect.repeat(leaseWatch(deps), every))
  ]
})
