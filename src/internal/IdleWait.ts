/**
 * A loop that ticks only while it has work: before each tick it waits, if `busy()` says
 * there is nothing to do, until something opens `wake` (a waiter, a tally, a setting).
 *
 * Why not tick regardless: the loops that use it run on Effect's `Clock`, and a `TestClock`
 * moved on by a day runs every sleep in between, one after another: a 1-second loop with
 * nothing to do cost 86,400 empty rounds (seconds of CPU, while the worker's real-time
 * registration waited for the event loop).
 *
 * @internal
 */
import { Effect, Latch } from "effect"

export interface IdleWait {
  /** Says there may be work (cheap: call it on the hot path). */
  readonly wake: () => void
  /** Returns at once if `busy()`, else when `wake` is called and `busy()` holds. */
  readonly untilBusy: Effect.Effect<void>
}

export const make = (busy: () => boolean): IdleWait => {
  const latch = Latch.makeUnsafe(false)
  const untilBusy: Effect.Effect<void> = Effect.suspend(() => {
    if (busy()) return Effect.void
    latch.closeUnsafe()
    // (checked again after closing: a `wake` that came before the close is not lost)
    return busy() ? Effect.void : Effect.andThen(latch.await, untilBusy)
  })
  return { wake: () => void latch.openUnsafe(), untilBusy }
}
