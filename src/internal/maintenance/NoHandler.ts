/**
 * The no-handler check, run by the maintenance leader (Leader.ts) every round, after pruning.
 *
 * A job that no worker can run waits `available` (the claim takes only the names a worker
 * handles). From each round's survey (../Unserved.ts) the leader keeps two clocks:
 *
 *   - per (queue, name) **unhandled** there (live workers serve the queue, none handles the
 *     name): since when it has seen it so. Once that is `timeoutMillis` (the worker option
 *     `noHandlerTimeout`), the jobs of that name at the head of the queue go `dead` with an
 *     error of kind `NoHandler`, and so does any that comes later while it lasts. A live worker
 *     that handles the name there stops the clock;
 *   - per **unserved** queue (available jobs, no live worker serves it): since when. Once that
 *     is `warnMillis`, the queue is logged at Warn through the Observer's `workerError`, once,
 *     until a live worker serves it again. Its jobs are kept: every worker of a queue being down
 *     is an outage, and its jobs must run when the workers are back, not be dead-lettered.
 *
 * A clock counts only what this leader saw, round after round: it starts when the leader first
 * sees the state, and starts over when the leader stops seeing it. It also starts over when
 * this node is elected (another leader may have seen a worker with the handler meanwhile),
 * when a round fails, when the queue has no live worker at all, and when no live worker is
 * registered at all (the whole fleet down, or back after a database restart and not registered
 * yet: nothing can be told then, and nothing is done). So a job is sent to dead only after one
 * leader has seen, for the whole timeout, live workers serving its queue without its handler;
 * the first worker to come back after an outage does not dead-letter the jobs of the others.
 *
 * @internal
 */
import { Cause, Clock, Effect } from "effect"
import type { Events } from "../../Observer.ts"
import type { JobStore } from "../Store.ts"
import { headSize, isOffered, type Offer, survey } from "../Unserved.ts"

/** Unhandled (queue, name) pairs followed at most: a flood of distinct names cannot grow memory. */
const maxTracked = 10_000

/** Statements of dead-lettering per round at most (each takes up to `headSize` jobs per queue). */
const maxBatches = 100

export interface Options {
  /** How long a name must stay unhandled on a queue before its jobs go dead; `Infinity`: never. */
  readonly timeoutMillis: number
  /** How long a queue must stay unserved before it is logged. */
  readonly warnMillis: number
  /** What this worker offers itself (its queues now, its names). */
  readonly self: () => Offer
  /** Told the start time of every round that ended (for tests: worker/TestSignals.ts). */
  readonly onRound?: ((now: number) => Effect.Effect<void>) | undefined
}

const keyOf = (queue: string, name: string) => JSON.stringify([queue, name])
const pairOf = (key: string) => JSON.parse(key) as [queue: string, name: string]

const duration = (ms: number) =>
  ms % 3_600_000 === 0 ? `${ms / 3_600_000} h` : ms % 60_000 === 0 ? `${ms / 60_000} min` : `${ms / 1000} s`

export const make = (store: JobStore["Service"], observer: Events, options: Options) => {
  const { timeoutMillis, warnMillis } = options
  /** (queue, name) -> since when it has been seen unhandled. */
  const unhandledSince = new Map<string, number>()
  /** Pairs whose dead-lettering was logged (once per stretch of being unhandled). */
  const announced = new Set<string>()
  /** queue -> since when it has been seen unserved, with available jobs. */
  const unservedSince = new Map<string, number>()
  /** Queues logged as unserved, until they are served again. */
  const warned = new Set<string>()

  const reset = Effect.sync(() => {
    unhandledSince.clear()
    announced.clear()
    unservedSince.clear()
    warned.clear()
  })

  const checkUnserved = (now: number, unserved: ReadonlyArray<string>, served: ReadonlyMap<string, unknown>) =>
    Effect.gen(function*() {
      const waiting = new Set(unserved)
      for (const queue of unservedSince.keys()) if (!waiting.has(queue)) unservedSince.delete(queue)
      for (const queue of warned) if (served.has(queue)) warned.delete(queue)
      for (const queue of unserved) {
        const since = unservedSince.get(queue) ?? now
        unservedSince.set(queue, since)
        if (now - since < warnMillis || warned.has(queue)) continue
        warned.add(queue)
        yield* observer.workerError(
          queue,
          `queue "${queue}" has available jobs and no live worker has served it since ${new Date(since).toISOString()}: ` +
            `they wait for a worker of this queue (they are not sent to dead); see JobsAdmin.unserved`,
          undefined,
          "Warn"
        )
      }
    })

  /** The messages of the pairs whose time is up, by queue and name; empty when none is. */
  const expired = (now: number, seen: ReadonlySet<string>) => {
    const messages: Record<string, Record<string, string>> = {}
    let any = false
    for (const [key, since] of unhandledSince) {
      if (now - since < timeoutMillis || !seen.has(key)) continue
      const [queue, name] = pairOf(key)
      ;(messages[queue] ??= {})[name] = `no live worker of queue "${queue}" has had a handler for "${name}" ` +
        `since ${new Date(since).toISOString()} (noHandlerTimeout ${duration(timeoutMillis)})`
      any = true
    }
    return any ? messages : undefined
  }

  const deadLetter = (now: number, messages: Record<string, Record<string, string>>) =>
    Effect.gen(function*() {
      for (let batch = 0; batch < maxBatches; batch++) {
        const rows = yield* store.jobDeadLetterUnhandled(messages, now, headSize)
        if (rows.length === 0) return
        for (const row of rows) {
          const message = messages[row.queue]?.[row.name] ?? "no handler"
          const key = keyOf(row.queue, row.name)
          if (!announced.has(key)) {
            announced.add(key)
            yield* observer.workerError(row.queue, `jobs "${row.name}" go to dead (NoHandler): ${message}`, undefined, "Warn")
          }
          yield* observer.dead(
            { id: row.id, name: row.name, queue: row.queue, attempt: row.attempt, maxAttempts: row.max_attempts, runMillis: 0 },
            message
          )
        }
      }
    })

  const round = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const s = yield* survey(store, now, options.self())
    if (!s.registered) {
      yield* reset
      if (options.onRound !== undefined) yield* options.onRound(now)
      return
    }
    yield* checkUnserved(now, s.unserved, s.served)

    // A pair stops being followed as soon as some live worker of its queue handles the name, or
    // the queue has no live worker (nothing can be told then), or one may run anything there.
    for (const key of unhandledSince.keys()) {
      const [queue, name] = pairOf(key)
      const offer = s.served.get(queue)
      if (offer === undefined || isOffered(s.served, queue, name)) {
        unhandledSince.delete(key)
        announced.delete(key)
      }
    }
    const seen = new Set<string>()
    for (const { name, queue } of s.unhandled) {
      const key = keyOf(queue, name)
      seen.add(key)
      if (!unhandledSince.has(key) && unhandledSince.size < maxTracked) unhandledSince.set(key, now)
    }
    const messages = Number.isFinite(timeoutMillis) ? expired(now, seen) : undefined
    if (messages !== undefined) yield* deadLetter(now, messages)
    if (options.onRound !== undefined) yield* options.onRound(now)
  })

  return {
    /** Called when this node is elected: what another leader saw meanwhile is unknown here. */
    elected: reset,
    /** One round; a failure is logged and starts the clocks over. */
    round: round.pipe(
      Effect.catchCause((cause) =>
        Cause.hasInterruptsOnly(cause)
          ? Effect.interrupt
          : Effect.andThen(reset, observer.workerError("*", "maintenance (the no-handler check) failed", Cause.squash(cause), "Warn"))
      )
    )
  }
}
