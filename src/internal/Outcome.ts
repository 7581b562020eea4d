/**
 * From the exit of a handler to the job's next state.
 *
 *   success                     -> completed (result encoded with the job's `success` Schema)
 *   Job.retryAfter(d)           -> scheduled at now + d, attempt spent; dead if it was the last
 *   Job.snooze(d)               -> scheduled at now + d, attempt given back
 *   Job.discard(reason)         -> dead
 *   Job.cancel(reason)          -> cancelled
 *   any other failure / timeout -> scheduled after the job's retry Schedule; dead if it was the last
 *   defect (throw, Effect.die)  -> dead, with the cause
 *   interrupted (shutdown)      -> available now, attempt given back
 *
 * The table in docs/state-machine.md is this function in prose.
 */
import { Cause, Data, Duration, Effect, Exit, Option } from "effect"
import { Cancel, Discard, RetryAfter, Snooze } from "../Errors.ts"
import * as Job from "../Job.ts"
import { delayForAttempt } from "./Backoff.ts"
import type { ClaimedJobRow, FinishRow } from "./Store.ts"

export type Event =
  | { readonly _tag: "completed" }
  | { readonly _tag: "retryScheduled"; readonly delayMillis: number; readonly error: string }
  | { readonly _tag: "rescheduled"; readonly delayMillis: number; readonly reason: string }
  | { readonly _tag: "dead"; readonly reason: string }
  | { readonly _tag: "cancelled"; readonly reason: string }

export interface Outcome {
  readonly row: FinishRow
  readonly event: Event
}

/** Why a run ended before its handler could say: no handler, args that do not decode. */
export class DeadOnArrival extends Data.TaggedError("DeadOnArrival")<{
  readonly kind: string
  readonly message: string
}> {}

/**
 * Text PostgreSQL can store: a NUL or a lone surrogate in an error message (a handler
 * failing on binary input) would make `jsonb` reject the whole batch of outcomes.
 */
export const storable = (text: string): string => text.replace(/\u0000|\p{Surrogate}/gu, "\uFFFD")

const errorEntry = (attempt: number, now: number, kind: string, message: string) => ({
  attempt,
  at: new Date(now).toISOString(),
  kind: storable(kind),
  message: storable(message.length > 4000 ? `${message.slice(0, 4000)}...` : message)
})

export const describe = (error: unknown): { readonly kind: string; readonly message: string } => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : error.constructor?.name ?? "Error"
    const message = "message" in error && typeof error.message === "string" && error.message !== ""
      ? error.message
      : safeJson(error)
    return { kind: tag, message }
  }
  return { kind: typeof error, message: String(error) }
}

const safeJson = (u: unknown): string => {
  try {
    return JSON.stringify(u) ?? String(u)
  } catch {
    return String(u)
  }
}

const base = (job: ClaimedJobRow) => ({ id: job.id, token: job.claim_count, run_at: null, attempt_delta: 0, result: null, error: null })

const dead = (job: ClaimedJobRow, now: number, kind: string, message: string): Outcome => ({
  row: { ...base(job), state: "dead", error: errorEntry(job.attempt, now, kind, message) },
  event: { _tag: "dead", reason: message }
})

/**
 * When a retried or snoozed job runs again. A run time that is not in the future (a delay
 * under a millisecond: the stored time has whole milliseconds) is runnable now, `available`,
 * which the outcome statement announces by NOTIFY; a later one is `scheduled`.
 */
const runAt = (now: number, delayMillis: number) => {
  const at = new Date(now + delayMillis)
  return { state: at.getTime() > now ? "scheduled" as const : "available" as const, run_at: at.toISOString() }
}

const retryOrDead = (job: ClaimedJobRow, now: number, delayMillis: number, kind: string, message: string): Outcome =>
  job.attempt >= job.max_attempts
    ? dead(job, now, kind, `${message} (attempt ${job.attempt} of ${job.max_attempts}: no attempts left)`)
    : {
      row: {
        ...base(job),
        ...runAt(now, delayMillis),
        error: errorEntry(job.attempt, now, kind, message)
      },
      event: { _tag: "retryScheduled", delayMillis, error: message }
    }

/** Returned at shutdown: runnable again at once, and the attempt is given back. */
export const released = (job: ClaimedJobRow, now: number): Outcome => ({
  row: { ...base(job), state: "available", run_at: new Date(now).toISOString(), attempt_delta: -1 },
  event: { _tag: "rescheduled", delayMillis: 0, reason: "worker shut down" }
})

/**
 * A buffered job given back before it started (shutdown, pause, a queue no longer served, a
 * probe that made room for better jobs: Producer.ts): runnable again at once, the attempt
 * given back, and in its place in line. Its run time is left as it was (a claim does not
 * change it), so it stays ahead of the jobs of its priority enqueued after it.
 */
export const returned = (job: ClaimedJobRow): Outcome => ({
  row: { ...base(job), state: "available", attempt_delta: -1 },
  event: { _tag: "rescheduled", delayMillis: 0, reason: "given back before it started" }
})

/** Cancelled while running (an operator's `cancel`): the handler was interrupted. */
export const cancelledByRequest = (job: ClaimedJobRow, now: number, reason: string): Outcome => ({
  // by_request: the store puts the operator's reason (if they gave one) in place of `reason`
  row: { ...base(job), state: "cancelled", error: errorEntry(job.attempt, now, "Cancelled", reason), by_request: true },
  event: { _tag: "cancelled", reason }
})

/**
 * The common case, without an effect: a success of a job that stores no result.
 * `undefined` for everything else (then `classify`).
 */
export const completedWithoutResult = (
  job: ClaimedJobRow,
  definition: Job.Any | undefined,
  exit: Exit.Exit<unknown, unknown>
): Outcome | undefined =>
  Exit.isSuccess(exit) && definition !== undefined && !definition.hasResult
    ? { row: { ...base(job), state: "completed" }, event: completedEvent }
    : undefined
const completedEvent = { _tag: "completed" } as const

export const classify = Effect.fnUntraced(function*(
  job: ClaimedJobRow,
  definition: Job.Any | undefined,
  exit: Exit.Exit<unknown, unknown>,
  now: number
) {
  if (Exit.isSuccess(exit)) {
    if (definition === undefined || !definition.hasResult) {
      return { row: { ...base(job), state: "completed" }, event: { _tag: "completed" } } satisfies Outcome
    }
    const encoded = yield* Effect.exit(definition.encodeResult(exit.value))
    if (Exit.isFailure(encoded)) {
      return dead(job, now, "InvalidResult", `the handler's result does not match the job's success Schema: ${Cause.pretty(encoded.cause)}`)
    }
    return {
      row: { ...base(job), state: "completed", result: encoded.value === undefined ? null : encoded.value },
      event: { _tag: "completed" }
    } satisfies Outcome
  }
  const cause = exit.cause
  const failure = cause.reasons.find(Cause.isFailReason)
  if (failure === undefined) {
    const defect = cause.reasons.find(Cause.isDieReason)
    if (defect === undefined) return released(job, now) // interruption only
    return dead(job, now, "Defect", Cause.pretty(cause))
  }
  const error = failure.error
  if (error instanceof DeadOnArrival) return dead(job, now, error.kind, error.message)
  if (error instanceof Discard) return dead(job, now, "Discarded", error.reason)
  if (error instanceof Cancel) {
    return {
      row: { ...base(job), state: "cancelled", error: errorEntry(job.attempt, now, "Cancelled", error.reason) },
      event: { _tag: "cancelled", reason: error.reason }
    } satisfies Outcome
  }
  if (error instanceof Snooze) {
    return {
      row: {
        ...base(job),
        ...runAt(now, error.delayMillis),
        attempt_delta: -1
      },
      event: { _tag: "rescheduled", delayMillis: error.delayMillis, reason: "snoozed" }
    } satisfies Outcome
  }
  if (error instanceof RetryAfter) return retryOrDead(job, now, error.delayMillis, "RetryAfter", error.reason)
  const { kind, message } = describe(error)
  const schedule = definition?.retry ?? Job.defaultRetry
  const delay = yield* delayForAttempt(schedule, job.attempt, error)
  if (Option.isNone(delay)) return dead(job, now, kind, `${message} (the job's retry schedule is done: no more retries)`)
  return retryOrDead(job, now, Math.max(0, Math.round(Duration.toMillis(delay.value))), kind, message)
})
