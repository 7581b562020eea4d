/**
 * Settings that change at run time (`Worker.Setting`): a queue's `concurrency` and the
 * worker's `retention` may be Effects instead of values.
 *
 * - `resolve` reads every such Effect once and then checks the options (Config.ts
 *   `validate`): at startup and for each `reconfigure`. A read that fails there fails with
 *   `InvalidWorkerConfig`, and so the layer, or the `reconfigure`, changing nothing.
 * - `start` forks the reader: every `settingsInterval`, on Effect's `Clock`, it reads them
 *   again and hands each changed value on (`apply`, `setRetention`), checked as at startup.
 *   While no setting is an Effect it waits, until `changed` says a `reconfigure` came.
 *   A read that fails (or dies, or takes longer than `readTimeoutMillis`) or a value that is
 *   invalid is reported as a worker error (`Warn`, once until the reason changes or a read
 *   succeeds again) and the value in force is kept: the worker runs on.
 *
 * Why Effect's clock and not the real one (as the registration and the leases are): what is
 * read is the process's own, not the database's sense of time, like the maintenance round and
 * the control poll; a test on a `TestClock` steps the reads with `TestClock.adjust`.
 *
 * To make another field a setting: read it in `readQueue` (the queue's) or in `resolve` (the
 * worker's), and make `hasSettings` see it; the check and the apply are the queue's as a whole.
 *
 * @internal
 */
import { Cause, Duration, Effect } from "effect"
import { InvalidWorkerConfig } from "../../Errors.ts"
import * as IdleWait from "../IdleWait.ts"
import type { Options, QueueConfig, Setting } from "../../Worker.ts"
import { type Resolved, type ResolvedQueue, type RetentionOverride, retentionOverride, validate, validateQueue } from "./Config.ts"

/** A read that takes longer than this fails (a hung read must not hold up the next ones). */
export const readTimeoutMillis = 10_000

/** Whether a setting is an Effect to read, rather than a value. */
export const isEffect = (setting: unknown): setting is Effect.Effect<unknown, unknown> => Effect.isEffect(setting)

/** A failure's reason in one line (a ConfigError, an Error, a defect, anything). */
const reason = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  const message = typeof e === "object" && e !== null ? (e as { readonly message?: unknown }).message : undefined
  return typeof message === "string" && message.length > 0 ? message : String(e)
}

/** A setting's value: itself, or what its Effect gives; a read that fails names `label`. */
export const read = <A>(label: string, setting: Setting<A> | undefined): Effect.Effect<A | undefined, InvalidWorkerConfig> =>
  isEffect(setting)
    ? (setting as Effect.Effect<A, unknown>).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(readTimeoutMillis),
        orElse: () => Effect.fail(new Error(`no value after ${readTimeoutMillis} ms`))
      }),
      Effect.catchCause((cause) =>
        Effect.fail(new InvalidWorkerConfig({ message: `${label}: the setting could not be read: ${reason(cause)}` }))
      )
    )
    : Effect.succeed(setting)

/** Whether a queue's config has a setting to read. */
export const hasSettings = (config: QueueConfig): boolean =>
  isEffect(config.concurrency) || isEffect(config.flow?.global)

/** A queue's config with its settings read (its concurrency, its fleet-wide `flow.global`). */
export const readQueue = (name: string, config: QueueConfig): Effect.Effect<QueueConfig, InvalidWorkerConfig> =>
  hasSettings(config)
    ? Effect.gen(function*() {
      const concurrency = yield* read(`queue "${name}": concurrency`, config.concurrency)
      if (config.flow === undefined) return { ...config, concurrency }
      const global = yield* read(`queue "${name}": flow.global`, config.flow.global)
      return { ...config, concurrency, flow: { ...config.flow, global } }
    })
    : Effect.succeed(config)

/** Every queue config with its settings read. */
export const readQueues = (queues: Readonly<Record<string, QueueConfig>>) =>
  Effect.map(
    Effect.forEach(Object.entries(queues), ([name, config]) => Effect.map(readQueue(name, config), (read) => [name, read] as const)),
    (entries): Readonly<Record<string, QueueConfig>> => Object.fromEntries(entries)
  )

/** The options with every setting read, checked and resolved (Config.ts `validate`). */
export const resolve = (options: Options): Effect.Effect<Resolved, InvalidWorkerConfig> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null || typeof options.queues !== "object" || options.queues === null) {
      return yield* validate(options) // (its message for options that are not an object)
    }
    const queues = yield* readQueues(options.queues)
    const retention = yield* read("retention", options.retention)
    return yield* validate({ ...options, queues, retention })
  })

/**
 * `reconfigure`'s check: `queues` (their settings read) in place of the worker's. The worker's
 * own settings (`retention`) are not read again here: they stay with the reader.
 */
export const resolveQueues = (options: Options, queues: Readonly<Record<string, QueueConfig>>) =>
  typeof queues === "object" && queues !== null
    ? Effect.flatMap(readQueues(queues), (read) => validate({ ...options, retention: undefined, queues: read }))
    : validate({ ...options, retention: undefined, queues })

/** What the reader needs from the worker. */
export interface ReaderDeps {
  readonly options: Options
  readonly config: Resolved
  /**
   * The queue configs as last given, and how many times they were given (`reconfigure`
   * replaces them, and reads their settings itself).
   */
  readonly queueConfigs: () => { readonly configs: Readonly<Record<string, QueueConfig>>; readonly generation: number }
  /**
   * Applies a queue's settings as read (and checked) from the configs of `generation`, unless
   * a `reconfigure` came since (the newer configs rule: a value read before it is stale).
   */
  readonly apply: (name: string, generation: number, next: ResolvedQueue) => Effect.Effect<void>
  /** The finish statement's retention from now on. */
  readonly setRetention: (retention: RetentionOverride) => void
  readonly report: (queue: string, message: string) => Effect.Effect<void>
  /** Called after each round of reads (a test's signal). */
  readonly onRound?: Effect.Effect<void> | undefined
}

/** Forks the reader in the current scope (see the module header); `changed` wakes it after a `reconfigure`. */
export const start = (deps: ReaderDeps) => {
  /** The reason each setting last failed, reported once until it changes or a read succeeds. */
  const failing = new Map<string, string>()
  const failed = (key: string, queue: string, error: InvalidWorkerConfig) =>
    failing.get(key) === error.message ? Effect.void : Effect.suspend(() => {
      failing.set(key, error.message)
      return deps.report(queue, `${error.message}; keeping the value in force`)
    })
  const check = <A>(key: string, queue: string, effect: Effect.Effect<A, InvalidWorkerConfig>, use: (a: A) => Effect.Effect<void>) =>
    Effect.matchEffect(effect, {
      onFailure: (error) => failed(key, queue, error),
      onSuccess: (a) => Effect.andThen(Effect.sync(() => failing.delete(key)), use(a))
    })

  const round = Effect.gen(function*() {
    const { configs, generation } = deps.queueConfigs()
    for (const [name, given] of Object.entries(configs)) {
      if (!hasSettings(given)) continue
      yield* check(
        `queue:${name}`,
        name,
        Effect.flatMap(readQueue(name, given), (plain) => validateQueue(deps.options, name, plain)),
        (next) => deps.apply(name, generation, next)
      )
    }
    if (isEffect(deps.options.retention)) {
      yield* check(
        "retention",
        "*",
        Effect.flatMap(read("retention", deps.options.retention), (input) =>
          Effect.try({
            try: () => retentionOverride(input),
            catch: (e) => (e instanceof InvalidWorkerConfig ? e : new InvalidWorkerConfig({ message: String(e) }))
          })),
        (retention) => Effect.sync(() => deps.setRetention(retention))
      )
    }
  }).pipe(
    // (nothing above fails; a defect of the worker's own code is reported and the reader goes on)
    Effect.catchCause((cause) => deps.report("*", `reading the settings failed: ${reason(cause)}`)),
    Effect.andThen(deps.onRound ?? Effect.void)
  )
  // With nothing to read the reader waits for a `reconfigure` (`changed`) instead of ticking
  // (IdleWait.ts: on a TestClock, a jump of a day would run 86,400 empty rounds).
  const toRead = IdleWait.make(() =>
    isEffect(deps.options.retention) || Object.values(deps.queueConfigs().configs).some(hasSettings)
  )
  return Effect.as(
    Effect.forkScoped(
      Effect.forever(Effect.andThen(toRead.untilBusy, Effect.andThen(Effect.sleep(Duration.millis(deps.config.settingsMillis)), round)))
    ),
    { changed: Effect.sync(toRead.wake) }
  )
}
