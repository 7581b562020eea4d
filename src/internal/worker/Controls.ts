/**
 * Live controls of a running worker: `reconfigure`, `setConcurrency`, `pause`/`resume`
 * (on this worker, or with `{ global: true }` for all), `status`, the control poll
 * that reads the global pause flags and the cancel requests of held jobs, and the
 * reader of the settings given as Effects (Settings.ts), which applies what it reads as
 * `reconfigure` does.
 *
 * @internal
 */
import { Cause, Clock, Effect, Semaphore } from "effect"
import { InvalidWorkerConfig } from "../../Errors.ts"
import type { Events } from "../../Observer.ts"
import type { Options, QueueConfig, QueueStatus } from "../../Worker.ts"
import type { JobStore } from "../Store.ts"
import { jitter, type Resolved, type ResolvedQueue, type RetentionOverride } from "./Config.ts"
import type { HeldJobs } from "./Held.ts"
import type { Producers } from "./Producer.ts"
import * as Settings from "./Settings.ts"

/** Queues paused on this worker only, and (as last read) for all workers. */
export class PauseFlags {
  readonly locally = new Set<string>()
  globally: ReadonlySet<string> = new Set()
  readonly isPaused = (queue: string) => this.locally.has(queue) || this.globally.has(queue)
}

/** The global flags of `queues`, and only theirs, as read: paused are those in `read`. */
const setGlobally = (paused: PauseFlags, queues: ReadonlyArray<string>, read: ReadonlySet<string>) => {
  const next = new Set(paused.globally)
  for (const queue of queues) {
    if (read.has(queue)) next.add(queue)
    else next.delete(queue)
  }
  paused.globally = next
}

/**
 * The global pause flags of `queues` as they are now, read before their producers start (the
 * worker's start, a queue added by `reconfigure`), so that a queue paused for all workers is
 * paused here from its first claim on (the control poll reads the flags only when it runs). A
 * failed read is logged and leaves the flags unset, as they were before any read: the control
 * poll reads them again within an interval.
 */
export const readPaused = (
  store: JobStore["Service"],
  observer: Events,
  paused: PauseFlags,
  queues: ReadonlyArray<string>
): Effect.Effect<void> =>
  store.workerControlPoll(queues, []).pipe(
    Effect.map((result) => setGlobally(paused, queues, result.paused)),
    Effect.catchCause((cause) =>
      observer.workerError("*", "could not read the queues' pause flags; the control poll will", Cause.squash(cause), "Warn")
    )
  )

const notServed = (queue: string) =>
  new InvalidWorkerConfig({ message: `queue ${JSON.stringify(queue)} is not served by this worker` })

const checkName = (queue: string) =>
  typeof queue === "string" && queue.length > 0 && queue.length <= 255 && !queue.includes("\u0000")
    ? Effect.void
    : Effect.fail(new InvalidWorkerConfig({ message: `queue name must have 1 to 255 characters without NUL: ${JSON.stringify(queue)}` }))

export const make = Effect.fnUntraced(function*(deps: {
  readonly options: Options
  readonly config: Resolved
  readonly store: JobStore["Service"]
  readonly observer: Events
  readonly held: HeldJobs
  readonly producers: Producers
  readonly paused: PauseFlags
  readonly cancel: (id: string) => Effect.Effect<void>
  /** The finish statement's retention from now on (the reader's `retention`). */
  readonly setRetention: (retention: RetentionOverride) => void
  /** After each round of the settings reader (a test's signal). */
  readonly settingsRead?: Effect.Effect<void> | undefined
}) {
  const { cancel, config, held, observer, options, paused, producers, store } = deps
  /** The queue configs as last given (`reconfigure` replaces them). */
  let queueConfigs: Readonly<Record<string, QueueConfig>> = options.queues
  /** How many times `reconfigure` replaced them (a settings read of older configs is stale). */
  let generation = 0
  /** One reconfiguration at a time; pause flags change under their own lock. */
  const reconfiguring = yield* Semaphore.make(1)
  const pausing = yield* Semaphore.make(1)

  const reconfigure = Effect.fn("Worker.reconfigure")(function*(queues: Readonly<Record<string, QueueConfig>>) {
    const next = yield* Settings.resolveQueues(options, queues)
    // 1. Queues no longer served: their producers finish the claim in flight (if any), give
    //    back what they buffered, and end. Their running jobs finish and are recorded as usual.
    yield* producers.stopOthers(new Set(next.queues.map((q) => q.name)))
    // 2. Kept queues take their new settings in place (no restart); new ones start, paused for
    //    all workers if their flag says so (read first).
    const added = next.queues.filter((q) => !producers.isServed(q.name)).map((q) => q.name)
    if (added.length > 0) yield* pausing.withPermits(1)(readPaused(store, observer, paused, added))
    for (const queue of next.queues) {
      if (producers.isServed(queue.name)) producers.get(queue.name)!.update(queue)
      else yield* producers.start(queue)
    }
    queueConfigs = queues
    generation++
    yield* reader.changed
  }, reconfiguring.withPermits(1))

  const setConcurrency = Effect.fn("Worker.setConcurrency")(function*(queue: string, concurrency: number) {
    if (!producers.isServed(queue) || !Object.hasOwn(queueConfigs, queue)) return yield* notServed(queue)
    yield* reconfigure({ ...queueConfigs, [queue]: { ...queueConfigs[queue], concurrency } })
  })

  const setPaused = Effect.fnUntraced(function*(queue: string, pause: boolean, global: boolean) {
    yield* checkName(queue)
    if (global) {
      yield* store.queueSetPaused(queue, pause, yield* Clock.currentTimeMillis)
      const next = new Set(paused.globally)
      if (pause) next.add(queue)
      else next.delete(queue)
      paused.globally = next
    } else {
      if (!producers.isServed(queue)) return yield* notServed(queue)
      if (pause) paused.locally.add(queue)
      else paused.locally.delete(queue)
    }
    producers.get(queue)?.notify()
  }, pausing.withPermits(1))

  /** Stops claiming jobs of `queue` on this worker, or with `{ global: true }` on every worker. Running jobs finish. */
  const pause = (queue: string, options?: { readonly global?: boolean | undefined }) =>
    setPaused(queue, true, options?.global === true).pipe(Effect.withSpan("Worker.pause", { attributes: { "job.queue": queue } }))
  /** Undoes `pause` (the local flag, or with `{ global: true }` the flag for every worker). */
  const resume = (queue: string, options?: { readonly global?: boolean | undefined }) =>
    setPaused(queue, false, options?.global === true).pipe(Effect.withSpan("Worker.resume", { attributes: { "job.queue": queue } }))

  const status = Effect.sync(() =>
    producers.served().map((name): QueueStatus => {
      const p = producers.get(name)!
      const q = p.config()
      const counts = p.counts()
      return {
        name,
        concurrency: q.concurrency,
        prefetch: counts.prefetch,
        pollIntervalMillis: q.pollMillis,
        pausedLocally: paused.locally.has(name),
        pausedGlobally: paused.globally.has(name),
        running: counts.running,
        buffered: counts.buffered,
        waitingForOutcomes: counts.waitingForOutcomes
      }
    })
  )

  // The control poll, every (shortest) poll interval: which queues are paused for all
  // workers, and which held jobs have a cancel request (the fallback for a missed NOTIFY,
  // or for `listen: false`). One small statement per worker per interval. The first comes one
  // interval after the start: the flags were read just before the producers started
  // (`readPaused`), and no job was held then.
  const controlPoll = pausing.withPermits(1)(Effect.gen(function*() {
    const names = producers.served()
    const result = yield* store.workerControlPoll(names, held.ids())
    const before = paused.globally
    // (only the queues asked about: one added meanwhile keeps the flag read when it was added)
    setGlobally(paused, names, result.paused)
    for (const name of names) if (before.has(name) !== result.paused.has(name)) producers.get(name)?.notify()
    return result.cancel
  })).pipe(
    Effect.flatMap((ids) =>
      Effect.forEach(ids, (id) => (held.get(id)?.cancelling === true ? Effect.void : Effect.forkChild(cancel(id))), { discard: true })),
    Effect.catchCause((cause) => observer.workerError("*", "control poll failed", Cause.squash(cause), "Warn"))
  )
  const controlMillis = () =>
    Math.min(config.maintenanceMillis, ...producers.served().map((name) => producers.get(name)!.config().pollMillis))
  yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(Effect.suspend(() => Effect.sleep(jitter(controlMillis()))), controlPoll))
  )

  // The settings reader: a queue's settings as read now take effect in place, as with
  // `reconfigure`, under its lock, and only if no `reconfigure` came since they were read.
  const applyRead = (name: string, readFrom: number, next: ResolvedQueue) =>
    reconfiguring.withPermits(1)(Effect.suspend(() => {
      const producer = producers.get(name)
      if (readFrom !== generation || producer === undefined || !producers.isServed(name)) return Effect.void
      const before = producer.config()
      if (JSON.stringify(before) === JSON.stringify(next)) return Effect.void
      producer.update(next)
      return Effect.logDebug("applied a queue's settings as read", { queue: name, concurrency: next.concurrency })
    }))
  const reader = yield* Settings.start({
    options,
    config,
    queueConfigs: () => ({ configs: queueConfigs, generation }),
    apply: applyRead,
    setRetention: deps.setRetention,
    report: (queue, message) => observer.workerError(queue, message, undefined, "Warn"),
    onRound: deps.settingsRead
  })

  return { reconfigure, setConcurrency, pause, resume, status }
})
