/**
 * The fibers of the jobs a worker is running, by job id.
 *
 * What `FiberMap` does for the worker, with less per job: a fiber is started by a plain
 * function call (`Effect.runForkWith` on the worker's context, captured once) instead of
 * an Effect step per job, and the fibers are kept in a `Map` keyed by the id string
 * (V8 hashes a string once) rather than a `MutableHashMap`, which hashes the key with
 * effect's `Hash` on every lookup. At tens of thousands of jobs a second both showed in
 * the profile.
 *
 * Every fiber started here is removed when it ends; closing the scope interrupts those
 * still running (after the worker's graceful shutdown, which normally leaves none).
 *
 * @internal
 */
import { Effect, Fiber, Latch, type Scope } from "effect"

export interface Running {
  /** Starts `effect` in its own fiber (it runs at once, up to its first async step) under `id`. */
  readonly start: (id: string, effect: Effect.Effect<unknown>) => void
  /** Fibers running now. */
  readonly size: () => number
  /** Interrupts the run of `id`, if any, and waits for it to end. */
  readonly interrupt: (id: string) => Effect.Effect<void>
  /** Interrupts every run and waits for them to end. */
  readonly interruptAll: Effect.Effect<void>
  /** Waits until no run is left. */
  readonly awaitEmpty: Effect.Effect<void>
}

export const make: Effect.Effect<Running, never, Scope.Scope> = Effect.gen(function*() {
  const fibers = new Map<string, Fiber.Fiber<unknown>>()
  const empty = yield* Latch.make(true)
  const fork = Effect.runForkWith(yield* Effect.context<never>())
  let closed = false

  const running: Running = {
    start: (id, effect) => {
      const fiber = fork(closed ? Effect.interrupt : effect)
      if (fiber.pollUnsafe() !== undefined) return // it ran to its end already
      // A run of the same job still under way here can only be one being stopped (its lease was
      // lost, the job rescued and claimed again by this worker): it is interrupted, as
      // FiberMap did, and its end no longer touches the new entry.
      fibers.get(id)?.interruptUnsafe()
      fibers.set(id, fiber)
      empty.closeUnsafe()
      fiber.addObserver(() => {
        if (fibers.get(id) === fiber) fibers.delete(id)
        if (fibers.size === 0) empty.openUnsafe()
      })
    },
    size: () => fibers.size,
    interrupt: (id) =>
      Effect.suspend(() => {
        const fiber = fibers.get(id)
        return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
      }),
    interruptAll: Effect.suspend(() => Fiber.interruptAll(Array.from(fibers.values()))),
    awaitEmpty: empty.await
  }
  yield* Effect.addFinalizer(() =>
    Effect.suspend(() => {
      closed = true
      return running.interruptAll
    })
  )
  return running
})
