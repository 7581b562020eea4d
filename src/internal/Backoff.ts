/**
 * Retry delays from a persisted attempt count.
 *
 * A retry happens later, often in another process, so the in-memory state of a
 * `Schedule` is long gone: the delay for attempt `n` is found by stepping a fresh
 * copy of the schedule `n` times (what Effect's own PersistedQueue does). Each step
 * is given the failure of the attempt that just ended as its input (the earlier
 * attempts' failures are not kept), so `Schedule.while` on the input and schedules that
 * choose by error decide on it.
 */
import { Duration, Effect, Option, Pull, Schedule } from "effect"

/**
 * The delay before the retry that follows attempt `attempt`, or `None` when the
 * schedule is done by then (no more retries: the job is dead).
 */
export const delayForAttempt = Effect.fnUntraced(function*(
  schedule: Schedule.Schedule<unknown, never>,
  attempt: number,
  failure: unknown
) {
  const step = yield* Schedule.toStep(schedule as Schedule.Schedule<unknown, unknown>)
  let now = 0
  let delay = Duration.zero
  for (let i = 1; i <= attempt; i++) {
    const out = yield* Pull.catchDone(step(now, failure), () => Effect.undefined)
    if (out === undefined) return Option.none<Duration.Duration>()
    delay = out[1]
    now += Duration.toMillis(delay)
  }
  return Option.some(delay)
})
