/**
 * Jobs per queue and state, at a cost that does not grow with history: what the overview
 * (`JobsAdmin.counts`, `queues`) and the jobs-per-state gauge read.
 *
 * - **Unfinished** jobs (scheduled, available, running) are counted exactly at every call,
 *   through their partial indexes: the cost follows the jobs waiting and running.
 * - **Finished** jobs (completed, dead, cancelled) are the history, which can be millions of
 *   rows; counting them reads every one (about 0.3 s per million). While there are fewer
 *   than `exactBelow`, they are counted at every call too. Beyond, the last full count is
 *   stored in the database (`finished_counts`, migrations/0009) and reused until it is
 *   `maxAgeMillis` old; then whoever reads it first recounts it in the background (one
 *   session at a time across every process: a tried advisory lock) while callers keep
 *   getting the stored one. So with any number of dashboard tabs and processes sampling
 *   the gauge, a large history is counted once per interval, not once per request.
 *
 * The first read on a large history, with nothing stored yet, counts at once and stores it.
 *
 * @internal
 */
import { Cause, Clock, Effect } from "effect"
import type { SqlError } from "effect/sql"
import { type FinishedCountsSnapshot, JobStore, type QueueStateCountRow } from "./Store.ts"

/** Finished jobs below which they are counted at every call (about 15 ms of work at this size). */
export const exactBelow = 50_000

/**
 * How long a stored count of finished jobs is used: 100 times what the count took, at least
 * 10 s. A million rows (about 0.3 s to count) are recounted every 30 s at most, ten million
 * (3 s) every 5 minutes: counting costs at most 1 % of one database core while anyone looks.
 */
export const maxAgeMillis = (tookMillis: number): number => Math.max(10_000, 100 * tookMillis)

/** What `finished` found: the counts, and whether they are exact now or from a stored count. */
export interface FinishedCounts {
  readonly counts: ReadonlyArray<QueueStateCountRow>
  /** When they were counted: now for an exact count. */
  readonly countedAt: number
  readonly exact: boolean
}

export interface Counts {
  /** Unfinished jobs, exactly (of one queue, or all). */
  readonly unfinished: (queue: string | undefined) => Effect.Effect<ReadonlyArray<QueueStateCountRow>, SqlError.SqlError>
  /** Finished jobs of every queue: exact below `exactBelow`, else the stored count (refreshed when stale). */
  readonly finished: Effect.Effect<FinishedCounts, SqlError.SqlError>
}

/**
 * The counts of one `JobStore`. Background recounts run in the current scope (closing it
 * interrupts them); a failed one is reported to `onError` (the next stale read tries again).
 */
export const make = Effect.fnUntraced(function*(onError: (cause: unknown) => Effect.Effect<void>) {
  const store = yield* JobStore
  const scope = yield* Effect.scope
  /** A recount of this process is under way: no second one. */
  let refreshing = false

  const measure = <A, E>(count: Effect.Effect<A, E>): Effect.Effect<readonly [A, number], E> =>
    Effect.gen(function*() {
      const start = yield* Clock.currentTimeMillis
      const value = yield* count
      return [value, (yield* Clock.currentTimeMillis) - start] as const
    })

  const refreshInBackground = (now: number, snapshot: FinishedCountsSnapshot) =>
    Effect.suspend(() => {
      if (refreshing) return Effect.void
      refreshing = true
      const staleBefore = now - maxAgeMillis(snapshot.tookMillis)
      return store.countsSnapshotRefresh(now, staleBefore, measure).pipe(
        Effect.catchCause((cause) => onError(Cause.squash(cause))),
        Effect.ensuring(Effect.sync(() => {
          refreshing = false
        })),
        Effect.forkIn(scope),
        Effect.asVoid
      )
    })

  const finished = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const stored = yield* store.countsSnapshotRead
    if (stored === undefined || stored.total < exactBelow) {
      const [counts, took] = yield* measure(store.countsFinished)
      const total = counts.reduce((sum, r) => sum + r.count, 0)
      // Stored once it is large: a small history is never written for a read. (A stored count
      // that shrinks back below is stored by its recount, and the next call counts exactly.)
      if (total >= exactBelow) {
        yield* store.countsSnapshotWrite({ counts, total, countedAt: now, tookMillis: took })
      }
      return { counts, countedAt: now, exact: true } satisfies FinishedCounts
    }
    if (now - stored.countedAt >= maxAgeMillis(stored.tookMillis)) yield* refreshInBackground(now, stored)
    return { counts: stored.counts, countedAt: stored.countedAt, exact: false } satisfies FinishedCounts
  })

  return { unfinished: store.countsUnfinished, finished } satisfies Counts
})
