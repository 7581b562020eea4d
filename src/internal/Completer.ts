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
 *
 * Two exceptions, so that a flush can never retry forever:
 * - a batch the database refuses for its data (an unstorable value in a result,
 *   a row edited by hand) is split until the offending outcome is alone; that one
 *   is recorded as `dead` with the database's message instead, or, if even that is
 *   refused, given up (its lease lapses and it is rescued). The others are written.
 * - `abandon` (a shutdown whose database stays unreachable) stops retrying: the
 *   outcomes not written are given up the same way.
 */
import { Cause, Clock, Effect, Latch, Queue, Schedule } from "effect"
import type { SqlError } from "effect/sql"
import { storable } from "./Outcome.ts"
import type { Applied, FinishRow } from "./Store.ts"
import type { RetentionOverride } from "./worker/Config.ts"
import { JobStore } from "./Store.ts"

interface Pending {
  readonly row: FinishRow
  readonly then: (applied: Applied | undefined) => Effect.Effect<void>
}

export interface Completer {
  /** Queues an outcome; returns at once. */
  readonly submit: (row: FinishRow, then: (applied: Applied | undefined) => Effect.Effect<void>) => Effect.Effect<void>
  /** `submit`, done now rather than as an Effect (the worker's per-job path). */
  readonly submitUnsafe: (row: FinishRow, then: (applied: Applied | undefined) => Effect.Effect<void>) => void
  /** Waits until every outcome submitted so far is written (or given up). */
  readonly drain: Effect.Effect<void>
  /** Stops retrying failed writes: what is not written now is given up. For shutdown. */
  readonly abandon: Effect.Effect<void>
  /**
   * Backpressure: completes at once while fewer than `maxPending` outcomes wait to be
   * written; above that, once the backlog has fallen to half of it. Producers wait on
   * this before claiming, so that a database that writes outcomes more slowly than the
   * worker finishes runs slows the worker down instead of piling outcomes up in memory.
   */
  readonly room: Effect.Effect<void>
  /** Whether `room` would complete at once. */
  readonly hasRoom: () => boolean
}

/**
 * The database refused the statement for the data in it (SQLSTATE class 22 data
 * exception, 23 integrity constraint, 54 program limit), not for the connection:
 * the same batch would be refused forever.
 */
const isDataError = (e: SqlError.SqlError): boolean => {
  const code = (e.reason.cause as { readonly code?: unknown } | undefined)?.code
  return typeof code === "string" && /^(22|23|54)/.test(code)
}

/**
 * Backoff of a failed write: 50 ms doubling, at most 1 s. The cap is short on purpose:
 * once the database is back, outcomes wait at most that long (a run's job is no longer
 * heartbeated once its outcome is queued, so a long wait ends in a rescue and a rerun).
 */
const flushRetry = Schedule.min([Schedule.exponential("50 millis", 2), Schedule.spaced("1 second")]).pipe(
  Schedule.jittered
)

/** Gathering (see `gather`): below this many outcomes, ... */
const lingerBelow = 256
/** ... yield to the scheduler up to this many times for more. */
const lingerTurns = 8

export const make = Effect.fnUntraced(function*(options: {
  readonly maxBatch: number
  /**
   * The worker's `retention` over each job's own, read for every statement (it can change at
   * run time: Worker.Setting); undefined, or a result of undefined: each job's own.
   */
  readonly retention?: (() => RetentionOverride) | undefined
  /** Outcomes waiting to be written above which `room` waits. */
  readonly maxPending: number
  /**
   * Called for each outcome written, before its report, with the time the flush started
   * (the worker's throughput counts, internal/Throughput.ts). Must not throw.
   */
  readonly tally?: ((row: FinishRow, applied: Applied, now: number) => void) | undefined
  /** A failure: `Warn` if it is retried, `Error` if something was given up. */
  readonly onError: (message: string, cause: unknown, level: "Warn" | "Error") => Effect.Effect<void>
}) {
  const store = yield* JobStore
  const queue = yield* Queue.unbounded<Pending>()
  /** Open while nothing is queued or being written. */
  const idle = yield* Latch.make(true)
  let outstanding = 0
  /** Open while the backlog is below `maxPending` (closed above it until it halves). */
  const hasRoom = yield* Latch.make(true)
  let hasRoomNow = true
  let abandoned = false
  const giveUp = yield* Latch.make(false)
  const none: ReadonlyMap<string, Applied> = new Map()

  /** One statement for `rows`, retried while the failure is not the data's fault. */
  const write = (rows: ReadonlyArray<FinishRow>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => store.jobFinishMany(rows, now, options.retention?.())).pipe(
      Effect.tapError((e) =>
        isDataError(e) ? Effect.void : options.onError("could not record job outcomes; retrying", e, "Warn")
      ),
      Effect.retry({ schedule: flushRetry, while: (e) => !isDataError(e) && !abandoned })
    )

  /** Writes the rows; a batch refused for its data is split until the refused outcome is alone. */
  const writeAll = (rows: ReadonlyArray<FinishRow>): Effect.Effect<ReadonlyMap<string, Applied>> =>
    write(rows).pipe(Effect.catch((e) => {
      if (abandoned || !isDataError(e)) return Effect.succeed(none)
      if (rows.length > 1) {
        const half = Math.ceil(rows.length / 2)
        return Effect.map(
          Effect.all([writeAll(rows.slice(0, half)), writeAll(rows.slice(half))]),
          ([a, b]) => new Map([...a, ...b])
        )
      }
      const row = rows[0]!
      const attempt = (row.error as { readonly attempt?: unknown } | null)?.attempt
      return Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const message = storable(`the outcome (${row.state}) could not be recorded: ${e.message}: ${String(e.reason.cause)}`)
        const fallback: FinishRow = {
          ...row,
          state: "dead",
          run_at: null,
          attempt_delta: 0,
          result: null,
          error: { attempt: typeof attempt === "number" ? attempt : null, at: new Date(now).toISOString(), kind: "OutcomeNotRecorded", message }
        }
        return options.onError(`could not record the outcome of job ${row.id}; recording it dead`, e, "Error").pipe(
          Effect.andThen(write([fallback])),
          Effect.catch((e2) =>
            Effect.as(options.onError(`could not record job ${row.id} dead either; its lease will lapse`, e2, "Error"), none)
          )
        )
      })
    }))

  const flush = Effect.fnUntraced(function*(batch: ReadonlyArray<Pending>) {
    const rows = batch.map((p) => p.row)
    const startedAt = yield* Clock.currentTimeMillis
    const changed = abandoned ? none : yield* Effect.raceFirst(
      Effect.interruptible(writeAll(rows)),
      Effect.as(giveUp.await, none)
    )
    if (abandoned && changed === none) {
      yield* options.onError(`gave up recording ${batch.length} job outcomes at shutdown; their leases will lapse`, undefined, "Error")
    }
    // Reports run here, after the write. A failing (or throwing) observer must not stop the
    // writer: every later outcome, and graceful shutdown, wait for this loop.
    const tally = options.tally
    if (tally !== undefined) {
      for (const p of batch) {
        const applied = changed.get(p.row.id)
        if (applied !== undefined) tally(p.row, applied, startedAt)
      }
    }
    for (const p of batch) {
      let report: Effect.Effect<void>
      try {
        report = p.then(changed.get(p.row.id))
      } catch (defect) {
        report = Effect.die(defect)
      }
      if (report === Effect.void) continue // nothing to report (no step: this runs for every job)
      yield* report.pipe(
        Effect.catchCause((cause) =>
          options.onError("an observer failed while reporting an outcome", Cause.squash(cause), "Error").pipe(
            Effect.catchCause(() => Effect.void)
          )
        )
      )
    }
    outstanding -= batch.length
    if (outstanding === 0) idle.openUnsafe()
    if (!hasRoomNow && outstanding <= options.maxPending / 2) {
      hasRoomNow = true
      hasRoom.openUnsafe()
    }
  })

  /**
   * Under load, a few turns of the scheduler before a small flush, so that runs about to
   * end add their outcomes to it: fewer, larger statements (each costs the worker as much
   * CPU as dozens of outcomes). "Under load" = the last flush carried several outcomes; a
   * lone outcome is written at once. Yields, not a timer: not on Effect's Clock (a test's
   * TestClock must not hold outcomes back), and no wait when nothing else is ready to run.
   */
  let lastBatch = 0
  const gather = (first: Array<Pending>): Effect.Effect<Array<Pending>> => {
    if (lastBatch <= 1 || first.length >= lingerBelow || first.length >= options.maxBatch) return Effect.succeed(first)
    let turns = 0
    const more = (batch: Array<Pending>): Effect.Effect<Array<Pending>> =>
      turns++ >= lingerTurns || batch.length >= lingerBelow
        ? Effect.succeed(batch)
        : Effect.flatMap(Effect.yieldNow, () => {
          const n = Math.min(Queue.sizeUnsafe(queue), options.maxBatch - batch.length)
          return n <= 0 ? more(batch) : Effect.flatMap(Queue.takeN(queue, n), (taken) => more([...batch, ...taken]))
        })
    return more(first)
  }

  // A batch taken from the queue is always written: gathering and the flush are uninterruptible.
  yield* Effect.forkScoped(
    Effect.forever(
      Effect.flatMap(Queue.takeBetween(queue, 1, options.maxBatch), (first) =>
        Effect.uninterruptible(Effect.flatMap(gather(first), (batch) => {
          lastBatch = batch.length
          return flush(batch)
        })))
    )
  )

  const submitUnsafe = (row: FinishRow, then: (applied: Applied | undefined) => Effect.Effect<void>) => {
    outstanding++
    idle.closeUnsafe()
    if (hasRoomNow && outstanding >= options.maxPending) {
      hasRoomNow = false
      hasRoom.closeUnsafe()
    }
    Queue.offerUnsafe(queue, { row, then }) // unbounded: always accepted
  }

  return {
    submit: (row, then) => Effect.sync(() => submitUnsafe(row, then)),
    submitUnsafe,
    drain: idle.await,
    room: hasRoom.await,
    hasRoom: () => hasRoomNow,
    abandon: Effect.sync(() => {
      abandoned = true
      giveUp.openUnsafe()
    })
  } satisfies Completer
})
