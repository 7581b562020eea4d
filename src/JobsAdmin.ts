/**
 * JobsAdmin: the management API — what an operator, a CLI or a dashboard needs.
 *
 * Counts per queue and state; a paged listing by state, queue and job name; one
 * job with its errors and result; retrying dead jobs (one, or all of a queue);
 * cancelling by id or by unique key; deleting one job or many finished ones
 * (never a running job, nor a bundle member its bundle still counts or its
 * finish step may still read); pausing and resuming a queue for every worker.
 *
 * Every call is one short transaction (or one statement) through the library's
 * `JobStore`; none of them blocks workers for longer than a row lock. Times come
 * from Effect's `Clock`.
 *
 * **Cancelling** a job that waits (`scheduled` or `available`) ends it
 * `cancelled` at once. A `running` job cannot be changed under its worker: the
 * request is recorded on the row (`cancel_requested_at`) and sent to the
 * workers with a NOTIFY on the schema's cancel channel; the worker holding the job
 * interrupts the handler (its finalizers run) and records it `cancelled`. The
 * call returns `"cancelRequested"` then; `Jobs.await` or `get` tell when it is
 * done. A run that ends before the request reaches it keeps a terminal outcome
 * (completed, dead), but a retry, snooze or release of that run becomes
 * `cancelled`: a cancelled job never runs again.
 *
 * @since 0.1.0
 */
import { Clock, Context, Duration, Effect, Layer, Option } from "effect"
import type { SqlError } from "effect/sql"
import {
  InvalidAdminRequest,
  JobAlreadyFinished,
  JobInPendingBundle,
  JobIsRunning,
  JobNotFound,
  JobNotRetryable,
  UniqueKeyNotFound
} from "./Errors.ts"
import { Observer } from "./Observer.ts"
import type * as Job from "./Job.ts"
import * as Counts from "./internal/Counts.ts"
import { storable } from "./internal/Outcome.ts"
import { type JobDetailRow, JobStore, type JobState } from "./internal/Store.ts"

export type { JobState }

/** The terminal states: `deleteFinished` and retention remove only these. */
export type FinishedState = "completed" | "dead" | "cancelled"

/** One of the last errors kept with a job (`maxErrors` per job, default 5). */
export interface JobError {
  readonly attempt: number
  /** ISO time of the outcome that recorded it. */
  readonly at: string
  /** The error's tag (`Flaky`), `Defect`, `Timeout`, `LeaseExpired`, `Cancelled`... */
  readonly kind: string
  readonly message: string
}

/** Everything stored about a job. Arguments and result are in their JSON form. */
export interface JobDetails {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly state: JobState
  readonly priority: number
  /** Attempts started (a graceful-shutdown release or a snooze gives one back). */
  readonly attempt: number
  readonly maxAttempts: number
  /** When it runs (or ran) next. */
  readonly runAt: Date
  readonly args: unknown
  /** The handler's value encoded with the job's `success` Schema; `null` until completed. Decode it with `Jobs.status`. */
  readonly result: unknown
  /** Oldest first. */
  readonly errors: ReadonlyArray<JobError>
  readonly uniqueKey: string | undefined
  readonly metadata: Readonly<Record<string, unknown>>
  readonly requestId: string | undefined
  /** The worker holding it, while `running`. */
  readonly lockedBy: string | undefined
  readonly leaseExpiresAt: Date | undefined
  readonly createdAt: Date
  readonly attemptedAt: Date | undefined
  readonly finalizedAt: Date | undefined
  /** When retention removes it (terminal jobs with a finite retention). */
  readonly pruneAt: Date | undefined
  /** Set by `cancel` on a running job until its worker has stopped it. */
  readonly cancelRequestedAt: Date | undefined
}

export interface ListOptions {
  /** One state or several; default all. */
  readonly state?: JobState | ReadonlyArray<JobState> | undefined
  readonly queue?: string | undefined
  /** The job's name (`Job.make(name, ...)`). */
  readonly name?: string | undefined
  /**
   * Only jobs enqueued with this `uniqueKey` (of any name and state). Found through the
   * unique-key indexes (of unfinished jobs, and of finished ones since migration 0009).
   */
  readonly uniqueKey?: string | undefined
  /** Page size, 1 to 1000; default 50. */
  readonly limit?: number | undefined
  /** The `next` of the previous page. */
  readonly cursor?: string | undefined
  /** `"newest"` first (default) or `"oldest"` first, by id. */
  readonly order?: "newest" | "oldest" | undefined
}

export interface Page {
  readonly jobs: ReadonlyArray<JobDetails>
  /** Pass it as `cursor` for the next page; `undefined` on the last page. */
  readonly next: string | undefined
}

/** How many jobs of a queue are in a state. */
export interface StateCount {
  readonly queue: string
  readonly state: JobState
  readonly count: number
}

/** A queue as operators see it: whether it is paused for all workers, and its jobs per state. */
export interface QueueSummary {
  readonly name: string
  readonly paused: boolean
  readonly counts: Readonly<Record<JobState, number>>
}

/**
 * One minute of one queue's outcomes (`throughput`). Counted when the outcome was written: a
 * run's, the rescuer's (a lost run back to the queue counts as `retried`, or `dead`), an
 * operator's cancel of a waiting job.
 */
export interface ThroughputMinute {
  /** The start of the minute. */
  readonly at: Date
  readonly queue: string
  readonly completed: number
  /** Failed runs that will run again (retry scheduled). Snoozes and shutdown releases are not counted. */
  readonly retried: number
  readonly dead: number
  readonly cancelled: number
}

/**
 * A live worker (`workers`): one registered in the `workers` table whose session lock is held,
 * so its process is up. Workers with `listen: false` do not register and are not listed.
 */
export interface WorkerSummary {
  /** Its `workerId`, as in `JobDetails.lockedBy`. */
  readonly id: string
  readonly queues: ReadonlyArray<string>
  /** The sum of its queues' concurrency when it started (`setConcurrency` later is not reflected). */
  readonly concurrency: number
  readonly startedAt: Date
  /** Moved forward by the worker every 500 ms. */
  readonly lastSeenAt: Date
  /** Running jobs held by it (started or buffered). */
  readonly jobsHeld: number
}

/**
 * `"cancelled"`: the job was waiting and is `cancelled` now.
 * `"cancelRequested"`: it is running; its worker is asked to stop it.
 */
export type CancelOutcome = "cancelled" | "cancelRequested"

export class JobsAdmin extends Context.Service<JobsAdmin, {
  /**
   * Jobs per queue and state (pairs with no jobs are absent). Unfinished states are exact;
   * finished ones too while there are fewer than 50,000 finished jobs, beyond that they come
   * from the last full count, at most `max(10 s, 100 × the time it took)` old (see
   * docs/dashboard.md, "Counts").
   */
  readonly counts: (options?: { readonly queue?: string | undefined }) => Effect.Effect<ReadonlyArray<StateCount>, SqlError.SqlError>
  /** Every queue that has jobs or a pause flag, with its counts per state (0 where none), as `counts`. */
  readonly queues: Effect.Effect<ReadonlyArray<QueueSummary>, SqlError.SqlError>
  /**
   * Outcomes per minute over the last `minutes` (default 60, at most 360), of one queue or of
   * each queue: zero-filled, one entry per minute per queue that had any outcome in the window
   * (or the queue asked for), oldest minute first, the current minute last (still counting).
   */
  readonly throughput: (options?: {
    readonly queue?: string | undefined
    readonly minutes?: number | undefined
  }) => Effect.Effect<ReadonlyArray<ThroughputMinute>, InvalidAdminRequest | SqlError.SqlError>
  /** The live workers, oldest first: id, queues, concurrency, started, last seen, jobs held. */
  readonly workers: Effect.Effect<ReadonlyArray<WorkerSummary>, SqlError.SqlError>
  /** One page of jobs, newest first unless asked otherwise. Keyset-paged: stable while jobs are added. */
  readonly list: (options?: ListOptions) => Effect.Effect<Page, InvalidAdminRequest | SqlError.SqlError>
  /** One job with its errors and result; `JobNotFound` for an id that is not (or no longer) there. */
  readonly get: (id: string) => Effect.Effect<JobDetails, JobNotFound | SqlError.SqlError>
  /**
   * Makes a `dead` or `cancelled` job runnable now. It keeps the attempts it has
   * left; with `attempts: n` it gets `n` more than it has used (default 1 when it
   * has none left). `JobNotRetryable` for any other state, or when another
   * unfinished job has taken its unique key meanwhile.
   */
  readonly retry: (
    id: string,
    options?: { readonly attempts?: number | undefined }
  ) => Effect.Effect<void, JobNotFound | JobNotRetryable | InvalidAdminRequest | SqlError.SqlError>
  /**
   * Re-drives the dead-letter queue: every `dead` job of `queue` (of one job name,
   * if given) is made runnable as by `retry`; returns how many. Dead jobs whose
   * unique key is held by an unfinished job stay dead.
   */
  readonly retryDead: (
    queue: string,
    options?: { readonly name?: string | undefined; readonly attempts?: number | undefined }
  ) => Effect.Effect<number, InvalidAdminRequest | SqlError.SqlError>
  /** Cancels a job (see the module header); `JobAlreadyFinished` if it ended already. */
  readonly cancel: (
    id: string,
    options?: { readonly reason?: string | undefined }
  ) => Effect.Effect<CancelOutcome, JobNotFound | JobAlreadyFinished | SqlError.SqlError>
  /** Cancels the unfinished job with this name (or definition) and unique key. */
  readonly cancelByKey: (
    job: Job.Any | string,
    uniqueKey: string,
    options?: { readonly reason?: string | undefined }
  ) => Effect.Effect<
    { readonly id: string; readonly outcome: CancelOutcome },
    UniqueKeyNotFound | JobAlreadyFinished | SqlError.SqlError
  >
  /**
   * Deletes a job that is not running (`JobIsRunning`: cancel it first). A member
   * of a bundle can be deleted only once it is terminal and its bundle's finish
   * step has run (`JobInPendingBundle` before: deleting it would change what the
   * bundle finishes with).
   */
  readonly delete: (
    id: string
  ) => Effect.Effect<void, JobNotFound | JobIsRunning | JobInPendingBundle | SqlError.SqlError>
  /**
   * Deletes finished jobs — of every terminal state unless `states` says which, of
   * one queue if given, finished more than `olderThan` ago if given — in batches
   * of 5,000 rows; returns how many. Members of a bundle whose finish step has not
   * run yet are kept (it reads them), as retention keeps them.
   */
  readonly deleteFinished: (options?: {
    readonly queue?: string | undefined
    readonly states?: ReadonlyArray<FinishedState> | undefined
    readonly olderThan?: Duration.Input | undefined
  }) => Effect.Effect<number, InvalidAdminRequest | SqlError.SqlError>
  /** Pauses a queue for every worker; each sees it within one poll interval. Jobs keep being accepted. */
  readonly pause: (queue: string) => Effect.Effect<void, InvalidAdminRequest | SqlError.SqlError>
  /** Resumes a queue paused with `pause` (or a worker's `pause(queue, { global: true })`). */
  readonly resume: (queue: string) => Effect.Effect<void, InvalidAdminRequest | SqlError.SqlError>
}>()("effect-jobs/JobsAdmin") {}

const allStates: ReadonlyArray<JobState> = ["scheduled", "available", "running", "completed", "dead", "cancelled"]
const finishedStates: ReadonlyArray<FinishedState> = ["completed", "dead", "cancelled"]

/** Ids are positive bigints; anything else cannot name a job (and must not reach SQL as a cast error). */
const isJobId = (id: unknown): id is string =>
  typeof id === "string" && /^[1-9][0-9]{0,18}$/.test(id) && BigInt(id) <= 9223372036854775807n

const optionalDate = (d: Date | null): Date | undefined => (d === null ? undefined : d)
const optionalString = (s: string | null): string | undefined => (s === null ? undefined : s)

const toDetails = (row: JobDetailRow): JobDetails => ({
  id: row.id,
  name: row.name,
  queue: row.queue,
  state: row.state,
  priority: row.priority,
  attempt: row.attempt,
  maxAttempts: row.max_attempts,
  runAt: row.run_at,
  args: row.args,
  result: row.result,
  errors: Array.isArray(row.errors) ? (row.errors as ReadonlyArray<JobError>) : [],
  uniqueKey: optionalString(row.unique_key),
  metadata: typeof row.metadata === "object" && row.metadata !== null ? (row.metadata as Record<string, unknown>) : {},
  requestId: optionalString(row.request_id),
  lockedBy: optionalString(row.locked_by),
  leaseExpiresAt: optionalDate(row.lease_expires_at),
  createdAt: row.created_at,
  attemptedAt: optionalDate(row.attempted_at),
  finalizedAt: optionalDate(row.finalized_at),
  pruneAt: optionalDate(row.prune_at),
  cancelRequestedAt: optionalDate(row.cancel_requested_at)
})

/** Text no stored name holds: PostgreSQL refuses NUL, and stores an unpaired surrogate as U+FFFD. */
const badText = /\u0000|\p{Surrogate}/u

const checkQueue = (queue: unknown): Effect.Effect<string, InvalidAdminRequest> =>
  typeof queue === "string" && queue.length > 0 && queue.length <= 255 && !badText.test(queue)
    ? Effect.succeed(queue)
    : Effect.fail(new InvalidAdminRequest({ message: `queue must be a name of 1 to 255 characters, got ${JSON.stringify(queue)}` }))

const checkAttempts = (attempts: number | undefined): Effect.Effect<number | undefined, InvalidAdminRequest> =>
  attempts === undefined || (Number.isInteger(attempts) && attempts >= 1 && attempts <= 1_000_000)
    ? Effect.succeed(attempts)
    : Effect.fail(new InvalidAdminRequest({ message: `attempts must be an integer in [1, 1000000], got ${String(attempts)}` }))

const finishedMessage = (id: string, state: string) =>
  `job ${id} is already ${state}: only scheduled, available or running jobs can be cancelled`

/** Deleted per statement by `deleteFinished`: large enough to be quick, small enough not to hold locks long. */
const deleteBatch = 5000

/** The throughput window: 1 to this many minutes (the maintenance leader keeps 6 hours). */
const throughputMaxMinutes = 360

const byQueueThenState = (a: StateCount, b: StateCount) =>
  a.queue < b.queue ? -1 : a.queue > b.queue ? 1 : a.state < b.state ? -1 : a.state > b.state ? 1 : 0

const make = Effect.gen(function*() {
  const store = yield* JobStore
  const observer = yield* Observer
  const jobCounts = yield* Counts.make((cause) =>
    observer.workerError("*", "could not recount the finished jobs for JobsAdmin.counts", cause, "Warn")
  )

  /** Unfinished (exact) and finished (see Counts.ts) jobs per queue and state, of one queue or all. */
  const countRows = (queue: string | undefined) =>
    Effect.map(
      Effect.all([jobCounts.unfinished(queue), jobCounts.finished], { concurrency: 2 }),
      ([unfinished, finished]): ReadonlyArray<StateCount> =>
        [...unfinished, ...finished.counts.filter((r) => queue === undefined || r.queue === queue)]
          .filter((r) => r.count > 0)
          .sort(byQueueThenState)
    )

  const counts = Effect.fn("JobsAdmin.counts")(function*(options?: { readonly queue?: string | undefined }) {
    const queue = options?.queue
    // A name no queue can have has no jobs (and must not reach SQL, which would refuse it).
    if (queue !== undefined && (typeof queue !== "string" || badText.test(queue))) return []
    return yield* countRows(queue)
  })

  const queues = Effect.gen(function*() {
    const [rows, flags] = yield* Effect.all([countRows(undefined), store.queueList], {
      concurrency: 2
    })
    const byName = new Map<string, { paused: boolean; counts: Record<JobState, number> }>()
    const entry = (name: string) => {
      let e = byName.get(name)
      if (e === undefined) {
        e = { paused: false, counts: Object.fromEntries(allStates.map((s) => [s, 0])) as Record<JobState, number> }
        byName.set(name, e)
      }
      return e
    }
    for (const r of rows) entry(r.queue).counts[r.state] = r.count
    for (const f of flags) entry(f.name).paused = f.paused
    return Array.from(byName, ([name, e]): QueueSummary => ({ name, paused: e.paused, counts: e.counts }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }).pipe(Effect.withSpan("JobsAdmin.queues"))

  const throughput = Effect.fn("JobsAdmin.throughput")(function*(options?: {
    readonly queue?: string | undefined
    readonly minutes?: number | undefined
  }) {
    const minutes = options?.minutes ?? 60
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > throughputMaxMinutes) {
      return yield* new InvalidAdminRequest({
        message: `minutes must be an integer in [1, ${throughputMaxMinutes}], got ${String(options?.minutes)}`
      })
    }
    const queue = options?.queue
    if (queue !== undefined) yield* checkQueue(queue)
    const now = yield* Clock.currentTimeMillis
    const last = now - (now % 60_000)
    const first = last - (minutes - 1) * 60_000
    const rows = yield* store.throughputSince(first, queue)
    // Zero-filled: every minute of the window for every queue seen in it (a chart needs no gaps).
    const byKey = new Map(rows.map((r) => [`${r.minute.getTime()}\u0000${r.queue}`, r]))
    const names = queue !== undefined ? [queue] : [...new Set(rows.map((r) => r.queue))].sort()
    const out: Array<ThroughputMinute> = []
    for (let at = first; at <= last; at += 60_000) {
      for (const name of names) {
        const r = byKey.get(`${at}\u0000${name}`)
        out.push({
          at: new Date(at),
          queue: name,
          completed: r?.completed ?? 0,
          retried: r?.retried ?? 0,
          dead: r?.dead ?? 0,
          cancelled: r?.cancelled ?? 0
        })
      }
    }
    return out
  })

  const workers = Effect.map(store.workerList, (rows) =>
    rows.map((r): WorkerSummary => ({
      id: r.id,
      queues: r.queues,
      concurrency: r.concurrency,
      startedAt: r.started_at,
      lastSeenAt: r.last_seen_at,
      jobsHeld: r.held
    }))).pipe(Effect.withSpan("JobsAdmin.workers"))

  const list = Effect.fn("JobsAdmin.list")(function*(options: ListOptions = {}) {
    const limit = options.limit ?? 50
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      return yield* new InvalidAdminRequest({ message: `limit must be an integer in [1, 1000], got ${String(limit)}` })
    }
    const states = options.state === undefined
      ? undefined
      : typeof options.state === "string"
      ? [options.state]
      : options.state
    if (states !== undefined) {
      const unknown = states.filter((s) => !allStates.includes(s))
      if (unknown.length > 0 || states.length === 0) {
        return yield* new InvalidAdminRequest({
          message: `state must be one or more of ${allStates.join(", ")}, got ${JSON.stringify(options.state)}`
        })
      }
    }
    for (const [label, value] of [["queue", options.queue], ["name", options.name], ["uniqueKey", options.uniqueKey]] as const) {
      if (value !== undefined && (typeof value !== "string" || badText.test(value))) {
        return yield* new InvalidAdminRequest({ message: `${label} must be a string without NUL or unpaired surrogates` })
      }
    }
    if (options.cursor !== undefined && !isJobId(options.cursor)) {
      return yield* new InvalidAdminRequest({ message: `cursor must be the "next" of a previous page, got ${JSON.stringify(options.cursor)}` })
    }
    const order = options.order ?? "newest"
    const rows = yield* store.adminList({
      states,
      queue: options.queue,
      name: options.name,
      uniqueKey: options.uniqueKey,
      after: options.cursor,
      order,
      limit
    })
    const jobs = rows.map(toDetails)
    return { jobs, next: jobs.length === limit ? jobs[jobs.length - 1]!.id : undefined } satisfies Page
  })

  const get = Effect.fn("JobsAdmin.get")(function*(id: string) {
    if (!isJobId(id)) return yield* new JobNotFound({ id: String(id) })
    const row = yield* store.adminGet(id)
    if (row === undefined) return yield* new JobNotFound({ id })
    return toDetails(row)
  })

  const retry = Effect.fn("JobsAdmin.retry")(function*(id: string, options?: { readonly attempts?: number | undefined }) {
    const attempts = yield* checkAttempts(options?.attempts)
    if (!isJobId(id)) return yield* new JobNotFound({ id: String(id) })
    const now = yield* Clock.currentTimeMillis
    const result = yield* store.jobRetry(id, attempts, now).pipe(
      // An enqueue took the unique key between our check and the update.
      Effect.catchTag("SqlError", (e) =>
        e.reason._tag === "UniqueViolation"
          ? Effect.succeed({ _tag: "KeyTaken", uniqueKey: "" } as const)
          : Effect.fail(e))
    )
    switch (result._tag) {
      case "Retried":
        return
      case "NotFound":
        return yield* new JobNotFound({ id })
      case "WrongState":
        return yield* new JobNotRetryable({
          id,
          state: result.state,
          message: `job ${id} is ${result.state}: only dead or cancelled jobs can be retried`
        })
      case "KeyTaken":
        return yield* new JobNotRetryable({
          id,
          state: "dead",
          message: `job ${id} cannot run again: another unfinished job holds its unique key ${JSON.stringify(result.uniqueKey)}`
        })
    }
  })

  const retryDead = Effect.fn("JobsAdmin.retryDead")(
    function*(queue: string, options?: { readonly name?: string | undefined; readonly attempts?: number | undefined }) {
      yield* checkQueue(queue)
      const attempts = yield* checkAttempts(options?.attempts)
      const now = yield* Clock.currentTimeMillis
      return yield* store.jobRetryDeadOfQueue(queue, options?.name, attempts, now)
    }
  )

  const cancelById = Effect.fnUntraced(function*(id: string, reason: string) {
    if (!isJobId(id)) return yield* new JobNotFound({ id: String(id) })
    const now = yield* Clock.currentTimeMillis
    // The reason goes into the job's errors (jsonb): text PostgreSQL cannot store is replaced.
    const result = yield* store.jobCancel(id, now, storable(String(reason)))
    switch (result._tag) {
      case "Cancelled":
        return "cancelled" as CancelOutcome
      case "CancelRequested":
        return "cancelRequested" as CancelOutcome
      case "NotFound":
        return yield* new JobNotFound({ id })
      case "Finished":
        return yield* new JobAlreadyFinished({ id, state: result.state, message: finishedMessage(id, result.state) })
    }
  })

  const cancel = Effect.fn("JobsAdmin.cancel")(function*(id: string, options?: { readonly reason?: string | undefined }) {
    return yield* cancelById(id, options?.reason ?? "cancelled by an operator")
  })

  const cancelByKey = Effect.fn("JobsAdmin.cancelByKey")(
    function*(job: Job.Any | string, uniqueKey: string, options?: { readonly reason?: string | undefined }) {
      const name = typeof job === "string" ? job : job.name
      // No stored name or key holds a NUL or an unpaired surrogate: nothing to look up (and
      // PostgreSQL would refuse the text).
      if (typeof name !== "string" || typeof uniqueKey !== "string" || /\u0000|\p{Surrogate}/u.test(name + uniqueKey)) {
        return yield* new UniqueKeyNotFound({ job: String(name), uniqueKey: String(uniqueKey) })
      }
      const id = yield* store.jobFindActiveByKey(name, uniqueKey)
      if (id === undefined) return yield* new UniqueKeyNotFound({ job: name, uniqueKey })
      const outcome = yield* cancelById(id, options?.reason ?? "cancelled by an operator").pipe(
        // It was deleted between the two statements: as good as never there.
        Effect.catchTag("JobNotFound", () => Effect.fail(new UniqueKeyNotFound({ job: name, uniqueKey })))
      )
      return { id, outcome }
    }
  )

  const deleteJob = Effect.fn("JobsAdmin.delete")(function*(id: string) {
    if (!isJobId(id)) return yield* new JobNotFound({ id: String(id) })
    const result = yield* store.jobDelete(id)
    switch (result._tag) {
      case "Deleted":
        return
      case "NotFound":
        return yield* new JobNotFound({ id })
      case "Running":
        return yield* new JobIsRunning({ id, message: `job ${id} is running: cancel it first, or wait until it finishes` })
      case "InPendingBundle":
        return yield* new JobInPendingBundle({
          id,
          bundleId: result.bundleId,
          state: result.state,
          message: finishedStates.includes(result.state as FinishedState)
            ? `job ${id} is a member of bundle ${result.bundleId}, whose finish step has not run yet and reads every ` +
              `member: it can be deleted once the bundle's finish step has run`
            : `job ${id} is ${result.state} and a member of bundle ${result.bundleId}: deleting it would count it as ` +
              `done for its bundle; cancel it instead`
        })
    }
  })

  const deleteFinished = Effect.fn("JobsAdmin.deleteFinished")(function*(options: {
    readonly queue?: string | undefined
    readonly states?: ReadonlyArray<FinishedState> | undefined
    readonly olderThan?: Duration.Input | undefined
  } = {}) {
    const states = options.states ?? finishedStates
    if (states.some((s) => !finishedStates.includes(s))) {
      return yield* new InvalidAdminRequest({
        message: `states must be among ${finishedStates.join(", ")}, got ${JSON.stringify(states)}`
      })
    }
    if (options.queue !== undefined) yield* checkQueue(options.queue)
    let finalizedBefore: number | undefined
    if (options.olderThan !== undefined) {
      const d = Duration.fromInput(options.olderThan)
      const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
      if (!(ms >= 0) || !Number.isFinite(ms)) {
        return yield* new InvalidAdminRequest({ message: `olderThan must be a finite, non-negative duration, got ${String(options.olderThan)}` })
      }
      // Nothing finished before 1970: an older bound (up to beyond what a Date or a
      // timestamptz can hold) deletes nothing, rather than failing.
      finalizedBefore = Math.max(0, (yield* Clock.currentTimeMillis) - ms)
    }
    let total = 0
    while (true) {
      const n = yield* store.jobDeleteFinished({ queue: options.queue, states, finalizedBefore, limit: deleteBatch })
      total += n
      if (n < deleteBatch) return total
    }
  })

  const pause = Effect.fn("JobsAdmin.pause")(function*(queue: string) {
    yield* checkQueue(queue)
    yield* store.queueSetPaused(queue, true, yield* Clock.currentTimeMillis)
  })

  const resume = Effect.fn("JobsAdmin.resume")(function*(queue: string) {
    yield* checkQueue(queue)
    yield* store.queueSetPaused(queue, false, yield* Clock.currentTimeMillis)
  })

  return JobsAdmin.of({
    counts,
    queues,
    throughput,
    workers,
    list,
    get,
    retry,
    retryDead,
    cancel,
    cancelByKey,
    delete: deleteJob,
    deleteFinished,
    pause,
    resume
  })
})

/** The management API; needs a `PgClient` (from `@effect/sql-pg`). */
export const layer = Layer.effect(JobsAdmin, make).pipe(Layer.provide(JobStore.layer))
