/**
 * Observer: what happens to jobs, as events.
 *
 * The worker reports every transition to the `Observer` service: a job started,
 * completed, had a retry scheduled, was rescheduled (snoozed or returned at
 * shutdown), went to the dead-letter state, was cancelled; and errors of the
 * worker itself; and bundles that finished.
 *
 * The default observer (`Observer.defaults`, in place when no Observer layer is
 * provided) is quiet about jobs and loud about the worker: every `workerError`
 * (a failed claim, heartbeat, LISTEN, outcome write, a lost lease...) is logged
 * through Effect's `Logger` at Warning (retried) or Error (something was given
 * up), annotated with `queue`. Job outcome events log nothing and metrics are
 * opt-in. `Observer.replace(Observer.noop)` silences it.
 *
 * - `Observer.layer`: the default observers, metrics and logging (needs a `PgClient`
 *   for the jobs-per-state gauge). `Observer.layerWith(mine)` adds yours on top.
 * - `Observer.metrics` / `metricsWith(options)`: Effect `Metric`s (src/Metrics.ts):
 *   counters per outcome, a run-duration histogram, worker errors, and a gauge of
 *   jobs per queue and state sampled from the table. Export them with Effect's
 *   Prometheus or OTLP exporters (`effect/observability`).
 * - `Observer.logging`: each event through Effect's `Logger`.
 * - `Observer.add(mine)` adds to the observer it is provided (so these stack with
 *   `Layer.provide`, and the default logging of worker errors stays);
 *   `Observer.replace(mine)` drops the others, the default logging included;
 *   `combine` and `noop` build `Events` values. Worker errors are logged once
 *   even where both the default and `Observer.logging` are in place.
 *
 * Outcome events are reported after the outcome is written, by the worker's
 * completer: keep observers quick (fork anything slow). See docs/observing.md.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Duration, Effect, Layer, LogLevel, Metric, Option, References } from "effect"
import * as Counts from "./internal/Counts.ts"
import { JobStore, type JobState } from "./internal/Store.ts"
import * as MetricOptions from "./internal/metricOptions.ts"
import * as Metrics from "./Metrics.ts"

export interface BundleInfo {
  readonly id: string
  readonly name: string
  readonly total: number
  /** Members per terminal state (completed, dead, cancelled). */
  readonly counts: Readonly<Record<string, number>>
  /** The follow-up job enqueued by the bundle's `onFinish`, if any. */
  readonly followUpId: string | undefined
}

export interface JobInfo {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly attempt: number
  readonly maxAttempts: number
  /**
   * In outcome events (completed, retry scheduled, rescheduled, dead, cancelled): the
   * milliseconds from the run's start until its outcome was written; 0 for a job that
   * never started. Absent in `started`.
   */
  readonly runMillis?: number | undefined
}

export interface Events {
  readonly started: (job: JobInfo) => Effect.Effect<void>
  readonly completed: (job: JobInfo, durationMillis: number) => Effect.Effect<void>
  readonly retryScheduled: (job: JobInfo, delayMillis: number, error: string) => Effect.Effect<void>
  /** Snoozed by the handler, or returned to the queue at shutdown (attempt not spent). */
  readonly rescheduled: (job: JobInfo, delayMillis: number, reason: string) => Effect.Effect<void>
  readonly dead: (job: JobInfo, reason: string) => Effect.Effect<void>
  readonly cancelled: (job: JobInfo, reason: string) => Effect.Effect<void>
  /**
   * The worker (or a scheduler, a listener) failed at something. `level` says how bad:
   * `"Warn"` for a failure that is retried (a claim, a heartbeat, a lost LISTEN
   * connection), `"Error"` when something was given up or lost (a job's lease, an
   * outcome that could not be recorded); absent means `"Error"`.
   */
  readonly workerError: (queue: string, message: string, cause?: unknown, level?: WorkerErrorLevel) => Effect.Effect<void>
  /** A bundle's last member reached a terminal state (reported once per bundle). Optional. */
  readonly bundleFinished?: ((bundle: BundleInfo) => Effect.Effect<void>) | undefined
}

/** How bad a `workerError` is: retried (`Warn`), or something was given up (`Error`). */
export type WorkerErrorLevel = "Warn" | "Error"

/** Observes nothing (spread it to write an observer of a few events). */
export const noop: Events = {
  started: () => Effect.void,
  completed: () => Effect.void,
  retryScheduled: () => Effect.void,
  rescheduled: () => Effect.void,
  dead: () => Effect.void,
  cancelled: () => Effect.void,
  workerError: () => Effect.void
}

/** An error's message and those of its causes ("Query failed: connect ECONNREFUSED ..."). */
const messageOf = (error: unknown): string => {
  const parts: Array<string> = []
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const message = e instanceof Error ? e.message : typeof e === "object" ? "" : String(e)
    if (message !== "" && !parts.includes(message)) parts.push(message)
    e = e instanceof Error ? e.cause : undefined
  }
  return parts.join(": ")
}

/**
 * A worker error as a log line: `effect-jobs: <message>: <the cause's messages>`, at the
 * error's level, annotated with `queue`; an `Error` carries the whole cause (a `Warn`, which
 * may come once per poll interval while the database is away, only its message).
 */
const logWorkerError = (queue: string, message: string, cause?: unknown, level: WorkerErrorLevel = "Error") =>
  Effect.suspend(() => {
    const detail = cause === undefined ? "" : messageOf(cause)
    const text = `effect-jobs: ${message}${detail === "" ? "" : `: ${detail}`}`
    const log = Effect.logWithLevel(level)
    return (level === "Error" && cause !== undefined ? log(text, Cause.fail(cause)) : log(text)).pipe(
      Effect.annotateLogs({ queue })
    )
  })

/**
 * The default observer, in place when no Observer layer is provided: worker errors to
 * Effect's `Logger` (see `logWorkerError`), nothing else. A logger of your own
 * (`Logger.layer`) takes these lines over; `Observer.replace(Observer.noop)` drops them.
 */
export const defaults: Events = {
  ...noop,
  workerError: logWorkerError
}

/** The observer service. Never needs to be provided: the default is `defaults` (worker errors logged). */
export const Observer = Context.Reference<Events>("effect-jobs/Observer", { defaultValue: () => defaults })

/** The observers a `combine` was made of, in order (an observer not made by `combine` is its own part). */
const partsOf = new WeakMap<Events, ReadonlyArray<Events>>()

/**
 * Both observers see every event, left first. `noop` parts are dropped, and so is the
 * default observer (`defaults`) where `loggingEvents` is one of the parts: it logs worker
 * errors too, and they would be logged twice.
 */
export const combine = (left: Events, right: Events): Events => {
  let parts = [...(partsOf.get(left) ?? [left]), ...(partsOf.get(right) ?? [right])].filter((p) => p !== noop)
  if (parts.includes(loggingEvents)) parts = parts.filter((p) => p !== defaults)
  if (parts.length === 0) return noop
  if (parts.length === 1) return parts[0]!
  const combined = parts.reduce(pair)
  partsOf.set(combined, parts)
  return combined
}

/**
 * `a` then `b`, with no step for a side that does nothing (`Effect.void`): the worker runs
 * `started` and each outcome's report once per job, and skips the step altogether when the
 * whole observer does nothing there (Executor.ts), which a pair of such sides must keep.
 */
const both = (a: Effect.Effect<void>, b: Effect.Effect<void>): Effect.Effect<void> =>
  a === Effect.void ? b : b === Effect.void ? a : Effect.andThen(a, b)

const pair = (left: Events, right: Events): Events => ({
  started: (j) => both(left.started(j), right.started(j)),
  completed: (j, d) => both(left.completed(j, d), right.completed(j, d)),
  retryScheduled: (j, d, e) => both(left.retryScheduled(j, d, e), right.retryScheduled(j, d, e)),
  rescheduled: (j, d, r) => both(left.rescheduled(j, d, r), right.rescheduled(j, d, r)),
  dead: (j, r) => both(left.dead(j, r), right.dead(j, r)),
  cancelled: (j, r) => both(left.cancelled(j, r), right.cancelled(j, r)),
  workerError: (q, m, c, l) => both(left.workerError(q, m, c, l), right.workerError(q, m, c, l)),
  bundleFinished: (b) => both(left.bundleFinished?.(b) ?? Effect.void, right.bundleFinished?.(b) ?? Effect.void)
})

const annotate = (job: JobInfo) => Effect.annotateLogs({ jobId: job.id, job: job.name, queue: job.queue, attempt: job.attempt })

/**
 * A Debug line, or nothing, cheaply, when Debug is below the minimum log level (the
 * default minimum is Info): `started` and `completed` come once per job.
 */
const debug = (j: JobInfo, message: string, extra?: Record<string, unknown>) =>
  Effect.withFiber((fiber) =>
    LogLevel.isGreaterThan(fiber.getRef(References.MinimumLogLevel), "Debug")
      ? Effect.void
      : (extra === undefined ? Effect.logDebug(message) : Effect.logDebug(message, extra)).pipe(annotate(j)))

/**
 * Logs every event: started/completed at Debug, retries and snoozes at Info, dead at
 * Warning, worker errors as the default observer does (at their level, Warning or Error).
 */
export const loggingEvents: Events = {
  started: (j) => debug(j, "job started"),
  completed: (j, d) => debug(j, "job completed", { durationMillis: d }),
  retryScheduled: (j, d, e) => Effect.logInfo("job failed; retry scheduled", { delayMillis: d, error: e }).pipe(annotate(j)),
  rescheduled: (j, d, r) => Effect.logInfo("job rescheduled", { delayMillis: d, reason: r }).pipe(annotate(j)),
  dead: (j, r) => Effect.logWarning("job moved to dead", { reason: r }).pipe(annotate(j)),
  cancelled: (j, r) => Effect.logInfo("job cancelled", { reason: r }).pipe(annotate(j)),
  workerError: logWorkerError,
  bundleFinished: (b) => Effect.logInfo("bundle finished", { bundleId: b.id, bundle: b.name, counts: b.counts, followUpId: b.followUpId })
}

/**
 * Adds an observer after whatever observer is already in place; by default that is
 * `defaults`, so worker errors are still logged.
 */
export const add = (events: Events) => Layer.effect(Observer, Effect.map(Observer, (current) => combine(current, events)))

/** Logging observer layer. */
export const logging = add(loggingEvents)

/**
 * Replaces the observer: only `events` observe (those in place before are dropped, the
 * default logging of worker errors included). `replace(noop)` silences the library.
 */
export const replace = (events: Events) => Layer.succeed(Observer, events)

// ---------------------------------------------------------------------------
// Metrics (the Metric definitions and their names are in src/Metrics.ts)
// ---------------------------------------------------------------------------

export interface MetricsOptions {
  /**
   * How often jobs per queue and state are counted for the `effect_jobs_jobs`
   * gauge; default 15 seconds. `false`: no gauge. A sample counts the unfinished jobs
   * (scheduled, available, running) exactly, through their partial indexes; finished
   * ones (the history) exactly while fewer than 50,000, beyond that from the count the
   * overview stores, recounted once it is `max(10 s, 100 × the time it took)` old, by one
   * process at a time (docs/observing.md). Its cost does not grow with history.
   */
  readonly sampleInterval?: Duration.Input | false | undefined
}

const allStates: ReadonlyArray<JobState> = ["scheduled", "available", "running", "completed", "dead", "cancelled"]

/**
 * An observer that updates the metrics of `src/Metrics.ts` (counters per outcome,
 * the run-duration histogram, worker errors). Each call makes one with its own
 * table of runs in progress; no database needed (the gauge is `metrics`' sampler).
 */
export const metricsEvents = (): Events => {
  interface PerJob {
    readonly started: Series
    readonly completed: Series
    readonly retried: Series
    readonly rescheduled: Series
    readonly dead: Series
    readonly cancelled: Series
    readonly duration: Record<Metrics.Outcome, Series>
  }
  // Attributed metrics are built once per (queue, job name), not once per event; the job of the
  // last event is kept, as runs of one job come side by side.
  const perJob = new Map<string, PerJob>()
  let lastJob: JobInfo | undefined
  let lastPerJob: PerJob | undefined
  const metricsOf = (job: JobInfo): PerJob => {
    if (lastJob !== undefined && lastJob.name === job.name && lastJob.queue === job.queue) return lastPerJob!
    const key = `${job.queue}\u0000${job.name}`
    let m = perJob.get(key)
    if (m === undefined) {
      const attributes = { queue: job.queue, job_name: job.name }
      const duration = (outcome: Metrics.Outcome) => series(Metrics.runDuration, { ...attributes, outcome })
      m = {
        started: series(Metrics.started, attributes),
        completed: series(Metrics.completed, attributes),
        retried: series(Metrics.retried, attributes),
        rescheduled: series(Metrics.rescheduled, attributes),
        dead: series(Metrics.dead, attributes),
        cancelled: series(Metrics.cancelled, attributes),
        duration: {
          completed: duration("completed"),
          retried: duration("retried"),
          rescheduled: duration("rescheduled"),
          dead: duration("dead"),
          cancelled: duration("cancelled")
        }
      }
      perJob.set(key, m)
    }
    lastJob = job
    lastPerJob = m
    return m
  }
  const errorsOf = new Map<string, Metric.Counter<number>>()
  // The worker gives each outcome event the run's duration (`runMillis`): no clock reads
  // and no table of runs in progress here.
  const finished = (job: JobInfo, counter: keyof Omit<PerJob, "duration">, outcome: Metrics.Outcome) =>
    Effect.withFiberSucceed((fiber) => {
      const m = metricsOf(job)
      update(m[counter], 1, fiber.context)
      if (job.runMillis !== undefined) update(m.duration[outcome], Math.max(0, job.runMillis) / 1000, fiber.context)
    })
  return {
    started: (job) => Effect.withFiberSucceed((fiber) => update(metricsOf(job).started, 1, fiber.context)),
    completed: (job) => finished(job, "completed", "completed"),
    retryScheduled: (job) => finished(job, "retried", "retried"),
    rescheduled: (job) => finished(job, "rescheduled", "rescheduled"),
    dead: (job) => finished(job, "dead", "dead"),
    cancelled: (job) => finished(job, "cancelled", "cancelled"),
    workerError: (queue) =>
      Effect.suspend(() => {
        let c = errorsOf.get(queue)
        if (c === undefined) errorsOf.set(queue, c = Metric.withAttributes(Metrics.workerErrors, { queue }))
        return Metric.update(c, 1)
      }),
    bundleFinished: (bundle) => Metric.update(Metric.withAttributes(Metrics.bundlesFinished, { bundle: bundle.name }), 1)
  }
}

/**
 * One series of a per-job metric, updated by hand (`updateUnsafe` on the fiber's context) once
 * or twice per job. `Metric.update` of a `Metric.withAttributes` metric adds the attributes to a
 * copy of the whole context at every update; `fast` is the same series made with its attributes
 * built in (a series is its metric's type, id, description and attributes), which reads the
 * context and copies nothing. With `Observer.layer`, this and the change to `combine` above took
 * a drain's worker CPU from 42.5 to 37.5 µs per job (BENCHMARKS.md, eighth session). The
 * counters of src/Metrics.ts are all `incremental`, as `fast` makes them. The two differ only
 * when the context's own metric attributes (`Metric.CurrentMetricAttributes`) name one of ours:
 * then `withAttributes`, where ours win.
 */
interface Series {
  readonly fast: Metric.Metric<number, unknown>
  readonly exact: Metric.Metric<number, unknown>
}

const series = (
  base: Metric.Counter<number> | Metric.Histogram<number>,
  attributes: Readonly<Record<string, string>>
): Series => ({
  fast: base.type === "Counter"
    ? Metric.counter(base.id, { description: base.description, incremental: true, attributes })
    : Metric.histogram(base.id, { description: base.description, boundaries: MetricOptions.runDurationBoundaries, attributes }),
  exact: Metric.withAttributes(base as Metric.Metric<number, unknown>, attributes)
})

const ourAttributes = ["queue", "job_name", "outcome"]
let seenContextAttributes: Readonly<Record<string, string>> | undefined
let contextNamesOurs = false

const update = (s: Series, value: number, context: Context.Context<never>): void => {
  const extra = Context.get(context, Metric.CurrentMetricAttributes)
  if (extra !== seenContextAttributes) {
    seenContextAttributes = extra
    contextNamesOurs = ourAttributes.some((k) => Object.hasOwn(extra, k))
  }
  ;(contextNamesOurs ? s.exact : s.fast).updateUnsafe(value, context)
}

/** Counts jobs per queue and state into the `effect_jobs_jobs` gauge, now and every `intervalMillis`. */
const sampleStates = (intervalMillis: number) =>
  Effect.gen(function*() {
    const queues = new Set<string>()
    const gauges = new Map<string, Metric.Gauge<number>>()
    const gauge = (queue: string, state: JobState) => {
      const key = `${queue}\u0000${state}`
      let g = gauges.get(key)
      if (g === undefined) gauges.set(key, g = Metric.withAttributes(Metrics.jobs, { queue, state }))
      return g
    }
    const observer = yield* Observer
    const jobCounts = yield* Counts.make((cause) =>
      observer.workerError("*", "could not recount the finished jobs for the jobs-per-state gauge", cause, "Warn")
    )
    const sampleOnce = Effect.gen(function*() {
      const [unfinished, finished] = yield* Effect.all([jobCounts.unfinished(undefined), jobCounts.finished], {
        concurrency: 2
      })
      const counts = new Map<string, number>()
      for (const r of [...unfinished, ...finished.counts]) {
        queues.add(r.queue)
        counts.set(`${r.queue}\u0000${r.state}`, r.count)
      }
      // Every state of every queue seen so far, so a state that empties reads 0, not its last count.
      for (const queue of queues) {
        for (const state of allStates) yield* Metric.update(gauge(queue, state), counts.get(`${queue}\u0000${state}`) ?? 0)
      }
    }).pipe(Effect.catchCause((cause) => Effect.logWarning("effect-jobs: could not sample jobs per state", cause)))
    // The first sample is taken before the layer is up, so the gauge is never empty or stale at start.
    yield* sampleOnce
    yield* Effect.forkScoped(
      Effect.forever(Effect.andThen(Effect.sleep(intervalMillis), sampleOnce)).pipe(
        Effect.annotateLogs({ module: "effect-jobs/Observer", fiber: "state-sampler" })
      )
    )
  })

/**
 * Adds the metrics observer (see src/Metrics.ts) to the observer in place, and
 * samples jobs per state into a gauge (needs a `PgClient` for that).
 */
export const metricsWith = (options: MetricsOptions = {}) => {
  // Checked here, when the layer is defined: a bad interval is a mistake in the program.
  const interval = options.sampleInterval === false ? undefined : sampleMillis(options.sampleInterval ?? "15 seconds")
  return Layer.effect(
    Observer,
    Effect.gen(function*() {
      const current = yield* Observer
      if (interval !== undefined) yield* sampleStates(interval)
      return combine(current, metricsEvents())
    })
  ).pipe(Layer.provide(JobStore.layer))
}

const sampleMillis = (input: Duration.Input): number => {
  const d = Duration.fromInput(input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!(ms > 0) || !Number.isFinite(ms)) {
    throw new Error(`Observer.metricsWith: sampleInterval must be a finite, positive duration (or false), got ${String(input)}`)
  }
  return ms
}

/** Metrics with the default sampling (every 15 seconds). Needs a `PgClient`. */
export const metrics = metricsWith()

/**
 * The default observers: metrics and logging. Needs a `PgClient` (for the
 * jobs-per-state gauge).
 *
 * To add your own without losing these: `Observer.layerWith(mine)`, or
 * `Observer.add(mine).pipe(Layer.provide(Observer.layer))` (each `add` sees
 * the observers provided to it and adds itself after them).
 */
export const layer = logging.pipe(Layer.provide(metrics))

/** The default observers (metrics, logging) and then `events`. */
export const layerWith = (events: Events) => add(events).pipe(Layer.provide(layer))
