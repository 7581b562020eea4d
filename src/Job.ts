/**
 * Job definitions, handlers, and the outcomes a handler can choose.
 *
 * A job is a name, a Schema for its arguments (encoded to JSON on enqueue,
 * decoded before the handler runs), optionally a Schema for its result, and a
 * policy: queue, priority, attempts, retry Schedule, attempt timeout and
 * retention. A handler is an Effect; `Job.toLayer` turns it into a layer whose
 * requirements are the handler's own.
 *
 * Delivery is at least once: a job whose worker died is run again once its
 * lease lapses, so handlers must be idempotent.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, type Exit, Layer, Schedule, Schema } from "effect"
import { Cancel, Discard, RetryAfter, Snooze } from "./Errors.ts"
import { handlerKeyPrefix } from "./internal/handlerKey.ts"

/** Any Schema usable for job arguments or results: no services needed to encode or decode. */
export type AnySchema = Schema.Codec<any, any, never, never>

/** What a handler sees about the run it is part of. */
export interface JobContext {
  readonly id: string
  readonly name: string
  readonly queue: string
  /** 1 for the first attempt. Snoozes and graceful-shutdown releases do not count. */
  readonly attempt: number
  readonly maxAttempts: number
  /** How many times the job has been started, snoozes and rescues included (1 on the first run). */
  readonly runs: number
  readonly priority: number
  readonly enqueuedAt: Date
  readonly requestId: string | undefined
  readonly metadata: Readonly<Record<string, unknown>>
}

/** Policy options of a job definition; enqueue options can override queue, priority and maxAttempts. */
export interface Options<Args extends AnySchema, Success extends AnySchema> {
  readonly args: Args
  /** When given, the handler's value is encoded with it and stored as the job's result. */
  readonly success?: Success | undefined
  /** Queue name; default `"default"`. */
  readonly queue?: string | undefined
  /** Lower runs first; default 0. */
  readonly priority?: number | undefined
  /** Attempts before the job goes to `dead`; default 25. */
  readonly maxAttempts?: number | undefined
  /**
   * When and whether to retry a failed attempt. The delay before retry `n` is the
   * schedule's `n`-th delay, each step given the failure of the attempt that just
   * ended as its input (so `Schedule.while` on the input and per-error schedules work; type
   * their input as your handler's error type). When the schedule is done, the job
   * is `dead` even with attempts left; `maxAttempts` caps it either way. Default:
   * exponential from 1 s, capped at 1 h, jittered, never done.
   */
  readonly retry?: Schedule.Schedule<unknown, never> | undefined
  /** A running attempt longer than this is interrupted and counts as a failure (retried). */
  readonly timeout?: Duration.Input | undefined
  /** How long a finished job is kept; 0 deletes a completed job at once. Default: 1 day. */
  readonly retention?: Duration.Input | undefined
  /** How many errors are kept with the job (the last N); default 5. */
  readonly maxErrors?: number | undefined
  /**
   * Former names of the job. A worker with this job's handler also claims and runs the rows
   * stored under any of them (jobs enqueued before a rename), with this definition's policy;
   * `ctx.name` is the name the row was stored under. Enqueue always writes `name`. Each alias
   * is checked like a name, and must differ from the name and from the other aliases.
   */
  readonly aliases?: ReadonlyArray<string> | undefined
}

/** Identifier type of the handler service of the job named `Name`. */
export interface Handler<Name extends string> {
  readonly _Handler: Name
}

/** The handler as the worker stores it: its requirements already provided. */
export interface RegisteredHandler {
  readonly job: Any
  /** The handler with `CurrentJob` and its captured requirements provided. */
  readonly run: (args: unknown, ctx: JobContext) => Effect.Effect<unknown, unknown>
  /**
   * The same pieces apart, for the worker's hot path: the handler as written, and the
   * context captured when its layer was built. The worker merges that context into a
   * run's context once per (handler, worker fiber context) instead of once per run
   * (`Effect.provideContext` copies the whole service map every time).
   */
  readonly handle: (args: unknown, ctx: JobContext) => Effect.Effect<unknown, unknown, unknown>
  readonly context: Context.Context<never>
}

/** A job definition. */
export interface Job<Name extends string, Args extends AnySchema, Success extends AnySchema> {
  readonly _tag: "Job"
  readonly name: Name
  readonly args: Args
  readonly success: Success
  readonly hasResult: boolean
  readonly queue: string
  readonly priority: number
  readonly maxAttempts: number
  readonly retry: Schedule.Schedule<unknown, never>
  readonly timeout: Duration.Duration | undefined
  readonly retention: Duration.Duration
  readonly maxErrors: number
  /** Former names whose rows this job's handler also runs (see `Options.aliases`). */
  readonly aliases: ReadonlyArray<string>
  readonly handlerKey: Context.Key<Handler<Name>, RegisteredHandler>
  /** Encodes arguments to their JSON form (for the `args` column). */
  readonly encodeArgs: (args: unknown) => Effect.Effect<unknown, Schema.SchemaError>
  /** The same, synchronously (enqueue's hot path). */
  readonly encodeArgsExit: (args: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  readonly decodeArgs: (json: unknown) => Effect.Effect<Args["Type"], Schema.SchemaError>
  readonly encodeResult: (value: unknown) => Effect.Effect<unknown, Schema.SchemaError>
  readonly decodeResult: (json: unknown) => Effect.Effect<Success["Type"], Schema.SchemaError>
}

/** Any job definition. */
export type Any = Job<string, AnySchema, AnySchema>

export type ArgsOf<J> = J extends Job<any, infer A, any> ? A["Type"] : never
export type SuccessOf<J> = J extends Job<any, any, infer S> ? S["Type"] : never

/** The default retry schedule: 1 s, 2 s, 4 s ... capped at 1 hour, each delay jittered by ±20 %. */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.min([
  Schedule.exponential("1 second", 2),
  Schedule.spaced("1 hour")
]).pipe(Schedule.jittered)

/** NUL cannot be stored; an unpaired surrogate would be stored as U+FFFD, a name no handler has. */
const isValidName = (name: unknown): name is string =>
  typeof name === "string" && name.length > 0 && name.length <= 255 && !/\u0000|\p{Surrogate}/u.test(name)

const checkAliases = (name: string, aliases: ReadonlyArray<string> | undefined): ReadonlyArray<string> => {
  if (aliases === undefined) return []
  if (!Array.isArray(aliases)) throw new globalThis.Error(`Job "${name}": aliases must be an array of names`)
  const seen = new Set<string>([name])
  for (const alias of aliases) {
    if (!isValidName(alias)) {
      throw new globalThis.Error(
        `Job "${name}": an alias must have 1 to 255 characters without NUL or unpaired surrogates, got ${JSON.stringify(alias)}`
      )
    }
    if (seen.has(alias)) {
      throw new globalThis.Error(`Job "${name}": alias ${JSON.stringify(alias)} repeats the name or another alias`)
    }
    seen.add(alias)
  }
  return Object.freeze([...aliases])
}

const checkInt = (name: string, label: string, value: number, min: number, max: number): number => {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new globalThis.Error(`Job "${name}": ${label} must be an integer in [${min}, ${max}], got ${value}`)
  }
  return value
}

/**
 * Defines a job.
 *
 * **Gotchas**: definitions are static program structure, so an invalid policy
 * (a negative `maxAttempts`, say) throws when the module loads, like a bad
 * `Schema` would; it cannot reach the database.
 */
export const make = <const Name extends string, Args extends AnySchema, Success extends AnySchema = Schema.Void>(
  name: Name,
  options: Options<Args, Success>
): Job<Name, Args, Success> => {
  if (!isValidName(name)) {
    throw new globalThis.Error(`Job name must have 1 to 255 characters without NUL or unpaired surrogates`)
  }
  const success = (options.success ?? Schema.Void) as Success
  const argsJson = Schema.toCodecJson(options.args)
  const successJson = Schema.toCodecJson(success)
  const retention = Duration.fromInputUnsafe(options.retention ?? "1 day")
  if (Duration.toMillis(retention) < 0) throw new globalThis.Error(`Job "${name}": retention must not be negative`)
  const timeout = options.timeout === undefined ? undefined : Duration.fromInputUnsafe(options.timeout)
  if (timeout !== undefined && !(Duration.toMillis(timeout) > 0)) {
    throw new globalThis.Error(`Job "${name}": timeout must be positive`)
  }
  return {
    _tag: "Job",
    name,
    args: options.args,
    success,
    hasResult: options.success !== undefined,
    queue: options.queue ?? "default",
    priority: checkInt(name, "priority", options.priority ?? 0, -32768, 32767),
    maxAttempts: checkInt(name, "maxAttempts", options.maxAttempts ?? 25, 1, 1_000_000),
    retry: options.retry ?? defaultRetry,
    timeout,
    retention,
    maxErrors: checkInt(name, "maxErrors", options.maxErrors ?? 5, 0, 1000),
    aliases: checkAliases(name, options.aliases),
    handlerKey: Context.Service<Handler<Name>, RegisteredHandler>(`${handlerKeyPrefix}${name}`),
    encodeArgs: Schema.encodeUnknownEffect(argsJson),
    encodeArgsExit: Schema.encodeUnknownExit(argsJson),
    decodeArgs: Schema.decodeUnknownEffect(argsJson),
    encodeResult: Schema.encodeUnknownEffect(successJson),
    decodeResult: Schema.decodeUnknownEffect(successJson)
  }
}

/**
 * Provides the handler of a job as a layer. The handler's requirements become
 * the layer's requirements; they are captured when the layer is built.
 */
export const toLayer = <Name extends string, Args extends AnySchema, Success extends AnySchema, E, R>(
  job: Job<Name, Args, Success>,
  handler: (args: Args["Type"], ctx: JobContext) => Effect.Effect<Success["Type"], E, R>
): Layer.Layer<Handler<Name>, never, Exclude<R, JobContextService>> =>
  Layer.effect(
    job.handlerKey,
    Effect.map(Effect.context<Exclude<R, JobContextService>>(), (context) => ({
      job: job as unknown as Any,
      handle: handler as (args: unknown, ctx: JobContext) => Effect.Effect<unknown, unknown, unknown>,
      context: context as Context.Context<never>,
      run: (args, ctx) =>
        handler(args as Args["Type"], ctx).pipe(
          Effect.provideService(CurrentJob, ctx),
          Effect.provideContext(context)
        ) as Effect.Effect<unknown, unknown>
    }))
  )

/** The job being run, for code deep inside a handler. */
export class CurrentJob extends Context.Service<CurrentJob, JobContext>()("effect-jobs/CurrentJob") {}
type JobContextService = CurrentJob

// ---------------------------------------------------------------------------
// Outcomes a handler can choose besides success and plain failure.
// They travel in the error channel (classes in src/Errors.ts); the worker recognises
// them by class.
// ---------------------------------------------------------------------------


/** What a handler can fail with to choose its outcome (`retryAfter`, `snooze`, `discard`, `cancel`). */
export type Control = RetryAfter | Snooze | Discard | Cancel

/** A delay in ms: anything that is not a finite, positive duration (unparsable included) is 0. */
const toMillis = (d: Duration.Input): number => {
  const parsed = Duration.fromInput(d)
  const ms = parsed._tag === "Some" ? Duration.toMillis(parsed.value) : 0
  return Number.isFinite(ms) && ms > 0 ? ms : 0
}

/** Fail the attempt and retry after `delay` (overrides the retry schedule; counts an attempt). */
export const retryAfter = (delay: Duration.Input, reason = "retry requested"): Effect.Effect<never, RetryAfter> =>
  Effect.fail(new RetryAfter({ delayMillis: toMillis(delay), reason }))

/** Put the job back to run after `delay`; the attempt is not counted. */
export const snooze = (delay: Duration.Input): Effect.Effect<never, Snooze> =>
  Effect.fail(new Snooze({ delayMillis: toMillis(delay) }))

/** Move the job to the dead-letter state now. */
export const discard = (reason: string): Effect.Effect<never, Discard> => Effect.fail(new Discard({ reason }))

/** End the job as cancelled. */
export const cancel = (reason: string): Effect.Effect<never, Cancel> => Effect.fail(new Cancel({ reason }))
