/**
 * The executor: runs one claimed job in its own fiber, classifies its exit into an
 * outcome (internal/Outcome.ts), hands the outcome to the completer, and reports it to
 * the observer once it is written.
 *
 * This is the worker's hot path: it runs once per job, and every Effect step counts (see
 * BENCHMARKS.md, "Where the time goes"). The run is a chain rather than a generator, the
 * clock is read directly, and lookups that repeat from job to job are cached.
 *
 * @internal
 */
import { type Clock, Context, Duration, Effect, Exit, References, Tracer } from "effect"
import { InvalidWorkerConfig, JobTimeout } from "../../Errors.ts"
import * as Job from "../../Job.ts"
import type { Events, JobInfo } from "../../Observer.ts"
import { RequestId } from "../../RequestId.ts"
import type { Middleware } from "../../Worker.ts"
import type { Completer } from "../Completer.ts"
import { handlerKeyPrefix } from "../handlerKey.ts"
import { cancelledByRequest, classify, completedWithoutResult, DeadOnArrival, type Outcome } from "../Outcome.ts"
import * as RunSpan from "../RunSpan.ts"
import type { Applied, ClaimedJobRow } from "../Store.ts"
import type { Held, HeldJobs } from "./Held.ts"

/**
 * Handlers provided to the worker's layer, found by the name a row is stored under: a job's
 * name, and each of its aliases. A name that two handlers would answer to (an alias of two
 * jobs, or one job's alias that is another's name) is an `InvalidWorkerConfig`.
 */
export const collectHandlers = (
  context: Context.Context<never>
): Effect.Effect<ReadonlyMap<string, Job.RegisteredHandler>, InvalidWorkerConfig> =>
  Effect.suspend(() => {
    const handlers = new Map<string, Job.RegisteredHandler>()
    for (const [key, value] of context.mapUnsafe) {
      if (key.startsWith(handlerKeyPrefix)) handlers.set(key.slice(handlerKeyPrefix.length), value)
    }
    const byName = new Map(handlers)
    for (const [name, handler] of handlers) {
      for (const alias of handler.job.aliases ?? []) {
        const other = byName.get(alias)
        if (other !== undefined) {
          return Effect.fail(
            new InvalidWorkerConfig({
              message: `jobs "${other.job.name}" and "${name}" both answer to the name ${JSON.stringify(alias)}: ` +
                `an alias may belong to one job of a worker only`
            })
          )
        }
        byName.set(alias, handler)
      }
    }
    return Effect.succeed(byName)
  })

export const info = (row: ClaimedJobRow): JobInfo => ({
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
export const report = (
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

/** Where `execute` leaves the run's span (default middleware), for `run` to end it. */
interface SpanCell {
  span: RunSpan.Started | undefined
}

/**
 * The handler's run of one job, with the middleware around it and its services set;
 * `execute` leaves the run's span in `cell` for the caller to end it.
 */
const makeExecute = (options: {
  readonly middleware: ReadonlyArray<Middleware>
  readonly defaultMiddleware: boolean
  readonly nowNanos: () => bigint
}) => {
  const { defaultMiddleware, middleware, nowNanos } = options
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
    // `run` ends it with the run's exit (see internal/RunSpan.ts for why).
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
  return execute
}

/** What a run tells its producer: its slot is free (`release`), its outcome is written (`written`). */
export interface Slot {
  readonly release: () => void
  /**
   * The run's outcome is written (or given up). A queue with flow control counts the job as
   * running, fleet-wide, until then (Producer.ts).
   */
  readonly written?: (() => void) | undefined
}

export interface Executor {
  /**
   * The run of one claimed job, to be started in its own fiber. `release` is called when
   * it ends (its slot is free). The handler runs interruptibly; the outcome is classified
   * and handed to the completer uninterruptibly, so an interrupted run (shutdown) still
   * returns its job to the queue.
   */
  readonly run: (held: Held, slot: Slot) => Effect.Effect<void>
  /** The job names this worker has a handler for, aliases included: the only ones it claims. */
  readonly names: ReadonlyArray<string>
}

export const make = (deps: {
  readonly clock: Clock.Clock
  readonly observer: Events
  readonly completer: Completer
  readonly held: HeldJobs
  readonly handlers: ReadonlyMap<string, Job.RegisteredHandler>
  readonly middleware: ReadonlyArray<Middleware>
  readonly defaultMiddleware: boolean
  /** An outcome was written `scheduled` (a retry or snooze with a delay): DueTimers.ts. */
  readonly scheduled: (queue: string, runAt: number) => void
}): Executor => {
  const { clock, completer, handlers, held, observer, scheduled } = deps
  const nowNanos = () => clock.currentTimeNanosUnsafe()
  const execute = makeExecute({ middleware: deps.middleware, defaultMiddleware: deps.defaultMiddleware, nowNanos })

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

  const run = (h: Held, slot: Slot) =>
    Effect.uninterruptibleMask((restore) => {
      const row = h.row
      // Written as a chain rather than a generator, with the clock read directly: this runs
      // once per job, and every Effect step counts (see BENCHMARKS.md, "Where the time goes").
      const handler = handlerOf(row.name)
      const job = info(row)
      const started = clock.currentTimeMillisUnsafe()
      const cell: SpanCell = { span: undefined }
      const exited = Effect.exit(restore(execute(row, handler, cell)))
      const onStart = observer.started(job)
      // (no step for an observer that does nothing on start, the default)
      return (onStart === Effect.void ? exited : Effect.andThen(onStart, exited)).pipe(
        Effect.flatMap((exit) => {
          if (cell.span !== undefined) RunSpan.end(cell.span, exit, nowNanos)
          if (h.lost) return Effect.void // another worker runs it now; nothing of ours may be written
          const now = clock.currentTimeMillisUnsafe()
          const outcome = h.cancelling && Exit.hasInterrupts(exit)
            ? cancelledByRequest(row, now, "cancelled while running")
            : completedWithoutResult(row, handler?.job, exit) ?? classify(row, handler?.job, exit, now)
          const submit = (o: Outcome) => {
            h.phase = "writing"
            completer.submitUnsafe(o.row, (applied) => {
              held.remove(h) // written (or given up): no longer ours to hold
              slot.written?.()
              if (applied === undefined) return Effect.void
              if (applied.state === "scheduled" && o.row.run_at !== null) scheduled(row.queue, Date.parse(o.row.run_at))
              // the run's duration: from its start until its outcome was written (now)
              return report(observer, job, o, clock.currentTimeMillisUnsafe() - started, applied)
            })
          }
          if (Effect.isEffect(outcome)) return Effect.map(outcome, submit)
          submit(outcome)
          return Effect.void
        }),
        Effect.ensuring(Effect.sync(() => {
          // An outcome on its way keeps the job held until it is written (see Held.ts).
          if (h.phase !== "writing") held.remove(h)
          slot.release()
        }))
      )
    })

  // (the claim filters on these, so the NoHandler branch of `execute` is only a safeguard)
  return { run, names: Object.freeze([...handlers.keys()].sort()) }
}
