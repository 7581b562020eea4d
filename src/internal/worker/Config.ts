/**
 * The worker's configuration: `validate` checks `Worker.Options` and resolves the
 * defaults; `checkPool` refuses a pool too small for the connections a worker keeps.
 * Settings given as Effects (`Worker.Setting`) are read before (Settings.ts `resolve`):
 * everything here sees plain values.
 *
 * @internal
 */
import { Duration, Effect, Option } from "effect"
import { InvalidWorkerConfig } from "../../Errors.ts"
import type { FlowRate, GatedFlow } from "../Store.ts"
import type { FlowOptions, Options, QueueConfig } from "../../Worker.ts"

/** One queue as the worker serves it. */
export interface ResolvedQueue {
  readonly name: string
  readonly concurrency: number
  /** The prefetch, or with `adaptive` its floor. */
  readonly prefetch: number
  /** No prefetch was configured: it follows the queue's run rate (see `QueueConfig.prefetch`). */
  readonly adaptive: boolean
  readonly pollMillis: number
  /** `QueueConfig.flow`: the queue is claimed through the gated claim; undefined: the plain one. */
  readonly flow: GatedFlow | undefined
}

/** `Worker.Options` with every default filled in and every duration in milliseconds. */
export interface Resolved {
  readonly queues: ReadonlyArray<ResolvedQueue>
  readonly workerId: string
  readonly graceMillis: number
  readonly leaseMillis: number
  readonly heartbeatMillis: number
  readonly maintenanceMillis: number
  readonly listen: boolean
  readonly maxCompletionBatch: number
  readonly maxPendingOutcomes: number
  /** `noHandlerTimeout`; `Infinity`: jobs are never sent to dead for want of a handler. */
  readonly noHandlerMillis: number
  /** `retention` as read at startup (see `RetentionOverride`). */
  readonly retention: RetentionOverride
  /** `settingsInterval`: how often the settings given as Effects are read again. */
  readonly settingsMillis: number
}

/**
 * The worker's `retention` over each job's own: milliseconds, `null` (kept forever), or
 * `undefined` (none: each job's own applies). The finish statement takes it as it is.
 */
export type RetentionOverride = number | null | undefined

/**
 * `retention`: a duration of 0 or more (whole milliseconds, rounded up), or `Duration.infinity`.
 * Capped at 100,000 years, as the finish statement caps each job's own: beyond the `bigint`
 * range the statement would fail, and with it the outcomes it carries.
 */
export const retentionOverride = (input: unknown): RetentionOverride => {
  if (input === undefined) return undefined
  const d = Duration.fromInput(input as Duration.Input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!(ms >= 0)) {
    throw new InvalidWorkerConfig({ message: `retention must be a duration of 0 or more, or Duration.infinity, got ${String(input)}` })
  }
  return Number.isFinite(ms) ? Math.min(Math.ceil(ms), maxRetentionMillis) : null
}

/** 100,000 years (Store.ts caps a job's own `retention_ms` the same). */
const maxRetentionMillis = 3_153_600_000_000_000

/** The default `noHandlerTimeout` (docs/workers.md says why): 10 minutes. */
export const defaultNoHandlerMillis = 600_000

/** `noHandlerTimeout`: a positive duration, or `Duration.infinity` (never). */
const noHandlerMillis = (input: Duration.Input | undefined): number => {
  if (input === undefined) return defaultNoHandlerMillis
  const d = Duration.fromInput(input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!(ms > 0)) {
    throw new InvalidWorkerConfig({
      message: `noHandlerTimeout must be a positive duration or Duration.infinity, got ${String(input)}`
    })
  }
  return ms
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

/** A flow limit: an integer in [1, 1000000], or absent. */
const flowLimit = (name: string, label: string, value: unknown): number | undefined => {
  if (value === undefined) return undefined
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 1_000_000) {
    throw new InvalidWorkerConfig({
      message: `queue "${name}": flow.${label} must be an integer in [1, 1000000], got ${String(value)}`
    })
  }
  return value
}

/** A flow rate limit (`flow.rate`, `flow.groupRate`): a limit in [1, 1000000] per positive interval (at least 1 ms). */
const flowRate = (name: string, label: string, value: unknown): FlowRate | undefined => {
  if (value === undefined) return undefined
  if (typeof value !== "object" || value === null) {
    throw new InvalidWorkerConfig({ message: `queue "${name}": flow.${label} must be { limit, interval }` })
  }
  const { interval, limit } = value as { readonly limit?: unknown; readonly interval?: unknown }
  const checked = flowLimit(name, `${label}.limit`, limit)
  if (checked === undefined) {
    throw new InvalidWorkerConfig({ message: `queue "${name}": flow.${label}.limit is required` })
  }
  const d = interval === undefined ? Option.none() : Duration.fromInput(interval as Duration.Input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  if (!Number.isFinite(ms) || ms < 1 || ms > 31_536_000_000_000) {
    throw new InvalidWorkerConfig({
      message: `queue "${name}": flow.${label}.interval must be a finite duration of at least 1 millisecond, got ${String(interval)}`
    })
  }
  return { limit: checked, windowMillis: Math.round(ms) }
}

/** `QueueConfig.flow`, checked; undefined when no limit is set (the queue keeps the plain claim). */
const resolveFlow = (name: string, flow: FlowOptions | undefined): GatedFlow | undefined => {
  if (flow === undefined) return undefined
  if (typeof flow !== "object" || flow === null) {
    throw new InvalidWorkerConfig({ message: `queue "${name}": flow must be an object` })
  }
  const global = flowLimit(name, "global", flow.global)
  const perGroup = flowLimit(name, "perGroup", flow.perGroup)
  const s = flow.sequence
  let onDead: "block" | "continue" = "block"
  if (typeof s === "object" && s !== null) {
    if (s.onDead !== undefined && s.onDead !== "block" && s.onDead !== "continue") {
      throw new InvalidWorkerConfig({
        message: `queue "${name}": flow.sequence.onDead must be "block" or "continue", got ${String(s.onDead)}`
      })
    }
    onDead = s.onDead ?? "block"
  } else if (s !== undefined && typeof s !== "boolean") {
    throw new InvalidWorkerConfig({ message: `queue "${name}": flow.sequence must be a boolean or { onDead }` })
  }
  const sequence = s !== undefined && s !== false
  const rate = flowRate(name, "rate", flow.rate)
  const groupRate = flowRate(name, "groupRate", flow.groupRate)
  if (global === undefined && perGroup === undefined && !sequence && rate === undefined && groupRate === undefined) {
    return undefined
  }
  return { global, perGroup, sequence, onDead, rate, groupRate }
}

const resolveQueue = (name: string, options: Options): ResolvedQueue => {
  if (name.length === 0 || name.length > 255 || /\u0000|\p{Surrogate}/u.test(name)) {
    throw new InvalidWorkerConfig({
      message: `queue name must have 1 to 255 characters without NUL or unpaired surrogates: ${JSON.stringify(name)}`
    })
  }
  const config = options.queues[name] ?? {}
  // (read already if it was an Effect: Settings.ts; one that was not fails the check below)
  const concurrency = (config.concurrency ?? 1) as number
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000) {
    throw new InvalidWorkerConfig({
      message: `queue "${name}": concurrency must be an integer in [1, 10000], got ${String(concurrency)}`
    })
  }
  const flow = resolveFlow(name, config.flow)
  // With flow, only free slots are claimed unless a prefetch is set: a buffered job waits behind
  // the buffer, whatever its group (claims go round the groups; the buffer does not), it holds
  // its group's slot, and with a rate limit it took its token when it was claimed. (It holds no
  // slot of a global limit: migrations/0014.) A prefetch buys throughput at that price.
  const prefetch = config.prefetch ?? (flow === undefined ? concurrency : 0)
  if (!Number.isInteger(prefetch) || prefetch < 0 || prefetch > 100_000) {
    throw new InvalidWorkerConfig({
      message: `queue "${name}": prefetch must be an integer in [0, 100000], got ${String(prefetch)}`
    })
  }
  return {
    name,
    concurrency,
    prefetch,
    adaptive: config.prefetch === undefined && flow === undefined,
    pollMillis: millis(`queue "${name}": pollInterval`, config.pollInterval, 1000),
    flow
  }
}

/** One queue's config (its settings read), checked and resolved as `validate` does within `options`. */
export const validateQueue = (
  options: Options,
  name: string,
  config: QueueConfig
): Effect.Effect<ResolvedQueue, InvalidWorkerConfig> =>
  Effect.try({
    try: () => resolveQueue(name, { ...options, queues: { [name]: config } }),
    catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
  })

/** Checks a worker configuration; every mistake is an `InvalidWorkerConfig` with a message saying which. */
export const validate = (options: Options): Effect.Effect<Resolved, InvalidWorkerConfig> =>
  Effect.try({
    try: () => {
      if (typeof options !== "object" || options === null || typeof options.queues !== "object" || options.queues === null) {
        throw new InvalidWorkerConfig({ message: "queues must be an object of queue name -> config" })
      }
      const names = Object.keys(options.queues)
      if (names.length === 0) throw new InvalidWorkerConfig({ message: "at least one queue must be configured" })
      const queues = names.map((name) => resolveQueue(name, options))
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
        maxPendingOutcomes,
        noHandlerMillis: noHandlerMillis(options.noHandlerTimeout),
        retention: retentionOverride(options.retention),
        settingsMillis: millis("settingsInterval", options.settingsInterval, 1000)
      }
    },
    catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
  })

/**
 * Some pool connections are kept for good: one for the worker's registration lock (with
 * `listen`; Registration.ts) and one for the pruner's leader lock. A pool with none left over
 * would hang the worker silently (claims and outcomes would wait forever for a connection):
 * refuse it. The process's LISTEN session (internal/Notifier.ts), shared by the worker,
 * `Jobs.await` and every bundle finisher, is a connection of its own outside the pool.
 */
export const checkPool = (config: Resolved, pruner: boolean, poolSize: number): Effect.Effect<void, InvalidWorkerConfig> => {
  const kept = (config.listen ? 1 : 0) + (pruner ? 1 : 0)
  if (poolSize > kept) return Effect.void
  const what = [config.listen ? "the worker's registration lock" : undefined, pruner ? "the pruner's leader lock" : undefined]
    .filter((w) => w !== undefined)
    .join(", ")
  return Effect.fail(
    new InvalidWorkerConfig({
      message: `the PgClient pool has ${poolSize} connection(s) and this worker keeps ${kept} for itself ` +
        `(${what}): give the pool at least ${kept + 1} (maxConnections), or use listen: false / pruner: false`
    })
  )
}

/** Spreads periodic timers by ±10% so that workers do not synchronise their statements. */
export const jitter = (ms: number) => Math.round(ms * (0.9 + Math.random() * 0.2))
