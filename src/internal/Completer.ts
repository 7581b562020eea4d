/**
 * Completer: batches the outcomes of runs into one statement per flush.
 *
 * A run hands its outcome to `submit` and is done: its slot is free for the next
 * job at once. One fiber takes everything queued so far (up to `maxBatch`) and
 * writes it with a single `jobFinishMany`; while that statement is in flight the
 * next batch builds up, so under load a flush carries many outcomes, and when
 * idle an outcome waits for no timer (group commit). After the write, each
 * outcome's `then` runs with whether it was applied (the run still held the job),
 * which is where observer events are reported: after the fact, never before.
 *
 * A failed flush (the database went away) is retried with backoff: an outcome is
 * never dropped while the process lives. If the process dies first, the job's
 * lease lapses and it runs again: at least once.
 */
import { Clock, Effect, Latch, Queue, Schedule } from "effect"
import type { FinishRow } from "./Store.ts"
import { JobStore } from "./Store.ts"

interface Pending {
  readonly row: FinishRow
  readonly then: (applied: boolean) => Effect.Effect<void>
}

export interface Completer {
  /** Queues an outcome; returns at once. */
  readonly submit: (row: FinishRow, then: (applied: boolean) => Effect.Effect<void>) => Effect.Effect<void>
  /** Waits until every outcome submitted so far is written. */
  readonly drain: Effect.Effect<void>
}

const flushRetry = Schedule.min([Schedule.exponential("50 millis", 2), Schedule.spaced("5 seconds")]).pipe(
  Schedule.jittered
)

export const make = Effect.fnUntraced(function*(options: {
  readonly maxBatch: number
  readonly onError: (message: string, cause: unknown) => Effect.Effect<void>
}) {
  const store = yield* JobStore
  const queue = yield* Queue.unbounded<Pending>()
  /** Open while nothing is queued or being written. */
  const idle = yield* Latch.make(true)
  let outstanding = 0

  const flush = Effect.fnUntraced(function*(batch: ReadonlyArray<Pending>) {
    const changed = yield* Effect.flatMap(Clock.currentTimeMillis, (now) =>
      store.jobFinishMany(batch.map((p) => p.row), now)).pipe(
        Effect.tapError((e) => options.onError("could not record job outcomes; retrying", e)),
        Effect.retry(flushRetry),
        Effect.orDie
      )
    for (const p of batch) yield* p.then(changed.has(p.row.id))
    outstanding -= batch.length
    if (outstanding === 0) idle.openUnsafe()
  })

  // A batch taken from the queue is always written: the flush is uninterruptible.
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.flatMap(Queue.takeBetween(queue, 1, options.maxBatch), (batch) => Effect.uninterruptible(flush(batch)))
    )
  )

  return {
    submit: (row, then) =>
      Effect.suspend(() => {
        outstanding++
        idle.closeUnsafe()
        return Queue.offer(queue, { row, then })
      }),
    drain: idle.await
  } satisfies Completer
})
