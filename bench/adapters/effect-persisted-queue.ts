/**
 * Effect's own `PersistedQueue` (effect 4.1.0, `effect/persistence`) on its SQL store
 * (`PersistedQueue.layerStoreSql()`, defaults: table `effect_queue`, pollInterval 1 s),
 * over `@effect/sql-pg` `PgClient.layer` (default pool of 10 connections).
 *
 * - drain: 64 takers, each looping `queue.take(handler)`. The store's single poller per
 *   queue claims up to "number of waiting takers" rows per query; every element is
 *   acknowledged by its own UPDATE.
 * - enqueueMany: there is no bulk offer, so `count` concurrent `offer`s (one INSERT each),
 *   at most {@link OFFER_CONCURRENCY} in flight.
 * - wake-up: the store wakes its takers on an offer made *through the same store
 *   instance* (an in-process nudge after commit), but has no LISTEN/NOTIFY, so an offer
 *   from another connection/process is only seen at the next poll (1 s). The producer here
 *   is a second client + store, i.e. the cross-process case; jitter = the poll interval.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Fiber, Layer, ManagedRuntime, Redacted, Schema } from "effect"
import { PersistedQueue } from "effect/persistence"
import type { Adapter, DrainResult, WakeOptions } from "../adapter.ts"
import { CompletionMeter, measureWake, timed, WakeProbe } from "../adapter.ts"

const TAKERS = 64
const OFFER_CONCURRENCY = 64
const POLL_INTERVAL_MS = 1000
const QUEUE = "noop"

const Job = Schema.Struct({ i: Schema.Number })

type Runtime = ManagedRuntime.ManagedRuntime<PersistedQueue.PersistedQueueFactory, unknown>

const makeRuntime = (url: string): Runtime =>
  ManagedRuntime.make(
    PersistedQueue.layer.pipe(
      Layer.provide(PersistedQueue.layerStoreSql({ pollInterval: POLL_INTERVAL_MS })),
      Layer.provide(PgClient.layer({ url: Redacted.make(url) }))
    )
  )

const openQueue = (runtime: Runtime) => runtime.runPromise(PersistedQueue.make({ name: QUEUE, schema: Job }))

type Queue = Awaited<ReturnType<typeof openQueue>>

const range = (n: number): ReadonlyArray<number> => Array.from({ length: n }, (_, i) => i)

export const make = (): Adapter => {
  let url = ""
  let runtime: Runtime | undefined
  let queue: Queue | undefined

  const ready = (): { readonly runtime: Runtime; readonly queue: Queue } => {
    if (runtime === undefined || queue === undefined) throw new Error("PersistedQueue adapter: setup() was not called")
    return { runtime, queue }
  }

  /** `TAKERS` fibers taking forever; interrupt the returned fiber to stop them. */
  const takers = (q: Queue, handler: () => void) =>
    Effect.forEach(
      range(TAKERS),
      () => Effect.forever(q.take(() => Effect.sync(handler))),
      { concurrency: "unbounded", discard: true }
    )

  return {
    name: "effect-persisted-queue",

    async setup(databaseUrl) {
      url = databaseUrl
      runtime = makeRuntime(url)
      queue = await openQueue(runtime) // builds the layer: runs the store's migrations
    },

    async enqueueMany(count) {
      const { runtime: rt, queue: q } = ready()
      await rt.runPromise(
        Effect.forEach(range(count), (i) => q.offer({ i }), { concurrency: OFFER_CONCURRENCY, discard: true })
      )
    },

    // an offer is 'pending' until it is marked 'completed' or 'failed'
    pendingQuery: "SELECT count(*)::int AS n FROM effect_queue WHERE state = 'pending'",

    async drain(count, _concurrency): Promise<DrainResult> {
      const { runtime: rt, queue: q } = ready()
      const meter = new CompletionMeter(count)
      meter.start()
      const fiber = rt.runFork(takers(q, () => meter.complete(1)))
      const measured = await meter.done
      const stopMs = await timed(() => rt.runPromise(Fiber.interrupt(fiber)))
      return { ...measured, stopMs }
    },

    async wakeLatency(wake: WakeOptions) {
      const { runtime: rt, queue: q } = ready()
      const probe = new WakeProbe()
      const fiber = rt.runFork(takers(q, () => probe.hit()))
      const producerRuntime = makeRuntime(url)
      try {
        const producer = await openQueue(producerRuntime)
        return await measureWake({
          ...wake,
          probe,
          jitterMs: POLL_INTERVAL_MS,
          enqueue: () => producerRuntime.runPromise(producer.offer({ i: 0 }))
        })
      } finally {
        await producerRuntime.dispose()
        await rt.runPromise(Fiber.interrupt(fiber))
      }
    },

    async teardown() {
      await runtime?.dispose()
      runtime = undefined
      queue = undefined
    }
  }
}
