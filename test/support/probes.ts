/**
 * Probes for the outcome and enqueue tests: an Observer that turns the worker's
 * events into something a test can await, a full view of a job row, and
 * helpers to run a test on a `TestClock` while the database stays live (the
 * last from src/Testing.ts).
 */
import { Clock, Duration, Effect, Layer, Option, Queue } from "effect"
import { SqlClient } from "effect/sql"
import * as Observer from "../../src/Observer.ts"

// ---------------------------------------------------------------------------
// Observer probe
// ---------------------------------------------------------------------------

/** An outcome the worker reported; reported only after it was written to the database. */
export type OutcomeEvent =
  | { readonly _tag: "completed"; readonly job: Observer.JobInfo }
  | { readonly _tag: "retryScheduled"; readonly job: Observer.JobInfo; readonly delayMillis: number; readonly message: string }
  | { readonly _tag: "rescheduled"; readonly job: Observer.JobInfo; readonly delayMillis: number; readonly message: string }
  | { readonly _tag: "dead"; readonly job: Observer.JobInfo; readonly message: string }
  | { readonly _tag: "cancelled"; readonly job: Observer.JobInfo; readonly message: string }

export interface Probe {
  /** Provide it next to the handlers given to `startWorker`. */
  readonly layer: Layer.Layer<never>
  /** Waits for the next outcome of job `id` (in the order they were reported). */
  readonly next: (id: string) => Effect.Effect<OutcomeEvent>
  /** The next outcome of job `id` if one was reported already. */
  readonly poll: (id: string) => Effect.Effect<Option.Option<OutcomeEvent>>
  /** Messages of the worker errors reported so far. */
  readonly workerErrors: ReadonlyArray<string>
}

export const makeProbe: Effect.Effect<Probe> = Effect.gen(function*() {
  const events = yield* Queue.unbounded<OutcomeEvent>()
  const buffered = new Map<string, Array<OutcomeEvent>>()
  const workerErrors: Array<string> = []
  const push = (e: OutcomeEvent) => Queue.offer(events, e).pipe(Effect.asVoid)
  const bufferOf = (id: string) => {
    let b = buffered.get(id)
    if (b === undefined) buffered.set(id, b = [])
    return b
  }
  const layer = Observer.add({
    started: () => Effect.void,
    completed: (job) => push({ _tag: "completed", job }),
    retryScheduled: (job, delayMillis, message) => push({ _tag: "retryScheduled", job, delayMillis, message }),
    rescheduled: (job, delayMillis, message) => push({ _tag: "rescheduled", job, delayMillis, message }),
    dead: (job, message) => push({ _tag: "dead", job, message }),
    cancelled: (job, message) => push({ _tag: "cancelled", job, message }),
    workerError: (queue, message, cause) =>
      Effect.sync(() => {
        workerErrors.push(`${queue}: ${message}${cause === undefined ? "" : ` (${String(cause)})`}`)
      })
  })
  const drain = Effect.gen(function*() {
    while (true) {
      const e = yield* Queue.poll(events)
      if (Option.isNone(e)) return
      bufferOf(e.value.job.id).push(e.value)
    }
  })
  const poll = (id: string) =>
    Effect.andThen(drain, Effect.sync(() => Option.fromNullishOr(bufferOf(id).shift())))
  const next = (id: string): Effect.Effect<OutcomeEvent> =>
    Effect.gen(function*() {
      while (true) {
        const ready = bufferOf(id).shift()
        if (ready !== undefined) return ready
        const e = yield* Queue.take(events)
        bufferOf(e.job.id).push(e)
      }
    })
  return { layer: layer as Layer.Layer<never>, next, poll, workerErrors }
})

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

export interface ErrorEntry {
  readonly attempt: number
  readonly at: string
  readonly kind: string
  readonly message: string
}

export interface FullJobRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly state: string
  readonly priority: number
  readonly attempt: number
  readonly max_attempts: number
  readonly run_at: Date
  readonly created_at: Date
  readonly args: unknown
  readonly result: unknown
  readonly errors: ReadonlyArray<ErrorEntry>
  readonly unique_key: string | null
  readonly metadata: unknown
  readonly request_id: string | null
}

const columns = `id::text, name, queue, state, priority, attempt, max_attempts, run_at, created_at, args, result,
  errors, unique_key, metadata, request_id`

/** The job's row, or fails the test if there is none. */
export const row = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.flatMap(
      sql.unsafe<FullJobRow>(`SELECT ${columns} FROM effect_jobs.jobs WHERE id = $1::bigint`, [id]),
      (rows) => rows[0] === undefined ? Effect.die(new Error(`no row for job ${id}`)) : Effect.succeed(rows[0])
    )).pipe(Effect.orDie)

/** Rows of a queue, in id order. */
export const rowsOfQueue = (queue: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.unsafe<FullJobRow>(`SELECT ${columns} FROM effect_jobs.jobs WHERE queue = $1 ORDER BY jobs.id`, [queue])).pipe(
      Effect.orDie
    )

/** Whether a row with this id exists. */
export const exists = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => (rows[0]?.n ?? 0) > 0
    )).pipe(Effect.orDie)

/** Number of rows with this job name. */
export const countByName = (name: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE name = ${name}`,
      (rows) => rows[0]?.n ?? 0
    )).pipe(Effect.orDie)

/** Milliseconds from the `at` of an error entry to the row's `run_at`: the delay chosen at that outcome. */
export const delayAfter = (r: FullJobRow, entry: ErrorEntry | undefined): number => {
  if (entry === undefined) throw new Error(`job ${r.id} has no such error entry: ${JSON.stringify(r.errors)}`)
  return r.run_at.getTime() - Date.parse(entry.at)
}

// ---------------------------------------------------------------------------
// TestClock while the database is live
// ---------------------------------------------------------------------------

// `withTestClock` and `advanceUntil` ship in src/Testing.ts (users drive their workers with them
// too); re-exported here so the suite has one copy.
export { advanceUntil, withTestClock } from "../../src/Testing.ts"

/** A whole second a little after the real now: a start time for a TestClock. */
export const startOfNextSecond = () => Math.ceil(Date.now() / 1000) * 1000 + 1000

// ---------------------------------------------------------------------------
// Waiting for state that has no event
// ---------------------------------------------------------------------------

/**
 * Re-evaluates `check` every `every` (default 10 ms) until it gives a value, and fails
 * the test with `what` in the message after `timeout` (default 15 seconds) without one.
 *
 * Only for state that announces nothing: what other sessions or processes did in the
 * database (locks they wait on, rows a killed process left), or a flag the library only
 * lets you read. Where an event exists (a `Deferred` the handler completes, an Observer
 * event, `makeProbe`), await that instead. Runs on the live clock: under a `TestClock`
 * use `advanceUntil`.
 */
export const waitFor = <A, E, R>(
  what: string,
  check: Effect.Effect<Option.Option<A>, E, R>,
  options: { readonly every?: Duration.Input | undefined; readonly timeout?: Duration.Input | undefined } = {}
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const timeout = Duration.toMillis(Duration.fromInputUnsafe(options.timeout ?? "15 seconds"))
    const start = yield* Clock.currentTimeMillis
    while (true) {
      const value = yield* check
      if (Option.isSome(value)) return value.value
      if ((yield* Clock.currentTimeMillis) - start > timeout) {
        return yield* Effect.die(new Error(`timed out after ${timeout} ms waiting for: ${what}`))
      }
      yield* Effect.sleep(options.every ?? "10 millis")
    }
  })

/**
 * Waits until the lease of job `id` has run out by the database's clock, the one the rescue
 * judges leases by (src/internal/Store.ts): claim it with a lease of a few milliseconds, and
 * this returns almost at once. Polls the row every 10 ms.
 */
export const leaseLapsed = (id: string) =>
  waitFor(`the lease of job ${id} to lapse`, Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly lapsed: boolean }>`SELECT lease_expires_at < now() AS lapsed FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => (rows[0]?.lapsed === true ? Option.some(true) : Option.none())
    ))).pipe(Effect.orDie)
