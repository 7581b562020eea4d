/**
 * Points in a worker's life that a test can wait on, to drive a race deterministically
 * (River's test signals). Each is a no-op unless a test provides `TestSignals` to the
 * worker's layer.
 *
 * @internal
 */
import { Context, Effect } from "effect"

export interface Signals {
  /** Shutdown: every claim loop has been told to stop (not yet awaited). */
  readonly producersInterrupted: Effect.Effect<void>
  /** The maintenance leader finished a round of the no-handler check that it started at `now` (its Clock). */
  readonly noHandlerChecked?: ((now: number) => Effect.Effect<void>) | undefined
  /** A maintenance round (promotion, then rescue) has ended, well or not. */
  readonly maintained?: Effect.Effect<void> | undefined
  /** A round of the settings reader (Settings.ts) has ended, its values applied. */
  readonly settingsRead?: Effect.Effect<void> | undefined
}

export const TestSignals = Context.Reference<Signals>("effect-jobs/internal/TestSignals", {
  defaultValue: () => ({ producersInterrupted: Effect.void, maintained: Effect.void })
})
