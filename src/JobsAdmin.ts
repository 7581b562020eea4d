/**
 * JobsAdmin: the management API — what an operator, a CLI or a dashboard needs.
 *
 * Counts per queue and state; a paged listing by state, queue and job name; one
 * job with its errors and result; retrying dead jobs (one, or all of a queue);
 * cancelling by id or by unique key; deleting one job or many finished ones
 * (never a running job, nor a bundle member its bundle still counts or its
 * finish step may still read); pausing and resuming a queue for every worker;
 * the live workers, the periodic schedules (with their next slots) and the
 * bundles (with their progress).
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
import { Clock, Context, Cron, Duration, Effect, Layer, Option, Result } from "effect"
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
import { cronSlots, everySlots, nextSlots, type Slots } from "./internal/slots.ts"
import { type JobDetailRow, JobStore, type JobState, type PeriodicRow } from "./internal/Store.ts"
import { survey } from "./internal/Unserved.ts"

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
  /** The states in which the job holds its `uniqueKey` past its end (`unique.states`); undefined: the unfinished ones. */
  readonly uniqueStates: ReadonlyArray<JobState> | undefined
  /** The start of the unique window the job holds its key for (`unique.period`); undefined: none. */
  readonly uniqueWindow: Date | undefined
  /** The job's group (`EnqueueOptions.group`: per-group limits, fair claims, sequences). */
  readonly group: string | undefined
  readonly metadata: Readonly<Record<string, unknown>>
  readonly requestId: string | undefined
  /** The worker holding it, while `running`. */
  readonly lockedBy: string | undefined
  readonly leaseExpiresAt: Date | undefined
  /**
   * `running` but not started yet: claimed ahead of a free slot, waiting in its worker's buffer
   * (the worker's beat clears the mark within about half a second of the start). Such a job's
   * `attemptedAt` is when it was claimed.
   */
  readonly buffered: boolean
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
  /** The queues it serves now (as of its last confirmation: a `reconfigure` shows within a second). */
  readonly queues: ReadonlyArray<string>
  /** The sum of its queues' concurrency when it started (`setConcurrency` later is not reflected). */
  readonly concurrency: number
  readonly startedAt: Date
  /** Moved forward by the worker every 500 ms. */
  readonly lastSeenAt: Date
  /** Running jobs held by it (started or buffered). */
  readonly jobsHeld: number
  /**
   * The job names it has handlers for, aliases included: the only ones it claims, on each of
   * its queues. `undefined` for a worker of a version that does not say (before migration 8).
   */
  readonly names: ReadonlyArray<string> | undefined
}

/** A queue with `available` jobs that no live worker serves (`unserved`). */
export interface UnservedQueue {
  readonly queue: string
  /** Its available jobs. */
  readonly available: number
}

/** Jobs of one name waiting in a queue that live workers serve, none of them with its handler (`unserved`). */
export interface UnhandledName {
  readonly queue: string
  /** The job name (no live worker of the queue has a handler for it, nor for it as an alias). */
  readonly name: string
  /** Available jobs of this name in the queue. */
  readonly available: number
}

/**
 * Waiting jobs that no live worker would run now (`unserved`). Workers with `listen: false` do
 * not register: a queue only they serve is listed here while they hold none of its jobs.
 */
export interface Unserved {
  /**
   * Queues with available jobs and no live worker serving them, by name: their jobs wait for a
   * worker of the queue; they are never sent to dead for it.
   */
  readonly queues: ReadonlyArray<UnservedQueue>
  /**
   * Names waiting (among the first 100 runnable jobs of their queue, in claim order) in a
   * queue that live workers serve, none of them with a handler for the name: unless one comes,
   * the maintenance leader sends them to dead (`NoHandler`) after the workers' `noHandlerTimeout`.
   */
  readonly names: ReadonlyArray<UnhandledName>
}

/**
 * `"cancelled"`: the job was waiting and is `cancelled` now.
 * `"cancelRequested"`: it is running; its worker is asked to stop it.
 */
export type CancelOutcome = "cancelled" | "cancelRequested"

/**
 * A periodic schedule as its row holds it (`periodic`). The definition (job, queue, cron or
 * interval) is written by the scheduler each time it registers the schedule (migrations/0007);
 * it is `undefined` for a row no scheduler of this version has registered yet.
 */
export interface PeriodicSummary {
  readonly name: string
  /** The job it enqueues, and into which queue. */
  readonly job: string | undefined
  readonly queue: string | undefined
  /** `cron "0 3 * * *" Europe/Paris` or `every 2s`; `undefined` when not stored. */
  readonly schedule: string | undefined
  readonly cron: string | undefined
  readonly timeZone: string | undefined
  readonly everyMillis: number | undefined
  /** The last slot a scheduler handled (its job was enqueued, or the schedule was registered then). */
  readonly lastSlot: Date
  /** The job of the last slot, and its state now (`undefined` once retention removed it). */
  readonly lastJobId: string | undefined
  readonly lastJobState: JobState | undefined
  /** The next three slots from now (`Clock`), computed from the stored cron or interval; none when not stored. */
  readonly nextSlots: ReadonlyArray<Date>
  /**
   * The first slot after `lastSlot`, when it is more than a minute in the past: no
   * scheduler enqueued it (none was running, or the database was away). `undefined` when on time.
   */
  readonly overdueSince: Date | undefined
}

/** A bundle with its progress (`bundles`). */
export interface BundleSummary {
  readonly id: string
  readonly name: string
  /** Members at enqueue. */
  readonly total: number
  /** Members that reached a terminal state (or were deleted before): `total` once finished. */
  readonly done: number
  readonly metadata: unknown
  readonly createdAt: Date
  /** When its last member finished (kept if an operator retries a member afterwards). */
  readonly finishedAt: Date | undefined
  /** Its finish step (`Bundle.toLayer`) has run, and the follow-up job it enqueued, if any. */
  readonly finishStepDone: boolean
  readonly followUpId: string | undefined
}

export interface BundleListOptions {
  /** `"open"`: members left to finish; `"finished"`: none left. Default both. */
  readonly state?: "open" | "finished" | undefined
  /** The bundle's kind (`Bundle.make(name)`). */
  readonly name?: string | undefined
  /** Page size, 1 to 1000; default 50. */
  readonly limit?: number | undefined
  /** The `next` of the previous page. */
  readonly cursor?: string | undefined
}

export interface BundlePage {
  /** Newest first. */
  readonly bundles: ReadonlyArray<BundleSummary>
  /** Pass it as `cursor` for the next page; `undefined` on the last page. */
  readonly next: string | undefined
}

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
  /**
   * Waiting jobs no live worker would run: queues with available jobs that no live worker
   * serves, and names in served queues that no live worker of the queue has a handler for.
   */
  readonly unserved: Effect.Effect<Unserved, SqlError.SqlError>
  /** One page of jobs, newest first unless asked otherwise. Keyset-paged: stable while jobs are added. */
  readonly list: (options?: ListOptions) => Effect.Effect<Page, InvalidAdminRequest | SqlError.SqlError>
  /** One job with its errors and result; `JobNotFound` for an id that is not (or no longer) there. */
  readonly get: (id: string) => Effect.Effect<JobDetails, JobNotFound | SqlError.SqlError>
  /**
   * Makes a `dead` or `cancelled` job runnable now. It keeps the attempts it has
   * left; with `attempts: n` it gets `n` more than it has used (default 1 when it
   * has none left). `JobNotRetryable` for any other state, or when another
   * job has taken its unique key meanwhile (unfinished, or finished in its unique window).
   */
  readonly retry: (
    id: string,
    options?: { readonly attempts?: number | undefined }
  ) => Effect.Effect<void, JobNotFound | JobNotRetryable | InvalidAdminRequest | SqlError.SqlError>
  /**
   * Re-drives the dead-letter queue: every `dead` job of `queue` (of one job name,
   * if given) is made runnable as by `retry`; returns how many. Dead jobs whose
   * unique key another job holds (unfinished, or finished in their unique window) stay dead.
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
  /** Every periodic schedule in the database, by name, with its last slot and its next ones. */
  readonly periodic: Effect.Effect<ReadonlyArray<PeriodicSummary>, SqlError.SqlError>
  /** One page of bundles, newest first, with their progress (members done of total). */
  readonly bundles: (options?: BundleListOptions) => Effect.Effect<BundlePage, InvalidAdminRequest | SqlError.SqlError>
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
  uniqueStates: row.unique_states ?? undefined,
  uniqueWindow: optionalDate(row.unique_window),
  group: optionalString(row.group_key),
  metadata: typeof row.metadata === "object" && row.metadata !== null ? (row.metadata as Record<string, unknown>) : {},
  requestId: optionalString(row.request_id),
  lockedBy: optionalString(row.locked_by),
  leaseExpiresAt: optionalDate(row.lease_expires_at),
  buffered: row.buffered === true,
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

/** A slot this long past with no job is `overdueSince` (a scheduler fires within milliseconds). */
const overdueAfterMillis = 60_000

/** The slots of a stored definition; `undefined` if none is stored or it no longer parses. */
const storedSlots = (r: PeriodicRow, now: number): Slots | undefined => {
  if (r.every_ms !== null) return Number.isFinite(r.every_ms) && r.every_ms >= 1 ? everySlots(r.every_ms) : undefined
  if (r.cron === null) return undefined
  try {
    const parsed = Cron.parse(r.cron, r.time_zone ?? "UTC")
    if (Result.isFailure(parsed)) return undefined
    const slots = cronSlots(parsed.success, r.cron, r.time_zone ?? "UTC")
    slots.after(now) // a cron that never fires throws here
    return slots
  } catch {
    return undefined // an unknown time zone, or a cron that never fires
  }
}

const periodicSummary = (r: PeriodicRow, now: number): PeriodicSummary => {
  const slots = storedSlots(r, now)
  const lastSlot = r.last_slot.getTime()
  const firstDue = slots?.after(lastSlot)
  return {
    name: r.name,
    job: optionalString(r.job),
    queue: optionalString(r.queue),
    schedule: slots?.description,
    cron: optionalString(r.cron),
    timeZone: optionalString(r.time_zone),
    everyMillis: r.every_ms ?? undefined,
    lastSlot: r.last_slot,
    lastJobId: optionalString(r.last_job),
    lastJobState: r.last_job_state ?? undefined,
    nextSlots: slots === undefined ? [] : nextSlots(slots, now, 3).map((t) => new Date(t)),
    overdueSince: firstDue !== undefined && firstDue < now - overdueAfterMillis ? new Date(firstDue) : undefined
  }
}

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
      jobsHeld: r.held,
      names: r.names ?? undefined
    }))).pipe(Effect.withSpan("JobsAdmin.workers"))

  const unserved = Effect.gen(function*() {
    const s = yield* survey(store, yield* Clock.currentTimeMillis)
    const queues = [...new Set([...s.unserved, ...s.unhandled.map((u) => u.queue)])]
    const counts = new Map<string, number>()
    const perQueue = new Map<string, number>()
    for (const c of yield* store.jobCountAvailable(queues)) {
      counts.set(JSON.stringify([c.queue, c.name]), c.n)
      perQueue.set(c.queue, (perQueue.get(c.queue) ?? 0) + c.n)
    }
    return {
      // (a queue whose jobs all started meanwhile has none left to show)
      queues: s.unserved.flatMap((queue) => {
        const available = perQueue.get(queue) ?? 0
        return available === 0 ? [] : [{ queue, available }]
      }),
      names: s.unhandled.flatMap(({ name, queue }) => {
        const available = counts.get(JSON.stringify([queue, name])) ?? 0
        return available === 0 ? [] : [{ queue, name, available }]
      })
    } satisfies Unserved
  }).pipe(Effect.withSpan("JobsAdmin.unserved"))

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
          message: `job ${id} cannot run again: another job holds its unique key ${JSON.stringify(result.uniqueKey)} ` +
            `(an unfinished one, or one of its unique window)`
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

  // -- periodic schedules and bundles (the dashboard's pages) --

  const periodic = Effect.gen(function*() {
    const rows = yield* store.periodicList
    const now = yield* Clock.currentTimeMillis
    return rows.map((r) => periodicSummary(r, now))
  }).pipe(Effect.withSpan("JobsAdmin.periodic"))

  const bundles = Effect.fn("JobsAdmin.bundles")(function*(options: BundleListOptions = {}) {
    const limit = options.limit ?? 50
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      return yield* new InvalidAdminRequest({ message: `limit must be an integer in [1, 1000], got ${String(limit)}` })
    }
    if (options.state !== undefined && options.state !== "open" && options.state !== "finished") {
      return yield* new InvalidAdminRequest({ message: `state must be "open" or "finished", got ${JSON.stringify(options.state)}` })
    }
    if (options.name !== undefined && (typeof options.name !== "string" || badText.test(options.name))) {
      return yield* new InvalidAdminRequest({ message: "name must be a string without NUL or unpaired surrogates" })
    }
    if (options.cursor !== undefined && !isJobId(options.cursor)) {
      return yield* new InvalidAdminRequest({ message: `cursor must be the "next" of a previous page, got ${JSON.stringify(options.cursor)}` })
    }
    const rows = yield* store.bundleList({
      open: options.state === undefined ? undefined : options.state === "open",
      name: options.name,
      before: options.cursor,
      limit
    })
    const list = rows.map((r): BundleSummary => ({
      id: r.id,
      name: r.name,
      total: r.total,
      done: r.total - r.remaining,
      metadata: r.metadata,
      createdAt: r.created_at,
      finishedAt: optionalDate(r.finished_at),
      finishStepDone: r.follow_up_done,
      followUpId: optionalString(r.follow_up_id)
    }))
    return { bundles: list, next: list.length === limit ? list[list.length - 1]!.id : undefined } satisfies BundlePage
  })

  return JobsAdmin.of({
    periodic,
    bundles,
    counts,
    queues,
    throughput,
    workers,
    unserved,
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
