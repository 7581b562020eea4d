/**
 * Cancel requests for jobs this worker holds (by NOTIFY on the `cancel` channel, or found
 * by the control poll). A buffered job ends `cancelled` without running; a running one is
 * interrupted (its finalizers run) and its run ends `cancelled`. A job not held here is
 * someone else's, or not started: the request is ignored.
 *
 * @internal
 */
import { Clock, Effect } from "effect"
import type { Events } from "../../Observer.ts"
import type { Completer } from "../Completer.ts"
import { cancelledByRequest } from "../Outcome.ts"
import type { Running } from "../Running.ts"
import { info, report } from "./Executor.ts"
import type { HeldJobs } from "./Held.ts"
import type { Producers } from "./Producer.ts"

export const make = (deps: {
  readonly held: HeldJobs
  readonly producers: Producers
  readonly completer: Completer
  readonly observer: Events
  readonly running: Running
}) =>
(id: string): Effect.Effect<void> =>
  Effect.suspend(() => {
    const { completer, held, observer, producers, running } = deps
    const h = held.get(id)
    // Not ours, or its run is over and its outcome on its way (that write checks the request).
    if (h === undefined || h.phase === "writing") return Effect.void
    if (h.phase === "buffered" && producers.takeBuffered(h)) {
      held.remove(h)
      const row = h.row
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const outcome = cancelledByRequest(row, now, "cancelled before it started")
        return completer.submit(outcome.row, (applied) => applied ? report(observer, info(row), outcome, 0, applied) : Effect.void)
      })
    }
    h.cancelling = true
    return running.interrupt(id)
  })
