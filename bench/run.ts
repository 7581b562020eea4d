/**
 * Benchmarks job queues side by side on ONE Postgres, prints a table and writes
 * bench/results/latest.json.
 *
 *   npm run bench                          # defaults below, embedded Postgres
 *   DATABASE_URL=postgres://... npm run bench
 *   node bench/run.ts --jobs 5000 --runs 1 --adapters graphile-worker,pg-boss --scenarios drain,wake
 *
 * Every (adapter, scenario, run) executes in its own child process (bench/run-one.ts)
 * against a freshly created database `bench_<adapter>_<n>` that is dropped afterwards.
 * Runs are interleaved (run 1 of every adapter, then run 2 ...) so slow drift of the
 * machine does not land on a single system.
 *
 * Options (flag, env, default):
 *   --jobs            BENCH_JOBS             20000  jobs per drain / enqueue-many run
 *   --runs            BENCH_RUNS             3      runs per throughput scenario (median reported)
 *   --concurrency     BENCH_CONCURRENCY      24     worker concurrency (pg-boss: fixed 4 x 100, PersistedQueue: 64 takers)
 *   --wake-samples    BENCH_WAKE_SAMPLES     1000   wake-up latency samples (one run)
 *   --wake-budget-ms  BENCH_WAKE_BUDGET_MS   20000  stop sampling a (polling) system after this long
 *   --adapters        BENCH_ADAPTERS         all    comma-separated names (see bench/adapters/index.ts)
 *   --scenarios       BENCH_SCENARIOS        drain,enqueue,wake
 *                                                  also: drain-history, drain-future (alias: history),
 *                                                  scaleout, soak, io, longtx; "all" = every scenario
 *   --history-rows    BENCH_HISTORY_ROWS     1000000 filler rows for drain-history / drain-future
 *   --scaleout-jobs   BENCH_SCALEOUT_JOBS    50000  jobs per scale-out run
 *   --scaleout-procs  BENCH_SCALEOUT_PROCS   1,2,4  worker process counts
 *   --scaleout-job-ms BENCH_SCALEOUT_JOB_MS  0      scale-out handlers wait this long (a timer, like a
 *                                                  call to another service); 0 = no-op jobs
 *   --soak-jobs       BENCH_SOAK_JOBS        1000000 jobs drained by one worker in the soak
 *   --rss-interval-ms BENCH_RSS_INTERVAL_MS  500    soak RSS sampling interval
 *   --timeout-ms      BENCH_TIMEOUT_MS       240000 per child process (soak: more, see soakTimeoutMs)
 *   --pg-stat-statements                     load pg_stat_statements in the embedded server and
 *                                                  write each run's top statements to the JSON
 *   --quiet-below     BENCH_QUIET_BELOW      0.2    before each step, wait until the machine (nothing of
 *   --quiet-wait-ms   BENCH_QUIET_WAIT_MS    5000   ours running) is at most this busy, for at most this long
 *   --noisy-above     BENCH_NOISY_ABOVE      0.2    a throughput run during which other processes used more
 *   --retries         BENCH_RETRIES          1      than this share of the CPU is run again (this many times)
 *   --io-jobs         BENCH_IO_JOBS          20000  io: jobs drained by one process
 *   --io-concurrency  BENCH_IO_CONCURRENCY   500    io: worker concurrency
 *   --io-job-ms       BENCH_IO_JOB_MS        10     io: each handler waits this long on a timer
 *   --longtx-hold-ms  BENCH_LONGTX_HOLD_MS   60000  longtx: a session stays idle in transaction this long
 *                                                  (the issue's full case: 600000)
 *   --longtx-before-ms BENCH_LONGTX_BEFORE_MS 15000 longtx: the steady phase measured before the hold
 *   --longtx-rate     BENCH_LONGTX_RATE      300    longtx: jobs/s of the paced producer
 *   --servers         BENCH_SERVERS          -      e.g. embedded,pg15: run the whole set on each server in
 *                                                  turn, one table each (pg15 = BENCH_PG15_URL or
 *                                                  postgres://postgres@127.0.0.1:5432/test; env = DATABASE_URL;
 *                                                  or a postgres:// URL). Default: DATABASE_URL, else embedded.
 *   --out             BENCH_OUT              bench/results/latest.json
 *
 * An adapter takes part only in the scenarios its entry lists (bench/adapters/index.ts).
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { arch, cpus, freemem, loadavg, platform, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { startEmbeddedPostgres } from "../scripts/embedded-postgres.ts"
import type { DrainResult, PgWork } from "./adapter.ts"
import { adapters } from "./adapters/index.ts"
import { findPgbench } from "./adapters/pgbench.ts"
import type { LongTxResult, OneResult, RssSample, Scenario } from "./protocol.ts"
import { DEFAULT_SCENARIOS, isScenario, parseResult, SCENARIO_ALIASES, SCENARIOS } from "./protocol.ts"
import { openSql, withDatabase, withSql } from "./sql.ts"
import { median, percentile, round } from "./stats.ts"

const here = dirname(fileURLToPath(import.meta.url))
const BASELINE = "graphile-worker-batched"

// ---------------------------------------------------------------------------------------------
// configuration

const { values: flags } = parseArgs({
  options: {
    jobs: { type: "string" },
    runs: { type: "string" },
    concurrency: { type: "string" },
    "wake-samples": { type: "string" },
    "wake-budget-ms": { type: "string" },
    adapters: { type: "string" },
    scenarios: { type: "string" },
    "history-rows": { type: "string" },
    "scaleout-jobs": { type: "string" },
    "scaleout-procs": { type: "string" },
    "scaleout-job-ms": { type: "string" },
    "soak-jobs": { type: "string" },
    "rss-interval-ms": { type: "string" },
    "timeout-ms": { type: "string" },
    "pg-stat-statements": { type: "boolean" },
    "quiet-below": { type: "string" },
    "quiet-wait-ms": { type: "string" },
    "noisy-above": { type: "string" },
    retries: { type: "string" },
    "io-jobs": { type: "string" },
    "io-concurrency": { type: "string" },
    "io-job-ms": { type: "string" },
    "longtx-hold-ms": { type: "string" },
    "longtx-before-ms": { type: "string" },
    "longtx-rate": { type: "string" },
    servers: { type: "string" },
    out: { type: "string" }
  }
})

const setting = (flag: string | undefined, env: string, fallback: string): string =>
  flag ?? process.env[env] ?? fallback

const positiveInt = (name: string, text: string): number => {
  const n = Number(text)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, got ${text}`)
  return n
}

const nonNegativeInt = (name: string, text: string): number => {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${text}`)
  return n
}

const config = {
  jobs: positiveInt("jobs", setting(flags.jobs, "BENCH_JOBS", "20000")),
  runs: positiveInt("runs", setting(flags.runs, "BENCH_RUNS", "3")),
  concurrency: positiveInt("concurrency", setting(flags.concurrency, "BENCH_CONCURRENCY", "24")),
  wakeSamples: positiveInt("wake-samples", setting(flags["wake-samples"], "BENCH_WAKE_SAMPLES", "1000")),
  wakeBudgetMs: positiveInt("wake-budget-ms", setting(flags["wake-budget-ms"], "BENCH_WAKE_BUDGET_MS", "20000")),
  timeoutMs: positiveInt("timeout-ms", setting(flags["timeout-ms"], "BENCH_TIMEOUT_MS", "240000")),
  adapters: setting(flags.adapters, "BENCH_ADAPTERS", adapters.map((a) => a.name).join(","))
    .split(",").map((s) => s.trim()).filter((s) => s !== ""),
  scenarios: setting(flags.scenarios, "BENCH_SCENARIOS", DEFAULT_SCENARIOS.join(","))
    .split(",").map((s) => s.trim()).filter((s) => s !== ""),
  historyRows: positiveInt("history-rows", setting(flags["history-rows"], "BENCH_HISTORY_ROWS", "1000000")),
  scaleoutJobs: positiveInt("scaleout-jobs", setting(flags["scaleout-jobs"], "BENCH_SCALEOUT_JOBS", "50000")),
  scaleoutProcs: setting(flags["scaleout-procs"], "BENCH_SCALEOUT_PROCS", "1,2,4")
    .split(",").map((s) => positiveInt("scaleout-procs", s.trim())),
  scaleoutJobMillis: nonNegativeInt("scaleout-job-ms", setting(flags["scaleout-job-ms"], "BENCH_SCALEOUT_JOB_MS", "0")),
  soakJobs: positiveInt("soak-jobs", setting(flags["soak-jobs"], "BENCH_SOAK_JOBS", "1000000")),
  rssIntervalMs: positiveInt("rss-interval-ms", setting(flags["rss-interval-ms"], "BENCH_RSS_INTERVAL_MS", "500")),
  pgStatStatements: flags["pg-stat-statements"] === true,
  quietBelow: Number(setting(flags["quiet-below"], "BENCH_QUIET_BELOW", "0.2")),
  quietWaitMs: Number(setting(flags["quiet-wait-ms"], "BENCH_QUIET_WAIT_MS", "5000")),
  noisyAbove: Number(setting(flags["noisy-above"], "BENCH_NOISY_ABOVE", "0.2")),
  retries: Number(setting(flags.retries, "BENCH_RETRIES", "1")),
  ioJobs: positiveInt("io-jobs", setting(flags["io-jobs"], "BENCH_IO_JOBS", "20000")),
  ioConcurrency: positiveInt("io-concurrency", setting(flags["io-concurrency"], "BENCH_IO_CONCURRENCY", "500")),
  ioJobMillis: nonNegativeInt("io-job-ms", setting(flags["io-job-ms"], "BENCH_IO_JOB_MS", "10")),
  longtxHoldMs: positiveInt("longtx-hold-ms", setting(flags["longtx-hold-ms"], "BENCH_LONGTX_HOLD_MS", "60000")),
  longtxBeforeMs: positiveInt("longtx-before-ms", setting(flags["longtx-before-ms"], "BENCH_LONGTX_BEFORE_MS", "15000")),
  longtxRate: positiveInt("longtx-rate", setting(flags["longtx-rate"], "BENCH_LONGTX_RATE", "300")),
  /** empty: DATABASE_URL if set, else embedded (as before --servers existed) */
  servers: setting(flags.servers, "BENCH_SERVERS", "").split(",").map((s) => s.trim()).filter((s) => s !== ""),
  out: setting(flags.out, "BENCH_OUT", join(here, "results", "latest.json"))
}

for (const name of config.adapters) {
  if (!adapters.some((a) => a.name === name)) {
    throw new Error(`unknown adapter "${name}"; known: ${adapters.map((a) => a.name).join(", ")}`)
  }
}
const scenarios: ReadonlyArray<Scenario> = (() => {
  const wanted = new Set<Scenario>()
  for (const s of config.scenarios) {
    const alias = SCENARIO_ALIASES[s]
    if (alias !== undefined) for (const a of alias) wanted.add(a)
    else if (isScenario(s)) wanted.add(s)
    else throw new Error(`unknown scenario "${s}"; known: ${[...SCENARIOS, ...Object.keys(SCENARIO_ALIASES)].join(", ")}`)
  }
  return SCENARIOS.filter((s) => wanted.has(s)) // canonical order
})()
const selected = adapters.filter((a) => config.adapters.includes(a.name))
const takesPart = (adapter: string, scenario: Scenario): boolean =>
  (adapters.find((a) => a.name === adapter)?.scenarios ?? DEFAULT_SCENARIOS).includes(scenario)

/** The soak drains far more jobs than the other scenarios: allow ~0.5 ms per job on top. */
const soakTimeoutMs = Math.max(config.timeoutMs, 120_000 + config.soakJobs * 0.5)

const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}

// ---------------------------------------------------------------------------------------------
// one child process

interface ChildRun {
  readonly result: OneResult
  readonly elapsedMs: number
}

const runChild = (
  adapter: string,
  scenario: Scenario,
  url: string,
  pgPid: number | null,
  procs: number
): Promise<ChildRun> =>
  new Promise((resolve) => {
    const t0 = performance.now()
    const timeoutMs = scenario === "soak"
      ? soakTimeoutMs
      : scenario === "longtx"
      ? Math.max(config.timeoutMs, config.longtxBeforeMs + config.longtxHoldMs + 120_000)
      : config.timeoutMs
    const child = spawn(process.execPath, [
      "--expose-gc",
      join(here, "run-one.ts"),
      adapter, scenario, url,
      "--jobs", String(config.jobs),
      "--concurrency", String(config.concurrency),
      "--wake-samples", String(config.wakeSamples),
      "--wake-budget-ms", String(config.wakeBudgetMs),
      "--history-rows", String(config.historyRows),
      "--scaleout-jobs", String(config.scaleoutJobs),
      "--scaleout-job-ms", String(config.scaleoutJobMillis),
      "--procs", String(procs),
      "--soak-jobs", String(config.soakJobs),
      "--rss-interval-ms", String(config.rssIntervalMs),
      "--io-jobs", String(config.ioJobs),
      "--io-concurrency", String(config.ioConcurrency),
      "--io-job-ms", String(config.ioJobMillis),
      "--longtx-hold-ms", String(config.longtxHoldMs),
      "--longtx-before-ms", String(config.longtxBeforeMs),
      "--longtx-rate", String(config.longtxRate)
    ], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...(pgPid !== null ? { BENCH_PG_PID: String(pgPid) } : {}) },
      // its own process group, so a timeout also kills the worker processes it started
      detached: true
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => {
      stderr += `\n[bench] killed after ${timeoutMs} ms`
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL")
      } catch {
        child.kill("SIGKILL")
      }
    }, timeoutMs)
    child.on("close", (code) => {
      clearTimeout(timer)
      const parsed = parseResult(stdout)
      resolve({
        elapsedMs: performance.now() - t0,
        result: parsed ?? {
          status: "error",
          adapter,
          scenario,
          message: `child exited with ${code} and no result\n${stderr.slice(-4000)}`
        }
      })
    })
  })

// ---------------------------------------------------------------------------------------------
// Postgres

/** The postmaster pid, if the server runs on this machine and /proc can see it. */
const localPostmasterPid = (candidate: number | undefined): number | null => {
  if (candidate === undefined || !Number.isInteger(candidate) || candidate <= 0) return null
  try {
    const comm = readFileSync(`/proc/${candidate}/comm`, "utf8").trim()
    return comm.startsWith("postgres") ? candidate : null
  } catch {
    return null
  }
}

const isLocalHost = (url: string): boolean => {
  const host = new URL(url).hostname
  return host === "127.0.0.1" || host === "localhost" || host === "[::1]" || host === "::1" || host === ""
}

// ---------------------------------------------------------------------------------------------
// main

type RunRecord = OneResult & {
  readonly elapsedMs: number
  readonly database: string
  readonly run: number
  /** 1 unless earlier attempts were discarded as noisy (see `noisy` on the adapter's record). */
  readonly attempt: number
  /** The idle check before the child started (see waitForQuiet). */
  readonly quietCheck: QuietCheck
  /** Share of the machine's CPU other processes used during the timed window (throughput scenarios). */
  readonly othersCpuShareTimed: number | null
  /** 1-minute load average just before the child started (includes the previous steps' own load). */
  readonly load1AtStart: number
  /** Share of all CPUs busy (any process) over the child's lifetime, from /proc/stat. */
  readonly machineBusyFraction: number | null
  readonly topStatements?: ReadonlyArray<StatementStat>
}

interface AdapterRecord {
  readonly name: string
  readonly description: string
  skipped?: string
  readonly runs: Array<RunRecord>
  /** Runs discarded because other processes used more than --noisy-above of the CPU while timed. */
  readonly noisy: Array<RunRecord>
}

interface QuietCheck {
  readonly waitedMs: number
  /** Busy share of the whole machine over the last sample (nothing of ours runs then). */
  readonly busyFraction: number | null
}

/**
 * Between steps nothing of the benchmark runs, so the machine's busy share is other people's
 * work. Sample it over 500 ms until it is below --quiet-below, for at most --quiet-wait-ms.
 */
const waitForQuiet = async (): Promise<QuietCheck> => {
  const t0 = performance.now()
  let fraction: number | null = null
  while (true) {
    const a = machineBusy()
    await new Promise((resolve) => setTimeout(resolve, 500))
    const b = machineBusy()
    fraction = a !== null && b !== null && b.total > a.total ? round((b.busy - a.busy) / (b.total - a.total), 3) : null
    if (fraction === null || fraction <= config.quietBelow || performance.now() - t0 >= config.quietWaitMs) break
  }
  return { waitedMs: round(performance.now() - t0), busyFraction: fraction }
}

/** Other processes' CPU share during the timed window of a throughput result, if known. */
const timedOtherShare = (result: OneResult): number | null => {
  if (result.status !== "ok") return null
  if (result.drain !== undefined) return otherCpuShare(result.drain)
  if (result.scaleout !== undefined) return otherCpuShare(result.scaleout)
  if (result.soak !== undefined) return otherCpuShare(result.soak.drain)
  if (result.io !== undefined) return otherCpuShare(result.io)
  return null
}

/** The commit measured, and which library files differ from it (others edit src/ meanwhile). */
const gitState = (): { readonly commit: string; readonly modified: ReadonlyArray<string> } | null => {
  try {
    const git = (...args: Array<string>) => execFileSync("git", args, { cwd: join(here, ".."), stdio: ["ignore", "pipe", "ignore"] }).toString()
    return {
      commit: git("rev-parse", "--short", "HEAD").trim(),
      modified: git("status", "--porcelain", "--", "src", "migrations").split("\n").filter((l) => l.trim() !== "")
    }
  } catch {
    return null
  }
}

/** Busy and total jiffies of all CPUs (/proc/stat), or null off Linux. */
const machineBusy = (): { readonly busy: number; readonly total: number } | null => {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? ""
    const fields = line.trim().split(/\s+/).slice(1, 9).map(Number)
    const total = fields.reduce((a, b) => a + b, 0)
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0)
    return { busy: total - idle, total }
  } catch {
    return null
  }
}

interface StatementStat {
  readonly calls: number
  readonly totalMs: number
  readonly meanMs: number
  readonly rows: number
  readonly query: string
}

/** The statements of one database by total execution time (pg_stat_statements). */
const topStatements = (admin: ReturnType<typeof openSql>, database: string): Promise<ReadonlyArray<StatementStat>> =>
  admin.run((sql) =>
    sql<StatementStat>`
      SELECT calls::int AS calls, round(total_exec_time::numeric, 1)::float8 AS "totalMs",
             round(mean_exec_time::numeric, 3)::float8 AS "meanMs", rows::int AS rows,
             left(regexp_replace(query, '\\s+', ' ', 'g'), 400) AS query
      FROM pg_stat_statements
      WHERE dbid = (SELECT oid FROM pg_database WHERE datname = ${database})
      ORDER BY total_exec_time DESC
      LIMIT 12`
  ).catch(() => [])

/** Where one set runs: the embedded server, or a server at a URL. */
type Server = { readonly kind: "embedded" } | { readonly kind: "url"; readonly url: string; readonly label: string }

const PG15_URL = "postgres://postgres@127.0.0.1:5432/test"

const serverChoices = (): ReadonlyArray<Server> => {
  const env = process.env["DATABASE_URL"]
  if (config.servers.length === 0) {
    return env === undefined || env === "" ? [{ kind: "embedded" }] : [{ kind: "url", url: env, label: "DATABASE_URL" }]
  }
  return config.servers.map((name): Server => {
    if (name === "embedded") return { kind: "embedded" }
    if (name === "pg15") return { kind: "url", url: process.env["BENCH_PG15_URL"] ?? PG15_URL, label: "pg15" }
    if (name === "env") {
      if (env === undefined || env === "") throw new Error("--servers env: DATABASE_URL is not set")
      return { kind: "url", url: env, label: "DATABASE_URL" }
    }
    if (name.startsWith("postgres://") || name.startsWith("postgresql://")) return { kind: "url", url: name, label: "url" }
    throw new Error(`unknown server "${name}"; use embedded, pg15, env or a postgres:// URL`)
  })
}

const main = async (): Promise<void> => {
  const servers = serverChoices()
  const done: Array<{ readonly report: Record<string, unknown>; readonly table: string }> = []
  for (const server of servers) done.push(await runOnServer(server))
  const out = done.length === 1 ? done[0]?.report : { date: new Date().toISOString(), servers: done.map((d) => d.report) }
  mkdirSync(dirname(config.out), { recursive: true })
  writeFileSync(config.out, `${JSON.stringify(out, null, 2)}\n`)
  for (const d of done) {
    const m = d.report["machine"] as { postgres: string; postgresSource: string }
    if (done.length > 1) process.stdout.write(`\n### Postgres ${m.postgres} (${m.postgresSource})\n`)
    process.stdout.write(`\n${d.table}\n`)
  }
  log(`\nwrote ${config.out}`)
}

/** Embedded: pg_stat_statements always (statements per job); `--pg-stat-statements` also tracks nested ones. */
const embeddedFlags = (): ReadonlyArray<string> => [
  "-c", "shared_preload_libraries=pg_stat_statements",
  "-c", `pg_stat_statements.track=${config.pgStatStatements ? "all" : "top"}`
]

const runOnServer = async (server: Server): Promise<{ readonly report: Record<string, unknown>; readonly table: string }> => {
  const startedAt = new Date()
  const gitAtStart = gitState()
  const t0 = performance.now()
  const loadAtStart = loadavg().map((x) => round(x, 2))
  if ((loadAtStart[0] ?? 0) > cpus().length * 0.5) {
    log(`warning: load average ${loadAtStart.join(" ")} on ${cpus().length} CPUs; other work will skew the numbers`)
  }

  const external = server.kind === "url" ? server.url : undefined
  const embedded = server.kind === "embedded"
    ? await startEmbeddedPostgres({ postgresFlags: embeddedFlags() })
    : undefined
  const adminUrl = embedded?.url ?? external ?? ""
  const admin = openSql(adminUrl)
  try {
    // pg_stat_statements: always on the embedded server (we start it), on DATABASE_URL only if
    // it is already preloaded there (the runner never reconfigures a server it did not start).
    const preloaded = await admin.run((sql) => sql<{ readonly v: string }>`SELECT current_setting('shared_preload_libraries') AS v`)
    const pgss = /(^|,)\s*pg_stat_statements\s*(,|$)/.test(preloaded[0]?.v ?? "")
    if (pgss) {
      await admin.run((sql) => sql`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`).catch((error: unknown) => {
        log(`pg_stat_statements is not available: ${String(error)}`)
      })
    } else {
      log("pg_stat_statements is not loaded on this server: statements per job not measured, transactions per job instead")
    }
    /** A fresh, empty database for one step (with the pg_stat_statements view, where loaded). */
    const prepareDatabase = async (database: string): Promise<void> => {
      await admin.run((sql) => sql`DROP DATABASE IF EXISTS ${sql(database)} WITH (FORCE)`)
      await admin.run((sql) => sql`CREATE DATABASE ${sql(database)}`)
      await admin.run((sql) => sql`CHECKPOINT`).catch(() => undefined) // needs superuser; best effort
      if (pgss) {
        await withSql(withDatabase(adminUrl, database), (sql) => sql`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
          .catch((error: unknown) => log(`pg_stat_statements in ${database}: ${String(error)}`))
        if (config.pgStatStatements) {
          await admin.run((sql) => sql`SELECT pg_stat_statements_reset()`).catch(() => undefined)
        }
      }
    }
    const version = await admin.run((sql) => sql<{ readonly server_version: string }>`SHOW server_version`)
    const serverVersion = version[0]?.server_version ?? "unknown"
    const settings = await admin.run((sql) =>
      sql<{ readonly name: string; readonly setting: string }>`
        SELECT name, setting FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'wal_level')`)
    let pgPid: number | null = null
    if (embedded !== undefined) {
      pgPid = localPostmasterPid(Number(readFileSync(join(embedded.dataDir, "postmaster.pid"), "utf8").split("\n")[0]))
    } else if (isLocalHost(adminUrl)) {
      const rows = await admin.run((sql) => sql<{ readonly pid: string }>`SELECT split_part(pg_read_file('postmaster.pid'), E'\n', 1) AS pid`)
        .catch(() => [])
      pgPid = localPostmasterPid(Number(rows[0]?.pid))
    }
    const pgbench = findPgbench()

    log(`Postgres ${serverVersion} (${server.kind === "embedded" ? "embedded" : server.label})` +
      `${pgPid !== null ? `, postmaster pid ${pgPid}` : ", server CPU not measurable"}`)
    log(`jobs=${config.jobs} runs=${config.runs} concurrency=${config.concurrency} ` +
      `wake samples=${config.wakeSamples} (budget ${config.wakeBudgetMs} ms) adapters=${selected.map((a) => a.name).join(",")}`)

    const records = new Map<string, AdapterRecord>(
      selected.map((a) => [a.name, { name: a.name, description: a.description, runs: [], noisy: [] }])
    )
    const skippedScenario = new Set<string>()
    let dbCounter = 0

    // Interleaved schedule. Within a group: run -> scenario -> [procs ->] adapter, so run 1 of
    // every adapter comes before run 2, and a history drain sits next to the plain drain it is
    // compared with. Adapters only get the scenarios their entry lists.
    const groups: ReadonlyArray<ReadonlyArray<Scenario>> = [
      ["drain", "drain-history", "drain-future"],
      ["enqueue"],
      ["wake"],
      ["scaleout"],
      ["soak"],
      ["io"],
      ["longtx"]
    ]
    interface Step {
      readonly adapter: string
      readonly scenario: Scenario
      readonly run: number
      readonly procs: number
    }
    const plan: Array<Step> = []
    for (const group of groups) {
      const inGroup = group.filter((s) => scenarios.includes(s))
      if (inGroup.length === 0) continue
      const runs = inGroup.every((s) => s === "wake" || s === "soak" || s === "longtx") ? 1 : config.runs
      for (let run = 1; run <= runs; run++) {
        for (const scenario of inGroup) {
          for (const procs of scenario === "scaleout" ? config.scaleoutProcs : [1]) {
            for (const a of selected) {
              if (takesPart(a.name, scenario)) plan.push({ adapter: a.name, scenario, run, procs })
            }
          }
        }
      }
    }

    for (const [i, step] of plan.entries()) {
      const record = records.get(step.adapter)
      if (record === undefined || record.skipped !== undefined) continue
      if (skippedScenario.has(`${step.adapter}/${step.scenario}`)) continue
      const database = `bench_${step.adapter.replace(/[^a-z0-9]/gi, "_").toLowerCase()}_${++dbCounter}`
      await prepareDatabase(database)
      let result: OneResult
      let elapsedMs: number
      for (let attempt = 0; ; attempt++) {
        const quiet = await waitForQuiet()
        const load1 = round(loadavg()[0] ?? 0, 2)
        const busy0 = machineBusy()
        ;({ result, elapsedMs } = await runChild(
          step.adapter,
          step.scenario,
          withDatabase(adminUrl, database),
          pgPid,
          step.procs
        ))
        const busy1 = machineBusy()
        const statements = config.pgStatStatements && pgss ? await topStatements(admin, database) : undefined
        await admin.run((sql) => sql`DROP DATABASE IF EXISTS ${sql(database)} WITH (FORCE)`)
        const others = timedOtherShare(result)
        const entry: RunRecord = {
          ...result,
          elapsedMs,
          database,
          run: step.run,
          attempt: attempt + 1,
          load1AtStart: load1,
          quietCheck: quiet,
          machineBusyFraction: busy0 !== null && busy1 !== null && busy1.total > busy0.total
            ? round((busy1.busy - busy0.busy) / (busy1.total - busy0.total), 3)
            : null,
          othersCpuShareTimed: others === null ? null : round(others, 3),
          ...(statements !== undefined ? { topStatements: statements } : {})
        }
        if (others !== null && others > config.noisyAbove && attempt < config.retries) {
          record.noisy.push(entry)
          log(`  ${step.adapter} ${step.scenario} #${step.run}: other processes used ${fmtPct(others, false)} of the CPU ` +
            `while timed (${result.status === "ok" ? describeOk(result) : result.status}); discarded, running it again`)
          await prepareDatabase(database)
          continue
        }
        record.runs.push(entry)
        break
      }

      const label = `[${String(i + 1).padStart(2)}/${plan.length}] ${step.adapter} ${step.scenario}` +
        `${step.scenario === "scaleout" ? ` x${step.procs}` : ""} #${step.run}`
      switch (result.status) {
        case "skipped":
          log(`${label}: skipped (${result.reason})`)
          if (result.scope === "adapter") record.skipped = result.reason
          else skippedScenario.add(`${step.adapter}/${step.scenario}`)
          break
        case "error":
          log(`${label}: ERROR ${result.message.split("\n").slice(0, 3).join(" | ")}`)
          break
        case "ok":
          log(`${label}: ${describeOk(result)} (${(elapsedMs / 1000).toFixed(1)} s, load ${round(loadavg()[0] ?? 0, 2)})`)
          break
      }
    }

    const summary = summarize([...records.values()])
    const report = {
      date: startedAt.toISOString(),
      durationMs: round(performance.now() - t0),
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? "unknown",
        totalMemoryMB: round(totalmem() / 2 ** 20),
        freeMemoryMB: round(freemem() / 2 ** 20),
        platform: platform(),
        arch: arch(),
        node: process.version,
        loadAverageAtStart: loadAtStart,
        /** load1 at the start of each child, min / median / max */
        loadAverageDuringRun: loadStats(summaryLoads([...records.values()])),
        loadAverageAtEnd: loadavg().map((x) => round(x, 2)),
        postgres: serverVersion,
        postgresSource: server.kind === "embedded" ? "embedded" : server.label,
        postgresSettings: Object.fromEntries(settings.map((s) => [s.name, s.setting])),
        pgbench: pgbench ?? null,
        serverCpuMeasured: pgPid !== null,
        /** statements per job need it; without it the table reports transactions per job */
        pgStatStatements: pgss,
        /** at the start and at the end of the run (others commit meanwhile) */
        git: { start: gitAtStart, end: gitState() }
      },
      config: {
        jobs: config.jobs,
        runs: config.runs,
        concurrency: config.concurrency,
        wakeSamples: config.wakeSamples,
        wakeBudgetMs: config.wakeBudgetMs,
        historyRows: config.historyRows,
        scaleoutJobs: config.scaleoutJobs,
        scaleoutProcs: config.scaleoutProcs,
        scaleoutJobMillis: config.scaleoutJobMillis,
        ioJobs: config.ioJobs,
        ioConcurrency: config.ioConcurrency,
        ioJobMillis: config.ioJobMillis,
        longtxHoldMs: config.longtxHoldMs,
        longtxBeforeMs: config.longtxBeforeMs,
        longtxRate: config.longtxRate,
        soakJobs: config.soakJobs,
        rssIntervalMs: config.rssIntervalMs,
        pgStatStatements: config.pgStatStatements,
        quietBelow: config.quietBelow,
        quietWaitMs: config.quietWaitMs,
        noisyAbove: config.noisyAbove,
        retries: config.retries,
        adapters: selected.map((a) => a.name),
        scenarios,
        baseline: BASELINE
      },
      summary,
      raw: [...records.values()]
    }
    log(`${serverVersion}: done in ${(report.durationMs / 1000).toFixed(0)} s`)
    return { report, table: renderTable(summary, report.machine, report.config) }
  } finally {
    await admin.close()
    await embedded?.stop()
  }
}

/**
 * Share of the machine's CPU capacity that processes other than the worker(s) and the
 * Postgres server used over a timed window: the benchmark's noise floor.
 */
const otherCpuShare = (
  x: { readonly wallMs: number; readonly cpuMicros: number; readonly dbCpuMicros: number | null; readonly machineBusyMicros?: number | null | undefined }
): number | null =>
  x.machineBusyMicros === null || x.machineBusyMicros === undefined || x.dbCpuMicros === null
    ? null
    : Math.max(0, (x.machineBusyMicros - x.cpuMicros - x.dbCpuMicros) / (x.wallMs * 1000 * cpus().length))

/** The database's own WAL (pg_walinspect) where it could be read, else the whole server's. */
const walOf = (w: PgWork): number | null => w.databaseWalBytes ?? w.walBytes

const describeCommitted = (d: DrainResult): string => {
  const w = d.pgWork
  const wal = w === undefined ? null : walOf(w)
  return (typeof d.committedWallMs === "number" ? `, committed ${fmtInt((d.count / d.committedWallMs) * 1000)} jobs/s` : "") +
    (w === undefined
      ? ""
      : `, WAL ${fmtInt(wal === null ? null : wal / d.count)} B/job` +
        (w.statements !== null ? `, ${fmtDec(w.statements / d.count)} stmts/job` : "") +
        (w.transactions !== null ? `, ${fmtDec(w.transactions / d.count)} xacts/job` : ""))
}

const describeOk = (result: Extract<OneResult, { status: "ok" }>): string => {
  if (result.drain !== undefined) {
    const d = result.drain
    const other = otherCpuShare(d)
    return `${fmtInt((d.count / d.wallMs) * 1000)} jobs/s, ${fmtInt(d.cpuMicros / d.count)} µs CPU/job` +
      (result.fillerRows !== undefined ? ` (after ${fmtInt(result.fillerRows)} filler rows)` : "") +
      (typeof d.durableWallMs === "number" ? `, written ${fmtInt((d.count / d.durableWallMs) * 1000)} jobs/s` : "") +
      describeCommitted(d) +
      (d.notWritten !== undefined && d.notWritten > 0 ? `, ${fmtInt(d.notWritten)} OUTCOMES NOT WRITTEN at stop` : "") +
      (other !== null ? `, others ${fmtPct(other, false)} of CPU` : "")
  }
  if (result.io !== undefined) {
    const d = result.io
    return `${fmtInt((d.count / d.wallMs) * 1000)} jobs/s (each waits on a timer)${describeCommitted(d)}`
  }
  if (result.longtx !== undefined) {
    return result.longtx.phases.map((p) =>
      `${p.name}: claim p50 ${fmtMs(p.claimP50Ms)} / p99 ${fmtMs(p.claimP99Ms)} ms, ${fmtInt(p.startedPerSec)} jobs/s`
    ).join("; ") + `; ${result.longtx.notStarted} not started`
  }
  if (result.enqueue !== undefined) return `${fmtInt((result.enqueue.count / result.enqueue.wallMs) * 1000)} jobs/s`
  if (result.wake !== undefined) {
    const s = result.wake.samplesMs
    return `p50 ${fmtMs(percentile(s, 50))} ms, p99 ${fmtMs(percentile(s, 99))} ms, n=${s.length}`
  }
  if (result.scaleout !== undefined) {
    const x = result.scaleout
    const other = otherCpuShare(x)
    return `${x.procs} procs: ${fmtInt((x.count / x.wallMs) * 1000)} jobs/s, split ${x.perProcess.map(fmtInt).join("/")}` +
      (other !== null ? `, others ${fmtPct(other, false)} of CPU` : "")
  }
  if (result.soak !== undefined) {
    const soak = soakSummary(result.soak.samples, result.soak.count)
    const d = result.soak.drain
    return `${fmtInt((d.count / d.wallMs) * 1000)} jobs/s, RSS ${fmtMB(soak.startMB)} -> peak ${fmtMB(soak.peakMB)} -> end ${fmtMB(soak.endMB)} MB`
  }
  return "ok"
}

// ---------------------------------------------------------------------------------------------
// summary and table

interface ScaleoutPoint {
  readonly procs: number
  readonly jobsPerSec: number | null
  readonly jobsPerSecSamples: ReadonlyArray<number>
  /** vs the median with 1 process, when measured */
  readonly speedup: number | null
  readonly cpuMicrosPerJob: number | null
  readonly dbCpuMicrosPerJob: number | null
}

interface IoSummary {
  readonly jobsPerSec: number | null
  readonly jobsPerSecSamples: ReadonlyArray<number>
  readonly committedJobsPerSec: number | null
  readonly cpuMicrosPerJob: number | null
  readonly dbCpuMicrosPerJob: number | null
  readonly walBytesPerJob: number | null
  readonly statementsPerJob: number | null
  readonly transactionsPerJob: number | null
}

interface SoakSummary {
  readonly count: number
  readonly jobsPerSec: number | null
  /** first sample, taken as the worker starts (after the producer process finished) */
  readonly startMB: number | null
  /** at 10 % of the jobs (after warm-up: JIT, pools, buffers at size) */
  readonly warmMB: number | null
  readonly peakMB: number | null
  readonly endMB: number | null
  /** median of the samples from 10 % of the jobs to the last one before the drain finished */
  readonly steadyMedianMB: number | null
  readonly steadyMinMB: number | null
  readonly steadyMaxMB: number | null
  /** every steady-state sample within ±10 % of the steady median */
  readonly flatWithin10pct: boolean | null
  /** (end - warm) / warm */
  readonly growthAfterWarmup: number | null
  readonly heapUsedWarmMB: number | null
  readonly heapUsedEndMB: number | null
  readonly samples: number
}

interface Summary {
  readonly name: string
  readonly description: string
  readonly skipped: string | null
  readonly errors: ReadonlyArray<string>
  readonly drainJobsPerSec: number | null
  readonly drainJobsPerSecSamples: ReadonlyArray<number>
  readonly cpuMicrosPerJob: number | null
  readonly dbCpuMicrosPerJob: number | null
  /** effect-jobs only: until the last outcome was written, from its Observer (median). */
  readonly durableJobsPerSec: number | null
  /** Every system: until the database showed every job done (runner's poll, median). */
  readonly committedJobsPerSec: number | null
  readonly committedJobsPerSecSamples: ReadonlyArray<number>
  /** drain: WAL bytes (whole server), top-level statements, transactions per job (medians). */
  readonly walBytesPerJob: number | null
  readonly statementsPerJob: number | null
  readonly transactionsPerJob: number | null
  readonly io: IoSummary | null
  readonly longtx: LongTxResult | null
  /** Median share of the machine's CPU that other processes used during the timed drains. */
  readonly drainOtherCpuShare: number | null
  /** Drain-type runs (any scenario) that ended with outcomes not written, as "scenario: n" lines. */
  readonly notWritten: ReadonlyArray<string>
  readonly enqueueJobsPerSec: number | null
  readonly enqueueJobsPerSecSamples: ReadonlyArray<number>
  readonly wakeP50Ms: number | null
  readonly wakeP99Ms: number | null
  readonly wakeSamples: number
  readonly wakeSkipped: string | null
  readonly drainVsBaseline: number | null
  readonly enqueueVsBaseline: number | null
  readonly historyCompletedJobsPerSec: number | null
  readonly historyCompletedSamples: ReadonlyArray<number>
  /** history drain / this system's plain drain (medians) */
  readonly historyCompletedVsEmpty: number | null
  readonly historyScheduledJobsPerSec: number | null
  readonly historyScheduledSamples: ReadonlyArray<number>
  readonly historyScheduledVsEmpty: number | null
  /** The same three drains until the last outcome was written (effect-jobs); null: some run never got there. */
  readonly writtenEmpty: number | null
  readonly writtenCompleted: number | null
  readonly writtenScheduled: number | null
  readonly scaleout: ReadonlyArray<ScaleoutPoint>
  readonly soak: SoakSummary | null
}

const MB = 2 ** 20

const soakSummary = (samples: ReadonlyArray<RssSample>, count: number): Omit<SoakSummary, "jobsPerSec" | "count"> => {
  const running = samples.filter((s) => s.completed < count)
  const warmIndex = running.findIndex((s) => s.completed >= count * 0.1)
  const steady = warmIndex < 0 ? [] : running.slice(warmIndex)
  const rss = (s: RssSample | undefined) => (s === undefined ? null : round(s.rssBytes / MB, 1))
  const heap = (s: RssSample | undefined) => (s === undefined ? null : round(s.heapUsedBytes / MB, 1))
  const steadyRss = steady.map((s) => s.rssBytes / MB)
  const med = median(steadyRss)
  const warm = steady[0]
  const end = running[running.length - 1]
  return {
    startMB: rss(samples[0]),
    warmMB: rss(warm),
    peakMB: samples.length === 0 ? null : round(Math.max(...samples.map((s) => s.rssBytes)) / MB, 1),
    endMB: rss(end),
    steadyMedianMB: med === null ? null : round(med, 1),
    steadyMinMB: steadyRss.length === 0 ? null : round(Math.min(...steadyRss), 1),
    steadyMaxMB: steadyRss.length === 0 ? null : round(Math.max(...steadyRss), 1),
    flatWithin10pct: med === null ? null : steadyRss.every((x) => x >= med * 0.9 && x <= med * 1.1),
    growthAfterWarmup: warm !== undefined && end !== undefined ? round((end.rssBytes - warm.rssBytes) / warm.rssBytes, 3) : null,
    heapUsedWarmMB: heap(warm),
    heapUsedEndMB: heap(end),
    samples: samples.length
  }
}

const summaryLoads = (records: ReadonlyArray<AdapterRecord>): ReadonlyArray<number> =>
  records.flatMap((r) => r.runs.map((run) => run.load1AtStart))

const loadStats = (loads: ReadonlyArray<number>) =>
  loads.length === 0
    ? null
    : { min: Math.min(...loads), median: round(median(loads) ?? 0, 2), max: Math.max(...loads) }

/** Median rate until the last outcome was written; null if unknown or if a run never wrote them all. */
const writtenMedian = (ds: ReadonlyArray<DrainResult>): number | null =>
  ds.length === 0 || ds.some((d) => typeof d.durableWallMs !== "number")
    ? null
    : median(ds.map((d) => (d.count / (d.durableWallMs as number)) * 1000))

/** Jobs/s until the database showed every job done (runs where it did). */
const committedRates = (ds: ReadonlyArray<DrainResult>): Array<number> =>
  ds.flatMap((d) => (typeof d.committedWallMs === "number" ? [(d.count / d.committedWallMs) * 1000] : []))

/** Median per-job figure of the runner's Postgres readings (bench/pgwork.ts). */
const perJob = (ds: ReadonlyArray<DrainResult>, f: (w: PgWork) => number | null): number | null =>
  median(ds.flatMap((d) => {
    const x = d.pgWork === undefined ? null : f(d.pgWork)
    return x === null ? [] : [x / d.count]
  }))

const ioSummary = (ds: ReadonlyArray<DrainResult>): IoSummary | null =>
  ds.length === 0 ? null : {
    jobsPerSec: median(ds.map((d) => (d.count / d.wallMs) * 1000)),
    jobsPerSecSamples: ds.map((d) => round((d.count / d.wallMs) * 1000)),
    committedJobsPerSec: median(committedRates(ds)),
    cpuMicrosPerJob: median(ds.map((d) => d.cpuMicros / d.count)),
    dbCpuMicrosPerJob: median(ds.flatMap((d) => {
      const micros = d.pgWork?.dbCpuMicros ?? d.dbCpuMicros
      return micros !== null ? [micros / d.count] : []
    })),
    walBytesPerJob: perJob(ds, walOf),
    statementsPerJob: perJob(ds, (w) => w.statements),
    transactionsPerJob: perJob(ds, (w) => w.transactions)
  }

const summarize = (records: ReadonlyArray<AdapterRecord>): ReadonlyArray<Summary> => {
  const partial = records.map((r) => {
    const ok = r.runs.flatMap((run) => (run.status === "ok" ? [run] : []))
    const drainsOf = (scenario: Scenario): Array<DrainResult> =>
      ok.flatMap((run) => (run.scenario === scenario && run.drain !== undefined ? [run.drain] : []))
    const rates = (ds: ReadonlyArray<DrainResult>) => ds.map((d) => (d.count / d.wallMs) * 1000)
    const drains = drainsOf("drain")
    const enqueues = ok.flatMap((run) => (run.enqueue !== undefined ? [run.enqueue] : []))
    const wake = ok.flatMap((run) => run.wake?.samplesMs ?? [])
    const drainRates = rates(drains)
    const enqueueRates = enqueues.map((e) => (e.count / e.wallMs) * 1000)
    // the runner's window (start -> committed) where it measured one, else the handler window
    const dbCpu = drains.flatMap((d) => {
      const micros = d.pgWork?.dbCpuMicros ?? d.dbCpuMicros
      return micros !== null ? [micros / d.count] : []
    })
    const durable = drains.flatMap((d) => (typeof d.durableWallMs === "number" ? [(d.count / d.durableWallMs) * 1000] : []))
    const wakeSkip = r.runs.find((run) => run.status === "skipped" && run.scenario === "wake")
    const historyCompleted = rates(drainsOf("drain-history"))
    const historyScheduled = rates(drainsOf("drain-future"))
    const drainMedian = median(drainRates)
    const vsEmpty = (xs: ReadonlyArray<number>) => {
      const m = median(xs)
      return m !== null && drainMedian !== null && drainMedian > 0 ? round(m / drainMedian, 3) : null
    }
    const scaleouts = ok.flatMap((run) => (run.scaleout !== undefined ? [run.scaleout] : []))
    const procsSeen = [...new Set(scaleouts.map((x) => x.procs))].sort((a, b) => a - b)
    const perProcs = procsSeen.map((procs) => {
      const xs = scaleouts.filter((x) => x.procs === procs)
      return {
        procs,
        jobsPerSec: median(xs.map((x) => (x.count / x.wallMs) * 1000)),
        jobsPerSecSamples: xs.map((x) => round((x.count / x.wallMs) * 1000)),
        cpuMicrosPerJob: median(xs.map((x) => x.cpuMicros / x.count)),
        dbCpuMicrosPerJob: median(xs.flatMap((x) => (x.dbCpuMicros !== null ? [x.dbCpuMicros / x.count] : [])))
      }
    })
    const one = perProcs.find((p) => p.procs === 1)?.jobsPerSec ?? null
    const soakRun = ok.find((run) => run.soak !== undefined)?.soak
    return {
      name: r.name,
      description: r.description,
      skipped: r.skipped ?? null,
      errors: r.runs.flatMap((run) => (run.status === "error" ? [`${run.scenario}: ${run.message.split("\n")[0]}`] : [])),
      drainJobsPerSec: drainMedian,
      drainJobsPerSecSamples: drainRates.map((x) => round(x)),
      cpuMicrosPerJob: median(drains.map((d) => d.cpuMicros / d.count)),
      dbCpuMicrosPerJob: median(dbCpu),
      durableJobsPerSec: median(durable),
      committedJobsPerSec: median(committedRates(drains)),
      committedJobsPerSecSamples: committedRates(drains).map((x) => round(x)),
      walBytesPerJob: perJob(drains, walOf),
      statementsPerJob: perJob(drains, (w) => w.statements),
      transactionsPerJob: perJob(drains, (w) => w.transactions),
      io: ioSummary(ok.flatMap((run) => (run.io !== undefined ? [run.io] : []))),
      longtx: ok.find((run) => run.longtx !== undefined)?.longtx ?? null,
      notWritten: ok.flatMap((run) => {
        const d = run.drain ?? run.soak?.drain
        return d?.notWritten !== undefined && d.notWritten > 0
          ? [`${run.scenario} #${run.run}: ${d.notWritten} of ${d.count} outcomes not written after the stop`]
          : []
      }),
      drainOtherCpuShare: median(drains.flatMap((d) => {
        const o = otherCpuShare(d)
        return o === null ? [] : [round(o, 3)]
      })),
      enqueueJobsPerSec: median(enqueueRates),
      enqueueJobsPerSecSamples: enqueueRates.map((x) => round(x)),
      wakeP50Ms: percentile(wake, 50),
      wakeP99Ms: percentile(wake, 99),
      wakeSamples: wake.length,
      wakeSkipped: wakeSkip?.status === "skipped" ? wakeSkip.reason : null,
      historyCompletedJobsPerSec: median(historyCompleted),
      historyCompletedSamples: historyCompleted.map((x) => round(x)),
      historyCompletedVsEmpty: vsEmpty(historyCompleted),
      historyScheduledJobsPerSec: median(historyScheduled),
      historyScheduledSamples: historyScheduled.map((x) => round(x)),
      historyScheduledVsEmpty: vsEmpty(historyScheduled),
      writtenEmpty: writtenMedian(drains),
      writtenCompleted: writtenMedian(drainsOf("drain-history")),
      writtenScheduled: writtenMedian(drainsOf("drain-future")),
      scaleout: perProcs.map((p) => ({
        ...p,
        speedup: one !== null && p.jobsPerSec !== null && one > 0 ? round(p.jobsPerSec / one, 2) : null
      })),
      soak: soakRun === undefined ? null : {
        count: soakRun.count,
        jobsPerSec: (soakRun.drain.count / soakRun.drain.wallMs) * 1000,
        ...soakSummary(soakRun.samples, soakRun.count)
      }
    }
  })
  const baseline = partial.find((p) => p.name === BASELINE)
  const ratio = (x: number | null, base: number | null | undefined): number | null =>
    x !== null && base !== null && base !== undefined && base > 0 ? round(x / base, 3) : null
  return partial.map((p) => ({
    ...p,
    drainVsBaseline: ratio(p.drainJobsPerSec, baseline?.drainJobsPerSec),
    enqueueVsBaseline: ratio(p.enqueueJobsPerSec, baseline?.enqueueJobsPerSec)
  }))
}

const fmtInt = (x: number | null): string => (x === null ? "-" : Math.round(x).toLocaleString("en-US"))
const fmtMs = (x: number | null): string => (x === null ? "-" : x < 10 ? x.toFixed(1) : Math.round(x).toString())
const fmtDec = (x: number | null): string => (x === null ? "-" : x < 0.1 ? x.toFixed(3) : x.toFixed(2))
const fmtRatio = (x: number | null): string => (x === null ? "-" : `${x.toFixed(2)}x`)
const fmtMB = (x: number | null): string => (x === null ? "-" : x.toFixed(0))
const fmtPct = (x: number | null, signed = true): string =>
  x === null ? "-" : `${signed && x >= 0 ? "+" : ""}${(x * 100).toFixed(signed ? 1 : 0)} %`

/** A Markdown table with right-aligned numeric columns. */
const markdownTable = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join(" | ")} |`
  const rule = `|${widths.map((w, c) => (c === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`
  return [line(header), rule, ...rows.map(line)].join("\n")
}

const renderTable = (
  summary: ReadonlyArray<Summary>,
  machine: {
    readonly cpus: number
    readonly node: string
    readonly postgres: string
    readonly postgresSource: string
    readonly loadAverageAtStart: ReadonlyArray<number>
    readonly loadAverageDuringRun: { readonly min: number; readonly median: number; readonly max: number } | null
  },
  cfg: {
    readonly jobs: number
    readonly runs: number
    readonly concurrency: number
    readonly historyRows: number
    readonly scaleoutJobs: number
    readonly scaleoutJobMillis: number
    readonly ioJobs: number
    readonly ioConcurrency: number
    readonly ioJobMillis: number
    readonly longtxHoldMs: number
    readonly longtxRate: number
    readonly scenarios: ReadonlyArray<Scenario>
  }
): string => {
  const main = summary.filter((s) =>
    s.skipped !== null || s.drainJobsPerSec !== null || s.enqueueJobsPerSec !== null || s.wakeSamples > 0 ||
    s.wakeSkipped !== null || s.errors.length > 0
  )
  const anyStatements = main.some((s) => s.statementsPerJob !== null || s.io?.statementsPerJob != null)
  const rows = main.map((s) => {
    if (s.skipped !== null) return [s.name, "skipped", ...Array.from({ length: 10 }, () => "-")]
    const wake = s.wakeSkipped !== null
      ? "n/a"
      : s.wakeSamples === 0
      ? "-"
      : `${fmtMs(s.wakeP50Ms)} / ${fmtMs(s.wakeP99Ms)}${s.wakeSamples < 100 ? ` (n=${s.wakeSamples})` : ""}`
    return [
      s.name + (s.errors.length > 0 ? " (errors)" : ""),
      fmtInt(s.drainJobsPerSec),
      fmtInt(s.committedJobsPerSec),
      fmtInt(s.enqueueJobsPerSec),
      wake,
      fmtInt(s.cpuMicrosPerJob),
      fmtInt(s.dbCpuMicrosPerJob),
      fmtInt(s.walBytesPerJob),
      fmtDec(s.statementsPerJob),
      fmtDec(s.transactionsPerJob),
      fmtRatio(s.drainVsBaseline),
      fmtPct(s.drainOtherCpuShare, false)
    ]
  })
  const parts: Array<string> = []
  if (rows.length > 0) {
    parts.push(markdownTable(
      [
        "system", "handlers jobs/s", "committed jobs/s", "enqueue-many jobs/s", "wake p50 / p99 ms", "CPU µs/job",
        "DB CPU µs/job", "WAL B/job", "stmts/job", "xacts/job", "drain vs gw-batched", "others' CPU"
      ],
      rows
    ))
    parts.push("")
  }

  const durable = summary.filter((s) => s.durableJobsPerSec !== null)
  if (durable.length > 0) {
    parts.push("Cross-check of the committed rate: effect-jobs' own Observer (`completed` event, after the outcome is " +
      "written) vs the runner's poll of the table (medians):")
    parts.push(markdownTable(
      ["system", "handlers jobs/s", "Observer written jobs/s", "polled committed jobs/s"],
      durable.map((s) => [s.name, fmtInt(s.drainJobsPerSec), fmtInt(s.durableJobsPerSec), fmtInt(s.committedJobsPerSec)])
    ))
    parts.push("")
  }

  const io = summary.filter((s) => s.io !== null)
  if (io.length > 0) {
    const gw = (name: string) => summary.find((s) => s.name === name)?.io?.jobsPerSec ?? null
    const vs = (x: number | null, base: number | null) => (x !== null && base !== null && base > 0 ? fmtRatio(round(x / base, 3)) : "-")
    parts.push(`I/O-bound: ${cfg.ioJobs.toLocaleString("en-US")} jobs, each handler waits ${cfg.ioJobMillis} ms on a timer, ` +
      `concurrency ${cfg.ioConcurrency} in one process (medians).`)
    parts.push(markdownTable(
      ["system", "handlers jobs/s", "committed jobs/s", "CPU µs/job", "DB CPU µs/job", "WAL B/job", "stmts/job", "xacts/job", "vs graphile-worker", "vs gw-batched"],
      io.map((s) => {
        const x = s.io!
        return [
          s.name,
          fmtInt(x.jobsPerSec),
          fmtInt(x.committedJobsPerSec),
          fmtInt(x.cpuMicrosPerJob),
          fmtInt(x.dbCpuMicrosPerJob),
          fmtInt(x.walBytesPerJob),
          fmtDec(x.statementsPerJob),
          fmtDec(x.transactionsPerJob),
          vs(x.jobsPerSec, gw("graphile-worker")),
          vs(x.jobsPerSec, gw(BASELINE))
        ]
      })
    ))
    parts.push("")
  }

  const longtx = summary.filter((s) => s.longtx !== null)
  if (longtx.length > 0) {
    parts.push(`Long transaction: a session idle in transaction (with an xid) for ${fmtInt(cfg.longtxHoldMs / 1000)} s while ` +
      `${cfg.longtxRate} jobs/s are enqueued and one worker (concurrency ${cfg.concurrency}) runs them. Claim latency = ` +
      `enqueue -> handler start; "hold end" = the last minute of the hold (its last third if the hold is under 3 minutes).`)
    parts.push(markdownTable(
      ["system", "claim p50 / p99 ms before", "at hold end", "p99 ratio", "started jobs/s before", "at hold end", "not started at end"],
      longtx.map((s) => {
        const x = s.longtx!
        const before = x.phases.find((p) => p.name === "before")
        const end = x.phases.find((p) => p.name === "hold-end")
        const ratio = before?.claimP99Ms != null && end?.claimP99Ms != null && before.claimP99Ms > 0
          ? fmtRatio(round(end.claimP99Ms / before.claimP99Ms, 3))
          : "-"
        return [
          s.name,
          `${fmtMs(before?.claimP50Ms ?? null)} / ${fmtMs(before?.claimP99Ms ?? null)}`,
          `${fmtMs(end?.claimP50Ms ?? null)} / ${fmtMs(end?.claimP99Ms ?? null)}`,
          ratio,
          fmtInt(before?.startedPerSec ?? null),
          fmtInt(end?.startedPerSec ?? null),
          fmtInt(x.notStarted)
        ]
      })
    ))
    parts.push("")
  }

  const history = summary.filter((s) => s.historyCompletedJobsPerSec !== null || s.historyScheduledJobsPerSec !== null)
  if (history.length > 0) {
    parts.push(`History: drain of ${cfg.jobs.toLocaleString("en-US")} jobs with ${cfg.historyRows.toLocaleString("en-US")} ` +
      `filler rows in the table, vs the same system's drain of an empty table (medians).`)
    parts.push(markdownTable(
      ["system", "empty jobs/s", "+completed jobs/s", "ratio", "+scheduled jobs/s", "ratio", "written: empty / +completed / +scheduled"],
      history.map((s) => [
        s.name,
        fmtInt(s.drainJobsPerSec),
        fmtInt(s.historyCompletedJobsPerSec),
        fmtRatio(s.historyCompletedVsEmpty),
        fmtInt(s.historyScheduledJobsPerSec),
        fmtRatio(s.historyScheduledVsEmpty),
        [s.writtenEmpty, s.writtenCompleted, s.writtenScheduled].map((x) => (x === null ? "not all" : fmtInt(x))).join(" / ")
      ])
    ))
    parts.push("")
  }

  const scale = summary.filter((s) => s.scaleout.length > 0)
  if (scale.length > 0) {
    const procs = [...new Set(scale.flatMap((s) => s.scaleout.map((p) => p.procs)))].sort((a, b) => a - b)
    parts.push(`Scale-out: ${cfg.scaleoutJobs.toLocaleString("en-US")} jobs drained by N worker processes ` +
      `(concurrency ${cfg.concurrency} each${cfg.scaleoutJobMillis > 0 ? `, each job waits ${cfg.scaleoutJobMillis} ms` : ", no-op jobs"}), ` +
      `jobs/s (speedup vs 1 process), medians.`)
    parts.push(markdownTable(
      ["system", ...procs.map((p) => `${p} proc${p > 1 ? "s" : ""}`), "CPU µs/job (1 / max)"],
      scale.map((s) => {
        const at = (p: number) => s.scaleout.find((x) => x.procs === p)
        const first = s.scaleout[0]
        const last = s.scaleout[s.scaleout.length - 1]
        return [
          s.name,
          ...procs.map((p) => {
            const x = at(p)
            return x === undefined ? "-" : `${fmtInt(x.jobsPerSec)} (${fmtRatio(x.speedup)})`
          }),
          `${fmtInt(first?.cpuMicrosPerJob ?? null)} / ${fmtInt(last?.cpuMicrosPerJob ?? null)}`
        ]
      })
    ))
    parts.push("")
  }

  const soaks = summary.filter((s) => s.soak !== null)
  if (soaks.length > 0) {
    parts.push("Soak: one worker process drains all jobs (enqueued beforehand by another process); RSS in MB.")
    parts.push(markdownTable(
      ["system", "jobs", "jobs/s", "RSS start", "at 10 %", "peak", "end", "steady min-max", "flat ±10 %", "end vs 10 %"],
      soaks.map((s) => {
        const k = s.soak!
        return [
          s.name,
          fmtInt(k.count),
          fmtInt(k.jobsPerSec),
          fmtMB(k.startMB),
          fmtMB(k.warmMB),
          fmtMB(k.peakMB),
          fmtMB(k.endMB),
          `${fmtMB(k.steadyMinMB)}-${fmtMB(k.steadyMaxMB)}`,
          k.flatWithin10pct === null ? "-" : k.flatWithin10pct ? "yes" : "no",
          fmtPct(k.growthAfterWarmup)
        ]
      })
    ))
    parts.push("")
  }

  const drainNotes = rows.length === 0 ? [] : [
    `${cfg.jobs.toLocaleString("en-US")} no-op jobs, median of ${cfg.runs} run(s); drain concurrency ${cfg.concurrency} ` +
    `(pg-boss: 4 workers x batch 100; effect-persisted-queue: 64 takers; pgbench-floor: 8 clients x 100 rows).`,
    `pgbench-floor: pgbench -n -M prepared -c 8 -j 2, one statement per transaction claiming 100 rows FOR UPDATE SKIP LOCKED and deleting them.`,
    `others' CPU: share of the machine's CPU used by other processes (not the worker, not Postgres) during the timed drains (median).`
  ]
  const measureNotes = rows.length === 0 && io.length === 0 ? [] : [
    `handlers: until the last handler returned; committed: until a count of the system's unfinished jobs, polled ` +
    `every 2 ms on the runner's own connection, read 0.`,
    `CPU µs/job: worker process (pgbench-floor: the pgbench process); DB CPU µs/job: all Postgres server processes, ` +
    `start -> committed; WAL B/job: the WAL records of the same window that touch the bench database's relations (pg_walinspect; ` +
    `the whole server's pg_current_wal_lsn() difference where it is missing, and in the JSON as walBytes); ` +
    `stmts/job: top-level statements (pg_stat_statements${anyStatements ? "" : ": not loaded on this server"}); ` +
    `xacts/job: xact_commit + xact_rollback of the bench database (pg_stat_database, autovacuum's included); ` +
    `both start -> after the workers' teardown, the runner's own excluded.`
  ]
  const load = machine.loadAverageDuringRun
  const notes = [
    ...drainNotes,
    ...measureNotes,
    `Postgres ${machine.postgres} (${machine.postgresSource}), Node ${machine.node}, ${machine.cpus} CPUs, ` +
    `load average at start ${machine.loadAverageAtStart.join(" ")}` +
    (load !== null ? `, 1-min load at each step min ${load.min} / median ${load.median} / max ${load.max}.` : ".")
  ]
  const skipped = summary.flatMap((s) => (s.skipped !== null ? [`${s.name} skipped: ${s.skipped}`] : []))
  const errors = summary.flatMap((s) => s.errors.map((e) => `error in ${s.name} ${e}`))
  const unwritten = summary.flatMap((s) => s.notWritten.map((e) => `WARNING ${s.name} ${e}`))
  return [...parts, ...notes, ...skipped, ...errors, ...unwritten].join("\n")
}

main().catch((error: unknown) => {
  log(error instanceof Error ? (error.stack ?? error.message) : String(error))
  process.exitCode = 1
})
