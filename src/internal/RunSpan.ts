/**
 * The span of one job run, made and ended by hand instead of with `Effect.withSpan`.
 *
 * Why: `withSpan` costs a job about ten Effect steps (a fiber read, an exit hook, two
 * context updates: the parent span and a stack frame, each recomputing the fiber's
 * cached references), and at tens of thousands of no-op jobs a second that was about a
 * third of the worker's CPU per job. The worker already sets the run's context in one
 * step (handler services, `CurrentJob`, request id, log annotations) and already holds
 * the run's exit, so the span is made in that same step and ended with that exit.
 *
 * What it keeps of `withSpan` (see `makeSpanUnsafe` in effect's internal/effect.ts): the
 * tracer and the span references of the run's context (`TracerEnabled`,
 * `TracerSpanAnnotations`, `TracerSpanLinks`, `TracerTimingEnabled`, the trace levels),
 * the parent (the enqueuing span when the job carries one, else the current span, skipping
 * spans marked `DisablePropagation`), sampling, and the end time and exit. What it leaves
 * out: the stack frame (`captureStackTrace` was off anyway), and attributes when the
 * tracer is effect's `nativeTracer`, which exports nothing (effect documents that check
 * for skipping work only a tracing backend could observe).
 *
 * @internal
 */
import { Context, type Exit, LogLevel, Option, References, Tracer } from "effect"

export interface RunSpanOptions {
  readonly name: string
  /** The span that enqueued the job (from the stored trace), if any: the run's parent. */
  readonly parent: Tracer.AnySpan | undefined
  /** Built only for a tracer that records them (not effect's `nativeTracer`). */
  readonly attributes: () => Readonly<Record<string, unknown>>
  readonly nowNanos: () => bigint
}

const zero = BigInt(0)

/** The innermost span of `span`'s ancestry (itself included) that propagates. */
const propagating = (span: Tracer.AnySpan | undefined): Option.Option<Tracer.AnySpan> => {
  while (span !== undefined) {
    if (!Context.get(span.annotations, Tracer.DisablePropagation)) return Option.some(span)
    span = span._tag === "Span" ? Option.getOrUndefined(span.parent) : undefined
  }
  return Option.none()
}

/** What the run's context says about tracing; read once per context (see `settingsOf`). */
interface Settings {
  readonly enabled: boolean
  readonly tracer: Tracer.Tracer
  /** The current span (propagating), the parent of runs whose job carries none. */
  readonly current: Option.Option<Tracer.AnySpan>
  readonly links: ReadonlyArray<Tracer.SpanLink>
  readonly timing: boolean
  /** Sampled by trace level (`CurrentTraceLevel` against `MinimumTraceLevel`). */
  readonly levelSampled: boolean
  readonly annotations: Readonly<Record<string, unknown>>
}

/**
 * Settings per context. The worker hands in the same context object for every run of a
 * handler (it caches the handler's services merged over the worker's), so this is read
 * once, not once per job (seven context lookups were about 1 µs a job).
 */
const cache = new WeakMap<Context.Context<never>, Settings>()
const settingsOf = (context: Context.Context<never>): Settings => {
  let settings = cache.get(context)
  if (settings === undefined) {
    settings = {
      enabled: Context.get(context, References.TracerEnabled),
      tracer: Context.get(context, Tracer.Tracer),
      current: propagating(Option.getOrUndefined(Context.getOption(context, Tracer.ParentSpan))),
      links: Context.get(context, References.TracerSpanLinks),
      timing: Context.get(context, References.TracerTimingEnabled),
      levelSampled: !LogLevel.isGreaterThan(
        Context.get(context, Tracer.MinimumTraceLevel),
        Context.get(context, Tracer.CurrentTraceLevel)
      ),
      annotations: Context.get(context, References.TracerSpanAnnotations)
    }
    cache.set(context, settings)
  }
  return settings
}

/** A run's span, once started; `end` ends it. */
export interface Started {
  readonly span: Tracer.Span
  readonly timing: boolean
}

/**
 * Starts the span of a run in `context`, or returns undefined when tracing is off there.
 * The caller puts `span` in the run's context as `Tracer.ParentSpan` and calls `end`.
 */
export const start = (context: Context.Context<never>, options: RunSpanOptions): Started | undefined => {
  const settings = settingsOf(context)
  if (!settings.enabled) return undefined
  const parent = options.parent !== undefined ? Option.some<Tracer.AnySpan>(options.parent) : settings.current
  const span = settings.tracer.span({
    name: options.name,
    parent,
    annotations: Context.empty(),
    links: settings.links.length === 0 ? [] : settings.links.slice(),
    startTime: settings.timing ? options.nowNanos() : zero,
    kind: "consumer",
    root: false,
    sampled: Option.isSome(parent) && parent.value.sampled === false ? false : settings.levelSampled
  })
  if (settings.tracer !== Tracer.nativeTracer) {
    for (const key in settings.annotations) span.attribute(key, settings.annotations[key])
    const attributes = options.attributes()
    for (const key in attributes) span.attribute(key, attributes[key])
  }
  return { span, timing: settings.timing }
}

/** Ends a span made by `start` with the run's exit. */
export const end = (started: Started, exit: Exit.Exit<unknown, unknown>, nowNanos: () => bigint): void => {
  if (started.span.status._tag === "Ended") return
  started.span.end(started.timing ? nowNanos() : zero, exit)
}
