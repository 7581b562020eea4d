/**
 * Completer: batches the outcomes of runs into one statement per flush.
 *
 * Runs hand their outcome to `submit` and wait for it to be written. One fiber
 * takes everything queued so far (up to `maxBatch`) and writes it with a single
 * `jobFinishMany`; while that statement is in flight the next batch builds up,
 * so under load a flush carries many outcomes and when idle an outcome waits for
 * no timer (group commit).
 *
 * A failed flush (the database went away) is retried with backoff until it
 * succeeds: an outcome is never dropped. If the process dies first, the job's
 * lease lapses and it runs again: at least once.
 */
import { Clock, Deferred, Effect, Queue, Schedule } from "effect"
import type { FinishRow } from "./Store.ts"
import { JobStore } from "./Store.ts"

interface Pending {
  readonly row: FinishRow
  /** true if the row was changed: the run still held the job. */
  readonly done: Deferred.Deferred<boolean>
}

export interface Completer {
  readonly submit: (row: FinishRow) => Effect.Effect<boolean>
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

  const flush = Effect.fnUntraced(function*(batch: ReadonlyArray<Pending>) {
    const changed = yield* Effect.flatMap(Clock.currentTimeMillis, (now) =>
      store.jobFinishMany(batch.map((p) => p.row), now)).pipe(
        Effect.tapError((e) => options.onError("could not record job outcomes; retrying", e)),
        Effect.retry(flushRetry),
        Effect.orDie
      )
    for (const p of batch) Deferred.doneUnsafe(p.done, Effect.succeed(changed.has(p.row.id)))
  })

  // The flush loop runs until its scope closes; it is uninterruptible per batch so a
  // batch taken from the queue is always written.
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.flatMap(Queue.takeBetween(queue, 1, options.maxBatch), (batch) => Effect.uninterruptible(flush(batch)))
    )
  )

  const submit = (row: FinishRow) =>
    Effect.flatMap(Deferred.make<boolean>(), (done) =>
      Effect.andThen(Queue.offer(queue, { row, done }), Deferred.await(done)))

  return { submit } satisfies Completer
})
