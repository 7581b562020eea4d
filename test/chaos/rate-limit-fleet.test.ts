/**
 * Rate limit across processes: three node processes (test/chaos/rate-limit-process.ts), each
 * with its own pool, wait for tokens of one key with `RateLimiter.sleep` (delay mode) on the
 * Postgres store, as fast as they can, with 4 loops each, for a minute (10 s with
 * CHAOS_SHORT=1), at 100 tokens per second. Every token used is logged on the database's
 * clock. Must show (issue 16): the limit holds within 5 % over the minute across the three
 * processes, and no window gets more than the limit.
 *
 * The limiter's windows are fixed windows that start at its first grant, and a busy key's
 * tokens are used in a burst at the start of each window (the reservations made during the
 * previous one wake up then). The log is counted in windows of the same length centred on
 * those bursts (from half a window before the first logged grant), so that the few
 * milliseconds between a grant and its log row cannot move a grant into the next window.
 * The largest count over any sliding window of the same length is reported too (a fixed window
 * allows more there: the end of one burst and the start of the next).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { dirname, join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import type { RateLimitProcessConfig } from "./rate-limit-process.ts"
import * as Chaos_ from "./support.ts"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..")

const LIMIT = 100
const WINDOW_MS = 1000
const WINDOWS = Chaos_.SHORT ? 10 : 60
const PROCESSES = 3
const FIBERS = 4

const logTableDdl = `
  CREATE TABLE IF NOT EXISTS rate_limit_log (
    id       bigserial PRIMARY KEY,
    process  integer   NOT NULL,
    at_ms    float8    NOT NULL DEFAULT extract(epoch FROM clock_timestamp())::float8 * 1000
  )`

interface Child {
  readonly child: ChildProcess
  readonly ready: Deferred.Deferred<void>
  readonly done: Deferred.Deferred<number>
}

/** Starts one process and waits for its `ready`; SIGKILLed when the scope closes if still running. */
const spawnProcess = (config: RateLimitProcessConfig) =>
  Effect.gen(function*() {
    const child = spawn(process.execPath, [join(here, "rate-limit-process.ts"), JSON.stringify(config)], {
      cwd: root,
      stdio: ["pipe", "pipe", "inherit"]
    })
    const ready = yield* Deferred.make<void>()
    const done = yield* Deferred.make<number>()
    child.once("exit", (code, signal) => {
      const gone = Effect.die(new Error(`rate-limit process ${config.process} exited (${code ?? signal})`))
      Deferred.doneUnsafe(ready, gone)
      Deferred.doneUnsafe(done, gone)
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const [word, rest] = line.split(" ")
      if (word === "ready") Deferred.doneUnsafe(ready, Effect.void)
      else if (word === "done") Deferred.doneUnsafe(done, Effect.succeed(Number(rest)))
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
    )
    return { child, ready, done } satisfies Child
  })

/** The most entries of sorted `times` within any interval of `length`. */
const slidingMax = (times: ReadonlyArray<number>, length: number): number => {
  let max = 0
  let start = 0
  for (let end = 0; end < times.length; end++) {
    while (times[end]! - times[start]! >= length) start++
    max = Math.max(max, end - start + 1)
  }
  return max
}

layer(Chaos_.layer(), { excludeTestServices: true })("chaos: rate limit across processes", (it) => {
  it.effect(`three processes share ${LIMIT} tokens per second on one key for ${WINDOWS} s`, () =>
    Effect.gen(function*() {
      const sql = yield* Chaos_.sqlClient
      const { url } = yield* Chaos_.ChaosDb
      yield* sql.unsafe(logTableDdl)
      const key = "fleet"
      // Every process runs one window more than is counted: the last counted window is as busy as the others.
      const runMs = (WINDOWS + 1) * WINDOW_MS
      const children = yield* Effect.forEach(
        Array.from({ length: PROCESSES }, (_, i) => i + 1),
        (n) => spawnProcess({ url, process: n, key, limit: LIMIT, windowMs: WINDOW_MS, runMs, fibers: FIBERS }),
        { concurrency: "unbounded" }
      )
      yield* Effect.forEach(children, (c) => Deferred.await(c.ready), { discard: true })
      // Together: a take that comes more than one refill interval (10 ms) after the previous one
      // finds the limiter's window over and starts a new one.
      const start = Date.now() + 200
      for (const c of children) c.child.stdin!.write(`go ${start}\n`)
      const reported = yield* Effect.forEach(children, (c) => Deferred.await(c.done))

      const rows = yield* sql<{ readonly process: number; readonly at_ms: number }>`
        SELECT process, at_ms FROM rate_limit_log ORDER BY at_ms`
      assert.strictEqual(rows.length, reported.reduce((a, b) => a + b, 0), "every grant the processes counted is logged")
      const times = rows.map((r) => r.at_ms)
      const anchor = times[0]! - WINDOW_MS / 2
      const perWindow = Array.from({ length: WINDOWS }, () => 0)
      const perProcess: Record<number, number> = {}
      for (const r of rows) {
        const w = Math.floor((r.at_ms - anchor) / WINDOW_MS)
        if (w >= WINDOWS) continue
        perWindow[w]!++
        perProcess[r.process] = (perProcess[r.process] ?? 0) + 1
      }
      const total = perWindow.reduce((a, b) => a + b, 0)
      // Every take of delay mode counts (the grants and the reservations they slept on): if the
      // window never started over, the row's count is every grant logged, and the counted
      // windows are the limiter's own.
      const [row] = yield* sql<{ readonly tokens: number }>`SELECT tokens FROM effect_jobs.rate_windows WHERE key = ${key}`
      const expected = LIMIT * WINDOWS
      const figures = {
        processes: PROCESSES,
        loopsPerProcess: FIBERS,
        limit: LIMIT,
        windowMs: WINDOW_MS,
        windows: WINDOWS,
        expected,
        total,
        deviationPercent: Math.round((10_000 * (total - expected)) / expected) / 100,
        perWindowMin: Math.min(...perWindow),
        perWindowMax: Math.max(...perWindow),
        slidingWindowMax: slidingMax(times.filter((t) => t < anchor + WINDOWS * WINDOW_MS), WINDOW_MS),
        perProcess,
        windowStartedOver: row?.tokens !== rows.length
      }
      yield* Chaos_.recordResult("rateLimit.fleet", figures)
      console.log(`rate limit fleet: ${JSON.stringify(figures)}`)

      assert.isAtMost(Math.max(...perWindow), LIMIT, `no window over the limit: ${JSON.stringify(figures)} ${JSON.stringify(perWindow)}`)
      assert.isAtMost(Math.abs(total - expected), 0.05 * expected, `within 5 % of ${expected}: ${total}`)
      for (let n = 1; n <= PROCESSES; n++) assert.isAbove(perProcess[n] ?? 0, 0, `process ${n} got tokens`)
    }))
})
