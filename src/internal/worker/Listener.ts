/**
 * The worker's subscriptions to the process's LISTEN session (../Notifier.ts): new jobs
 * (the schema's `new` channel, payload a queue: wake its producer) and cancel requests
 * (`cancel`, payload a job id). Polling covers what a lost session missed (`Worker.listen:
 * false` relies on it alone, and subscribes to nothing).
 *
 * @internal
 */
import { Effect, Queue } from "effect"
import { Notifier } from "../Notifier.ts"
import type { JobStore } from "../Store.ts"
import type { Producers } from "./Producer.ts"

/** Subscribes to both channels and forks their consumers in the current scope. */
export const start = Effect.fnUntraced(function*(deps: {
  readonly store: JobStore["Service"]
  readonly producers: Producers
  readonly cancel: (id: string) => Effect.Effect<void>
}) {
  const { cancel, producers, store } = deps
  const notifier = yield* Notifier
  const newJobs = yield* notifier.subscribe(store.channels.new)
  const cancelRequests = yield* notifier.subscribe(store.channels.cancel)
  yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
    const events = yield* Queue.takeAll(newJobs)
    // (Re)connected: anything sent while we were not listening was missed, so look everywhere.
    if (events.some((e) => e._tag === "Established")) return yield* producers.wakeAll
    for (const e of events) if (e._tag === "Notification") producers.get(e.payload)?.notify()
  })))
  yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
    const e = yield* Queue.take(cancelRequests)
    // A request missed while not listening is found by the control poll (Controls.ts).
    if (e._tag === "Notification") yield* Effect.forkChild(cancel(e.payload))
  })))
})
