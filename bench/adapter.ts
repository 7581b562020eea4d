/**
 * The one interface every benchmarked job queue is driven through, plus the
 * small measuring helpers the adapters share.
 *
 * An adapter instance lives in one child process (`bench/run-one.ts`) and runs
 * one scenario against one freshly created database:
 *
 *   setup(url) -> [enqueueMany(n)] -> drain(n, c) | enqueueMany(n) | wakeLatency(s) -> teardown()
 */
import { performance } from "node:perf_hooks"
import { dbCpuMicros, machineBusyMicros } from "./proc.ts"

export interface Adapter {
  readonly name: string
  /** Install schema/migrations into the given (empty) database. */
  setup(url: string): Promise<void>
  /** Bulk-enqueue `count` no-op jobs in as few calls as the system allows. */
  enqueueMany(count: number): Promise<void>
  /**
   * Start workers in this process, resolve once `count` jobs completed, stop the workers.
   * Use a {@link CompletionMeter}: `meter.start()` just before starting the workers,
   * `meter.complete(n)` from the handler, `await meter.done`, then stop the workers.
   */
  drain(count: number, concurrency: number): Promise<DrainResult>
  /**
   * With an idle worker running: enqueue ONE job from a separate connection and measure ms
   * from just before the enqueue call to the start of the handler; repeat one at a time.
   * Use {@link measureWake}.
   */
  wakeLatency(options: WakeOptions): Promise<ReadonlyArray<number>>
  teardown(): Promise<void>
  /**
   * Optional (the `scaleout` scenario): start workers in this process that call
   * `onComplete(n)` whenever `n` handlers have returned, and keep running until `stop()`.
   * Several processes call this against one database to drain one queue together.
   */
  startWorkers?(concurrency: number, onComplete: (n: number) => void, options?: WorkOptions): Promise<RunningWorkers>
  /**
   * Optional (the `drain-history` / `drain-future` scenarios): insert `count` rows that a
   * worker must never run, quickly (one `INSERT ... SELECT generate_series`):
   * `completed` = finished and retained history, `scheduled` = due tomorrow.
   */
  addFiller?(kind: FillerKind, count: number): Promise<void>
  /**
   * Optional (committed rate, `longtx`): one SQL statement, run on the runner's own
   * connection, that returns `n`, the number of this system's jobs not yet finished in the
   * database (its own table). The drain's committed clock stops when it returns 0.
   */
  readonly pendingQuery?: string
  /**
   * Optional (the `longtx` scenario): enqueue `count` jobs whose payload carries
   * `performance.now()` of this process at the call (`{ t }`), so that a handler started
   * through `startWorkers(..., { onStart })` can report enqueue -> start latency.
   */
  enqueueStamped?(count: number): Promise<void>
}

export type FillerKind = "completed" | "scheduled"

export interface WorkOptions {
  /**
   * Each handler waits this long (a timer: no CPU) before it returns, like a job that calls
   * a remote service. 0 (the default): no-op handlers.
   */
  readonly jobMillis?: number | undefined
  /**
   * Called when a handler starts, with the `t` of its payload (see `enqueueStamped`), or
   * undefined for jobs enqueued without one.
   */
  readonly onStart?: ((enqueuedAt: number | undefined) => void) | undefined
}

export interface RunningWorkers {
  readonly stop: () => Promise<void>
}

export interface WakeOptions {
  /** Worker concurrency to run the idle worker with (same as for drain). */
  readonly concurrency: number
  /** Target number of samples (after warm-up). */
  readonly samples: number
  /** Stop early once this much wall time has been spent (polling systems are slow to sample). */
  readonly budgetMs: number
}

/** What a drain reports; CPU figures cover the same window as `wallMs`. */
export interface DrainResult {
  readonly count: number
  /** From just before the workers were started until the `count`-th handler returned. */
  readonly wallMs: number
  /** `process.cpuUsage()` delta (user + system) of the worker process over `wallMs`. */
  readonly cpuMicros: number
  /** CPU used by the Postgres server's processes over `wallMs`, when measurable (local server, Linux). */
  readonly dbCpuMicros: number | null
  /** From the first handler start until the `count`-th handler returned. */
  readonly firstToLastMs: number
  /** How long stopping the workers took afterwards (not included in `wallMs`). */
  readonly stopMs: number
  /**
   * Optional: from the same start until the `count`-th outcome was written to the database,
   * for systems that report that (effect-jobs: its Observer's `completed` event).
   */
  readonly durableWallMs?: number | null | undefined
  /**
   * Optional: jobs whose outcome was still not written after the workers stopped (a system
   * that gives up writing at shutdown); those jobs run again once their lease lapses.
   */
  readonly notWritten?: number | undefined
  /**
   * Busy CPU µs of the whole machine over `wallMs` (every process), when measurable. Minus
   * `cpuMicros` and `dbCpuMicros` it is what other processes on the machine used meanwhile.
   */
  readonly machineBusyMicros?: number | null | undefined
  /**
   * Set by the runner (bench/run-one.ts), the same way for every system: from the same start
   * until a count of the system's unfinished jobs, polled on a separate connection, read 0.
   */
  readonly committedWallMs?: number | null | undefined
  /** Set by the runner: what Postgres did for this drain (see bench/pgwork.ts). */
  readonly pgWork?: PgWork | undefined
}

/** Postgres-side work of one drain, measured by the runner (bench/pgwork.ts). */
export interface PgWork {
  /** Server CPU µs (all server processes, /proc) from the start until committed. */
  readonly dbCpuMicros: number | null
  /** `pg_wal_lsn_diff` of `pg_current_wal_lsn()` from the start until committed (whole server). */
  readonly walBytes: number | null
  /**
   * WAL bytes of the records over the same window that touch a relation of the bench
   * database (`pg_walinspect`, read after the teardown): the system's own WAL, without what
   * other databases of a shared server wrote meanwhile. Null where pg_walinspect is missing.
   */
  readonly databaseWalBytes?: number | null | undefined
  /**
   * Top-level statements the system sent to its database (pg_stat_statements), from the start
   * until after teardown, minus the runner's own; null where pg_stat_statements is not loaded.
   */
  readonly statements: number | null
  /** `xact_commit + xact_rollback` of the database (pg_stat_database) over the same window, minus the runner's own. */
  readonly transactions: number | null
  /** How many times the runner polled the pending count (each one statement). */
  readonly polls: number
}

/** Thrown by an adapter method that cannot run here; the runner reports the scenario as skipped. */
export class SkipError extends Error {
  constructor(reason: string) {
    super(reason)
    this.name = "SkipError"
  }
}

/** Thrown by adapters that are still stubs; the runner skips the whole adapter. */
export class NotImplementedError extends SkipError {
  constructor(what: string) {
    super(`${what}: not yet implemented`)
    this.name = "NotImplementedError"
  }
}

/** Why an error means "skip" rather than "failed", or undefined for a real failure. */
export const skipReason = (error: unknown): string | undefined =>
  error instanceof SkipError || (error instanceof Error && /not yet implemented/i.test(error.message))
    ? (error as Error).message
    : undefined

/**
 * Counts completed jobs and takes the wall-clock / CPU measurements at the exact moment
 * the target count is reached (synchronously, from inside the last handler).
 */
export class CompletionMeter {
  readonly target: number
  readonly done: Promise<Omit<DrainResult, "stopMs">>
  #completed = 0
  #startedAt = 0
  #firstAt: number | undefined
  #cpu: NodeJS.CpuUsage | undefined
  #db: number | null = null
  #machine: number | null = null
  #resolve: (result: Omit<DrainResult, "stopMs">) => void = () => {}

  /** The meter created last in this process (the soak scenario samples its progress). */
  static current: CompletionMeter | undefined
  /** Called from `start()` (the runner's committed-rate watch uses the same start). */
  static onStart: ((meter: CompletionMeter) => void) | undefined

  constructor(target: number) {
    CompletionMeter.current = this
    this.target = target
    this.done = new Promise((resolve) => {
      this.#resolve = resolve
    })
  }

  get completed(): number {
    return this.#completed
  }

  start(): void {
    this.#machine = machineBusyMicros()
    this.#db = dbCpuMicros()
    this.#cpu = process.cpuUsage()
    this.#startedAt = performance.now()
    CompletionMeter.onStart?.(this)
  }

  /** `performance.now()` at `start()`. */
  get startedAt(): number {
    return this.#startedAt
  }

  /** Call when a handler starts (optional; gives `firstToLastMs`). */
  started(): void {
    if (this.#firstAt === undefined) this.#firstAt = performance.now()
  }

  /** Call when `n` handlers have returned. */
  complete(n = 1): void {
    if (this.#firstAt === undefined) this.#firstAt = performance.now()
    const before = this.#completed
    this.#completed += n
    if (before < this.target && this.#completed >= this.target) {
      const end = performance.now()
      const cpu = process.cpuUsage(this.#cpu)
      const dbAfter = dbCpuMicros()
      const machineAfter = machineBusyMicros()
      this.#resolve({
        count: this.target,
        wallMs: end - this.#startedAt,
        cpuMicros: cpu.user + cpu.system,
        dbCpuMicros: this.#db !== null && dbAfter !== null ? dbAfter - this.#db : null,
        machineBusyMicros: this.#machine !== null && machineAfter !== null ? machineAfter - this.#machine : null,
        firstToLastMs: end - (this.#firstAt ?? this.#startedAt)
      })
    }
  }
}

/**
 * A one-shot "the handler started" signal for wake-up latency: `arm()` before enqueueing,
 * `hit()` from the handler. Hits while not armed (there should be none) are ignored.
 */
export class WakeProbe {
  #pending: ((at: number) => void) | undefined

  arm(): Promise<number> {
    return new Promise((resolve) => {
      this.#pending = resolve
    })
  }

  hit(): void {
    const at = performance.now()
    const pending = this.#pending
    this.#pending = undefined
    pending?.(at)
  }
}

/**
 * Measures wake-up latency one job at a time.
 *
 * `jitterMs`: before each sample wait a uniformly random 0..jitterMs so that the enqueue
 * lands at a random phase of a polling worker's cycle (otherwise a poller that just
 * fetched would always show close to its full poll interval). Use the poll interval for
 * polling systems, 0 for LISTEN/NOTIFY ones. This is arrival randomisation, not
 * synchronisation: every sample still waits on the handler's own signal.
 */
export const measureWake = async (options: WakeOptions & {
  readonly probe: WakeProbe
  /** Enqueue one job through a connection that is not the worker's. */
  readonly enqueue: () => Promise<unknown>
  readonly jitterMs: number
  /** Discarded samples at the start (connection warm-up). Default 3. */
  readonly warmup?: number
  /** Give up on a single sample after this long. Default 30 s. */
  readonly sampleTimeoutMs?: number
}): Promise<ReadonlyArray<number>> => {
  const warmup = options.warmup ?? 3
  const sampleTimeoutMs = options.sampleTimeoutMs ?? 30_000
  const out: Array<number> = []
  const begin = performance.now()
  for (let i = 0; i < warmup + options.samples; i++) {
    if (i >= warmup + 5 && performance.now() - begin > options.budgetMs) break
    if (options.jitterMs > 0) await delay(Math.random() * options.jitterMs)
    const started = options.probe.arm()
    const t0 = performance.now()
    await options.enqueue()
    const t1 = await withTimeout(started, sampleTimeoutMs, "wake-up sample")
    if (i >= warmup) out.push(t1 - t0)
  }
  return out
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export const withTimeout = <A>(promise: Promise<A>, ms: number, what: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

/** Time an async stop/cleanup step. */
export const timed = async (f: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now()
  await f()
  return performance.now() - t0
}
