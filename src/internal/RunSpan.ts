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
  readonly attributes: Readonly<Record<string, unknown>>
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

/**
 * A started span for a run in `context`, or undefined when tracing is off there. The
 * caller puts it in the run's context as `Tracer.ParentSpan` and calls `end`.
 */
export const start = (context: Context.Context<never>, options: RunSpanOptions): Tracer.Span | undefined => {
  if (!Context.get(context, References.TracerEnabled)) return undefined
  const tracer = Context.get(context, Tracer.Tracer)
  const parent = options.parent !== undefined
    ? Option.some<Tracer.AnySpan>(options.parent)
    : propagating(Option.getOrUndefined(Context.getOption(context, Tracer.ParentSpan)))
  const linksFromContext = Context.get(context, References.TracerSpanLinks)
  const level = Context.get(context, Tracer.CurrentTraceLevel)
  const span = tracer.span({
    name: options.name,
    parent,
    annotations: Context.empty(),
    links: linksFromContext.length === 0 ? [] : linksFromContext.slice(),
    startTime: Context.get(context, References.TracerTimingEnabled) ? options.nowNanos() : zero,
    kind: "consumer",
    root: false,
    sampled: Option.isSome(parent) && parent.value.sampled === false
      ? false
      : !LogLevel.isGreaterThan(Context.get(context, Tracer.MinimumTraceLevel), level)
  })
  if (tracer !== Tracer.nativeTracer) {
    const fromContext = Context.get(context, References.TracerSpanAnnotations)
    for (const key in fromContext) span.attribute(key, fromContext[key])
    for (const key in options.attributes) span.attribute(key, options.attributes[key])
  }
  return span
}

/** Ends a span made by `start` with the run's exit. */
export const end = (
  span: Tracer.Span,
  context: Context.Context<never>,
  exit: Exit.Exit<unknown, unknown>,
  nowNanos: () => bigint
): void => {
  if (span.status._tag === "Ended") return
  span.end(Context.get(context, References.TracerTimingEnabled) ? nowNanos() : zero, exit)
}
