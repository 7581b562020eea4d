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
    // Not ours, or its run is over and its outcome on its way (that write checks the request).
    if (!held.tokens.has(id) || held.writing.has(id)) return Effect.void
    const row = producers.takeBuffered(id)
    if (row !== undefined) {
      held.tokens.delete(id)
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const outcome = cancelledByRequest(row, now, "cancelled before it started")
        return completer.submit(outcome.row, (applied) => applied ? report(observer, info(row), outcome, 0, applied) : Effect.void)
      })
    }
    held.cancelling.add(id)
    return running.interrupt(id)
  })
