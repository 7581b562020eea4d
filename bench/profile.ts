/**
 * Profiles ONE drain of one adapter: where the worker process spends its CPU
 * (`node --cpu-prof`) and what the database spends its time on (`pg_stat_statements`).
 *
 *   node bench/profile.ts [--adapter effect-jobs] [--jobs 20000] [--concurrency 24]
 *                         [--scenario drain|drain-history|drain-future] [--history-rows 1000000]
 *
 * It starts an embedded Postgres with `shared_preload_libraries=pg_stat_statements`
 * (or uses DATABASE_URL, which then needs the extension loaded), creates a database, runs
 * `bench/run-one.ts <adapter> <scenario>` with the V8 CPU profiler running during the
 * timed drain only (BENCH_CPU_PROFILE, sampling every 200 µs), and prints
 *   - the drain result,
 *   - CPU self time by package (effect, @effect/sql-pg, effect-jobs src/, node internals, GC ...),
 *   - the top functions by self time,
 *   - the statements of that database by total execution time.
 * The .cpuprofile is kept in bench/results/profiles/ (open it in Chrome DevTools / speedscope).

 * The profiler itself adds overhead: compare shares, not absolute throughput.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { startEmbeddedPostgres } from "../scripts/embedded-postgres.ts"
import { parseResult } from "./protocol.ts"
import { openSql, withDatabase } from "./sql.ts"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..")

const { values } = parseArgs({
  options: {
    adapter: { type: "string", default: "effect-jobs" },
    scenario: { type: "string", default: "drain" },
    jobs: { type: "string", default: "20000" },
    concurrency: { type: "string", default: "24" },
    "history-rows": { type: "string", default: "1000000" },
    top: { type: "string", default: "25" }
  }
})

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
}
interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly hitCount?: number
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
}

const packageOf = (frame: CallFrame): string => {
  const url = frame.url
  if (url === "") {
    if (frame.functionName === "(garbage collector)") return "(gc)"
    if (frame.functionName === "(idle)" || frame.functionName === "(program)") return frame.functionName
    return "(native/other)"
  }
  if (url.startsWith("node:")) return "node internals"
  const path = url.replace(/^file:\/\//, "")
  const nm = path.lastIndexOf("/node_modules/")
  if (nm >= 0) {
    const rest = path.slice(nm + "/node_modules/".length).split("/")
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? "?")
  }
  const rel = relative(root, path)
  if (rel.startsWith("src/")) return "effect-jobs src/"
  if (rel.startsWith("bench/")) return "bench harness"
  return rel
}

const shortUrl = (url: string): string => {
  const path = url.replace(/^file:\/\//, "")
  const nm = path.lastIndexOf("/node_modules/")
  return nm >= 0 ? path.slice(nm + "/node_modules/".length) : relative(root, path)
}

const analyse = (profile: Profile, top: number): string => {
  const total = profile.samples.length
  const hits = new Map<number, number>()
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
  const byPackage = new Map<string, number>()
  const byFunction = new Map<string, number>()
  for (const node of profile.nodes) {
    const n = hits.get(node.id) ?? 0
    if (n === 0) continue
    const pkg = packageOf(node.callFrame)
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + n)
    const f = node.callFrame
    const key = `${f.functionName || "(anonymous)"}  ${shortUrl(f.url)}:${f.lineNumber + 1}`
    byFunction.set(key, (byFunction.get(key) ?? 0) + n)
  }
  const idle = (byPackage.get("(idle)") ?? 0)
  const busy = total - idle
  const pct = (n: number) => `${((n / busy) * 100).toFixed(1).padStart(5)} %`
  const lines = [
    `CPU samples: ${total} over ${((profile.endTime - profile.startTime) / 1e6).toFixed(2)} s, idle ${((idle / total) * 100).toFixed(0)} %; ` +
    `shares below are of the busy samples`,
    "",
    "self time by package:",
    ...[...byPackage].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${pct(n)}  ${k}`),
    "",
    `top ${top} functions by self time:`,
    ...[...byFunction].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, top)
      .map(([k, n]) => `  ${pct(n)}  ${k}`)
  ]
  return lines.join("\n")
}

const main = async (): Promise<void> => {
  const external = process.env["DATABASE_URL"]
  const embedded = external === undefined || external === ""
    ? await startEmbeddedPostgres({
      postgresFlags: ["-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track=all"]
    })
    : undefined
  const adminUrl = embedded?.url ?? external ?? ""
  const admin = openSql(adminUrl)
  const database = `bench_profile_${Date.now()}`
  const profileDir = join(here, "results", "profiles")
  mkdirSync(profileDir, { recursive: true })
  try {
    await admin.run((sql) => sql`CREATE EXTENSION IF NOT EXISTS pg_stat_statements`)
    await admin.run((sql) => sql`CREATE DATABASE ${sql(database)}`)
    await admin.run((sql) => sql`SELECT pg_stat_statements_reset()`)
    const file = `${values.adapter}-${values.scenario}-${new Date().toISOString().replace(/[:.]/g, "-")}.cpuprofile`
    const args = [
      "--expose-gc",
      join(here, "run-one.ts"), values.adapter, values.scenario, withDatabase(adminUrl, database),
      "--jobs", values.jobs, "--concurrency", values.concurrency, "--history-rows", values["history-rows"]
    ]
    const stdout = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, args, {
        stdio: ["ignore", "pipe", "inherit"],
        env: {
          ...process.env,
          BENCH_CPU_PROFILE: join(profileDir, file),
          ...(embedded !== undefined
            ? { BENCH_PG_PID: readFileSync(join(embedded.dataDir, "postmaster.pid"), "utf8").split("\n")[0] ?? "" }
            : {})
        }
      })
      let out = ""
      child.stdout.on("data", (c: Buffer) => (out += c.toString()))
      child.on("error", reject)
      child.on("close", () => resolve(out))
    })
    const result = parseResult(stdout)
    process.stdout.write(`result: ${JSON.stringify(result?.status === "ok" ? result.drain ?? result : result)}\n\n`)
    if (existsSync(join(profileDir, file))) {
      process.stdout.write(`profile: ${relative(root, join(profileDir, file))}\n`)
      const profile = JSON.parse(readFileSync(join(profileDir, file), "utf8")) as Profile
      process.stdout.write(`${analyse(profile, Number(values.top))}\n\n`)
    }
    const statements = await admin.run((sql) =>
      sql<{
        readonly calls: number
        readonly total_ms: number
        readonly mean_ms: number
        readonly rows: number
        readonly blks_per_call: number
        readonly wal_per_row: number
        readonly query: string
      }>`
        SELECT calls::int, round(total_exec_time::numeric, 1)::float8 AS total_ms,
               round(mean_exec_time::numeric, 3)::float8 AS mean_ms, rows::int,
               round((shared_blks_hit + shared_blks_read)::numeric / greatest(calls, 1), 0)::float8 AS blks_per_call,
               round(wal_bytes / greatest(rows, 1), 0)::float8 AS wal_per_row,
               left(regexp_replace(query, '\\s+', ' ', 'g'), 220) AS query
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = ${database})
        ORDER BY total_exec_time DESC LIMIT 12`)
    const jobs = Number(values.jobs)
    process.stdout.write(
      "statements by total execution time (pg_stat_statements, this database; setup and the enqueue included):\n"
    )
    for (const s of statements) {
      process.stdout.write(
        `  ${String(s.total_ms).padStart(9)} ms  ${((s.total_ms * 1000) / jobs).toFixed(1).padStart(6)} µs/job  ` +
          `${String(s.calls).padStart(6)} calls  ${String(s.mean_ms).padStart(8)} ms/call  ` +
          `${String(s.rows).padStart(7)} rows  ${String(s.blks_per_call).padStart(6)} blks/call  ${String(s.wal_per_row).padStart(5)} WAL B/row  ${s.query}\n`
      )
    }
  } finally {
    await admin.run((sql) => sql`DROP DATABASE IF EXISTS ${sql(database)} WITH (FORCE)`).catch(() => undefined)
    await admin.close()
    await embedded?.stop()
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exitCode = 1
})
