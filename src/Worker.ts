/**
 * Worker: fibers that claim and run jobs, scoped to a layer.
 *
 * For each configured queue a producer fiber claims as many jobs as it has free
 * slots in one statement and forks one fiber per job. It claims again at once
 * while claims come back full; otherwise it waits for a NOTIFY on the
 * `effect_jobs` channel (one LISTEN connection per worker) or for its poll
 * interval, whichever comes first. Polling alone is enough (`listen: false`, for
 * transaction-mode poolers); NOTIFY only makes it fast.
 *
 * Every claim holds a lease (default 30 s) that one heartbeat fiber per worker
 * keeps extending for all the jobs it holds, in one statement. A job whose lease
 * lapsed (its worker died) is rescued by any worker's maintenance fiber and runs
 * again. Each claim carries a fencing token; all later writes about the run check
 * it, so a worker that lost a job can never overwrite the run that replaced it.
 *
 * Closing the layer's scope is a graceful shutdown: producers stop claiming,
 * running jobs get `gracePeriod` to finish, then they are interrupted and
 * returned to the queue with their attempt given back, and every outcome is
 * written before the scope closes.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Duration, Effect, Exit, Fiber, FiberMap, Latch, Layer, Option, Queue, Schedule, Tracer } from "effect"
import { InvalidWorkerConfig, JobTimeout } from "./Errors.ts"
import * as Job from "./Job.ts"
import * as Completer from "./internal/Completer.ts"
import { cancelledByRequest, classify, DeadOnArrival, type Outcome, released } from "./internal/Outcome.ts"
import { cancelChannel, type ClaimedJobRow, JobStore } from "./internal/Store.ts"
import { Observer, type Events, type JobInfo } from "./Observer.ts"
import { RequestId } from "./RequestId.ts"

export interface QueueConfig {
  /** Jobs of this queue run at once on this worker; default 1. */
  readonly concurrency?: number | undefined
  /** How often to look for jobs when no NOTIFY arrives; default 1 second. */
  readonly pollInterval?: Duration.Input | undefined
  /**
   * Jobs claimed ahead of free slots and held in a local buffer, so a slot that
   * frees starts the next job without a round trip; default = concurrency.
   * Raise it for many short jobs; 0 claims only for free slots (fairest across workers).
   */
  readonly prefetch?: number | undefined
}

export interface Options {
  readonly queues: Readonly<Record<string, QueueConfig>>
  /** Shown in `locked_by`; default `<hostname>:<pid>:<random>`. */
  readonly workerId?: string | undefined
  /** Time running jobs get to finish at shutdown before they are interrupted; default 10 seconds. */
  readonly gracePeriod?: Duration.Input | undefined
  /** How long a claim holds a job without a heartbeat; default 30 seconds. */
  readonly lease?: Duration.Input | undefined
  /** How often leases are extended; default a third of the lease. */
  readonly heartbeatInterval?: Duration.Input | undefined
  /** How often due scheduled jobs are promoted and lapsed leases rescued; default 1 second. */
  readonly maintenanceInterval?: Duration.Input | undefined
  /** LISTEN for new jobs; default true. Set false behind a transaction-mode pooler. */
  readonly listen?: boolean | undefined
  /** Outcomes written per statement at most; default 1000. */
  readonly maxCompletionBatch?: number | undefined
}

interface ResolvedQueue {
  readonly name: string
  readonly concurrency: number
  readonly prefetch: number
  readonly pollMillis: number
}

interface Resolved {
  readonly queues: ReadonlyArray<ResolvedQueue>
  readonly workerId: string
  readonly graceMillis: number
  readonly leaseMillis: number
  readonly heartbeatMillis: number
  readonly maintenanceMillis: number
  readonly listen: boolean
  readonly maxCompletionBatch: number
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
        if (name.length === 0 || name.length > 255 || name.includes("\u0000")) {
          throw new InvalidWorkerConfig({ message: `queue name must have 1 to 255 characters without NUL: ${JSON.stringify(name)}` })
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
        return { name, concurrency, prefetch, pollMillis: millis(`queue "${name}": pollInterval`, config.pollInterval, 1000) }
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
      return {
        queues,
        workerId: options.workerId ?? `${process.env.HOSTNAME ?? "worker"}:${process.pid}:${crypto.randomUUID().slice(0, 8)}`,
        graceMillis: options.gracePeriod === undefined ? 10_000 : millis("gracePeriod", options.gracePeriod, 10_000, 1),
        leaseMillis,
        heartbeatMillis,
        maintenanceMillis: millis("maintenanceInterval", options.maintenanceInterval, 1000),
        listen: options.listen ?? true,
        maxCompletionBatch
      }
    },
    catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
  })

/** Handlers provided to the worker's layer, found by their job name. */
const collectHandlers = (context: Context.Context<never>): ReadonlyMap<string, Job.RegisteredHandler> => {
  const handlers = new Map<string, Job.RegisteredHandler>()
  for (const [key, value] of context.mapUnsafe) {
    if (key.startsWith(Job.handlerKeyPrefix)) handlers.set(key.slice(Job.handlerKeyPrefix.length), value)
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

const report = (observer: Events, job: JobInfo, outcome: Outcome, durationMillis: number): Effect.Effect<void> => {
  const e = outcome.event
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

const claimOrder = (a: ClaimedJobRow, b: ClaimedJobRow) =>
  a.priority - b.priority || (a.run_at.getTime() - b.run_at.getTime()) || compareIds(a.id, b.id)
const compareIds = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0)

const jitter = (ms: number) => Math.round(ms * (0.9 + Math.random() * 0.2))

const traceParent = (trace: unknown): Tracer.AnySpan | undefined => {
  if (typeof trace !== "object" || trace === null) return undefined
  const t = trace as { traceId?: unknown; spanId?: unknown }
  return typeof t.traceId === "string" && typeof t.spanId === "string"
    ? Tracer.externalSpan({ traceId: t.traceId, spanId: t.spanId, sampled: true })
    : undefined
}

const metadataOf = (u: unknown): Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>) : {}

/** Builds the worker inside the current scope. */
export const make = Effect.fnUntraced(function*(options: Options) {
  const config = yield* validate(options)
  const store = yield* JobStore
  const observer = yield* Observer
  const handlers = collectHandlers(yield* Effect.context<never>())
  const completer = yield* Completer.make({
    maxBatch: config.maxCompletionBatch,
    onError: (message, cause) => observer.workerError("*", message, cause)
  })

  /** Jobs held by this worker: id -> fencing token. The heartbeat extends exactly these. */
  const held = new Map<string, number>()
  /** Runs of jobs that were taken from this worker (lease lost): their outcome must not be written. */
  const lost = new Set<string>()
  /** Runs being interrupted because an operator cancelled their job: they end `cancelled`. */
  const cancelling = new Set<string>()
  const running = yield* FiberMap.make<string>()

  /**
   * Runs one claimed job in its own fiber. The handler runs interruptibly; the
   * outcome is classified and handed to the completer uninterruptibly, so an
   * interrupted run (shutdown) still returns its job to the queue.
   */
  const runJob = (row: ClaimedJobRow, producer: Producer) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const handler = handlers.get(row.name)
        const job = info(row)
        const started = yield* Clock.currentTimeMillis
        yield* observer.started(job)
        const exit = yield* Effect.exit(restore(execute(row, handler)))
        if (lost.has(row.id)) return // another worker runs it now; nothing of ours may be written
        const now = yield* Clock.currentTimeMillis
        const outcome = cancelling.has(row.id) && Exit.hasInterrupts(exit)
          ? cancelledByRequest(row, now, "cancelled while running")
          : yield* classify(row, handler?.job, exit, now)
        yield* completer.submit(outcome.row, (applied) => applied ? report(observer, job, outcome, now - started) : Effect.void)
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          held.delete(row.id)
          lost.delete(row.id)
          cancelling.delete(row.id)
          producer.release()
        }))
      )
    )

  const execute = (row: ClaimedJobRow, handler: Job.RegisteredHandler | undefined): Effect.Effect<unknown, unknown> => {
    if (handler === undefined) {
      return Effect.fail(new DeadOnArrival("NoHandler", `no handler for job "${row.name}" on this worker`))
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
    let run: Effect.Effect<unknown, unknown> = definition.decodeArgs(row.args).pipe(
      Effect.mapError((e) => new DeadOnArrival("InvalidArgs", `arguments do not decode: ${e.message}`)),
      Effect.flatMap((args) => handler.run(args, ctx))
    )
    if (definition.timeout !== undefined) {
      const timeoutMillis = Duration.toMillis(definition.timeout)
      run = Effect.timeoutOrElse(run, {
        duration: definition.timeout,
        orElse: () => Effect.fail(new JobTimeout({ timeoutMillis }))
      })
    }
    const parent = traceParent(row.trace)
    return run.pipe(
      Effect.provideService(RequestId, ctx.requestId),
      Effect.annotateLogs({ jobId: row.id, job: row.name, queue: row.queue, attempt: row.attempt, requestId: ctx.requestId ?? "" }),
      Effect.withSpan(`effect-jobs.run ${row.name}`, {
        kind: "consumer",
        attributes: { "job.id": row.id, "job.name": row.name, "job.queue": row.queue, "job.attempt": row.attempt },
        ...(parent === undefined ? {} : { parent })
      })
    )
  }

  interface Producer {
    readonly queue: ResolvedQueue
    /** A NOTIFY for this queue arrived: there may be jobs. */
    readonly notify: () => void
    /** A run ended: its slot is free. */
    readonly release: () => void
    /** Removes a buffered (claimed, not started) job from the buffer and returns it. */
    readonly takeBuffered: (id: string) => ClaimedJobRow | undefined
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
  const makeProducer = Effect.fnUntraced(function*(queue: ResolvedQueue) {
    const signal = yield* Latch.make(false)
    const buffer: Array<ClaimedJobRow> = []
    let inFlight = 0
    let hungry = true
    let wakes = 0
    const producer: Producer = {
      queue,
      notify: () => {
        wakes++
        hungry = true
        signal.openUnsafe()
      },
      release: () => {
        inFlight--
        signal.openUnsafe()
      },
      takeBuffered: (id) => {
        const index = buffer.findIndex((row) => row.id === id)
        if (index < 0) return undefined
        signal.openUnsafe()
        return buffer.splice(index, 1)[0]
      }
    }
    const room = () => queue.concurrency + queue.prefetch - inFlight - buffer.length
    const lowWater = Math.floor(queue.prefetch / 2)

    const dispatch = Effect.suspend(() => {
      if (buffer.length === 0 || inFlight >= queue.concurrency) return Effect.void
      const start: Array<ClaimedJobRow> = []
      while (inFlight < queue.concurrency && buffer.length > 0) {
        inFlight++
        start.push(buffer.shift()!)
      }
      return Effect.forEach(start, (row) => FiberMap.run(running, row.id, runJob(row, producer)), { discard: true })
    })

    const claim = Effect.gen(function*() {
      const limit = room()
      const wakesBefore = wakes
      const now = yield* Clock.currentTimeMillis
      const rows = yield* store.jobClaim({
        queue: queue.name,
        limit,
        now,
        leaseMillis: config.leaseMillis,
        workerId: config.workerId
      })
      for (const row of rows.length > 1 ? [...rows].sort(claimOrder) : rows) {
        held.set(row.id, row.claim_count)
        buffer.push(row)
      }
      // A short claim means the queue is drained, unless a NOTIFY came in meanwhile.
      if (rows.length < limit && wakes === wakesBefore) hungry = false
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.sync(() => {
          hungry = false // back off until the next poll or NOTIFY
        }).pipe(Effect.andThen(observer.workerError(queue.name, "claim failed", Cause.squash(cause))))
      )
    )

    const waitForPoll = Effect.suspend(() => Effect.sleep(jitter(queue.pollMillis))).pipe(
      Effect.andThen(Effect.sync(() => {
        hungry = true
      }))
    )

    const loop = Effect.gen(function*() {
      while (true) {
        signal.closeUnsafe()
        yield* dispatch
        if (hungry && room() > 0 && buffer.length <= lowWater) {
          yield* claim
          continue
        }
        if (hungry) yield* signal.await // full: wait for a slot
        else yield* Effect.raceFirst(signal.await, waitForPoll)
      }
    })

    /** Buffered jobs never started: give them back (attempt not spent). */
    const returnBuffered = Effect.suspend(() => {
      const rows = buffer.splice(0)
      return Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.forEach(rows, (row) => {
          held.delete(row.id)
          return completer.submit(released(row, now).row, () => Effect.void)
        }, { discard: true }))
    })

    return { producer, loop: loop.pipe(Effect.ensuring(returnBuffered)) }
  })

  const producers = new Map<string, Producer>()
  const loops: Array<Effect.Effect<never>> = []
  for (const queue of config.queues) {
    const { loop, producer } = yield* makeProducer(queue)
    producers.set(queue.name, producer)
    loops.push(loop as Effect.Effect<never>)
  }
  const wakeAll = Effect.sync(() => {
    for (const p of producers.values()) p.notify()
  })

  // -- background fibers; each is interrupted when the scope closes --------------------

  const background: Array<Fiber.Fiber<unknown, unknown>> = []
  for (const loop of loops) background.push(yield* Effect.forkScoped(loop))

  if (config.listen) {
    const listenOnce = Effect.scoped(Effect.gen(function*() {
      const notifications = yield* store.listen
      // Anything sent while we were not listening was missed: look now.
      yield* wakeAll
      while (true) {
        const n = yield* Queue.take(notifications)
        producers.get(n.payload)?.notify()
      }
    }))
    background.push(yield* Effect.forkScoped(listenOnce.pipe(
      Effect.tapCause((cause) =>
        Cause.hasInterruptsOnly(cause) ? Effect.void : observer.workerError("*", "LISTEN connection lost; reconnecting", Cause.squash(cause))),
      Effect.retry(Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered)),
      Effect.ignore
    )))
  }

  // Cancel requests: the payload is a job id; if we run it, interrupt it (its finalizers run)
  // and record it as cancelled. Not running here: someone else's, or not started; ignore.
  const cancelRun = (id: string) =>
    Effect.suspend(() => {
      if (!held.has(id)) return Effect.void
      for (const p of producers.values()) {
        const row = p.takeBuffered(id)
        if (row === undefined) continue
        held.delete(id)
        return Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const outcome = cancelledByRequest(row, now, "cancelled before it started")
          return completer.submit(outcome.row, (applied) => applied ? report(observer, info(row), outcome, 0) : Effect.void)
        })
      }
      cancelling.add(id)
      return FiberMap.remove(running, id)
    })
  if (config.listen) {
    background.push(yield* Effect.forkScoped(
      Effect.scoped(Effect.gen(function*() {
        const requests = yield* store.listenOn(cancelChannel)
        while (true) {
          const n = yield* Queue.take(requests)
          yield* Effect.forkChild(cancelRun(n.payload))
        }
      })).pipe(
        Effect.tapCause((cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.void : observer.workerError("*", "cancel LISTEN lost; reconnecting", Cause.squash(cause))),
        Effect.retry(Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")]).pipe(Schedule.jittered)),
        Effect.ignore
      )
    ))
  }

  const heartbeat = Effect.gen(function*() {
    if (held.size === 0) return
    const snapshot = Array.from(held, ([id, token]) => ({ id, token }))
    const now = yield* Clock.currentTimeMillis
    const still = yield* store.jobHeartbeatMany(snapshot, now, config.leaseMillis)
    for (const { id, token } of snapshot) {
      // Only a run we still think we hold (same token) and the database does not: it was rescued.
      if (!still.has(id) && held.get(id) === token) {
        lost.add(id)
        yield* observer.workerError("*", `lost the lease of job ${id}; its run here is stopped`)
        yield* FiberMap.remove(running, id).pipe(Effect.forkDetach)
      }
    }
  }).pipe(Effect.catchCause((cause) => observer.workerError("*", "heartbeat failed", Cause.squash(cause))))
  background.push(yield* Effect.forkScoped(
    Effect.repeat(heartbeat, Schedule.spaced(Duration.millis(config.heartbeatMillis)))
  ))

  const maintenance = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    yield* store.jobPromoteScheduled(now, 1000)
    yield* store.jobRescueExpired(now, 1000)
  }).pipe(Effect.catchCause((cause) => observer.workerError("*", "maintenance failed", Cause.squash(cause))))
  background.push(yield* Effect.forkScoped(
    Effect.forever(Effect.andThen(maintenance, Effect.suspend(() => Effect.sleep(jitter(config.maintenanceMillis)))))
  ))

  // -- graceful shutdown (added last, so it runs first when the scope closes) ---------------

  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      // 1. stop claiming
      yield* Fiber.interruptAll(background.slice(0, loops.length))
      // 2. let running jobs finish within the grace period
      yield* FiberMap.awaitEmpty(running).pipe(
        Effect.timeoutOrElse({ duration: Duration.millis(config.graceMillis), orElse: () => Effect.void })
      )
      // 3. interrupt the rest: each returns its job to the queue (attempt given back)
      yield* Fiber.interruptAll(Array.from(running, ([, fiber]) => fiber))
      // 4. every outcome is in the database before the scope closes
      yield* completer.drain
    }).pipe(Effect.ignore)
  )

  return {
    workerId: config.workerId,
    /** Wakes all producers, as a NOTIFY would. */
    wake: wakeAll,
    /** Number of jobs this worker is running. */
    running: FiberMap.size(running)
  }
})

export class Worker extends Context.Service<Worker, Effect.Success<ReturnType<typeof make>>>()("effect-jobs/Worker") {}

/**
 * A worker as a layer: starts when the layer is built, shuts down gracefully
 * when it is released. Needs a `PgClient` and the handlers of the jobs it runs.
 */
export const layer = (options: Options) =>
  Layer.effect(Worker, make(options)).pipe(Layer.provide(JobStore.layer))

