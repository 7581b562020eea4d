/**
 * Jobs: the client that enqueues.
 *
 * `enqueue` and `enqueueMany` encode the arguments with the job's Schema and
 * insert in one statement. Inside the caller's `sql.withTransaction` they join
 * that transaction: the job exists only if it commits, and workers are woken
 * only then (the NOTIFY is part of the transaction).
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Layer, Option, Queue, Scope } from "effect"
import { PgClient } from "@effect/sql-pg"
import { SqlClient, type SqlError } from "effect/sql"
import {
  AwaitTimeout,
  InvalidJobArgs,
  InvalidJobOptions,
  InvalidResult,
  JobCancelled,
  JobDead,
  JobNotFound
} from "./Errors.ts"
import type * as Job from "./Job.ts"
import * as IdleWait from "./internal/IdleWait.ts"
import { currentTrace, isJobId, rowsOf } from "./internal/JobRow.ts"
import * as Notifier from "./internal/Notifier.ts"
import { JobStore, type JobState, type OutcomeRow } from "./internal/Store.ts"
import { Observer } from "./Observer.ts"
import { RequestId } from "./RequestId.ts"

export interface EnqueueOptions {
  /** Overrides the job's queue. */
  readonly queue?: string | undefined
  /** Run no earlier than this long from now. */
  readonly delay?: Duration.Input | undefined
  /** Run no earlier than this instant (takes precedence over `delay`). */
  readonly runAt?: Date | undefined
  /** Overrides the job's priority; lower runs first. */
  readonly priority?: number | undefined
  /** Overrides the job's maxAttempts. */
  readonly maxAttempts?: number | undefined
  /**
   * While a job with the same name and key is unfinished (scheduled, available or
   * running), enqueueing again inserts nothing and returns the existing job's id.
   * `unique` adds finished jobs and time windows, and replacing (debounce).
   */
  readonly uniqueKey?: string | undefined
  /** How the `uniqueKey` holds; needs a `uniqueKey`. See `UniqueOptions`. */
  readonly unique?: UniqueOptions | undefined
  /** Free-form JSON stored with the job (origin, tenant, ...). */
  readonly metadata?: Readonly<Record<string, unknown>> | undefined
  /**
   * The job's group (a tenant, an account): 1 to 255 characters without NUL. Queues served
   * with `flow` limit how many jobs of one group run at once, go round the groups fairly, or
   * run a group's jobs one at a time in enqueue order (docs/flow-control.md). Ignored by
   * queues without `flow`.
   */
  readonly group?: string | undefined
}

/**
 * How a `uniqueKey` holds (docs/enqueue.md, "Uniqueness"). An unfinished job (scheduled,
 * available or running) always holds its key; these options add finished jobs and windows,
 * and make a duplicate replace the job that is waiting instead of being dropped.
 */
export interface UniqueOptions {
  /**
   * The states in which a job holds its key. They must include scheduled, available and
   * running; add `completed`, `dead` or `cancelled` so that a finished job holds it too
   * (for as long as its row is kept: see the job's `retention`). Default: the unfinished
   * states, plus `completed` when a `period` is given.
   */
  readonly states?: ReadonlyArray<JobState> | undefined
  /**
   * The window in which a finished job holds its key: the enqueue time rounded down to a
   * multiple of `period` (from the Unix epoch, UTC), so "one per key per 10 minutes" is one
   * per window 10:00-10:10, 10:10-10:20... Without a period, a finished job of `states`
   * holds its key as long as it is kept. Finite and at least 1 millisecond.
   */
  readonly period?: Duration.Input | undefined
  /**
   * What a duplicate does to a job of the key that is still waiting (scheduled or available;
   * a job waiting for a retry too): `true` gives it this enqueue's args, run time, priority,
   * queue, maxAttempts (at least one more than it has spent) and metadata, last write wins
   * (debounce); `"keepRunAt"` the same but its run time. A running or finished holder is not
   * touched: the enqueue is a `"duplicate"`. Default `false`: the duplicate is dropped.
   */
  readonly replace?: boolean | "keepRunAt" | undefined
}

/**
 * What an enqueue did (`Jobs.insert`, `insertMany`, `insertAll`):
 * - `"inserted"`: a new job, `id`;
 * - `"duplicate"`: a job holding the same key exists, `id`; nothing was written;
 * - `"replaced"`: a waiting job of the key, `id`, was given this enqueue's values (`unique.replace`).
 */
export interface EnqueueResult {
  readonly id: string
  readonly outcome: "inserted" | "duplicate" | "replaced"
}

export type EnqueueError = InvalidJobArgs | InvalidJobOptions | SqlError.SqlError

/** Where a job stands, with its typed result once completed. */
export interface Status<A> {
  readonly id: string
  readonly state: JobState
  /** The decoded result, for a completed job whose definition has a `success` Schema. */
  readonly result: Option.Option<A>
  readonly errors: ReadonlyArray<{ readonly message?: string; readonly kind?: string }>
}

/** A bundle's progress: members per state and whether it finished. */
export interface BundleProgress {
  readonly id: string
  readonly name: string
  readonly total: number
  /** Members not yet in a terminal state. */
  readonly remaining: number
  readonly counts: Readonly<Record<string, number>>
  readonly finished: boolean
  readonly finishedAt: Date | undefined
  /** The follow-up job, once the finish step enqueued it. */
  readonly followUpId: string | undefined
}

/** `InvalidJobOptions`: the `timeout` given to `await` is not a duration. */
export type AwaitError = JobNotFound | JobDead | JobCancelled | AwaitTimeout | InvalidResult | InvalidJobOptions | SqlError.SqlError

/** One job of a mixed `enqueueAll` batch; build it with `Jobs.entry`. */
export interface Entry {
  readonly job: Job.Any
  readonly args: unknown
  readonly options: EnqueueOptions | undefined
}

/** A typed entry for `enqueueAll`. */
export const entry = <J extends Job.Any>(job: J, args: Job.ArgsOf<J>, options?: EnqueueOptions): Entry => ({
  job,
  args,
  options
})

export class Jobs extends Context.Service<Jobs, {
  readonly enqueue: <J extends Job.Any>(
    job: J,
    args: Job.ArgsOf<J>,
    options?: EnqueueOptions
  ) => Effect.Effect<string, EnqueueError>
  /** Many jobs of one kind in one statement; ids in the order of `args`. */
  readonly enqueueMany: <J extends Job.Any>(
    job: J,
    args: ReadonlyArray<Job.ArgsOf<J>>,
    options?: EnqueueOptions
  ) => Effect.Effect<ReadonlyArray<string>, EnqueueError>
  /** Jobs of several kinds in one statement; ids in the order of `entries`. */
  readonly enqueueAll: (entries: ReadonlyArray<Entry>) => Effect.Effect<ReadonlyArray<string>, EnqueueError>
  /** `enqueue`, saying whether it inserted the job, found a duplicate or replaced a waiting job. */
  readonly insert: <J extends Job.Any>(
    job: J,
    args: Job.ArgsOf<J>,
    options?: EnqueueOptions
  ) => Effect.Effect<EnqueueResult, EnqueueError>
  /** `enqueueMany`, with what it did for each of `args`, in order. */
  readonly insertMany: <J extends Job.Any>(
    job: J,
    args: ReadonlyArray<Job.ArgsOf<J>>,
    options?: EnqueueOptions
  ) => Effect.Effect<ReadonlyArray<EnqueueResult>, EnqueueError>
  /** `enqueueAll`, with what it did for each of `entries`, in order. */
  readonly insertAll: (entries: ReadonlyArray<Entry>) => Effect.Effect<ReadonlyArray<EnqueueResult>, EnqueueError>
  /**
   * Enqueues `entries` as one bundle, atomically (bundle and members in one
   * transaction). See `Bundle`. Members may not have a `uniqueKey`.
   */
  readonly enqueueBundle: (
    bundle: { readonly name: string },
    entries: ReadonlyArray<Entry>,
    options?: { readonly metadata?: Readonly<Record<string, unknown>> | undefined }
  ) => Effect.Effect<{ readonly bundleId: string; readonly ids: ReadonlyArray<string> }, EnqueueError>
  /** A bundle's progress; `JobNotFound` (with the bundle id) if there is no such bundle. */
  readonly bundleProgress: (bundleId: string) => Effect.Effect<BundleProgress, JobNotFound | SqlError.SqlError>
  /** The job's state now, with its typed result if it completed. */
  readonly status: <J extends Job.Any>(
    job: J,
    id: string
  ) => Effect.Effect<Status<Job.SuccessOf<J>>, JobNotFound | InvalidResult | SqlError.SqlError>
  /**
   * Waits until the job is finished and returns its typed result; fails with
   * `JobDead` or `JobCancelled` if it ended so, `AwaitTimeout` after `timeout`.
   * Woken by a NOTIFY when jobs finish (and re-checked every second, for setups
   * where NOTIFY cannot arrive). The result must still be there: give jobs you
   * await a `retention` above 0 (the default keeps them a day).
   */
  readonly await: <J extends Job.Any>(
    job: J,
    id: string,
    options?: { readonly timeout?: Duration.Input | undefined }
  ) => Effect.Effect<Job.SuccessOf<J>, AwaitError>
}>()("effect-jobs/Jobs") {}


const make = Effect.gen(function*() {
  const store = yield* JobStore

  // Every form writes through this span: a run's span is the child of the span current at its
  // enqueue, and that has been "Jobs.enqueueAll" (below "Jobs.enqueue" for one job) since 0.1.
  const write = Effect.fn("Jobs.enqueueAll")(function*(entries: ReadonlyArray<Entry>) {
    if (entries.length === 0) return []
    const now = yield* Clock.currentTimeMillis
    const requestId = (yield* RequestId) ?? crypto.randomUUID()
    const trace = yield* currentTrace
    const rows = yield* rowsOf(entries, now, requestId, trace)
    return yield* store.jobInsertMany(rows)
  })
  const idsOf = (results: ReadonlyArray<EnqueueResult>) => results.map((r) => r.id)

  const enqueueAll = (entries: ReadonlyArray<Entry>) => Effect.map(write(entries), idsOf)
  const insertAll = (entries: ReadonlyArray<Entry>) => write(entries).pipe(Effect.withSpan("Jobs.insertAll"))

  const decodeStatus = <J extends Job.Any>(job: J, row: OutcomeRow) =>
    Effect.gen(function*() {
      let result = Option.none<Job.SuccessOf<J>>()
      if (row.state === "completed" && job.hasResult) {
        const decoded = yield* Effect.exit(job.decodeResult(row.result))
        if (Exit.isFailure(decoded)) {
          return yield* new InvalidResult({ id: row.id, message: Cause.pretty(decoded.cause) })
        }
        result = Option.some(decoded.value as Job.SuccessOf<J>)
      }
      return { id: row.id, state: row.state, result, errors: row.errors } satisfies Status<Job.SuccessOf<J>>
    })

  const status = <J extends Job.Any>(
    job: J,
    id: string
  ): Effect.Effect<Status<Job.SuccessOf<J>>, JobNotFound | InvalidResult | SqlError.SqlError> =>
    Effect.flatMap(
      isJobId(id) ? store.jobOutcomes([id]) : Effect.succeed([]),
      (rows): Effect.Effect<Status<Job.SuccessOf<J>>, JobNotFound | InvalidResult> =>
        rows[0] === undefined ? Effect.fail(new JobNotFound({ id })) : decodeStatus(job, rows[0])
    ).pipe(Effect.withSpan("Jobs.status"))

  // -- await: a subscription to the done channel, started on first use; waiters re-check on every NOTIFY --
  const layerScope = yield* Scope.Scope
  const observer = yield* Observer
  const notifier = yield* Notifier.Notifier
  const pg = yield* PgClient.PgClient
  const waiters = new Map<string, Set<Deferred.Deferred<OutcomeRow | undefined>>>()
  let listening = false
  const terminal = new Set<JobState>(["completed", "dead", "cancelled"])

  const checkWaiters = Effect.suspend(() => {
    const ids = Array.from(waiters.keys())
    if (ids.length === 0) return Effect.void
    return Effect.map(store.jobOutcomes(ids), (rows) => {
      const found = new Map(rows.map((r) => [r.id, r]))
      for (const id of ids) {
        const row = found.get(id)
        if (row !== undefined && !terminal.has(row.state)) continue
        for (const d of waiters.get(id) ?? []) Deferred.doneUnsafe(d, Exit.succeed(row))
        waiters.delete(id)
      }
    })
  })

  // Background failures go to the Observer (the layer's; the default one logs them) and are retried.
  const checkOrReport = Effect.suspend(() => {
    const n = waiters.size
    return checkWaiters.pipe(Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.void
        : observer.workerError("*", `await: checking ${n} awaited job(s) failed; retrying in 1 second`, Cause.squash(cause), "Warn")
    ))
  })

  // The 1-second re-check (a missed NOTIFY, a session that cannot open), while someone waits
  // (IdleWait.ts: on a TestClock, a jump of a day would otherwise run 86,400 empty checks).
  const someoneWaits = IdleWait.make(() => waiters.size > 0)
  const recheck = Effect.forever(
    Effect.andThen(someoneWaits.untilBusy, Effect.andThen(Effect.sleep("1 second"), checkOrReport))
  )

  /**
   * Starts, once, the subscription (on the process's LISTEN session, internal/Notifier.ts) and
   * the 1-second re-check, for the life of the layer. It does not wait for the LISTEN: the
   * first `Established`, like every later one (a reconnect), is followed by a check, which
   * finds what finished before; until then the re-check covers a session that cannot open.
   */
  const startListener = Effect.uninterruptible(Effect.suspend(() => {
    if (listening) return Effect.void
    listening = true
    return Effect.gen(function*() {
      const events = yield* notifier.subscribe(store.channels.done).pipe(
        Effect.provideService(PgClient.PgClient, pg),
        Effect.provideService(Observer, observer),
        Scope.provide(layerScope)
      )
      // Many notifications, one check.
      yield* Effect.forkIn(Effect.forever(Effect.andThen(Queue.takeAll(events), checkOrReport)), layerScope)
      yield* Effect.forkIn(recheck, layerScope)
    })
  }))

  const awaitJob = <J extends Job.Any>(job: J, id: string, options?: { readonly timeout?: Duration.Input | undefined }) =>
    Effect.gen(function*() {
      // Checked before waiting: a malformed id would make the statement that checks every
      // waiter at once fail, for all of them.
      if (!isJobId(id)) return yield* new JobNotFound({ id })
      const timeout = options?.timeout === undefined ? undefined : Duration.fromInput(options.timeout)
      if (timeout !== undefined && !(Option.isSome(timeout) && Duration.toMillis(timeout.value) >= 0)) {
        return yield* new InvalidJobOptions({ job: job.name, message: `await: timeout must be a non-negative duration, got ${String(options?.timeout)}` })
      }
      const done = yield* Deferred.make<OutcomeRow | undefined>()
      let set = waiters.get(id)
      if (set === undefined) waiters.set(id, set = new Set())
      set.add(done)
      someoneWaits.wake()
      const wait = startListener.pipe(
        Effect.andThen(Effect.forkChild(checkWaiters)), // it may be finished already
        Effect.andThen(Deferred.await(done))
      )
      const row = yield* (timeout === undefined ? wait : Effect.timeoutOrElse(wait, {
        duration: timeout.value,
        orElse: () => Effect.fail(new AwaitTimeout({ id, timeoutMillis: Duration.toMillis(timeout.value) }))
      })).pipe(Effect.ensuring(Effect.sync(() => {
        set.delete(done)
        if (set.size === 0 && waiters.get(id) === set) waiters.delete(id)
      })))
      if (row === undefined) return yield* new JobNotFound({ id })
      const lastError = row.errors[row.errors.length - 1]
      if (row.state === "dead") return yield* new JobDead({ id, message: lastError?.message ?? "dead" })
      if (row.state === "cancelled") return yield* new JobCancelled({ id, reason: lastError?.message ?? "cancelled" })
      const s = yield* decodeStatus(job, row)
      return Option.getOrUndefined(s.result) as Job.SuccessOf<J>
    }).pipe(Effect.withSpan("Jobs.await", { attributes: { "job.id": id } }))

  const sql = yield* SqlClient.SqlClient

  const enqueueBundle = Effect.fn("Jobs.enqueueBundle")(function*(
    bundle: { readonly name: string },
    entries: ReadonlyArray<Entry>,
    options?: { readonly metadata?: Readonly<Record<string, unknown>> | undefined }
  ) {
    if (entries.length === 0) {
      return yield* new InvalidJobOptions({ job: bundle.name, message: "a bundle needs at least one job" })
    }
    const keyed = entries.find((e) => e.options?.uniqueKey !== undefined || e.options?.unique !== undefined)
    if (keyed !== undefined) {
      return yield* new InvalidJobOptions({ job: keyed.job.name, message: "jobs of a bundle cannot have a uniqueKey" })
    }
    const now = yield* Clock.currentTimeMillis
    const requestId = (yield* RequestId) ?? crypto.randomUUID()
    const trace = yield* currentTrace
    const rows = yield* rowsOf(entries, now, requestId, trace)
    return yield* sql.withTransaction(Effect.gen(function*() {
      const bundleId = yield* store.bundleInsert(bundle.name, rows.length, options?.metadata ?? {})
      const ids = yield* store.jobInsertMany(rows.map((r) => ({ ...r, bundle_id: bundleId })))
      return { bundleId, ids: ids.map((r) => r.id) }
    }))
  })

  const bundleProgress = (bundleId: string) =>
    Effect.flatMap(
      /^\d{1,19}$/.test(bundleId) ? store.bundleProgress(bundleId) : Effect.succeed(undefined),
      (row) =>
      row === undefined
        ? Effect.fail(new JobNotFound({ id: bundleId }))
        : Effect.succeed({
          id: row.id,
          name: row.name,
          total: row.total,
          remaining: row.remaining,
          counts: row.counts,
          finished: row.finished_at !== null && row.remaining === 0,
          finishedAt: row.finished_at ?? undefined,
          followUpId: row.follow_up_id ?? undefined
        } satisfies BundleProgress)).pipe(Effect.withSpan("Jobs.bundleProgress"))

  return Jobs.of({
    enqueueBundle,
    bundleProgress,
    status,
    await: awaitJob,
    enqueue: (job, args, options) =>
      Effect.map(write([{ job, args, options }]), (results) => results[0]!.id).pipe(Effect.withSpan("Jobs.enqueue", {
        attributes: { "job.name": job.name }
      })),
    enqueueMany: (job, args, options) => enqueueAll(args.map((a) => ({ job, args: a, options }))),
    enqueueAll,
    insert: (job, args, options) =>
      Effect.map(write([{ job, args, options }]), (results) => results[0]!).pipe(Effect.withSpan("Jobs.insert", {
        attributes: { "job.name": job.name }
      })),
    insertMany: (job, args, options) => insertAll(args.map((a) => ({ job, args: a, options }))),
    insertAll
  })
})

/** The client; needs a `PgClient` (from `@effect/sql-pg`). */
export const layer = Layer.effect(Jobs, make).pipe(Layer.provide([JobStore.layer, Notifier.layer]))
