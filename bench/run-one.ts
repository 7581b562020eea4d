/**
 * Runs ONE scenario of ONE adapter against ONE (fresh, empty) database, in its own process,
 * and prints the result as a marked JSON line on stdout.
 *
 *   node --expose-gc bench/run-one.ts <adapter> <scenario> <url>
 *        [--jobs 20000] [--concurrency 24] [--wake-samples 1000] [--wake-budget-ms 20000]
 *        [--history-rows 1000000] [--scaleout-jobs 50000] [--scaleout-job-ms 0] [--procs 1]
 *        [--soak-jobs 1000000] [--rss-interval-ms 500] [--io-jobs 20000] [--io-concurrency 500]
 *        [--io-job-ms 10] [--longtx-hold-ms 60000] [--longtx-before-ms 15000] [--longtx-rate 300]
 *
 * Scenarios: drain, enqueue, wake (see bench/README.md), and
 *   drain-history   `addFiller("completed", historyRows)`, then as drain
 *   drain-future    `addFiller("scheduled", historyRows)`, then as drain
 *   scaleout        enqueue scaleoutJobs, then `procs` worker processes (bench/worker-proc.ts)
 *                   drain them together; timed from "go" to the last completion reported
 *   soak            another process enqueues soakJobs, then this one drains them all while
 *                   sampling its own RSS every rssIntervalMs
 *   io              enqueue ioJobs, then one process drains them at ioConcurrency, each
 *                   handler waiting ioJobMillis on a timer (`startWorkers`)
 *   longtx          a paced producer and one worker while a session idles in transaction
 *                   (bench/longtx.ts)
 *
 * drain, drain-history, drain-future and io also report the committed rate and the
 * Postgres work per job, measured from a connection of the runner's own (bench/pgwork.ts).
 *
 * Normally started by bench/run.ts, which creates and drops the database.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { dirname, join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import type { Adapter, DrainResult } from "./adapter.ts"
import { CompletionMeter, skipReason, SkipError, timed, withTimeout } from "./adapter.ts"
import { findAdapter } from "./adapters/index.ts"
import { runLongTx } from "./longtx.ts"
import { watchPgWork } from "./pgwork.ts"
import { dbCpuMicros, machineBusyMicros } from "./proc.ts"
import type { FromWorker, OneOptions, OneResult, RssSample, ScaleoutResult, Scenario, SoakResult, ToWorker } from "./protocol.ts"
import { isScenario, RESULT_MARKER } from "./protocol.ts"

const here = dirname(fileURLToPath(import.meta.url))

/**
 * With BENCH_CPU_PROFILE=<file.cpuprofile> (bench/profile.ts sets it), the timed part of a
 * drain (and only that: not setup, not the enqueue) runs under the V8 CPU profiler.
 */
const profiled = async <A>(f: () => Promise<A>): Promise<A> => {
  const file = process.env["BENCH_CPU_PROFILE"]
  if (file === undefined || file === "") return f()
  const { Session } = await import("node:inspector/promises")
  const { writeFileSync } = await import("node:fs")
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.setSamplingInterval", { interval: 200 })
  await session.post("Profiler.start")
  try {
    return await f()
  } finally {
    const { profile } = await session.post("Profiler.stop")
    writeFileSync(file, JSON.stringify(profile))
    session.disconnect()
  }
}

const gc = (): void => {
  const collect = (globalThis as { gc?: () => void }).gc
  collect?.()
}

class SetupSkipped extends Error {}

/** How long the runner waits for the database to show every job done after the last handler. */
const COMMIT_TIMEOUT_MS = 60_000

/**
 * Runs `drain` (an adapter's drain or equivalent) while the runner watches the database:
 * committed time, server CPU, WAL, statements and transactions (bench/pgwork.ts). The
 * adapter is torn down here (the closing readings need its connections gone).
 */
const measuredDrain = async (
  adapter: Adapter,
  url: string,
  drain: () => Promise<DrainResult>
): Promise<DrainResult> => {
  const database = decodeURIComponent(new URL(url).pathname.slice(1))
  const watch = watchPgWork(url, database, adapter.pendingQuery)
  try {
    await watch.begin()
    let meter: CompletionMeter | undefined
    const meterStarted = new Promise<CompletionMeter>((resolve) => {
      CompletionMeter.onStart = (m) => {
        meter = m
        resolve(m)
      }
    })
    const called = performance.now()
    const running = drain()
    running.catch(() => undefined)
    // The last handler returned (meter) or, for systems without a meter (pgbench), the drain ended.
    await Promise.race([running, meterStarted.then((m) => m.done)])
    // Poll until committed; if the drain fails meanwhile, its error wins (a resolved drain does not end the poll).
    const committedAt = await Promise.race([
      watch.waitCommitted(COMMIT_TIMEOUT_MS),
      running.then(() => new Promise<never>(() => {}))
    ])
    const result = await running
    CompletionMeter.onStart = undefined
    await adapter.teardown()
    const pgWork = await watch.finish()
    const origin = meter?.startedAt ?? called
    return { ...result, committedWallMs: committedAt === null ? null : committedAt - origin, pgWork }
  } finally {
    await watch.close()
  }
}

/** The io scenario: `ioJobs` already enqueued, one process, handlers that wait on a timer. */
const ioDrain = (adapter: Adapter, options: OneOptions) => async (): Promise<DrainResult> => {
  if (adapter.startWorkers === undefined) throw new SkipError(`${adapter.name} has no startWorkers`)
  const meter = new CompletionMeter(options.ioJobs)
  meter.start()
  const workers = await adapter.startWorkers(options.ioConcurrency, (n) => meter.complete(n), {
    jobMillis: options.ioJobMillis
  })
  const measured = await meter.done
  const stopMs = await timed(() => workers.stop())
  return { ...measured, stopMs }
}

const runScenario = async (adapter: Adapter, scenario: Scenario, url: string, options: OneOptions): Promise<OneResult> => {
  const t0 = performance.now()
  try {
    await adapter.setup(url)
  } catch (error) {
    const reason = skipReason(error)
    throw reason !== undefined ? new SetupSkipped(reason) : error
  }
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
      const drain = await measuredDrain(adapter, url, () => profiled(() => adapter.drain(options.jobs, options.concurrency)))
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
    case "drain-history":
    case "drain-future": {
      if (adapter.addFiller === undefined) throw new SkipError(`${adapter.name} cannot insert filler rows`)
      const f0 = performance.now()
      await adapter.addFiller(scenario === "drain-history" ? "completed" : "scheduled", options.historyRows)
      const fillerMs = performance.now() - f0
      const start = performance.now()
      await adapter.enqueueMany(options.jobs)
      const preEnqueueMs = performance.now() - start
      gc()
      const drain = await measuredDrain(adapter, url, () => profiled(() => adapter.drain(options.jobs, options.concurrency)))
      return { ...base, fillerMs, fillerRows: options.historyRows, preEnqueueMs, drain }
    }
    case "scaleout": {
      if (adapter.startWorkers === undefined) throw new SkipError(`${adapter.name} has no startWorkers`)
      const start = performance.now()
      await adapter.enqueueMany(options.scaleoutJobs)
      const preEnqueueMs = performance.now() - start
      const scaleout = await scaleOut(adapter.name, url, options)
      return { ...base, preEnqueueMs, scaleout }
    }
    case "soak": {
      const soak = await soakRun(adapter, url, options)
      return { ...base, soak }
    }
    case "io": {
      if (adapter.startWorkers === undefined) throw new SkipError(`${adapter.name} has no startWorkers`)
      const start = performance.now()
      await adapter.enqueueMany(options.ioJobs)
      const preEnqueueMs = performance.now() - start
      gc()
      const io = await measuredDrain(adapter, url, ioDrain(adapter, options))
      return { ...base, preEnqueueMs, io }
    }
    case "longtx": {
      const longtx = await runLongTx(adapter, url, options)
      return { ...base, longtx }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// helper processes (bench/worker-proc.ts)

const workerProc = (args: ReadonlyArray<string>): ChildProcess =>
  spawn(process.execPath, [join(here, "worker-proc.ts"), ...args], { stdio: ["ignore", "ignore", "inherit", "ipc"] })

const exited = (child: ChildProcess): Promise<number> =>
  new Promise((resolve) => {
    if (child.exitCode !== null) resolve(child.exitCode)
    else child.once("exit", (code) => resolve(code ?? -1))
  })

/** `procs` worker processes drain `scaleoutJobs` already enqueued jobs together. */
const scaleOut = async (name: string, url: string, options: OneOptions): Promise<ScaleoutResult> => {
  const target = options.scaleoutJobs
  const children = Array.from({ length: options.procs }, () =>
    workerProc(["work", name, url, "--concurrency", String(options.concurrency), "--job-ms", String(options.scaleoutJobMillis)]))
  const perProcess = children.map(() => 0)
  let total = 0
  let t0 = 0
  let db0: number | null = null
  let machine0: number | null = null
  interface Measured {
    readonly wallMs: number
    readonly dbCpuMicros: number | null
    readonly machineBusyMicros: number | null
  }
  let finished: ((r: Measured) => void) | undefined
  const done = new Promise<Measured>((resolve) => (finished = resolve))
  const readies: Array<Promise<void>> = []
  const stops: Array<Promise<{ cpuMicros: number; stopMs: number }>> = []
  let failure: ((e: Error) => void) | undefined
  const failed = new Promise<never>((_, reject) => (failure = reject))
  failed.catch(() => undefined)
  children.forEach((child, i) => {
    let ready: () => void = () => {}
    let stopped: (r: { cpuMicros: number; stopMs: number }) => void = () => {}
    readies.push(new Promise((resolve) => (ready = resolve)))
    stops.push(new Promise((resolve) => (stopped = resolve)))
    child.on("message", (m: FromWorker) => {
      switch (m.type) {
        case "ready":
          return ready()
        case "progress": {
          perProcess[i] = (perProcess[i] ?? 0) + m.n
          const before = total
          total += m.n
          if (before < target && total >= target) {
            const end = performance.now()
            const db1 = dbCpuMicros()
            const machine1 = machineBusyMicros()
            finished?.({
              wallMs: end - t0,
              dbCpuMicros: db0 !== null && db1 !== null ? db1 - db0 : null,
              machineBusyMicros: machine0 !== null && machine1 !== null ? machine1 - machine0 : null
            })
          }
          return
        }
        case "stopped":
          return stopped({ cpuMicros: m.cpuMicros, stopMs: m.stopMs })
        case "error":
          return failure?.(new Error(`worker process ${i}: ${m.message.split("\n")[0]}`))
      }
    })
    child.once("exit", (code) => {
      if (code !== 0) failure?.(new Error(`worker process ${i} exited with ${code}`))
    })
  })
  try {
    await Promise.race([withTimeout(Promise.all(readies), 60_000, "worker processes ready"), failed])
    gc()
    machine0 = machineBusyMicros()
    db0 = dbCpuMicros()
    t0 = performance.now()
    for (const child of children) child.send({ type: "go" } satisfies ToWorker)
    // completions per process every 100 ms: shows start-up, stalls and the tail
    const timeline: Array<ReadonlyArray<number>> = []
    const tick = setInterval(() => timeline.push([...perProcess]), 100)
    const measured = await Promise.race([done, failed]).finally(() => clearInterval(tick))
    timeline.push([...perProcess])
    for (const child of children) child.send({ type: "stop" } satisfies ToWorker)
    const stopped = await Promise.race([Promise.all(stops), failed])
    await Promise.all(children.map(exited))
    return {
      procs: options.procs,
      count: target,
      wallMs: measured.wallMs,
      cpuMicros: stopped.reduce((s, x) => s + x.cpuMicros, 0),
      dbCpuMicros: measured.dbCpuMicros,
      machineBusyMicros: measured.machineBusyMicros,
      perProcess,
      timeline,
      stopMs: Math.max(...stopped.map((x) => x.stopMs))
    }
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL")
  }
}

/** Another process enqueues `soakJobs`; this one drains them, sampling its own memory. */
const soakRun = async (adapter: Adapter, url: string, options: OneOptions): Promise<SoakResult> => {
  const e0 = performance.now()
  const filler = workerProc(["enqueue", adapter.name, url, "--jobs", String(options.soakJobs)])
  const code = await exited(filler)
  if (code !== 0) throw new Error(`enqueue process exited with ${code}`)
  const enqueueMs = performance.now() - e0
  gc()
  const samples: Array<RssSample> = []
  let t0 = performance.now()
  const sample = () => {
    const m = process.memoryUsage()
    samples.push({
      tMs: Math.round(performance.now() - t0),
      completed: CompletionMeter.current?.completed ?? 0,
      rssBytes: m.rss,
      heapUsedBytes: m.heapUsed
    })
  }
  t0 = performance.now()
  sample()
  const timer = setInterval(sample, options.rssIntervalMs)
  try {
    const drain = await adapter.drain(options.soakJobs, options.concurrency)
    return { count: options.soakJobs, enqueueMs, drain, samples }
  } finally {
    clearInterval(timer)
  }
}

/** The measured drains tear the adapter down early; the `finally` below must not do it twice. */
const tearDownOnce = (adapter: Adapter): Adapter => {
  let done: Promise<void> | undefined
  const teardown = adapter.teardown.bind(adapter)
  return Object.assign(adapter, { teardown: () => (done ??= teardown()) })
}

const main = async (): Promise<OneResult> => {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      jobs: { type: "string", default: "20000" },
      concurrency: { type: "string", default: "24" },
      "wake-samples": { type: "string", default: "1000" },
      "wake-budget-ms": { type: "string", default: "20000" },
      "history-rows": { type: "string", default: "1000000" },
      "scaleout-jobs": { type: "string", default: "50000" },
      "scaleout-job-ms": { type: "string", default: "0" },
      procs: { type: "string", default: "1" },
      "soak-jobs": { type: "string", default: "1000000" },
      "rss-interval-ms": { type: "string", default: "500" },
      "io-jobs": { type: "string", default: "20000" },
      "io-concurrency": { type: "string", default: "500" },
      "io-job-ms": { type: "string", default: "10" },
      "longtx-hold-ms": { type: "string", default: "60000" },
      "longtx-before-ms": { type: "string", default: "15000" },
      "longtx-rate": { type: "string", default: "300" }
    }
  })
  const [name = "", scenario = "", url = ""] = positionals
  if (!isScenario(scenario) || url === "") {
    throw new Error("usage: node bench/run-one.ts <adapter> <scenario> <url> [--jobs N] ...")
  }
  const entry = findAdapter(name)
  if (entry === undefined) throw new Error(`unknown adapter ${name}`)
  const options: OneOptions = {
    jobs: Number(values.jobs),
    concurrency: Number(values.concurrency),
    wakeSamples: Number(values["wake-samples"]),
    wakeBudgetMs: Number(values["wake-budget-ms"]),
    historyRows: Number(values["history-rows"]),
    scaleoutJobs: Number(values["scaleout-jobs"]),
    scaleoutJobMillis: Number(values["scaleout-job-ms"]),
    procs: Number(values.procs),
    soakJobs: Number(values["soak-jobs"]),
    rssIntervalMs: Number(values["rss-interval-ms"]),
    ioJobs: Number(values["io-jobs"]),
    ioConcurrency: Number(values["io-concurrency"]),
    ioJobMillis: Number(values["io-job-ms"]),
    longtxHoldMs: Number(values["longtx-hold-ms"]),
    longtxBeforeMs: Number(values["longtx-before-ms"]),
    longtxRate: Number(values["longtx-rate"])
  }
  const adapter = tearDownOnce(await entry.load())
  try {
    return await runScenario(adapter, scenario, url, options)
  } catch (error) {
    if (error instanceof SetupSkipped) {
      return { status: "skipped", adapter: name, scenario, reason: error.message, scope: "adapter" }
    }
    const reason = skipReason(error)
    if (reason !== undefined) return { status: "skipped", adapter: name, scenario, reason, scope: "scenario" }
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
