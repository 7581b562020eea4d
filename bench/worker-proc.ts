/**
 * A helper process started by bench/run-one.ts (never by hand, it talks over IPC):
 *
 *   node bench/worker-proc.ts work <adapter> <url> --concurrency 24 [--job-ms 0]
 *     One of the worker processes of the `scaleout` scenario. Loads the adapter, connects
 *     (`setup`; the schema already exists, so this only opens its pool), says "ready",
 *     and on "go" starts its workers (`startWorkers`). It reports completions in batches
 *     ("progress", at most every 5 ms) and, on "stop", its CPU time since "go", then stops
 *     its workers and exits.
 *
 *   node bench/worker-proc.ts enqueue <adapter> <url> --jobs N
 *     Enqueues N jobs with the adapter's `enqueueMany` and exits (the soak scenario fills
 *     the queue from another process, so the worker's RSS does not carry the producer's heap).
 */
import { parseArgs } from "node:util"
import { performance } from "node:perf_hooks"
import { findAdapter } from "./adapters/index.ts"
import type { FromWorker, ToWorker } from "./protocol.ts"

const send = (message: FromWorker): Promise<void> =>
  new Promise((resolve) => {
    if (process.send === undefined) {
      process.stdout.write(`${JSON.stringify(message)}\n`)
      resolve()
    } else {
      process.send(message, undefined, {}, () => resolve())
    }
  })

const main = async (): Promise<void> => {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      concurrency: { type: "string", default: "24" },
      jobs: { type: "string", default: "0" },
      "job-ms": { type: "string", default: "0" }
    }
  })
  const [mode = "", name = "", url = ""] = positionals
  const entry = findAdapter(name)
  if (entry === undefined || url === "" || (mode !== "work" && mode !== "enqueue")) {
    throw new Error("usage: node bench/worker-proc.ts <work|enqueue> <adapter> <url> [--concurrency N] [--jobs N]")
  }
  const adapter = await entry.load()
  await adapter.setup(url)
  try {
    if (mode === "enqueue") {
      await adapter.enqueueMany(Number(values.jobs))
      return
    }
    if (adapter.startWorkers === undefined) throw new Error(`${name} has no startWorkers`)
    const startWorkers = adapter.startWorkers.bind(adapter)
    await send({ type: "ready" })
    const go = await nextMessage()
    if (go.type !== "go") throw new Error(`expected go, got ${go.type}`)
    const cpu0 = process.cpuUsage()
    let pending = 0
    const workers = await startWorkers(Number(values.concurrency), (n) => {
      pending += n
    }, { jobMillis: Number(values["job-ms"]) })
    const flush = () => {
      if (pending === 0) return
      const n = pending
      pending = 0
      process.send?.({ type: "progress", n } satisfies FromWorker)
    }
    const timer = setInterval(flush, 5)
    const stop = await nextMessage()
    if (stop.type !== "stop") throw new Error(`expected stop, got ${stop.type}`)
    const cpu = process.cpuUsage(cpu0)
    const t0 = performance.now()
    await workers.stop()
    const stopMs = performance.now() - t0
    clearInterval(timer)
    flush()
    await send({ type: "stopped", cpuMicros: cpu.user + cpu.system, stopMs })
  } finally {
    await adapter.teardown()
  }
}

const inbox: Array<ToWorker> = []
let waiting: ((m: ToWorker) => void) | undefined
process.on("message", (m: ToWorker) => {
  if (waiting !== undefined) {
    const w = waiting
    waiting = undefined
    w(m)
  } else inbox.push(m)
})
const nextMessage = (): Promise<ToWorker> =>
  inbox.length > 0 ? Promise.resolve(inbox.shift()!) : new Promise((resolve) => (waiting = resolve))

main().then(
  () => process.exit(0),
  async (error: unknown) => {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error)
    process.stderr.write(`${message}\n`)
    await send({ type: "error", message }).catch(() => undefined)
    process.exit(2)
  }
)
