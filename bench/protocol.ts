/** What `bench/run-one.ts` prints (one marked JSON line on stdout) and `bench/run.ts` reads. */
import type { DrainResult } from "./adapter.ts"

export const SCENARIOS = ["drain", "enqueue", "wake", "drain-history", "drain-future", "scaleout", "soak", "io", "longtx"] as const
export type Scenario = (typeof SCENARIOS)[number]

/** What `npm run bench` runs without `--scenarios`. */
export const DEFAULT_SCENARIOS: ReadonlyArray<Scenario> = ["drain", "enqueue", "wake"]

/** Shorthands accepted by `--scenarios`. */
export const SCENARIO_ALIASES: Readonly<Record<string, ReadonlyArray<Scenario>>> = {
  // the history drains are compared with the plain drain of the same run
  history: ["drain", "drain-history", "drain-future"],
  all: SCENARIOS
}

export const isScenario = (s: string): s is Scenario => (SCENARIOS as ReadonlyArray<string>).includes(s)

export const RESULT_MARKER = "@@BENCH_RESULT@@ "

export interface OneOptions {
  readonly jobs: number
  readonly concurrency: number
  readonly wakeSamples: number
  readonly wakeBudgetMs: number
  /** drain-history / drain-future: filler rows inserted before the jobs. */
  readonly historyRows: number
  /** scaleout: jobs drained by all worker processes together. */
  readonly scaleoutJobs: number
  /** scaleout: each handler waits this long (0: no-op jobs); see `WorkOptions.jobMillis`. */
  readonly scaleoutJobMillis: number
  /** scaleout: number of worker processes. */
  readonly procs: number
  /** soak: jobs drained by one worker process. */
  readonly soakJobs: number
  /** soak: RSS sampling interval. */
  readonly rssIntervalMs: number
  /** io: jobs drained by one process. */
  readonly ioJobs: number
  /** io: worker concurrency. */
  readonly ioConcurrency: number
  /** io: each handler waits this long on a timer. */
  readonly ioJobMillis: number
  /** longtx: how long the session stays idle in transaction. */
  readonly longtxHoldMs: number
  /** longtx: the steady phase measured before the hold. */
  readonly longtxBeforeMs: number
  /** longtx: jobs per second the paced producer enqueues. */
  readonly longtxRate: number
}

/** One phase of the longtx scenario (see bench/longtx.ts). */
export interface LongTxPhase {
  readonly name: "before" | "hold-end"
  /** ms since the producer started */
  readonly fromMs: number
  readonly toMs: number
  /** jobs enqueued in the phase that had started by the end of the run */
  readonly samples: number
  /** enqueue -> handler start of the jobs enqueued in the phase */
  readonly claimP50Ms: number | null
  readonly claimP99Ms: number | null
  /** jobs enqueued / handlers started per second in the phase */
  readonly enqueuedPerSec: number
  readonly startedPerSec: number
}

export interface LongTxResult {
  readonly holdMs: number
  readonly ratePerSec: number
  readonly concurrency: number
  readonly phases: ReadonlyArray<LongTxPhase>
  readonly enqueued: number
  readonly started: number
  /** jobs enqueued but not started when the run ended (after the hold was released and a bounded wait) */
  readonly notStarted: number
  /** the held transaction's xid and backend pid, to show it was real */
  readonly holder: { readonly xid: string; readonly pid: number }
}

export interface ScaleoutResult {
  readonly procs: number
  readonly count: number
  /** From the "go" sent to every (already started) process until the `count`-th completion was reported. */
  readonly wallMs: number
  /** Sum over the worker processes of their CPU from "go" to "stop". */
  readonly cpuMicros: number
  readonly dbCpuMicros: number | null
  /** Busy CPU µs of the whole machine over `wallMs` (see DrainResult). */
  readonly machineBusyMicros: number | null
  /** Completions reported by each process (a fair queue spreads them). */
  readonly perProcess: ReadonlyArray<number>
  /** Cumulative completions of each process, every 100 ms from "go". */
  readonly timeline: ReadonlyArray<ReadonlyArray<number>>
  readonly stopMs: number
}

export interface RssSample {
  /** ms since the drain started */
  readonly tMs: number
  /** handlers returned so far */
  readonly completed: number
  readonly rssBytes: number
  readonly heapUsedBytes: number
}

export interface SoakResult {
  readonly count: number
  readonly enqueueMs: number
  readonly drain: DrainResult
  readonly samples: ReadonlyArray<RssSample>
}

export type OneResult =
  | {
    readonly status: "ok"
    readonly adapter: string
    readonly scenario: Scenario
    readonly setupMs: number
    /** drain: the untimed-for-ranking pre-fill enqueue, recorded anyway. */
    readonly preEnqueueMs?: number
    /** drain-history / drain-future: inserting the filler rows (and VACUUM ANALYZE). */
    readonly fillerMs?: number
    readonly fillerRows?: number
    readonly drain?: DrainResult
    readonly enqueue?: { readonly count: number; readonly wallMs: number }
    readonly wake?: { readonly samplesMs: ReadonlyArray<number> }
    readonly scaleout?: ScaleoutResult
    readonly soak?: SoakResult
    /** io: a drain of jobs that each wait ioJobMillis, at ioConcurrency */
    readonly io?: DrainResult
    readonly longtx?: LongTxResult
  }
  | {
    readonly status: "skipped"
    readonly adapter: string
    readonly scenario: Scenario
    readonly reason: string
    /** "adapter": setup itself cannot run here (stub, missing binary), skip every scenario. */
    readonly scope: "adapter" | "scenario"
  }
  | { readonly status: "error"; readonly adapter: string; readonly scenario: Scenario; readonly message: string }

export const parseResult = (stdout: string): OneResult | undefined => {
  const line = stdout.split("\n").find((l) => l.startsWith(RESULT_MARKER))
  return line === undefined ? undefined : (JSON.parse(line.slice(RESULT_MARKER.length)) as OneResult)
}

/** Messages between bench/run-one.ts (parent) and bench/worker-proc.ts (a worker process). */
export type ToWorker = { readonly type: "go" } | { readonly type: "stop" }
export type FromWorker =
  | { readonly type: "ready" }
  | { readonly type: "progress"; readonly n: number }
  | { readonly type: "stopped"; readonly cpuMicros: number; readonly stopMs: number }
  | { readonly type: "error"; readonly message: string }
