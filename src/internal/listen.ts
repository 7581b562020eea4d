/**
 * Keeping a LISTEN session up for the life of a background fiber (the process's one session,
 * in Notifier.ts).
 */
import { Cause, Effect, Schedule, type Scope } from "effect"

/** Between two failed attempts at opening a session: 100 ms doubling, jittered, at most 5 s. */
const backoff = Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered)

/**
 * Runs `session` again and again, for ever. `session` runs `established` once its LISTEN
 * is confirmed. Every failure (a lost connection, one that cannot be opened, a defect) is
 * handed to `report`, then the session is opened again: after a failed attempt at opening
 * one, with `backoff`; after losing one that was up, after about 100 ms, with the backoff
 * started afresh. (A Schedule given to `Effect.retry` keeps its state across retries:
 * retrying the whole loop with it made every cut wait longer than the last, up to 5 s per
 * reconnect after a few cuts, whatever time the connection had been up.)
 */
export const keepListening = (
  report: (cause: Cause.Cause<unknown>) => Effect.Effect<void>,
  session: (established: Effect.Effect<void>) => Effect.Effect<unknown, unknown, Scope.Scope>
): Effect.Effect<never> => {
  let established = false
  const once = Effect.suspend(() => {
    established = false
    return Effect.scoped(session(Effect.sync(() => {
      established = true
    })))
  }).pipe(
    // A session that returns is over too: open another.
    Effect.andThen(Effect.die(new Error("the LISTEN session ended"))),
    // Every cause but an interruption becomes a failure (the cause), reported and retried.
    Effect.catchCause((cause): Effect.Effect<never, Cause.Cause<unknown>> =>
      Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : Effect.fail(cause)),
    Effect.tapError(report),
    Effect.retry({ schedule: backoff, while: () => !established })
  )
  return Effect.forever(once.pipe(Effect.catch(() => Effect.sleep(Math.round(100 * (0.9 + Math.random() * 0.2))))))
}
