/**
 * The worker's engine: `make` builds what `Worker.layer` provides (src/Worker.ts holds
 * the options, the service's interface and the layer; the module header there says what a
 * worker does). Configuration is checked by `validate`.
 */
import { Cause, Clock, Context, Duration, Effect, Exit, Fiber, Latch, Layer, Option, Queue, References, Schedule, type Scope, Semaphore, Tracer } from "effect"
import { PgClient } from "@effect/sql-pg"
import { InvalidWorkerConfig, JobTimeout } from "../../Errors.ts"
import * as Maintenance from "../Maintenance.ts"
import * as Running from "../Running.ts"
import * as RunSpan from "../RunSpan.ts"
import * as Job from "../../Job.ts"
import * as Completer from "../Completer.ts"
import { handlerKeyPrefix } from "../handlerKey.ts"
import { cancelledByRequest, classify, completedWithoutResult, DeadOnArrival, type Outcome, released } from "../Outcome.ts"
import { type Applied, type ClaimedJobRow, JobStore } from "../Store.ts"
import { Observer, type Events, type JobInfo } from "../../Observer.ts"
import { RequestId } from "../../RequestId.ts"
import type { Middleware, Options, QueueConfig, QueueStatus, Service } from "../../Worker.ts"

interface ResolvedQueue {
  readonly name: string
  readonly concurrency: number
  /** The prefetch, or with `adaptive` its floor. */
  readonly prefetch: number
  /** No prefetch was configured: it follows the queue's run rate (see `QueueConfig.prefetch`). */
  readonly adaptive: boolean
  readonly pollMillis: number
}

/** Adaptive prefetch: buffer about this much work (at the measured run rate) ... */
const prefetchHorizonMillis = 100
/**
 * The run rate is sampled over windows of at least this long: short, so that a worker that
 * starts on a backlog reaches its full claim size within a few claims (with 100 ms windows
 * a 5,000-job burst was mostly over before the first sample).
 */
const rateWindowMillis = 20
/** ... but never more than this many jobs. */
const maxAdaptivePrefetch = 1000

interface Resolved {
  readonly queues: ReadonlyArray<ResolvedQueue>
  readonly workerId: string
  readonly graceMillis: number
  readonly leaseMillis: number
  readonly heartbeatMillis: number
  readonly maintenanceMillis: number
  readonly listen: boolean
  readonly maxCompletionBatch: number
  readonly maxPendingOutcomes: number
}

const millis = (label: string, input: Duration.Input | undefined, fallback: number, min = 0): number => {
  if (input === undefined) return fallback
  const d = Duration.fromInput(input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!Number.isFinite(ms) || ms < min || (min === 0 && ms <= 0)) {
    throw new InvalidWorkerConfig({ message: `${label} must be a finite, positive duration, got ${String(input)}` })
  }
  return ms
}

/** Checks a worker configuration; every mistake is an `InvalidWorkerConfig` with a message saying which. */
export const validate = (options: Options): Effect.Effect<Resolved, InvalidWorkerConfig> =>
  Effect.try({
    try: () => {
      if (typeof options !== "object" || options === null || typeof options.queues !== "object" || options.queues === null) {
        throw new InvalidWorkerConfig({ message: "queues must be an object of queue name -> config" })
      }
      const names = Object.keys(options.queues)
      if (names.length === 0) throw new InvalidWorkerConfig({ message: "at least one queue must be configured" })
      const queues = names.map((name): ResolvedQueue => {
        if (name.length === 0 || name.length > 255 || /\u0000|\p{Surrogate}/u.test(name)) {
          throw new InvalidWorkerConfig({
            message: `queue name must have 1 to 255 characters without NUL or unpaired surrogates: ${JSON.stringify(name)}`
          })
        }
        const config = options.queues[name] ?? {}
        const concurrency = config.concurrency ?? 1
        if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000) {
          throw new InvalidWorkerConfig({
            message: `queue "${name}": concurrency must be an integer in [1, 10000], got ${String(concurrency)}`
          })
        }
        const prefetch = config.prefetch ?? concurrency
        if (!Number.isInteger(prefetch) || prefetch < 0 || prefetch > 100_000) {
          throw new InvalidWorkerConfig({
            message: `queue "${name}": prefetch must be an integer in [0, 100000], got ${String(prefetch)}`
          })
        }
        return {
          name,
          concurrency,
          prefetch,
          adaptive: config.prefetch === undefined,
          pollMillis: millis(`queue "${name}": pollInterval`, config.pollInterval, 1000)
        }
      })
      const leaseMillis = millis("lease", options.lease, 30_000)
      const heartbeatMillis = millis("heartbeatInterval", options.heartbeatInterval, Math.max(10, leaseMillis / 3))
      if (heartbeatMillis >= leaseMillis) {
        throw new InvalidWorkerConfig({ message: "heartbeatInterval must be shorter than the lease" })
      }
      const maxCompletionBatch = options.maxCompletionBatch ?? 1000
      if (!Number.isInteger(maxCompletionBatch) || maxCompletionBatch < 1) {
        throw new InvalidWorkerConfig({ message: "maxCompletionBatch must be a positive integer" })
      }
      const maxPendingOutcomes = options.maxPendingOutcomes ?? 10 * maxCompletionBatch
      if (!Number.isInteger(maxPendingOutcomes) || maxPendingOutcomes < 1) {
        throw new InvalidWorkerConfig({ message: "maxPendingOutcomes must be a positive integer" })
      }
      // Stored in `locked_by` by every claim: a NUL there would fail every claim, forever.
      if (options.workerId !== undefined && (typeof options.workerId !== "string" || /\u0000|\p{Surrogate}/u.test(options.workerId))) {
        throw new InvalidWorkerConfig({ message: "workerId must be a string without NUL or unpaired surrogates" })
      }
      return {
        queues,
        workerId: options.workerId ?? `${process.env.HOSTNAME ?? "worker"}:${process.pid}:${crypto.randomUUID().slice(0, 8)}`,
        graceMillis: options.gracePeriod === undefined ? 10_000 : millis("gracePeriod", options.gracePeriod, 10_000, 1),
        leaseMillis,
        heartbeatMillis,
        maintenanceMillis: millis("maintenanceInterval", options.maintenanceInterval, 1000),
        listen: options.listen ?? true,
        maxCompletionBatch,
        maxPendingOutcomes
      }
    },
    catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
  })

/** Handlers provided to the worker's layer, found by their job name. */
const collectHandlers = (context: Context.Context<never>): ReadonlyMap<string, Job.RegisteredHandler> => {
  const handlers = new Map<string, Job.RegisteredHandler>()
  for (const [key, value] of context.mapUnsafe) {
    if (key.startsWith(handlerKeyPrefix)) handlers.set(key.slice(handlerKeyPrefix.length), value)
  }
  return handlers
}

const info = (row: ClaimedJobRow): JobInfo => ({
  id: row.id,
  name: row.name,
  queue: row.queue,
  attempt: row.attempt,
  maxAttempts: row.max_attempts
})

/**
 * Reports an outcome that was written, as it was applied: a cancel request that arrived
 * while the job ran turns a retry, snooze or release into `cancelled` (see
 * `jobFinishMany`), and is reported as such, with the operator's reason.
 */
const report = (
  observer: Events,
  job: JobInfo,
  outcome: Outcome,
  durationMillis: number,
  applied: Applied
): Effect.Effect<void> => {
  const e = outcome.event
  job = { ...job, runMillis: durationMillis }
  if (applied.state === "cancelled" && (e._tag !== "cancelled" || outcome.row.by_request === true)) {
    return observer.cancelled(job, applied.cancelReason ?? (e._tag === "cancelled" ? e.reason : "cancelled while running"))
  }
  switch (e._tag) {
    case "completed":
      return observer.completed(job, durationMillis)
    case "retryScheduled":
      return observer.retryScheduled(job, e.delayMillis, e.error)
    case "rescheduled":
      return observer.rescheduled(job, e.delayMillis, e.reason)
    case "dead":
      return observer.dead(job, e.reason)
    case "cancelled":
      return observer.cancelled(job, e.reason)
  }
}


/**
 * At shutdown, how long the outcomes of the last runs may take to be written once
 * the grace period is over. Reached only when the database is unreachable: then
 * the shutdown ends anyway, and the unwritten jobs are rescued when their leases lapse.
 */
const shutdownWriteMillis = 5000

/**
 * A first-in first-out buffer: an array and a read position, compacted now and then, so
 * that taking the next job is O(1) (`Array.prototype.shift` moves every element behind it).
 */
class Fifo<A> {
  private items: Array<A> = []
  private head = 0
  get length() {
    return this.items.length - this.head
  }
  push(a: A) {
    this.items.push(a)
  }
  shift(): A | undefined {
    if (this.head >= this.items.length) return undefined
    const a = this.items[this.head++]!
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return a
  }
  /** Removes and returns the first element that matches. */
  remove(f: (a: A) => boolean): A | undefined {
    for (let i = this.head; i < this.items.length; i++) {
      if (f(this.items[i]!)) return this.items.splice(i, 1)[0]
    }
    return undefined
  }
  takeAll(): Array<A> {
    const all = this.items.slice(this.head)
    this.items = []
    this.head = 0
    return all
  }
}

const jitter = (ms: number) => Math.round(ms * (0.9 + Math.random() * 0.2))

/**
 * The span that enqueued a job, from its stored trace. The last one is kept: the jobs of
 * one `enqueueMany` share their trace, and claims return them side by side.
 */
let lastParent: Tracer.ExternalSpan | undefined
const traceParent = (trace: unknown): Tracer.AnySpan | undefined => {
  if (typeof trace !== "object" || trace === null) return undefined
  const t = trace as { traceId?: unknown; spanId?: unknown }
  if (typeof t.traceId !== "string" || typeof t.spanId !== "string") return undefined
  if (lastParent === undefined || lastParent.spanId !== t.spanId || lastParent.traceId !== t.traceId) {
    lastParent = Tracer.externalSpan({ traceId: t.traceId, spanId: t.spanId, sampled: true })
  }
  return lastParent
}

const metadataOf = (u: unknown): Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>) : {}

/** What `Worker.pruner` is on a worker built with `pruner: false`. */
const noPruner: Maintenance.Maintenance = {
  isLeader: Effect.succeed(false),
  awaitLeader: Effect.never,
  awaitFollower: Effect.void,
  pruned: Effect.succeed(0),
  lastPrunedAt: Effect.succeed(undefined)
}

/** Builds the worker inside the current scope. */
export const make = Effect.fnUntraced(function*(options: Options) {
  const config = yield* validate(options)
  if (options.pruner !== false) yield* Maintenance.validate(options.pruner ?? {})
  // Some connections are kept for good: one per LISTEN session (new jobs, cancel requests)
  // and one for the pruner's leader lock. A pool with none left over would hang the worker
  // silently (claims and outcomes would wait forever for a connection): refuse it.
  const kept = (config.listen ? 2 : 0) + (options.pruner === false ? 0 : 1)
  const poolSize = ((yield* PgClient.PgClient).config as { readonly maxConnections?: number | undefined }).maxConnections ?? 10
  if (poolSize <= kept) {
    return yield* new InvalidWorkerConfig({
      message: `the PgClient pool has ${poolSize} connection(s) and this worker keeps ${kept} for itself ` +
        `(LISTEN for new jobs and for cancel requests, the pruner's leader lock): give the pool at least ${kept + 1} ` +
        `(maxConnections), or use listen: false / pruner: false`
    })
  }
  const middleware = options.middleware ?? []
  const defaultMiddleware = options.defaultMiddleware ?? true
  /** Queues paused on this worker only, and (as last read) for all workers. */
  const pausedLocally = new Set<string>()
  let pausedGlobally: ReadonlySet<string> = new Set()
  const isPaused = (queue: string) => pausedLocally.has(queue) || pausedGlobally.has(queue)
  const store = yield* JobStore
  const observer = yield* Observer
  // The clock of the worker's fibers (a TestClock in tests), read synchronously on the hot path.
  const clock = yield* Clock.Clock
  const handlers = collectHandlers(yield* Effect.context<never>())
  // The handler of the last job looked up is kept: claims return runs of jobs of one name
  // side by side, and comparing two short strings costs less than hashing a fresh one.
  let lastName: string | undefined
  let lastHandler: Job.RegisteredHandler | undefined
  const handlerOf = (name: string) => {
    if (name !== lastName) {
      lastName = name
      lastHandler = handlers.get(name)
    }
    return lastHandler
  }
  const completer = yield* Completer.make({
    maxBatch: config.maxCompletionBatch,
    maxPending: config.maxPendingOutcomes,
    onError: (message, cause, level) => observer.workerError("*", message, cause, level)
  })

  /** Jobs held by this worker: id -> fencing token. The heartbeat extends exactly these. */
  const held = new Map<string, number>()
  /** Runs of jobs that were taken from this worker (lease lost): their outcome must not be written. */
  const lost = new Set<string>()
  /**
   * When the lease of each held job runs out as far as this worker knows: claim time +
   * lease, moved on by each heartbeat that reached the database. Removed when the run
   * ends (the lease watch also sweeps entries of jobs no longer held).
   */
  const leaseUntil = new Map<string, number>()
  /** Runs being interrupted because an operator cancelled their job: they end `cancelled`. */
  const cancelling = new Set<string>()
  /**
   * Runs that ended and whose outcome waits in the completer: id -> fencing token. Their
   * jobs stay `held` (heartbeated) until the outcome is written, so that a slow write
   * cannot let the lease lapse and the job be rescued and run again.
   */
  const writing = new Map<string, number>()
  /** After an outcome's write (or its giving up): the job is no longer ours to hold. */
  const written = (id: string, token: number) => {
    if (writing.get(id) === token) writing.delete(id)
    if (held.get(id) === token) {
      held.delete(id)
      leaseUntil.delete(id)
    }
  }
  const running = yield* Running.make

  /**
   * Runs one claimed job in its own fiber. The handler runs interruptibly; the
   * outcome is classified and handed to the completer uninterruptibly, so an
   * interrupted run (shutdown) still returns its job to the queue.
   */
  const runJob = (row: ClaimedJobRow, producer: Producer) =>
    Effect.uninterruptibleMask((restore) => {
      // Written as a chain rather than a generator, with the clock read directly: this runs
      // once per job, and every Effect step counts (see BENCHMARKS.md, "Where the time goes").
      const handler = handlerOf(row.name)
      const job = info(row)
      const started = clock.currentTimeMillisUnsafe()
      const cell: SpanCell = { span: undefined }
      const run = Effect.exit(restore(execute(row, handler, cell)))
      const onStart = observer.started(job)
      // (no step for an observer that does nothing on start, the default)
      return (onStart === Effect.void ? run : Effect.andThen(onStart, run)).pipe(
        Effect.flatMap((exit) => {
          if (cell.span !== undefined) RunSpan.end(cell.span, exit, nowNanos)
          if (lost.has(row.id)) return Effect.void // another worker runs it now; nothing of ours may be written
          const now = clock.currentTimeMillisUnsafe()
          const outcome = cancelling.has(row.id) && Exit.hasInterrupts(exit)
            ? cancelledByRequest(row, now, "cancelled while running")
            : completedWithoutResult(row, handler?.job, exit) ?? classify(row, handler?.job, exit, now)
          const submit = (o: Outcome) => {
            writing.set(row.id, row.claim_count)
            completer.submitUnsafe(o.row, (applied) => {
              written(row.id, row.claim_count)
              // the run's duration: from its start until its outcome was written (now)
              return applied ? report(observer, job, o, clock.currentTimeMillisUnsafe() - started, applied) : Effect.void
            })
          }
          if (Effect.isEffect(outcome)) return Effect.map(outcome, submit)
          submit(outcome)
          return Effect.void
        }),
        Effect.ensuring(Effect.sync(() => {
          // An outcome on its way keeps the job held until it is written (see `writing`).
          if (writing.get(row.id) !== row.claim_count) {
            held.delete(row.id)
            leaseUntil.delete(row.id)
          }
          lost.delete(row.id)
          cancelling.delete(row.id)
          producer.release()
        }))
      )
    })

  /** Where `execute` leaves the run's span (default middleware), for `runJob` to end it. */
  interface SpanCell {
    span: RunSpan.Started | undefined
  }
  const nowNanos = () => clock.currentTimeNanosUnsafe()

  const execute = (
    row: ClaimedJobRow,
    handler: Job.RegisteredHandler | undefined,
    cell: SpanCell
  ): Effect.Effect<unknown, unknown> => {
    if (handler === undefined) {
      return Effect.fail(new DeadOnArrival({ kind: "NoHandler", message: `no handler for job "${row.name}" on this worker` }))
    }
    // Only a row edited by hand gets here with an attempt outside [1, max_attempts]: it has
    // no attempt left to run (or a count that means nothing), so it is not run.
    if (!(row.attempt >= 1 && row.attempt <= row.max_attempts)) {
      return Effect.fail(new DeadOnArrival({
        kind: "AttemptOutOfRange",
        message: `attempt ${row.attempt} is outside [1, ${row.max_attempts}] (the row was changed by hand?); not run`
      }))
    }
    const definition = handler.job
    const ctx: Job.JobContext = {
      id: row.id,
      name: row.name,
      queue: row.queue,
      attempt: row.attempt,
      maxAttempts: row.max_attempts,
      runs: row.claim_count,
      priority: row.priority,
      enqueuedAt: row.created_at,
      requestId: row.request_id ?? undefined,
      metadata: metadataOf(row.metadata)
    }
    let run: Effect.Effect<unknown, unknown, unknown> = definition.decodeArgs(row.args).pipe(
      Effect.mapError((e) => new DeadOnArrival({ kind: "InvalidArgs", message: `arguments do not decode: ${e.message}` })),
      Effect.flatMap((args) => handler.handle(args, ctx))
    )
    if (definition.timeout !== undefined) {
      const timeoutMillis = Duration.toMillis(definition.timeout)
      run = Effect.timeoutOrElse(run, {
        duration: definition.timeout,
        orElse: () => Effect.fail(new JobTimeout({ timeoutMillis }))
      })
    }
    for (const m of middleware) run = m(run as Effect.Effect<unknown, unknown>, ctx)
    // The run's services, set in one step: the handler's captured context over the worker's,
    // then CurrentJob and (default middleware) the run's span, the request id and log
    // annotations on top. The span is made here rather than with `Effect.withSpan`, and
    // `runJob` ends it with the run's exit (see internal/RunSpan.ts for why).
    return Effect.updateContext(run, (parentContext: Context.Context<unknown>) => {
      // (the run's requirements are all provided here: the handler's by its layer, the rest now)
      const merged = handlerContext(handler, parentContext as Context.Context<never>)
      let context = Context.add(merged, Job.CurrentJob, ctx)
      if (defaultMiddleware) {
        // (its tracing settings are read from `merged`, the same object for every run of this
        // handler, so that they are read once)
        cell.span = RunSpan.start(merged, {
          name: `effect-jobs.run ${row.name}`,
          parent: traceParent(row.trace),
          attributes: () => ({ "job.id": row.id, "job.name": row.name, "job.queue": row.queue, "job.attempt": row.attempt }),
          nowNanos
        })
        if (cell.span !== undefined) context = Context.add(context, Tracer.ParentSpan, cell.span.span)
        context = Context.add(context, RequestId, ctx.requestId)
        context = Context.add(context, References.CurrentLogAnnotations, {
          ...Context.get(context, References.CurrentLogAnnotations),
          jobId: row.id,
          job: row.name,
          queue: row.queue,
          attempt: row.attempt,
          requestId: ctx.requestId ?? ""
        })
      }
      return context as Context.Context<unknown>
    }) as Effect.Effect<unknown, unknown>
  }

  /** Per handler: the worker fiber context it was last merged into, and the result. */
  const mergedContexts = new Map<Job.RegisteredHandler, { parent: Context.Context<never>; merged: Context.Context<never> }>()
  const handlerContext = (handler: Job.RegisteredHandler, parent: Context.Context<never>) => {
    const cached = mergedContexts.get(handler)
    if (cached !== undefined && cached.parent === parent) return cached.merged
    const merged = Context.merge(parent, handler.context)
    mergedContexts.set(handler, { parent, merged })
    return merged
  }

  interface Producer {
    readonly queue: ResolvedQueue
    /** A NOTIFY for this queue arrived: there may be jobs. */
    readonly notify: () => void
    /** A run ended: its slot is free. */
    readonly release: () => void
    /** Removes a buffered (claimed, not started) job from the buffer and returns it. */
    readonly takeBuffered: (id: string) => ClaimedJobRow | undefined
    /** Live controls: the settings now, new settings (taken at the next loop turn), stop after the current claim. */
    readonly config: () => ResolvedQueue
    readonly update: (queue: ResolvedQueue) => void
    readonly stop: () => void
    /** Re-arms a stopped producer (its queue was added back); fork its loop again. */
    readonly restart: () => void
    readonly counts: () => {
      readonly running: number
      readonly buffered: number
      readonly prefetch: number
      readonly waitingForOutcomes: boolean
    }
  }

  /**
   * The producer of one queue. States, in prose:
   *   hungry   the queue may have runnable jobs: claim while there is room
   *            (running + buffered < concurrency + prefetch) and the buffer is low;
   *   sated    the last claim came back short: wait for a NOTIFY, the poll timer,
   *            or a free slot for a buffered job.
   * Claimed jobs wait in a small local buffer (at most `prefetch`) so the next
   * job starts the moment a slot frees, without a round trip. Buffered jobs are
   * held (leased and heartbeated) like running ones, and are returned to the
   * queue, attempt given back, when the producer stops.
   */
  const makeProducer = Effect.fnUntraced(function*(initial: ResolvedQueue) {
    let queue = initial // replaced by `update` (reconfigure, setConcurrency)
    let stopped = false
    const signal = yield* Latch.make(false)
    const buffer = new Fifo<ClaimedJobRow>()
    let inFlight = 0
    let hungry = true
    let wakes = 0
    let waitingForOutcomes = false
    const producer: Producer = {
      get queue() {
        return queue
      },
      notify: () => {
        wakes++
        hungry = true
        signal.openUnsafe()
      },
      release: () => {
        inFlight--
        finished++
        signal.openUnsafe()
      },
      takeBuffered: (id) => {
        const row = buffer.remove((row) => row.id === id)
        if (row !== undefined) signal.openUnsafe()
        return row
      },
      config: () => queue,
      update: (next) => {
        queue = next
        prefetch = next.adaptive ? Math.max(next.prefetch, prefetch) : next.prefetch
        hungry = true
        signal.openUnsafe()
      },
      stop: () => {
        stopped = true
        signal.openUnsafe()
      },
      restart: () => {
        stopped = false
        hungry = true
      },
      counts: () => ({ running: inFlight, buffered: buffer.length, prefetch, waitingForOutcomes })
    }
    /**
     * The prefetch in force. Adaptive (no prefetch configured): the runs finished per
     * millisecond, sampled at claims over windows of at least 20 ms and smoothed,
     * times the horizon; never below the configured floor (= concurrency).
     */
    let prefetch = queue.prefetch
    let finished = 0
    let sampledFinished = 0
    let sampledAt: number | undefined
    let rate = 0
    const updatePrefetch = (now: number) => {
      if (!queue.adaptive) {
        prefetch = queue.prefetch
        return
      }
      if (sampledAt === undefined || now < sampledAt) {
        sampledAt = now
        sampledFinished = finished
      } else if (now - sampledAt >= rateWindowMillis) {
        const windowRate = (finished - sampledFinished) / (now - sampledAt)
        // smoothed, except the first sample (nothing to smooth with), which is taken as it is
        rate = rate === 0 ? windowRate : (rate + windowRate) / 2
        sampledAt = now
        sampledFinished = finished
      }
      prefetch = Math.min(maxAdaptivePrefetch, Math.max(queue.prefetch, Math.ceil(rate * prefetchHorizonMillis)))
    }
    const room = () => queue.concurrency + prefetch - inFlight - buffer.length
    const lowWater = () => Math.floor(prefetch / 2)

    /** Starts buffered jobs while there are free slots (each runs at once, up to its first async step). */
    const dispatch = Effect.sync(() => {
      while (inFlight < queue.concurrency && buffer.length > 0) {
        inFlight++
        const row = buffer.shift()!
        running.start(row.id, runJob(row, producer))
      }
    })

    const claim = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      updatePrefetch(now)
      const limit = room()
      if (limit <= 0) return
      const wakesBefore = wakes
      const rows = yield* store.jobClaim({
        queue: queue.name,
        limit,
        now,
        leaseMillis: config.leaseMillis,
        workerId: config.workerId
      })
      for (const row of rows) { // in claim order (the statement sorts them)
        held.set(row.id, row.claim_count)
        leaseUntil.set(row.id, now + config.leaseMillis)
        buffer.push(row)
      }
      // A short claim means the queue is drained, unless a NOTIFY came in meanwhile.
      if (rows.length < limit && wakes === wakesBefore) hungry = false
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.sync(() => {
          hungry = false // back off until the next poll or NOTIFY
        }).pipe(Effect.andThen(observer.workerError(queue.name, "claim failed", Cause.squash(cause), "Warn")))
      )
    )

    const waitForPoll = Effect.suspend(() => Effect.sleep(jitter(queue.pollMillis))).pipe(
      Effect.andThen(Effect.sync(() => {
        hungry = true
      }))
    )

    const loop = Effect.gen(function*() {
      while (!stopped) {
        signal.closeUnsafe()
        if (isPaused(queue.name)) {
          // Paused: claim nothing, and give back what was claimed but not started (attempt
          // not spent) so that workers where the queue still runs can take it.
          yield* returnBuffered
          yield* signal.await // resume, new settings or stop
          continue
        }
        yield* dispatch
        if (hungry && room() > 0 && buffer.length <= lowWater()) {
          if (!completer.hasRoom()) {
            // Backpressure: too many outcomes not written yet. Wait for the backlog to halve,
            // or for anything else (a stop, new settings), then look again.
            waitingForOutcomes = true
            yield* Effect.raceFirst(completer.room, signal.await)
            waitingForOutcomes = false
            continue
          }
          yield* claim
          continue
        }
        if (hungry) yield* signal.await // full: wait for a slot
        else yield* Effect.raceFirst(signal.await, waitForPoll)
      }
    })

    /** Buffered jobs never started: give them back (attempt not spent). */
    const returnBuffered = Effect.suspend(() => {
      const rows = buffer.takeAll()
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.forEach(rows, (row) => {
          held.delete(row.id)
          // (a job an operator cancelled meanwhile ends `cancelled` instead: report that)
          return completer.submit(released(row, now).row, (applied) =>
            applied?.state === "cancelled"
              ? observer.cancelled(info(row), applied.cancelReason ?? "cancelled before it started")
              : Effect.void)
        }, { discard: true }))
    })

    return { producer, loop: loop.pipe(Effect.ensuring(returnBuffered)) }
  })

  /**
   * Every producer this worker has had, by queue. A queue removed by `reconfigure`
   * keeps its (stopped) producer, so its jobs still running release their slots
   * into it, and adding the queue back re-arms it with those counts.
   */
  const producers = new Map<string, Producer>()
  /** Claim loops of the queues served now. */
  const producerFibers = new Map<string, Fiber.Fiber<unknown, unknown>>()
  const producerLoops = new Map<string, Effect.Effect<unknown>>()
  const workerScope = yield* Effect.scope
  const startProducer = Effect.fnUntraced(function*(queue: ResolvedQueue) {
    let producer = producers.get(queue.name)
    if (producer === undefined) {
      const made = yield* makeProducer(queue)
      producer = made.producer
      producers.set(queue.name, producer)
      producerLoops.set(queue.name, made.loop)
    } else {
      producer.update(queue)
      producer.restart()
    }
    producerFibers.set(queue.name, yield* Effect.forkIn(producerLoops.get(queue.name)!, workerScope))
  })
  for (const queue of config.queues) yield* startProducer(queue)
  const wakeAll = Effect.sync(() => {
    for (const p of producers.values()) p.notify()
  })

  // -- background fibers; each is interrupted when the scope closes --------------------

  const background: Array<Fiber.Fiber<unknown, unknown>> = []

  /**
   * Keeps a LISTEN session up for the life of the worker. `session` calls
   * `established` once its LISTEN is confirmed. Connecting is retried with backoff
   * (100 ms doubling, at most 5 s); a session that was up and then lost its
   * connection starts the backoff afresh. (A Schedule given to `Effect.retry`
   * keeps its state across retries: without the reset, after a few cuts every
   * reconnect waited the full 5 s, wake-ups left to polling meanwhile.)
   */
  const keepListening = (lostMessage: string, session: (established: Effect.Effect<void>) => Effect.Effect<never, unknown, Scope.Scope>) => {
    let established = false
    const once = Effect.suspend(() => {
      established = false
      return Effect.scoped(session(Effect.sync(() => {
        established = true
      })))
    }).pipe(
      Effect.tapCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? Effect.void : observer.workerError("*", lostMessage, Cause.squash(cause), "Warn")),
      Effect.retry({
        schedule: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered),
        while: () => !established
      })
    )
    return Effect.forever(once.pipe(Effect.catch(() => Effect.sleep(jitter(100)))))
  }

  if (config.listen) {
    background.push(yield* Effect.forkScoped(keepListening("LISTEN connection lost; reconnecting", (established) =>
      Effect.gen(function*() {
        const notifications = yield* store.listen
        yield* established
        // Anything sent while we were not listening was missed: look now.
        yield* wakeAll
        while (true) {
          const n = yield* Queue.take(notifications)
          producers.get(n.payload)?.notify()
        }
      }))))
  }

  // Cancel requests: the payload is a job id; if we run it, interrupt it (its finalizers run)
  // and record it as cancelled. Not running here: someone else's, or not started; ignore.
  const cancelRun = (id: string) =>
    Effect.suspend(() => {
      // Not ours, or its run is over and its outcome on its way (that write checks the request).
      if (!held.has(id) || writing.has(id)) return Effect.void
      for (const p of producers.values()) {
        const row = p.takeBuffered(id)
        if (row === undefined) continue
        held.delete(id)
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const outcome = cancelledByRequest(row, now, "cancelled before it started")
          return completer.submit(outcome.row, (applied) => applied ? report(observer, info(row), outcome, 0, applied) : Effect.void)
        })
      }
      cancelling.add(id)
      return running.interrupt(id)
    })
  if (config.listen) {
    background.push(yield* Effect.forkScoped(keepListening("cancel LISTEN lost; reconnecting", (established) =>
      Effect.gen(function*() {
        const requests = yield* store.listenOn("cancel")
        yield* established
        while (true) {
          const n = yield* Queue.take(requests)
          yield* Effect.forkChild(cancelRun(n.payload))
        }
      }))))
  }

  const heartbeat = Effect.gen(function*() {
    if (held.size === 0) return
    const snapshot = Array.from(held, ([id, token]) => ({ id, token }))
    const now = yield* Clock.currentTimeMillis
    const { busy, extended } = yield* store.jobHeartbeatMany(snapshot, now, config.leaseMillis)
    for (const id of extended) if (held.has(id)) leaseUntil.set(id, now + config.leaseMillis)
    // (a busy job, its row locked by someone else just now, is still ours but its lease was not
    // extended: nothing to do; if that lasts a whole lease, the lease watch below stops its run)
    for (const { id, token } of snapshot) {
      // Only a run we still think we hold (same token) and the database does not: it was rescued.
      // (An outcome being written may have just finished the job: nothing to stop then; a
      // run that really lost its lease gets its write refused by the fencing token.)
      if (!extended.has(id) && !busy.has(id) && held.get(id) === token && writing.get(id) !== token) {
        lost.add(id)
        yield* observer.workerError("*", `lost the lease of job ${id}; its run here is stopped`, undefined, "Error")
        yield* running.interrupt(id).pipe(Effect.forkDetach)
      }
    }
  }).pipe(Effect.catchCause((cause) => observer.workerError("*", "heartbeat failed", Cause.squash(cause), "Warn")))
  background.push(yield* Effect.forkScoped(
    Effect.repeat(heartbeat, Schedule.spaced(Duration.millis(config.heartbeatMillis)))
  ))

  // The lease watch. A worker whose heartbeats have not reached the database for a whole
  // lease (it is down, or unreachable) must assume its jobs were rescued and are running
  // elsewhere: it stops those runs and writes nothing for them, as for a lease found lost.
  // Buffered jobs are dropped. This runs apart from the heartbeat, so a heartbeat statement
  // that hangs cannot keep it from running.
  const leaseWatch = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const id of leaseUntil.keys()) if (!held.has(id)) leaseUntil.delete(id)
    for (const [id, until] of leaseUntil) {
      if (until > now) continue
      leaseUntil.delete(id)
      held.delete(id)
      if (writing.has(id)) continue // its run is over; the write is refused if the job was rescued
      yield* observer.workerError(
        "*",
        `the lease of job ${id} ran out with no heartbeat reaching the database; its run here is stopped`,
        undefined,
        "Error"
      )
      let buffered = false
      for (const p of producers.values()) if (p.takeBuffered(id) !== undefined) buffered = true
      if (!buffered) {
        lost.add(id)
        yield* running.interrupt(id).pipe(Effect.forkDetach)
      }
    }
  })
  background.push(yield* Effect.forkScoped(
    Effect.repeat(leaseWatch, Schedule.spaced(Duration.millis(config.heartbeatMillis)))
  ))

  const maintenance = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    yield* store.jobPromoteScheduled(now, 1000)
    yield* store.jobRescueExpired(now, 1000)
  }).pipe(Effect.catchCause((cause) => observer.workerError("*", "maintenance failed", Cause.squash(cause), "Warn")))
  background.push(yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(maintenance, Effect.suspend(() => Effect.sleep(jitter(config.maintenanceMillis)))))
  ))

  // -- live controls: reconfigure, concurrency, pause/resume ----------------------------------

  /** The queue configs as last given (`reconfigure` replaces them). */
  let queueConfigs: Readonly<Record<string, QueueConfig>> = options.queues
  /** One reconfiguration at a time; pause flags change under their own lock. */
  const reconfiguring = yield* Semaphore.make(1)
  const pausing = yield* Semaphore.make(1)
  const notServed = (queue: string) =>
    new InvalidWorkerConfig({ message: `queue ${JSON.stringify(queue)} is not served by this worker` })

  const reconfigure = Effect.fn("Worker.reconfigure")(function*(queues: Readonly<Record<string, QueueConfig>>) {
    const next = yield* validate({ ...options, queues })
    const names = new Set(next.queues.map((q) => q.name))
    // 1. Queues no longer served: their producers finish the claim in flight (if any), give
    //    back what they buffered, and end. Their running jobs finish and are recorded as usual.
    const stopping: Array<Fiber.Fiber<unknown, unknown>> = []
    for (const [name, fiber] of producerFibers) {
      if (names.has(name)) continue
      producers.get(name)!.stop()
      producerFibers.delete(name)
      stopping.push(fiber)
    }
    yield* Fiber.awaitAll(stopping)
    // 2. Kept queues take their new settings in place (no restart); new ones start.
    for (const queue of next.queues) {
      if (producerFibers.has(queue.name)) producers.get(queue.name)!.update(queue)
      else yield* startProducer(queue)
    }
    queueConfigs = queues
  }, reconfiguring.withPermits(1))

  const setConcurrency = Effect.fn("Worker.setConcurrency")(function*(queue: string, concurrency: number) {
    if (!producerFibers.has(queue) || !Object.hasOwn(queueConfigs, queue)) return yield* notServed(queue)
    yield* reconfigure({ ...queueConfigs, [queue]: { ...queueConfigs[queue], concurrency } })
  })

  const checkName = (queue: string) =>
    typeof queue === "string" && queue.length > 0 && queue.length <= 255 && !queue.includes("\u0000")
      ? Effect.void
      : Effect.fail(new InvalidWorkerConfig({ message: `queue name must have 1 to 255 characters without NUL: ${JSON.stringify(queue)}` }))

  const setPaused = Effect.fnUntraced(function*(queue: string, paused: boolean, global: boolean) {
    yield* checkName(queue)
    if (global) {
      yield* store.queueSetPaused(queue, paused, yield* Clock.currentTimeMillis)
      const next = new Set(pausedGlobally)
      if (paused) next.add(queue)
      else next.delete(queue)
      pausedGlobally = next
    } else {
      if (!producerFibers.has(queue)) return yield* notServed(queue)
      if (paused) pausedLocally.add(queue)
      else pausedLocally.delete(queue)
    }
    producers.get(queue)?.notify()
  }, pausing.withPermits(1))

  /** Stops claiming jobs of `queue` on this worker, or with `{ global: true }` on every worker. Running jobs finish. */
  const pause = (queue: string, options?: { readonly global?: boolean | undefined }) =>
    setPaused(queue, true, options?.global === true).pipe(Effect.withSpan("Worker.pause", { attributes: { "job.queue": queue } }))
  /** Undoes `pause` (the local flag, or with `{ global: true }` the flag for every worker). */
  const resume = (queue: string, options?: { readonly global?: boolean | undefined }) =>
    setPaused(queue, false, options?.global === true).pipe(Effect.withSpan("Worker.resume", { attributes: { "job.queue": queue } }))

  const status = Effect.sync(() =>
    Array.from(producerFibers.keys(), (name): QueueStatus => {
      const p = producers.get(name)!
      const q = p.config()
      const counts = p.counts()
      return {
        name,
        concurrency: q.concurrency,
        prefetch: counts.prefetch,
        pollIntervalMillis: q.pollMillis,
        pausedLocally: pausedLocally.has(name),
        pausedGlobally: pausedGlobally.has(name),
        running: counts.running,
        buffered: counts.buffered,
        waitingForOutcomes: counts.waitingForOutcomes
      }
    })
  )

  // The control poll, every (shortest) poll interval: which queues are paused for all
  // workers, and which held jobs have a cancel request (the fallback for a missed NOTIFY,
  // or for `listen: false`). One small statement per worker per interval.
  const controlPoll = pausing.withPermits(1)(Effect.gen(function*() {
    const names = Array.from(producerFibers.keys())
    const result = yield* store.workerControlPoll(names, Array.from(held.keys()))
    const before = pausedGlobally
    pausedGlobally = result.paused
    for (const name of names) if (before.has(name) !== result.paused.has(name)) producers.get(name)?.notify()
    return result.cancel
  })).pipe(
    Effect.flatMap((cancel) =>
      Effect.forEach(cancel, (id) => (cancelling.has(id) ? Effect.void : Effect.forkChild(cancelRun(id))), { discard: true })),
    Effect.catchCause((cause) => observer.workerError("*", "control poll failed", Cause.squash(cause), "Warn"))
  )
  const controlMillis = () =>
    Math.min(config.maintenanceMillis, ...Array.from(producerFibers.keys(), (name) => producers.get(name)!.config().pollMillis))
  background.push(yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(controlPoll, Effect.suspend(() => Effect.sleep(jitter(controlMillis())))))
  ))

  // -- pruning finished jobs past their retention (one leader among all workers) -------------

  const pruner = options.pruner === false
    ? undefined
    : yield* Maintenance.make(options.pruner ?? {}, (message, cause) => observer.workerError("*", message, cause, "Warn"))

  // -- graceful shutdown (added last, so it runs first when the scope closes) ---------------

  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      // 1. stop claiming
      yield* Fiber.interruptAll(Array.from(producerFibers.values()))
      // 2. let running jobs finish within the grace period
      yield* running.awaitEmpty.pipe(
        Effect.timeoutOrElse({ duration: Duration.millis(config.graceMillis), orElse: () => Effect.void })
      )
      // 3. interrupt the rest: each returns its job to the queue (attempt given back)
      yield* running.interruptAll
      // 4. every outcome is in the database before the scope closes; if the database stays
      //    unreachable, at most `shutdownWriteMillis` more: what is not written then is given
      //    up (those jobs stay `running` until their lease lapses and are rescued).
      yield* completer.drain.pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(shutdownWriteMillis),
          orElse: () => Effect.andThen(completer.abandon, completer.drain)
        })
      )
    }).pipe(Effect.ignore)
  )

  return {
    workerId: config.workerId,
    /** Wakes all producers, as a NOTIFY would. */
    wake: wakeAll,
    /** Number of jobs this worker is running. */
    running: Effect.sync(running.size),
    /**
     * Replaces the queue configs (see the module header). Fails with
     * `InvalidWorkerConfig`, changing nothing, if the new configs are invalid.
     */
    reconfigure,
    /** Changes one queue's concurrency (its prefetch follows unless set explicitly). */
    setConcurrency,
    pause,
    resume,
    /** The queues served now, with their settings, pause flags and load. */
    status,
    /**
     * The pruner of this worker: whether it leads now, waiting for it to lead or
     * follow, what it pruned. With `pruner: false` it never leads.
     */
    pruner: pruner ?? noPruner
  }
})
