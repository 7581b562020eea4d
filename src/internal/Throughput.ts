/**
 * A worker's outcomes per minute and queue, for the dashboard's throughput charts
 * (`JobsAdmin.throughput`, migrations/0009).
 *
 * The completer tallies each outcome it wrote (`tally`, a map increment: no SQL); a fiber
 * adds the tallies to the worker's own `throughput` rows (one per minute, queue and worker,
 * so two workers never update the same row) once a second, in one statement, and once more
 * when the worker shuts down. So counting costs the database one statement per second per
 * busy worker, whatever the rate: measured per flush of outcomes instead, a worker finishing
 * one job at a time paid a row update (about 120 bytes of WAL) per job.
 *
 * Each outcome counts in the minute its write was made (the completer's clock), even when it
 * is added a second later. A write that fails is retried with the next one (the tallies are
 * kept); a process that dies loses at most its last second.
 *
 * @internal
 */
import { Duration, Effect } from "effect"
import type { SqlError } from "effect/sql"
import * as IdleWait from "./IdleWait.ts"
import type { Applied, FinishRow, JobStore, ThroughputTally } from "./Store.ts"

/** How often the tallies are written. */
export const writeMillis = 1000

export interface Throughput {
  /** Counts one written outcome (`applied`: the job's state after the write) at `now`. */
  readonly tally: (row: FinishRow, applied: Applied, now: number) => void
  /** Writes what was tallied so far. */
  readonly flush: Effect.Effect<void, SqlError.SqlError>
}

interface Counts {
  completed: number
  retried: number
  dead: number
  cancelled: number
}

/**
 * Starts the writer in the current scope; closing the scope writes the last tallies (once: a
 * database that fails then loses them, reported).
 */
export const make = Effect.fnUntraced(function*(options: {
  readonly workerId: string
  readonly store: JobStore["Service"]
  readonly onError: (message: string, cause: unknown) => Effect.Effect<void>
}) {
  /** Keyed by `${minute}\u0000${queue}`. */
  let pending = new Map<string, { readonly minute: number; readonly queue: string; readonly counts: Counts }>()
  const tallied = IdleWait.make(() => pending.size > 0)

  const tally = (row: FinishRow, applied: Applied, now: number) => {
    let kind: keyof Counts
    switch (applied.state) {
      case "completed":
      case "dead":
      case "cancelled":
        kind = applied.state
        break
      default:
        // Back to waiting: a retry if the run spent its attempt; a snooze or a shutdown
        // release (the attempt given back) is not counted.
        if (row.attempt_delta !== 0) return
        kind = "retried"
    }
    const minute = now - (((now % 60_000) + 60_000) % 60_000)
    const key = `${minute}\u0000${applied.queue}`
    let entry = pending.get(key)
    if (entry === undefined) {
      entry = { minute, queue: applied.queue, counts: { completed: 0, retried: 0, dead: 0, cancelled: 0 } }
      pending.set(key, entry)
    }
    entry.counts[kind]++
    tallied.wake()
  }

  const flush = Effect.suspend(() => {
    if (pending.size === 0) return Effect.void
    const taken = pending
    pending = new Map()
    const rows: Array<ThroughputTally> = []
    for (const e of taken.values()) rows.push({ minute: e.minute, queue: e.queue, ...e.counts })
    return options.store.throughputAdd(options.workerId, rows).pipe(
      // Not written: back into the tallies, for the next write.
      Effect.tapError(() =>
        Effect.sync(() => {
          for (const [key, e] of taken) {
            const now = pending.get(key)
            if (now === undefined) pending.set(key, e)
            else for (const k of ["completed", "retried", "dead", "cancelled"] as const) now.counts[k] += e.counts[k]
          }
        })
      )
    )
  })

  yield* Effect.addFinalizer(() =>
    flush.pipe(Effect.catch((e) => options.onError("could not record the last throughput counts at shutdown", e)))
  )
  // (while nothing is tallied it waits for a tally, not for the next second: IdleWait.ts)
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.andThen(
        Effect.andThen(tallied.untilBusy, Effect.sleep(Duration.millis(writeMillis))),
        flush.pipe(Effect.catch((e) => options.onError("could not record throughput counts; retrying", e)))
      )
    )
  )
  return { tally, flush } satisfies Throughput
})
