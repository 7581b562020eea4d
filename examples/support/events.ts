/**
 * An `Observer` for the examples. It prints every event but `started` as one
 * line, and lets the program wait for an event of a given job
 * (`yield* events.waitFor(id, "completed")`) instead of sleeping. The worker
 * reports an outcome only after it is written to the database, so once
 * `waitFor` returns, the job's row shows it.
 *
 * Your own observer is the same: an `Observer.Events` record of Effects, given
 * to the worker with `Observer.add(events)`, which adds it to any observer
 * already in place.
 */
import { Console, Deferred, Effect, Exit } from "effect"
import { Observer } from "effect-jobs"

export type EventName = "started" | "completed" | "retryScheduled" | "rescheduled" | "dead" | "cancelled"

/** A defect's reason is a whole pretty-printed cause; its first line is enough here. */
const firstLine = (s: string) => s.split("\n")[0]!

export const make = Effect.sync(() => {
  // one Deferred per (job id, event), created by whichever comes first: the event or the wait
  const seen = new Map<string, Deferred.Deferred<void>>()
  const deferred = (id: string, event: EventName) => {
    const key = `${id}/${event}`
    let d = seen.get(key)
    if (d === undefined) seen.set(key, d = Deferred.makeUnsafe<void>())
    return d
  }
  const emit = (event: EventName, job: Observer.JobInfo, detail = "") =>
    Effect.andThen(
      event === "started"
        ? Effect.void // the handlers of the examples say when they start
        : Console.log(`  [${event}] ${job.name} #${job.id}, attempt ${job.attempt}/${job.maxAttempts}${detail}`),
      Effect.sync(() => Deferred.doneUnsafe(deferred(job.id, event), Exit.void))
    )
  const events: Observer.Events = {
    ...Observer.noop, // events this file does not print (if the library adds some) observe nothing
    started: (job) => emit("started", job),
    completed: (job, ms) => emit("completed", job, ` in ${ms} ms`),
    retryScheduled: (job, delay, error) => emit("retryScheduled", job, `: ${error}; next try in ${delay} ms`),
    rescheduled: (job, delay, reason) => emit("rescheduled", job, `: ${reason}; back in ${delay} ms`),
    dead: (job, reason) => emit("dead", job, `: ${firstLine(reason)}`),
    cancelled: (job, reason) => emit("cancelled", job, `: ${reason}`),
    workerError: (queue, message) => Console.log(`  [workerError] queue ${queue}: ${message}`)
  }
  return {
    /** Give this to the worker: `Worker.layer(...).pipe(Layer.provide(events.layer))`. */
    layer: Observer.add(events),
    /** Waits until the job has had this event (at once if it already had). */
    waitFor: (id: string, event: EventName) => Deferred.await(deferred(id, event))
  }
})
