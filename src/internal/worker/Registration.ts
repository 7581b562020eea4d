/**
 * The worker's registration (migrations/0006): a row in the `workers` table and a session
 * advisory lock held for the worker's lifetime on a connection kept for it. When the process
 * dies, Postgres ends that session and drops the lock; the rescuer of any other worker sees a
 * registered worker whose lock nobody holds, not seen for `graceMillis` (Store.ts), and sends
 * its running jobs back at once (`WorkerDied`), instead of waiting for their leases to lapse.
 *
 * Every `checkMillis` the worker moves its `last_seen_at` forward on that session, which also
 * checks it (the beat). The same statement clears the `buffered` mark (migrations/0011) of the
 * jobs started from the buffer since the last beat and still running, so that the rescue of a
 * dead worker's jobs can give back the attempts of those it never started. A session found gone (cut while the process lives on, or the server restarted) is
 * registered again on a new connection as soon as it can be. A worker that could not confirm
 * its registration for `fenceMillis` must assume the rescuers take it for dead: like the lease
 * watch, it stops the runs it holds and drops its buffer, so that no job runs in two places at
 * once, and gives those jobs back (fenced by their token) once it reaches the database again.
 *
 * Not registered with `listen: false` (a transaction-mode pooler: a session lock there means
 * nothing): such a worker's jobs are rescued when their leases lapse. Deregistered (row
 * deleted, then lock released) when the scope closes, after the graceful shutdown.
 *
 * @internal
 */
import { Cause, Clock, Deferred, Duration, Effect, Schedule } from "effect"
import type { Completer } from "../Completer.ts"
import type { Events } from "../../Observer.ts"
import type { Running } from "../Running.ts"
import { type JobStore, workerGraceMillis } from "../Store.ts"
import { jitter, type Resolved } from "./Config.ts"
import type { HeldJobs } from "./Held.ts"
import type { Producers } from "./Producer.ts"

/** How often the worker confirms its registration (`last_seen_at`). */
export const checkMillis = 500
/** Unconfirmed for this long, the worker stops its runs: a rescuer may act from `workerGraceMillis` on. */
export const fenceMillis = workerGraceMillis - 500
/** How often the fence is looked at. */
const fenceWatchMillis = 100
/**
 * A fence watch that comes this much later than it was due found the event loop blocked (a
 * handler computing synchronously): the beat's answer may be waiting, unread, behind it. It
 * looks again at its next turn instead of acting on a confirmation time that only looks old.
 */
const loopLagMillis = 200
/** The wait before registering again after a failure. */
const retryMillis = 200

export const start = Effect.fnUntraced(function*(deps: {
  readonly config: Resolved
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly held: HeldJobs
  readonly producers: Producers
  readonly running: Running
  readonly completer: Completer
  /** The job names this worker has handlers for, aliases included (listed in its row: migrations/0008). */
  readonly names: ReadonlyArray<string>
}) {
  const { completer, config, held, observer, producers, running, store } = deps
  if (!config.listen) return
  const configured = config.queues.map((q) => q.name)
  const worker = {
    id: config.workerId,
    // The queues served now, at every confirmation (`reconfigure` changes them); the configured
    // ones at the first, which comes before the producers start (a worker serves one at least).
    queues: () => {
      const served = producers.served()
      return served.length === 0 ? configured : served
    },
    names: deps.names,
    concurrency: config.queues.reduce((sum, q) => sum + q.concurrency, 0)
  }
  /** When the last confirmation that succeeded was sent (undefined: not registered). */
  let confirmedAt: number | undefined = undefined
  const confirm = <A, E, R>(statement: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const sentAt = yield* Clock.currentTimeMillis
      const result = yield* statement
      confirmedAt = sentAt
      return result
    })

  const attempted = yield* Deferred.make<void>()
  /** One registration: held until its session fails (or the scope closes). */
  const term = Effect.scoped(Effect.gen(function*() {
    const session = yield* confirm(store.workerRegister(worker)).pipe(Effect.ensuring(Deferred.succeed(attempted, undefined)))
    if (session === undefined) {
      confirmedAt = undefined
      return yield* observer.workerError(
        "*",
        `another live session holds the registration lock of worker id "${worker.id}": is it used by two processes? ` +
          "Its jobs are rescued by their lease only",
        undefined,
        "Warn"
      )
    }
    while (true) {
      yield* Effect.sleep(jitter(checkMillis))
      // The beat also tells the database which buffered jobs have started since the last one
      // (migrations/0011): a job marked `buffered` is given its attempt back if this process
      // dies. Only the jobs still running when the beat is sent are written: a short job that
      // starts and ends between two beats costs nothing here.
      const started = held.startedMarked()
      const cleared = yield* confirm(session.check(started))
      for (const h of started) if (cleared.has(h.id)) h.markedBuffered = false
    }
  }))
  const loop = Effect.forever(Effect.andThen(
    term.pipe(Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : observer.workerError("*", "worker registration lost; registering again", Cause.squash(cause), "Warn")
    )),
    Effect.suspend(() => Effect.sleep(jitter(retryMillis)))
  ))

  /** When the fence was last looked at: a long gap means the event loop was blocked. */
  let watchedAt: number | undefined = undefined
  /**
   * Unconfirmed for too long: the held jobs may be rescued now; stop them here. Not right
   * after the event loop was blocked: a process whose thread was busy still has its session
   * and its lock, so no rescuer can act, and the beat sent before (or just after) the block
   * is answered as soon as the loop reads its socket. Stopping the runs then gave their jobs
   * to other workers while they still ran here (test/registration-fence.test.ts).
   */
  const fence = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const lagged = watchedAt !== undefined && now - watchedAt > fenceWatchMillis + loopLagMillis
    watchedAt = now
    if (lagged || confirmedAt === undefined || held.size === 0) return
    if (now - confirmedAt < fenceMillis) return
    for (const h of held.all()) {
      held.remove(h)
      if (h.phase === "writing") continue // its run is over; the write is refused if the job was rescued
      yield* observer.workerError(
        "*",
        `the registration of this worker was not confirmed for ${now - confirmedAt} ms (its database session is gone): ` +
          `job ${h.id} may be rescued by another worker; its run here is stopped`,
        undefined,
        "Error"
      )
      const buffered = h.phase === "buffered" && producers.takeBuffered(h)
      // Given back by this worker once it reaches the database again, unless a rescuer did it
      // first (the fencing token refuses the write then): without this, a worker that registers
      // again before any rescuer acts would leave the job to its lease. A buffered job gives its
      // attempt back; a started one spends it (`dead` if it was the last), and only once its run
      // here has stopped: given back earlier, another worker could start it while it still runs.
      const last = !buffered && h.row.attempt >= h.row.max_attempts
      const giveBack = completer.submit({
        id: h.id,
        token: h.token,
        state: last ? "dead" : "available",
        run_at: new Date(now).toISOString(),
        attempt_delta: buffered ? -1 : 0,
        result: null,
        error: {
          attempt: h.row.attempt,
          at: new Date(now).toISOString(),
          kind: "WorkerDied",
          message: `the worker holding the job (${config.workerId}) lost its database session: its run was stopped`
        }
      }, () => Effect.void)
      if (buffered) yield* giveBack
      else {
        h.lost = true
        yield* Effect.forkDetach(Effect.andThen(running.interrupt(h.id), giveBack))
      }
    }
  })

  yield* Effect.forkScoped(loop)
  yield* Effect.forkScoped(Effect.repeat(fence, Schedule.spaced(Duration.millis(fenceWatchMillis))))
  // The first registration is tried before the worker claims anything: a job claimed under a
  // worker id whose row (from an earlier process with the same id) has no lock would be
  // rescued at once.
  yield* Deferred.await(attempted)
})
