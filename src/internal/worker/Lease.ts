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
const heartbeat = ({ config, held, observer, producers, running, store }: Deps) =>
  Effect.gen(function*() {
    if (held.size === 0) return
    const snapshot = held.all()
    const now = yield* Clock.currentTimeMillis
    // The database extends each lease to its own now() + lease; here the lease is counted from
    // `now`, read before the statement was sent: it runs out here no later than there.
    const { busy, extended } = yield* store.jobHeartbeatMany(snapshot, config.leaseMillis)
    for (const h of snapshot) {
      if (extended.has(h.id)) {
        if (held.isCurrent(h)) h.leaseUntil = now + config.leaseMillis
        continue
      }
      // A busy job (its row locked by someone else just now) is still ours but its lease was
      // not extended: nothing to do; if that lasts a whole lease, the lease watch stops its run.
      // Otherwise only a claim we still hold and the database does not: it was rescued. (An
      // outcome being written may have just finished the job: nothing to stop then; a run
      // that really lost its lease gets its write refused by the fencing token.)
      if (busy.has(h.id) || !held.isCurrent(h) || h.phase === "writing") continue
      held.lose(h)
      // Claimed but not started: it leaves the buffer and never starts here (another worker
      // has it now). Left there, it would run later with its outcome dropped.
      if (h.phase === "buffered" && producers.takeBuffered(h)) {
        yield* observer.workerError("*", `lost the lease of job ${h.id} before it started; it is not run here`, undefined, "Error")
        continue
      }
      yield* observer.workerError("*", `lost the lease of job ${h.id}; its run here is stopped`, undefined, "Error")
      yield* running.interrupt(h.id).pipe(Effect.forkDetach)
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
    for (const h of held.all()) {
      if (h.leaseUntil > now) continue
      held.remove(h)
      if (h.phase === "writing") continue // its run is over; the write is refused if the job was rescued
      yield* observer.workerError(
        "*",
        `the lease of job ${h.id} ran out with no heartbeat reaching the database; its run here is stopped`,
        undefined,
        "Error"
      )
      if (h.phase === "buffered" && producers.takeBuffered(h)) continue
      h.lost = true
      yield* running.interrupt(h.id).pipe(Effect.forkDetach)
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
