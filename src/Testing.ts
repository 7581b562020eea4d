/**
 * Testing: layers and helpers for the tests of code that enqueues jobs.
 *
 * - `Testing.layerInline`: a `Jobs` whose `enqueue` runs the job's handler at
 *   once, in the caller's fiber, one attempt, with no database. Arguments still
 *   go through the job's Schema both ways (encoded, then decoded), as with a
 *   real worker, so a Schema mistake shows up here too.
 * - `Testing.layerIgnore`: a `Jobs` whose `enqueue` checks the arguments and
 *   options like the real one and then drops the job.
 * - Both also provide `Testing.Enqueued`: what was enqueued, in order, and (for
 *   the inline layer) how each run ended.
 * - `Testing.drain`: runs a real worker against the real database until nothing
 *   runnable is left in its queues, then shuts it down; returns what happened.
 *   With `advanceTestClock`, on a `TestClock`, it also moves the clock to each
 *   job scheduled for later (retry backoff, delays, snoozes) and runs it then.
 * - `Testing.withTestClock` / `Testing.advanceUntil`: run a real worker (and
 *   everything else in a test) on Effect's `TestClock` while the database stays
 *   live, and move that clock until something has happened.
 *
 * **Gotchas**: a handler gets its own `Jobs` when its layer is built
 * (`Job.toLayer`). The inline layer is built *from* the handlers, so a handler
 * that enqueues follow-up jobs cannot be given the same inline layer (that would
 * be a cycle): provide it `Testing.layerIgnore` and check `Enqueued`.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Duration, Effect, Exit, Latch, Layer, Option, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import { Cancel, Discard, InlineJobFailed, InvalidJobOptions, InvalidResult, JobCancelled, JobDead, JobNotFound, RetryAfter, Snooze } from "./Errors.ts"
import * as Job from "./Job.ts"
import { handlerKeyPrefix } from "./internal/handlerKey.ts"
import { toRow } from "./internal/JobRow.ts"
import { resolve as resolveWorkerOptions } from "./internal/worker/Settings.ts"
import {
  type BundleProgress,
  type EnqueueError,
  type EnqueueOptions,
  type EnqueueResult,
  type Entry,
  Jobs,
  type Status
} from "./Jobs.ts"
import { classify, type Event } from "./internal/Outcome.ts"
import { type ClaimedJobRow, JobStore, type JobState } from "./internal/Store.ts"
import { combine, type Events, noop, Observer, replace } from "./Observer.ts"
import { RequestId } from "./RequestId.ts"
import * as Worker from "./Worker.ts"

/**
 * How an inline run ended, as a worker would record it: `completed` (with the
 * handler's value), `retryScheduled` (a failure or timeout; inline runs do not
 * retry), `rescheduled` (snoozed), `dead`, `cancelled`.
 */
export type InlineOutcome =
  | { readonly _tag: "completed"; readonly value: unknown }
  | Exclude<Event, { readonly _tag: "completed" }>

/** One `enqueue` seen by a test layer. */
export interface Recorded {
  readonly id: string
  readonly job: Job.Any
  /** The arguments as given to `enqueue`. */
  readonly args: unknown
  readonly options: EnqueueOptions | undefined
  /** Inline layer: how the run ended. Ignore layer: `undefined` (never run). */
  readonly outcome: InlineOutcome | undefined
}

/** What the test layers saw enqueued, in order. */
export class Enqueued extends Context.Service<Enqueued, {
  readonly all: Effect.Effect<ReadonlyArray<Recorded>>
  /** Those of one job definition, with their arguments typed. */
  readonly of: <J extends Job.Any>(
    job: J
  ) => Effect.Effect<ReadonlyArray<Recorded & { readonly args: Job.ArgsOf<J> }>>
  readonly clear: Effect.Effect<void>
}>()("effect-jobs/Testing/Enqueued") {}


export interface InlineOptions {
  /**
   * What an inline run that fails does to the `enqueue` that ran it:
   * `"die"` (default) turns it into a defect (`InlineJobFailed`), so a broken
   * handler fails the test that enqueued it; `"record"` only records it in
   * `Enqueued`. Deliberate outcomes (`Job.snooze`, `retryAfter`, `discard`,
   * `cancel`) are always only recorded.
   */
  readonly onFailure?: "die" | "record" | undefined
}

/** Handlers provided to a layer, found by their job name (as the worker finds them). */
const collectHandlers = (context: Context.Context<never>): ReadonlyMap<string, Job.RegisteredHandler> => {
  const handlers = new Map<string, Job.RegisteredHandler>()
  for (const [key, value] of context.mapUnsafe) {
    if (key.startsWith(handlerKeyPrefix)) handlers.set(key.slice(handlerKeyPrefix.length), value)
  }
  return handlers
}

const isControl = (error: unknown) =>
  error instanceof RetryAfter || error instanceof Snooze || error instanceof Discard || error instanceof Cancel

const stateOf = (outcome: InlineOutcome | undefined): JobState => {
  if (outcome === undefined) return "available"
  switch (outcome._tag) {
    case "completed":
      return "completed"
    case "dead":
      return "dead"
    case "cancelled":
      return "cancelled"
    case "retryScheduled":
    case "rescheduled":
      return outcome.delayMillis > 0 ? "scheduled" : "available"
  }
}

/** The shared part of both layers: the record, ids, and enqueue checks (the real client's). */
type Recorder = Effect.Success<typeof makeRecorder>

const makeRecorder = Effect.gen(function*() {
  const recorded: Array<Recorded> = []
  const byId = new Map<string, Recorded & { encodedResult?: unknown }>()
  let nextId = 0
  const enqueued = Enqueued.of({
    all: Effect.sync(() => recorded.slice()),
    of: <J extends Job.Any>(job: J) =>
      Effect.sync(() => recorded.filter((r) => r.job.name === job.name) as Array<Recorded & { readonly args: Job.ArgsOf<J> }>),
    clear: Effect.sync(() => {
      recorded.length = 0
      byId.clear()
    })
  })
  /** Checks an entry exactly as `Jobs.enqueue` would (typed errors, nothing recorded on failure). */
  const check = Effect.fnUntraced(function*(entry: Entry) {
    const now = yield* Clock.currentTimeMillis
    const requestId = (yield* RequestId) ?? crypto.randomUUID()
    const row = yield* toRow(entry, now, requestId, null)
    return { row, requestId, now }
  })
  const newId = () => String(++nextId)
  const record = (r: Recorded, encodedResult?: unknown) =>
    Effect.sync(() => {
      recorded.push(r)
      byId.set(r.id, { ...r, encodedResult })
    })
  const status = <J extends Job.Any>(job: J, id: string) =>
    Effect.gen(function*() {
      const r = byId.get(id)
      if (r === undefined) return yield* new JobNotFound({ id })
      let result = Option.none<Job.SuccessOf<J>>()
      if (r.outcome?._tag === "completed" && job.hasResult) {
        const decoded = yield* Effect.exit(job.decodeResult(r.encodedResult))
        if (Exit.isFailure(decoded)) return yield* new InvalidResult({ id, message: Cause.pretty(decoded.cause) })
        result = Option.some(decoded.value as Job.SuccessOf<J>)
      }
      const errors = r.outcome !== undefined && r.outcome._tag !== "completed"
        ? [{ kind: r.outcome._tag, message: "error" in r.outcome ? r.outcome.error : "reason" in r.outcome ? r.outcome.reason : "" }]
        : []
      return { id, state: stateOf(r.outcome), result, errors } satisfies Status<Job.SuccessOf<J>>
    })
  // Bundles: the same checks as the real client; progress computed from the recorded outcomes.
  const bundles = new Map<string, { readonly name: string; readonly ids: ReadonlyArray<string>; finishedAt?: Date }>()
  let nextBundle = 0
  const checkBundle = Effect.fnUntraced(function*(bundle: { readonly name: string }, entries: ReadonlyArray<Entry>) {
    if (entries.length === 0) {
      return yield* new InvalidJobOptions({ job: bundle.name, message: "a bundle needs at least one job" })
    }
    const keyed = entries.find((e) => e.options?.uniqueKey !== undefined || e.options?.unique !== undefined)
    if (keyed !== undefined) {
      return yield* new InvalidJobOptions({ job: keyed.job.name, message: "jobs of a bundle cannot have a uniqueKey" })
    }
    for (const e of entries) yield* check(e)
    return String(++nextBundle)
  })
  const recordBundle = (bundleId: string, name: string, ids: ReadonlyArray<string>) =>
    Effect.sync(() => {
      bundles.set(bundleId, { name, ids })
      return { bundleId, ids }
    })
  const bundleProgress = (bundleId: string) =>
    Effect.gen(function*() {
      const b = bundles.get(bundleId)
      if (b === undefined) return yield* new JobNotFound({ id: bundleId })
      const counts: Record<string, number> = {}
      let remaining = 0
      for (const id of b.ids) {
        const state = stateOf(byId.get(id)?.outcome)
        counts[state] = (counts[state] ?? 0) + 1
        if (state !== "completed" && state !== "dead" && state !== "cancelled") remaining++
      }
      if (remaining === 0 && b.finishedAt === undefined) b.finishedAt = new Date(yield* Clock.currentTimeMillis)
      return {
        id: bundleId,
        name: b.name,
        total: b.ids.length,
        remaining,
        counts,
        finished: remaining === 0,
        finishedAt: b.finishedAt,
        followUpId: undefined
      } satisfies BundleProgress
    })
  return { enqueued, check, newId, record, status, byId, checkBundle, recordBundle, bundleProgress }
})

/**
 * `Jobs` that runs each job's handler at once, in the caller's fiber (see the
 * module header), plus `Enqueued`. Needs the handlers of the jobs it runs.
 */
export const layerInlineWith = (options: InlineOptions = {}): Layer.Layer<Jobs | Enqueued> =>
  Layer.effectContext(Effect.gen(function*() {
    const handlers = collectHandlers(yield* Effect.context<never>())
    const recorder = yield* makeRecorder
    const dieOnFailure = (options.onFailure ?? "die") === "die"

    const runOne = Effect.fnUntraced(function*(entry: Entry) {
      const { row, requestId, now } = yield* recorder.check(entry)
      const id = recorder.newId()
      const handler = handlers.get(entry.job.name)
      const claimed: ClaimedJobRow = {
        id,
        name: row.name,
        queue: row.queue,
        priority: row.priority,
        attempt: 1,
        max_attempts: row.max_attempts,
        claim_count: 1,
        // the stored form: what a worker would read back from the jsonb column
        args: JSON.parse(JSON.stringify(row.args)),
        metadata: row.metadata,
        request_id: requestId,
        trace: null,
        created_at: new Date(now)
      }
      const ctx: Job.JobContext = {
        id,
        name: row.name,
        queue: row.queue,
        attempt: 1,
        maxAttempts: row.max_attempts,
        runs: 1,
        priority: row.priority,
        enqueuedAt: new Date(now),
        requestId,
        metadata: row.metadata
      }
      const run: Effect.Effect<unknown, unknown> = handler === undefined
        ? Effect.die(new Error(`no handler for job "${entry.job.name}" was provided to Testing.layerInline`))
        : entry.job.decodeArgs(claimed.args).pipe(
          Effect.flatMap((args) => handler.run(args, ctx)),
          (e) => entry.job.timeout === undefined ? e : Effect.timeout(e, entry.job.timeout),
          Effect.provideService(RequestId, requestId),
          Effect.annotateLogs({ jobId: id, job: row.name, queue: row.queue, attempt: 1, requestId })
        )
      const exit = yield* Effect.exit(run)
      const classified = yield* classify(claimed, handler?.job, exit, yield* Clock.currentTimeMillis)
      const outcome: InlineOutcome = Exit.isSuccess(exit) && classified.event._tag === "completed"
        ? { _tag: "completed", value: exit.value }
        : classified.event._tag === "completed"
        ? { _tag: "dead", reason: "unreachable" }
        : classified.event
      yield* recorder.record({ id, job: entry.job, args: entry.args, options: entry.options, outcome }, classified.row.result)
      if (dieOnFailure && Exit.isFailure(exit)) {
        const failure = exit.cause.reasons.find(Cause.isFailReason)
        if (failure === undefined || !isControl(failure.error)) {
          return yield* Effect.die(new InlineJobFailed({ job: entry.job.name, jobCause: exit.cause }))
        }
      }
      return id
    })

    const enqueueAll = (entries: ReadonlyArray<Entry>) => Effect.forEach(entries, runOne)

    const jobs = recordingJobs(recorder, runOne, enqueueAll, (job, id) =>
        Effect.gen(function*() {
          const s = yield* recorder.status(job, id)
          const r = recorder.byId.get(id)!
          switch (r.outcome?._tag) {
            case "completed":
              return Option.getOrUndefined(s.result) as Job.SuccessOf<typeof job>
            case "dead":
              return yield* new JobDead({ id, message: r.outcome.reason })
            case "cancelled":
              return yield* new JobCancelled({ id, reason: r.outcome.reason })
            default:
              return yield* Effect.die(
                new Error(`Testing.layerInline: job ${id} is ${s.state}; inline runs are one attempt, it will not run again`)
              )
          }
        }))
    return Context.make(Jobs, jobs).pipe(Context.add(Enqueued, recorder.enqueued))
  }))

const inserted = (id: string): EnqueueResult => ({ id, outcome: "inserted" })

/** The `Jobs` of both test layers: they differ only in how one job is enqueued and in `await`. */
const recordingJobs = (
  recorder: Recorder,
  enqueueOne: (entry: Entry) => Effect.Effect<string, EnqueueError>,
  enqueueAll: (entries: ReadonlyArray<Entry>) => Effect.Effect<ReadonlyArray<string>, EnqueueError>,
  awaitJob: Jobs["Service"]["await"]
): Jobs["Service"] =>
  Jobs.of({
    enqueue: (job, args, options) => enqueueOne({ job, args, options }),
    enqueueMany: (job, args, options) => enqueueAll(args.map((a) => ({ job, args: a, options }))),
    enqueueAll,
    // No uniqueness here: every enqueue is a new job (and, inline, a run).
    insert: (job, args, options) => Effect.map(enqueueOne({ job, args, options }), inserted),
    insertMany: (job, args, options) =>
      Effect.map(enqueueAll(args.map((a) => ({ job, args: a, options }))), (ids) => ids.map(inserted)),
    insertAll: (entries) => Effect.map(enqueueAll(entries), (ids) => ids.map(inserted)),
    enqueueBundle: (bundle, entries) =>
      Effect.flatMap(recorder.checkBundle(bundle, entries), (bundleId) =>
        Effect.flatMap(enqueueAll(entries), (ids) => recorder.recordBundle(bundleId, bundle.name, ids))),
    bundleProgress: recorder.bundleProgress,
    status: recorder.status,
    await: awaitJob
  })

/** `layerInlineWith()`: failures of inline runs are defects of the `enqueue` that ran them. */
export const layerInline: Layer.Layer<Jobs | Enqueued> = layerInlineWith()

/** `Jobs` that checks and records each job, then drops it (nothing runs, nothing is written), plus `Enqueued`. */
export const layerIgnore: Layer.Layer<Jobs | Enqueued> = Layer.effectContext(Effect.gen(function*() {
  const recorder = yield* makeRecorder
  const enqueueOne = Effect.fnUntraced(function*(entry: Entry) {
    yield* recorder.check(entry)
    const id = recorder.newId()
    yield* recorder.record({ id, job: entry.job, args: entry.args, options: entry.options, outcome: undefined })
    return id
  })
  const enqueueAll = (entries: ReadonlyArray<Entry>) =>
    // all or nothing, as the real enqueueAll (one statement) is
    Effect.gen(function*() {
      for (const e of entries) yield* recorder.check(e)
      return yield* Effect.forEach(entries, enqueueOne)
    })
  const jobs = recordingJobs(recorder, enqueueOne, enqueueAll, (job, id) =>
    Effect.flatMap(
      recorder.status(job, id),
      () => Effect.die(new Error(`Testing.layerIgnore dropped job ${id}: it never runs, so it cannot be awaited`))
    ))
  return Context.make(Jobs, jobs).pipe(Context.add(Enqueued, recorder.enqueued))
}))

// ---------------------------------------------------------------------------
// TestClock while the database is live
// ---------------------------------------------------------------------------

const isTestClock = (clock: Clock.Clock): clock is TestClock.TestClock =>
  typeof (clock as Partial<TestClock.TestClock>).adjust === "function" &&
  typeof (clock as Partial<TestClock.TestClock>).setTime === "function" &&
  typeof (clock as Partial<TestClock.TestClock>).withLive === "function"

/** The fiber's `TestClock`, or a defect naming `what` needed one. */
const requireTestClock = (what: string): Effect.Effect<TestClock.TestClock> =>
  Clock.clockWith((clock) =>
    isTestClock(clock)
      ? Effect.succeed(clock)
      : Effect.die(new Error(`${what} needs a TestClock: run it inside Testing.withTestClock`)))

/**
 * Runs `self` (and everything it forks: workers, their handlers) on a fresh
 * `TestClock` set to `start` (epoch milliseconds). `self` gets a scope of its
 * own that closes while the TestClock is still in place, so a worker started
 * in it (`Layer.launch`, `Layer.buildWithScope`, `Effect.provide` of a
 * `Worker.layer` inside `self`) shuts down there, on the same clock.
 *
 * Only Effect's `Clock` is virtual: the database, its connections and their
 * SQL run in real time. What the library writes is timed by the `Clock`
 * (`run_at`, error timestamps), so a worker on the TestClock sees jobs fall due
 * as the TestClock moves, not as real time passes. Lease deadlines are on the
 * database's clock (real time). Jobs enqueued
 * outside `self` (on the real clock) are due by real time: give them a `start`
 * later than that, or enqueue inside `self`.
 *
 * It provides a TestClock of its own, so it works the same in `@effect/vitest`'s
 * `it.effect` (it replaces that test's) and `it.live`. Layers built outside
 * `self` (a database layer given to the whole suite) keep the clock they had.
 *
 * @example
 * ```ts
 * Testing.withTestClock(Date.parse("2030-01-01T00:00:00Z"), Effect.gen(function*() {
 *   yield* jobs.enqueue(SendReport, {}, { delay: "1 hour" })
 *   const result = yield* Testing.drain({ queues: ["reports"], advanceTestClock: true })
 * }))
 * ```
 *
 * @since 0.1.0
 */
export const withTestClock = <A, E, R>(start: number, self: Effect.Effect<A, E, R>) =>
  Effect.scoped(Effect.andThen(TestClock.setTime(start), self)).pipe(Effect.provide(TestClock.layer()))

/** Options of `advanceUntil`. */
export interface AdvanceOptions {
  /** How far to move the TestClock per step; default 50 ms. */
  readonly step?: Duration.Input | undefined
  /** A time (epoch milliseconds) the clock is never moved past; default none. */
  readonly limit?: number | undefined
}

/**
 * Advances the `TestClock` in steps of `step`, never beyond `limit`, until
 * `check` gives a value, and returns it. Between steps it pauses a couple of
 * real milliseconds so the database round trips started by the step can land:
 * the workers' sleeps are virtual but their SQL is not. It waits (in real time)
 * as long as it takes, like any "wait until": the test's timeout is the bound.
 * Dies if the fiber's `Clock` is not a `TestClock` (see `withTestClock`).
 *
 * A `limit` is safe only if what `check` waits for falls due at a time fixed in
 * advance (the clock itself, a sleep to an exact deadline). A loop that starts its
 * next sleep when its SQL returns starts it from wherever the clock has moved by
 * then (2 ms of real time per step is not much SQL), so it can fall due beyond
 * `limit`, and the wait never ends. Give such a limit a lot of headroom, or no limit.
 *
 * @example
 * ```ts
 * // a worker runs on the TestClock; wait for the outcome its Observer reported
 * const outcome = yield* Testing.advanceUntil(Queue.poll(outcomes), { step: "1 second" })
 * ```
 *
 * @since 0.1.0
 */
export const advanceUntil = <A, E, R>(
  check: Effect.Effect<Option.Option<A>, E, R>,
  options: AdvanceOptions = {}
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const testClock = yield* requireTestClock("Testing.advanceUntil")
    const step = Duration.toMillis(Duration.fromInputUnsafe(options.step ?? "50 millis"))
    while (true) {
      const value = yield* check
      if (Option.isSome(value)) return value.value
      const now = yield* Clock.currentTimeMillis
      const target = options.limit === undefined ? now + step : Math.min(options.limit, now + step)
      if (target > now) yield* testClock.adjust(target - now)
      yield* testClock.withLive(Effect.sleep("2 millis"))
    }
  })

// ---------------------------------------------------------------------------
// drain
// ---------------------------------------------------------------------------

export interface DrainOptions extends Omit<Worker.Options, "queues"> {
  /** The queues to drain: names (concurrency 1 each) or full queue configs. */
  readonly queues: ReadonlyArray<string> | Worker.Options["queues"]
  /**
   * Also run jobs scheduled for later (delays, retry backoff, snoozes) now,
   * instead of leaving them scheduled; default false. Retries then follow at
   * once, until each job completes or runs out of attempts. The clock does not
   * move: a handler sees the time it ran at, not the time it was due.
   */
  readonly withScheduled?: boolean | undefined
  /**
   * On a `TestClock` (`withTestClock`): when only jobs scheduled for later are
   * left in the queues, move the clock to the earliest of their `run_at` and go
   * on, until none of their jobs is available, running or scheduled. Retry
   * backoffs, delays and snoozes then take their full virtual time (a handler
   * sees the time it was due) and no real time. Default false. Dies if the
   * fiber's `Clock` is not a `TestClock`.
   *
   * Only what is scheduled moves the clock: a handler that sleeps on the
   * `Clock` while it runs waits until something else advances it (`advanceUntil`).
   * A job that snoozes forever keeps the drain going forever.
   */
  readonly advanceTestClock?: boolean | undefined
}

/** What a drain saw happen, counted from the worker's events. */
export interface DrainResult {
  readonly completed: number
  readonly retried: number
  readonly rescheduled: number
  readonly dead: number
  readonly cancelled: number
}

/**
 * Runs a real worker on the queues until none of their jobs is runnable
 * (available, running, or scheduled and due), then shuts it down gracefully.
 * Jobs scheduled for later stay, unless `withScheduled` or `advanceTestClock`.
 * Needs a `PgClient` and the handlers (from the caller's context).
 *
 * It waits on the worker's events. Between them it moves due jobs to
 * `available` itself and wakes the worker (so it does not depend on the
 * worker's poll timers, which do not fire on a `TestClock` that stands still),
 * and re-checks at least every poll interval of real time. "Due" always means
 * due by Effect's `Clock` (the database clock is never involved), so it works
 * the same on a `TestClock`.
 *
 * @since 0.1.0
 */
export const drain = Effect.fn("Testing.drain")(function*(options: DrainOptions) {
  const { queues: queueOption, withScheduled = false, advanceTestClock = false, ...rest } = options
  const queues: Worker.Options["queues"] = Array.isArray(queueOption)
    ? Object.fromEntries((queueOption as ReadonlyArray<string>).map((q) => [q, {}]))
    : (queueOption as Worker.Options["queues"])
  const names = Object.keys(queues)
  const workerOptions: Worker.Options = {
    maintenanceInterval: "50 millis",
    pruner: false,
    ...rest,
    queues
  }
  const resolved = yield* resolveWorkerOptions(workerOptions)
  const pollMillis = Math.min(...resolved.queues.map((q) => q.pollMillis))
  const clock = yield* Clock.Clock
  const testClock = isTestClock(clock) ? clock : undefined
  if (advanceTestClock && testClock === undefined) yield* requireTestClock("Testing.drain({ advanceTestClock: true })")
  // The re-check is a safety net for what has no event, not a time anything is due at: real time.
  const recheck = testClock === undefined ? Effect.sleep(pollMillis) : testClock.withLive(Effect.sleep(pollMillis))

  const counts = { completed: 0, retried: 0, rescheduled: 0, dead: 0, cancelled: 0 }
  const changed = yield* Latch.make(false)
  const bump = (key: keyof typeof counts) =>
    Effect.andThen(Effect.sync(() => counts[key]++), changed.open)
  const probe: Events = {
    ...noop,
    completed: () => bump("completed"),
    retryScheduled: () => bump("retried"),
    rescheduled: () => bump("rescheduled"),
    dead: () => bump("dead"),
    cancelled: () => bump("cancelled")
  }
  const current = yield* Observer
  const store = yield* JobStore

  /** Due `scheduled` jobs made `available` (as the worker's maintenance does); how many. */
  const promoteDue = (now: number) =>
    Effect.gen(function*() {
      let total = 0
      while (true) {
        const n = yield* store.jobPromoteScheduled(now, 1000)
        total += n
        if (n < 1000) return total
      }
    })
  /** The earliest `run_at` of the queues' scheduled jobs, if they have any. */
  const nextScheduled = Effect.gen(function*() {
    let earliest: number | undefined
    for (const queue of names) {
      let after: string | undefined
      while (true) {
        const rows = yield* store.adminList({ states: ["scheduled"], queue, name: undefined, after, order: "oldest", limit: 1000 })
        for (const r of rows) earliest = Math.min(earliest ?? Infinity, r.run_at.getTime())
        if (rows.length < 1000) break
        after = rows[rows.length - 1]!.id
      }
    }
    return earliest
  })

  const scope = yield* Scope.make()
  const built = yield* Layer.buildWithScope(
    Worker.layer(workerOptions).pipe(Layer.provide(replace(combine(current, probe)))),
    scope
  ).pipe(Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause))))
  const worker = Context.get(built, Worker.Worker)

  yield* Effect.gen(function*() {
    while (true) {
      yield* changed.close
      const now = yield* Clock.currentTimeMillis
      if (withScheduled) yield* store.jobScheduledDueNow(names, now)
      if ((yield* promoteDue(now)) > 0) yield* worker.wake
      // With `withScheduled`, a scheduled job counts whatever its run_at: a run that ends between
      // the statements above and this count (its retry written for later) is not missed; the
      // next round, woken by its event, makes it due.
      if ((yield* store.jobCountRunnable(names, now, { anyScheduled: withScheduled })) === 0) {
        if (testClock === undefined || !advanceTestClock) return
        const next = yield* nextScheduled
        if (next === undefined) return
        // nothing is due, so `next` is later than now; the loop then promotes what fell due
        if (next > now) yield* testClock.setTime(next)
        continue
      }
      yield* Effect.raceFirst(changed.await, recheck)
    }
  }).pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
  return { ...counts } satisfies DrainResult
}, (effect) => Effect.provide(effect, JobStore.layer))
