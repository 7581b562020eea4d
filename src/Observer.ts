/**
 * Observer: what happens to jobs, as events.
 *
 * The worker reports every transition to the `Observer` service: a job started,
 * completed, had a retry scheduled, was rescheduled (snoozed or returned at
 * shutdown), went to the dead-letter state, was cancelled; and errors of the
 * worker itself. The default is to observe nothing; `Observer.logging` logs each
 * event with Effect's `Logger`; observers compose with `Observer.combine`.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"

export interface JobInfo {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly attempt: number
  readonly maxAttempts: number
}

export interface Events {
  readonly started: (job: JobInfo) => Effect.Effect<void>
  readonly completed: (job: JobInfo, durationMillis: number) => Effect.Effect<void>
  readonly retryScheduled: (job: JobInfo, delayMillis: number, error: string) => Effect.Effect<void>
  /** Snoozed by the handler, or returned to the queue at shutdown (attempt not spent). */
  readonly rescheduled: (job: JobInfo, delayMillis: number, reason: string) => Effect.Effect<void>
  readonly dead: (job: JobInfo, reason: string) => Effect.Effect<void>
  readonly cancelled: (job: JobInfo, reason: string) => Effect.Effect<void>
  readonly workerError: (queue: string, message: string, cause?: unknown) => Effect.Effect<void>
}

/** The observer service. Never needs to be provided: the default observes nothing. */
export const Observer = Context.Reference<Events>("effect-jobs/Observer", { defaultValue: () => noop })

export const noop: Events = {
  started: () => Effect.void,
  completed: () => Effect.void,
  retryScheduled: () => Effect.void,
  rescheduled: () => Effect.void,
  dead: () => Effect.void,
  cancelled: () => Effect.void,
  workerError: () => Effect.void
}

/** Both observers see every event, left first. */
export const combine = (left: Events, right: Events): Events => ({
  started: (j) => Effect.andThen(left.started(j), right.started(j)),
  completed: (j, d) => Effect.andThen(left.completed(j, d), right.completed(j, d)),
  retryScheduled: (j, d, e) => Effect.andThen(left.retryScheduled(j, d, e), right.retryScheduled(j, d, e)),
  rescheduled: (j, d, r) => Effect.andThen(left.rescheduled(j, d, r), right.rescheduled(j, d, r)),
  dead: (j, r) => Effect.andThen(left.dead(j, r), right.dead(j, r)),
  cancelled: (j, r) => Effect.andThen(left.cancelled(j, r), right.cancelled(j, r)),
  workerError: (q, m, c) => Effect.andThen(left.workerError(q, m, c), right.workerError(q, m, c))
})

const annotate = (job: JobInfo) => Effect.annotateLogs({ jobId: job.id, job: job.name, queue: job.queue, attempt: job.attempt })

/** Logs every event: started/completed at Debug, retries and snoozes at Info, dead at Warning, worker errors at Error. */
export const loggingEvents: Events = {
  started: (j) => Effect.logDebug("job started").pipe(annotate(j)),
  completed: (j, d) => Effect.logDebug("job completed", { durationMillis: d }).pipe(annotate(j)),
  retryScheduled: (j, d, e) => Effect.logInfo("job failed; retry scheduled", { delayMillis: d, error: e }).pipe(annotate(j)),
  rescheduled: (j, d, r) => Effect.logInfo("job rescheduled", { delayMillis: d, reason: r }).pipe(annotate(j)),
  dead: (j, r) => Effect.logWarning("job moved to dead", { reason: r }).pipe(annotate(j)),
  cancelled: (j, r) => Effect.logInfo("job cancelled", { reason: r }).pipe(annotate(j)),
  workerError: (q, m, c) => Effect.logError("worker error", { queue: q, message: m, cause: c })
}

/** Adds an observer to whatever observer is already in place (the default observes nothing). */
export const add = (events: Events) =>
  Layer.effect(Observer, Effect.map(Observer, (current) => (current === noop ? events : combine(current, events))))

/** Logging observer layer. */
export const logging = add(loggingEvents)

/** Replaces the observer. */
export const layer = (events: Events) => Layer.succeed(Observer, events)
