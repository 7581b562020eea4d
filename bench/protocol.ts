/** What `bench/run-one.ts` prints (one marked JSON line on stdout) and `bench/run.ts` reads. */
import type { DrainResult } from "./adapter.ts"

export const SCENARIOS = ["drain", "enqueue", "wake"] as const
export type Scenario = (typeof SCENARIOS)[number]

export const isScenario = (s: string): s is Scenario => (SCENARIOS as ReadonlyArray<string>).includes(s)

export const RESULT_MARKER = "@@BENCH_RESULT@@ "

export interface OneOptions {
  readonly jobs: number
  readonly concurrency: number
  readonly wakeSamples: number
  readonly wakeBudgetMs: number
}

export type OneResult =
  | {
    readonly status: "ok"
    readonly adapter: string
    readonly scenario: Scenario
    readonly setupMs: number
    /** drain: the untimed-for-ranking pre-fill enqueue, recorded anyway. */
    readonly preEnqueueMs?: number
    readonly drain?: DrainResult
    readonly enqueue?: { readonly count: number; readonly wallMs: number }
    readonly wake?: { readonly samplesMs: ReadonlyArray<number> }
  }
  | { readonly status: "skipped"; readonly adapter: string; readonly scenario: Scenario; readonly reason: string }
  | { readonly status: "error"; readonly adapter: string; readonly scenario: Scenario; readonly message: string }

export const parseResult = (stdout: string): OneResult | undefined => {
  const line = stdout.split("\n").find((l) => l.startsWith(RESULT_MARKER))
  return line === undefined ? undefined : (JSON.parse(line.slice(RESULT_MARKER.length)) as OneResult)
}
