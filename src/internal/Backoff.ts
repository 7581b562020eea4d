/**
 * Retry delays from a persisted attempt count.
 *
 * A retry happens later, often in another process, so the in-memory state of a
 * `Schedule` is long gone: the delay for attempt `n` is found by stepping a fresh
 * copy of the schedule `n` times (what Effect's own PersistedQueue does).
 */
import { Duration, Effect, Pull, Schedule } from "effect"

export const delayForAttempt = Effect.fnUntraced(function*(
  schedule: Schedule.Schedule<unknown, unknown>,
  attempt: number
) {
  const step = yield* Schedule.toStep(schedule)
  let now = 0
  let delay = Duration.zero
  for (let i = 1; i <= attempt; i++) {
    const out = yield* Pull.catchDone(step(now, i), () => Effect.undefined)
    if (out === undefined) break // the schedule ended: keep its last delay
    delay = out[1]
    now += Duration.toMillis(delay)
  }
  return delay
})
