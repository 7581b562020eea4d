/**
 * The worker's LISTEN sessions: new jobs (the schema's `new` channel, payload a queue:
 * wake its producer) and cancel requests (`cancel`, payload a job id). Each keeps a
 * connection of its own for the life of the worker and reconnects when it is lost.
 * Polling covers what a lost session missed (`Worker.listen: false` relies on it alone).
 *
 * @internal
 */
import { Cause, Effect, Queue, Schedule, type Scope } from "effect"
import type { Events } from "../../Observer.ts"
import type { JobStore } from "../Store.ts"
import { jitter } from "./Config.ts"
import type { Producers } from "./Producer.ts"

/**
 * Keeps a LISTEN session up for the life of the worker. `session` calls
 * `established` once its LISTEN is confirmed. Connecting is retried with backoff
 * (100 ms doubling, at most 5 s); a session that was up and then lost its
 * connection starts the backoff afresh. (A Schedule given to `Effect.retry`
 * keeps its state across retries: without the reset, after a few cuts every
 * reconnect waited the full 5 s, wake-ups left to polling meanwhile.)
 */
const keepListening = (
  observer: Events,
  lostMessage: string,
  session: (established: Effect.Effect<void>) => Effect.Effect<never, unknown, Scope.Scope>
) => {
  let established = false
  const once = Effect.suspend(() => {
    established = false
    return Effect.scoped(session(Effect.sync(() => {
      established = true
    })))
  }).pipe(
    Effect.tapCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : observer.workerError("*", lostMessage, Cause.squash(cause), "Warn")),
    Effect.retry({
      schedule: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered),
      while: () => !established
    })
  )
  return Effect.forever(once.pipe(Effect.catch(() => Effect.sleep(jitter(100)))))
}

/** Forks both sessions in the current scope. */
export const start = Effect.fnUntraced(function*(deps: {
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly producers: Producers
  readonly cancel: (id: string) => Effect.Effect<void>
}) {
  const { cancel, observer, producers, store } = deps
  const newJobs = yield* Effect.forkScoped(keepListening(observer, "LISTEN connection lost; reconnecting", (established) =>
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
  const cancelRequests = yield* Effect.forkScoped(keepListening(observer, "cancel LISTEN lost; reconnecting", (established) =>
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
