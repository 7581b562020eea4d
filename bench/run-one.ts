/**
 * Runs ONE scenario of ONE adapter against ONE (fresh, empty) database, in its own process,
 * and prints the result as a marked JSON line on stdout.
 *
 *   node --expose-gc bench/run-one.ts <adapter> <drain|enqueue|wake> <url>
 *        [--jobs 20000] [--concurrency 24] [--wake-samples 200] [--wake-budget-ms 20000]
 *
 * Normally started by bench/run.ts, which creates and drops the database.
 */
import { performance } from "node:perf_hooks"
import { parseArgs } from "node:util"
import type { Adapter } from "./adapter.ts"
import { skipReason } from "./adapter.ts"
import { findAdapter } from "./adapters/index.ts"
import type { OneOptions, OneResult, Scenario } from "./protocol.ts"
import { isScenario, RESULT_MARKER } from "./protocol.ts"

const gc = (): void => {
  const collect = (globalThis as { gc?: () => void }).gc
  collect?.()
}

const runScenario = async (adapter: Adapter, scenario: Scenario, url: string, options: OneOptions): Promise<OneResult> => {
  const t0 = performance.now()
  await adapter.setup(url)
  const setupMs = performance.now() - t0
  const base = { status: "ok", adapter: adapter.name, scenario, setupMs } as const
  switch (scenario) {
    case "enqueue": {
      gc()
      const start = performance.now()
      await adapter.enqueueMany(options.jobs)
      return { ...base, enqueue: { count: options.jobs, wallMs: performance.now() - start } }
    }
    case "drain": {
      const start = performance.now()
      await adapter.enqueueMany(options.jobs)
      const preEnqueueMs = performance.now() - start
      gc()
      const drain = await adapter.drain(options.jobs, options.concurrency)
      return { ...base, preEnqueueMs, drain }
    }
    case "wake": {
      const samplesMs = await adapter.wakeLatency({
        concurrency: options.concurrency,
        samples: options.wakeSamples,
        budgetMs: options.wakeBudgetMs
      })
      return { ...base, wake: { samplesMs } }
    }
  }
}

const main = async (): Promise<OneResult> => {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      jobs: { type: "string", default: "20000" },
      concurrency: { type: "string", default: "24" },
      "wake-samples": { type: "string", default: "200" },
      "wake-budget-ms": { type: "string", default: "20000" }
    }
  })
  const [name = "", scenario = "", url = ""] = positionals
  if (!isScenario(scenario) || url === "") {
    throw new Error("usage: node bench/run-one.ts <adapter> <drain|enqueue|wake> <url> [--jobs N] ...")
  }
  const entry = findAdapter(name)
  if (entry === undefined) throw new Error(`unknown adapter ${name}`)
  const options: OneOptions = {
    jobs: Number(values.jobs),
    concurrency: Number(values.concurrency),
    wakeSamples: Number(values["wake-samples"]),
    wakeBudgetMs: Number(values["wake-budget-ms"])
  }
  const adapter = await entry.load()
  try {
    return await runScenario(adapter, scenario, url, options)
  } catch (error) {
    const reason = skipReason(error)
    if (reason !== undefined) return { status: "skipped", adapter: name, scenario, reason }
    return {
      status: "error",
      adapter: name,
      scenario,
      message: error instanceof Error ? (error.stack ?? error.message) : String(error)
    }
  } finally {
    await adapter.teardown().catch((error: unknown) => {
      process.stderr.write(`teardown of ${name} failed: ${String(error)}\n`)
    })
  }
}

main().then(
  (result) => {
    // Exit explicitly: some libraries leave timers behind after stop(); the result is what matters.
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`, () => process.exit(0))
  },
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(2)
  }
)
