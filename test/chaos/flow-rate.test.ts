/**
 * Scenario — a queue's rate limit (`flow.rate`) holds across three worker processes.
 *
 * Three processes (test/chaos/flow-rate-worker.ts), each with its own pool, serve queue
 * `rate-fleet` at concurrency 8 with `flow: { rate: { limit: 20, interval: "1 second" } }`; a
 * backlog of 3,000 jobs of ~2 ms each, more than 20 a second can start in the time, waits for
 * them. They run for 60 s (10 s with CHAOS_SHORT=1), then stop gracefully (SIGTERM). Every run
 * logs its start on the database's clock; from that log: no window holds more than the limit,
 * the total is within 5 % of limit × windows elapsed, every process had a share, and no job
 * started twice or spent a second attempt.
 *
 * Windows. The limiter is a fixed window on the database's clock (rate_windows, key
 * `queue:rate-fleet`) that starts at its first grant; used up, it ends one interval later and
 * the next starts at the first claim after that (the producers sleep until then: the claim's
 * `waitMillis`). So the limiter's windows are not a fixed grid: each starts a few ms (a timer and
 * a claim) after the previous one's end, and over a minute that drift adds up (2 to 5 ms a
 * window measured here: 0.1 to 0.3 s; more on a loaded machine). Buckets on a fixed grid from the first start would then cut a window's burst in two
 * and put half of it with the next window's. The check therefore follows the limiter: a window
 * opens at the first start not yet counted, less `SLACK_MS` (the window began at the grant, a
 * little before its handler logged), lasts one interval, and counts the starts not yet counted
 * before its end. That holds exactly the limiter's window as long as a window's first start is
 * logged within SLACK_MS of its grant and its last within interval - SLACK_MS of its first (the
 * grants of a window come in a burst of some tens of ms, each logged a few ms after its grant;
 * a full run saw one window's first start logged over 60 ms late, hence the margin). A limiter
 * whose windows were shorter than interval - SLACK_MS would pass this count but not the total,
 * which would be over by far more than 5 %. The fixed-grid count and the largest count in any
 * sliding interval are reported too, not asserted: a fixed window allows up to twice the limit
 * in a sliding interval (the end of one burst and the start of the next).
 *
 * Each run also logs the start of the limiter's window it saw in rate_windows: the starts per
 * window of the limiter itself are checked too, and that its windows (all used up) lasted an
 * interval each; the gaps between them (the wake-up after `waitMillis`) are reported.
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Layer, Option } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { dirname, join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Jobs } from "../../src/index.ts"
import { type FlowRateWorkerConfig, logTableDdl, queue, RateFleetJob } from "./flow-rate-worker.ts"
import * as Chaos_ from "./support.ts"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..")

const LIMIT = 20
const INTERVAL_MS = 1000
const RUN_MS = (Chaos_.SHORT ? 10 : 60) * 1000
const PROCESSES = 3
const CONCURRENCY = 8
/** More than the run can start (20 a second). */
const BACKLOG = 3000
const SLEEP_MS = 2
/** How much earlier than its first logged start a window may have begun (see the header). */
const SLACK_MS = 250

interface Child {
  readonly process: number
  readonly child: ChildProcess
  readonly errors: Array<string>
  readonly exited: Deferred.Deferred<{ readonly code: number | null; readonly signal: string | null }>
}

/** Starts one worker process and waits for its `ready`; SIGKILLed when the scope closes if still running. */
const spawnWorker = (config: FlowRateWorkerConfig) =>
  Effect.gen(function*() {
    const child = spawn(process.execPath, [join(here, "flow-rate-worker.ts"), JSON.stringify(config)], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"]
    })
    const ready = yield* Deferred.make<void>()
    const exited = yield* Deferred.make<{ code: number | null; signal: string | null }>()
    const errors: Array<string> = []
    child.once("exit", (code, signal) => {
      Deferred.doneUnsafe(exited, Effect.succeed({ code, signal }))
      Deferred.doneUnsafe(ready, Effect.die(new Error(`worker ${config.process} exited (${code ?? signal}) before it was ready`)))
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (line.startsWith("ready")) Deferred.doneUnsafe(ready, Effect.void)
      else if (line.startsWith("error ")) errors.push(line.slice("error ".length))
    })
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGKILL")
          yield* Deferred.await(exited)
        }
      })
    )
    yield* Deferred.await(ready)
    return { process: config.process, child, errors, exited } satisfies Child
  })

/**
 * The limiter's windows as seen in the sorted start times (see the header): each opens SLACK_MS
 * before the first start not yet counted and counts the starts before its end.
 */
const windowsOf = (times: ReadonlyArray<number>): Array<{ readonly opened: number; readonly count: number }> => {
  const windows: Array<{ opened: number; count: number }> = []
  let i = 0
  while (i < times.length) {
    const opened = times[i]! - SLACK_MS
    let count = 0
    while (i < times.length && times[i]! < opened + INTERVAL_MS) {
      count++
      i++
    }
    windows.push({ opened, count })
  }
  return windows
}

/** The most starts in one bucket of a fixed grid of intervals from `origin`. */
const gridMax = (times: ReadonlyArray<number>, origin: number): number => {
  const counts = new Map<number, number>()
  for (const t of times) {
    const b = Math.floor((t - origin) / INTERVAL_MS)
    counts.set(b, (counts.get(b) ?? 0) + 1)
  }
  return Math.max(0, ...counts.values())
}

/** The most entries of sorted `times` within any interval of INTERVAL_MS. */
const slidingMax = (times: ReadonlyArray<number>): number => {
  let max = 0
  let start = 0
  for (let end = 0; end < times.length; end++) {
    while (times[end]! - times[start]! >= INTERVAL_MS) start++
    max = Math.max(max, end - start + 1)
  }
  return max
}

/**
 * Figures from the limiter's own windows, as each handler read them from rate_windows when it
 * logged its start (reported, not asserted: a handler that logged after its window ended would
 * read the next one): starts per window, the spacing of window starts, and how long after its
 * window's start each run logged its start (the spread the SLACK_MS margin is for).
 */
const limiterFigures = (rows: ReadonlyArray<{ readonly at_ms: number; readonly window_ms: number | null }>) => {
  const perWindow = new Map<number, { count: number; first: number }>()
  const delays: Array<number> = []
  for (const r of rows) {
    if (r.window_ms === null) continue
    const key = Math.round(r.window_ms * 1000) // to the microsecond: one window, one key
    const w = perWindow.get(key)
    if (w === undefined) perWindow.set(key, { count: 1, first: r.at_ms - r.window_ms })
    else w.count++
    delays.push(Math.round(r.at_ms - r.window_ms))
  }
  const starts = [...perWindow.keys()].sort((a, b) => a - b)
  const counts = [...perWindow.values()]
  return {
    windows: perWindow.size,
    perWindowMax: Math.max(0, ...counts.map((w) => w.count)),
    startSpacingMs: Chaos_.summary(starts.slice(1).map((s, i) => Math.round((s - starts[i]!) / 1000))),
    firstLogDelayMs: Chaos_.summary(counts.map((w) => Math.round(w.first))),
    logDelayMs: Chaos_.summary(delays)
  }
}

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: a queue's rate limit across processes", (it) => {
  it.effect(`three workers start at most ${LIMIT} jobs per second of queue ${queue}, within 5 % of it, for ${RUN_MS / 1000} s`, () =>
    Effect.gen(function*() {
      const sql = yield* Chaos_.sqlClient
      const jobs = yield* Jobs.Jobs
      const { url } = yield* Chaos_.ChaosDb
      yield* sql.unsafe(logTableDdl)
      const workers = yield* Effect.forEach(
        Array.from({ length: PROCESSES }, (_, i) => i + 1),
        (n) =>
          spawnWorker({
            url,
            workerId: `rate-fleet-w${n}`,
            process: n,
            concurrency: CONCURRENCY,
            rate: { limit: LIMIT, intervalMillis: INTERVAL_MS }
          }),
        { concurrency: "unbounded" }
      )
      // All three are claiming (idle) before the backlog arrives: its NOTIFY wakes them together.
      yield* jobs.enqueueMany(RateFleetJob, Array.from({ length: BACKLOG }, (_, i) => ({ i, sleepMs: SLEEP_MS })))

      // The run's origin is the first start, on the database's clock; it ends RUN_MS later. Let the
      // workers go on a little past that, so that the starts of the last counted window are logged.
      const t0 = yield* Chaos_.waitUntil(
        "a first start",
        Effect.map(sql<{ readonly t: number | null }>`SELECT min(at_ms) AS t FROM rate_fleet_log`, (rows) =>
          Option.fromNullishOr(rows[0]!.t)).pipe(Effect.orDie),
        { timeout: "30 seconds" }
      )
      yield* Chaos_.waitUntil(
        `the database's clock ${RUN_MS + 1500} ms past the first start`,
        Effect.map(
          sql<{ readonly now: number }>`SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS now`,
          (rows) => (rows[0]!.now >= t0 + RUN_MS + 1500 ? Option.some(true) : Option.none())
        ).pipe(Effect.orDie),
        { timeout: Duration.millis(RUN_MS + 60_000) }
      )
      for (const w of workers) w.child.kill("SIGTERM")
      const exits = yield* Effect.forEach(workers, (w) => Deferred.await(w.exited)).pipe(Effect.timeout("30 seconds"))

      const rows = yield* sql<
        { readonly job_id: string; readonly process: number; readonly attempt: number; readonly at_ms: number; readonly window_ms: number | null }
      >`SELECT job_id::text, process, attempt, at_ms, window_ms FROM rate_fleet_log ORDER BY at_ms`
      const times = rows.map((r) => r.at_ms)
      const windows = windowsOf(times)
      const end = t0 + RUN_MS
      const counted = rows.filter((r) => r.at_ms < end)
      const countedWindows = windows.filter((w) => w.opened + SLACK_MS < end)
      const perProcess: Record<number, number> = {}
      for (const r of counted) perProcess[r.process] = (perProcess[r.process] ?? 0) + 1
      const startsOf = new Map<string, number>()
      for (const r of rows) startsOf.set(r.job_id, (startsOf.get(r.job_id) ?? 0) + 1)
      const startedTwice = [...startsOf.values()].filter((n) => n > 1).length
      const [attempts] = yield* sql<{ readonly max: number; readonly running: number }>`
        SELECT coalesce(max(attempt), 0)::int AS max, count(*) FILTER (WHERE state = 'running')::int AS running
        FROM effect_jobs.jobs WHERE queue = ${queue}`
      const expected = (LIMIT * RUN_MS) / INTERVAL_MS
      const periods = countedWindows.slice(1).map((w, i) => w.opened - countedWindows[i]!.opened)
      const figures = {
        processes: PROCESSES,
        concurrency: CONCURRENCY,
        limit: LIMIT,
        intervalMs: INTERVAL_MS,
        runMs: RUN_MS,
        expected,
        total: counted.length,
        deviationPercent: Math.round((10_000 * (counted.length - expected)) / expected) / 100,
        windows: countedWindows.length,
        perWindowMin: Math.min(...countedWindows.map((w) => w.count)),
        perWindowMax: Math.max(...windows.map((w) => w.count)),
        /** From one window's first start to the next one's: the interval plus the wake-up gap. */
        windowPeriodMs: Chaos_.summary(periods.map((p) => Math.round(p))),
        fixedGridMax: gridMax(times, t0 - SLACK_MS),
        slidingWindowMax: slidingMax(times),
        limiter: limiterFigures(rows),
        perProcess,
        startsAfterEnd: rows.length - counted.length,
        startedTwice,
        maxAttempt: attempts!.max,
        workerErrors: workers.flatMap((w) => w.errors)
      }
      yield* Chaos_.recordResult("flowRate.fleet", figures)
      console.log(`flow rate fleet: ${JSON.stringify(figures)}`)
      console.log(`flow rate fleet, starts per window: ${countedWindows.map((w) => w.count).join(" ")}`)

      for (const e of exits) assert.deepStrictEqual(e, { code: 0, signal: null }, "graceful exit")
      assert.strictEqual(attempts!.running, 0, "nothing left running after the graceful stops")
      assert.isAtMost(figures.perWindowMax, LIMIT, `no window over the limit: ${JSON.stringify(windows)}`)
      // The same from the limiter's side: its windows as the handlers read them (see limiterFigures).
      assert.isAtMost(figures.limiter.perWindowMax, LIMIT, "no window of rate_windows over the limit")
      assert.isAtLeast(figures.limiter.startSpacingMs.min ?? INTERVAL_MS, INTERVAL_MS, "every window (used up) lasted an interval")
      assert.isAtMost(Math.abs(counted.length - expected), 0.05 * expected, `within 5 % of ${expected}: ${counted.length}`)
      for (let n = 1; n <= PROCESSES; n++) assert.isAbove(perProcess[n] ?? 0, 0, `process ${n} started jobs`)
      assert.strictEqual(startedTwice, 0, "no job started twice (nothing was killed)")
      assert.isTrue(rows.every((r) => r.attempt === 1), "every logged start is a first attempt")
      assert.isAtMost(attempts!.max, 1, "no job spent a second attempt")
    }))
})
