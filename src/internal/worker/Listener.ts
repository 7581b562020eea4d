/**
 * The worker's LISTEN sessions: new jobs (the schema's `new` channel, payload a queue:
 * wake its producer) and cancel requests (`cancel`, payload a job id). Each keeps a
 * connection of its own for the life of the worker and reconnects when it is lost.
 * Polling covers what a lost session missed (`Worker.listen: false` relies on it alone).
 *
 * @internal
 */
import { Cause, Effect, Queue } from "effect"
import type { Events } from "../../Observer.ts"
import type { JobStore } from "../Store.ts"
import { keepListening } from "../listen.ts"
import type { Producers } from "./Producer.ts"

/** A lost session's report: a worker error at Warn (the session is opened again). */
const reportLost = (observer: Events, message: string) => (cause: Cause.Cause<unknown>) =>
  observer.workerError("*", message, Cause.squash(cause), "Warn")

/** Forks both sessions in the current scope. */
export const start = Effect.fnUntraced(function*(deps: {
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly producers: Producers
  readonly cancel: (id: string) => Effect.Effect<void>
}) {
  const { cancel, observer, producers, store } = deps
  const newJobs = yield* Effect.forkScoped(keepListening(reportLost(observer, "LISTEN connection lost; reconnecting"), (established) =>
    Effect.gen(function*() {
      const notifications = yield* store.listen
      yield* established
      // Anything sent while we were not listening was missed: look now.
      yield* producers.wakeAll
      while (true) {
        const n = yield* Queue.take(notifications)
        producers.get(n.payload)?.notify()
      }
    })))
  const cancelRequests = yield* Effect.forkScoped(keepListening(reportLost(observer, "cancel LISTEN lost; reconnecting"), (established) =>
    Effect.gen(function*() {
      const requests = yield* store.listenOn("cancel")
      yield* established
      while (true) {
        const n = yield* Queue.take(requests)
        yield* Effect.forkChild(cancel(n.payload))
      }
    })))
  return [newJobs, cancelRequests]
})
