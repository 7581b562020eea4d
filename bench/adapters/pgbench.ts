/**
 * Raw-SQL floor: what Postgres itself does for "claim a batch with FOR UPDATE SKIP LOCKED
 * and delete it", with no job-queue library in between.
 *
 * - setup: a minimal jobs table (bigserial id, queue, jsonb payload, run_at).
 * - enqueueMany: one `INSERT ... SELECT FROM generate_series` statement.
 * - drain: `pgbench -n -M prepared -c 8 -j 2 -t N -f claim.sql`, always (whatever the
 *   machine's core count), where claim.sql is ONE statement that claims up to 100 rows with
 *   `FOR UPDATE SKIP LOCKED` and deletes them (a CTE + DELETE); rows/s = rows deleted /
 *   wall time of the pgbench run (including its connection set-up). CPU is the pgbench
 *   process's CPU (read with the shell's `times`), not a Node worker's.
 * - wake-up latency: not applicable (no worker to wake).
 *
 * If no `pgbench` binary is found, setup throws "not yet implemented"-style skip error.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Adapter, DrainResult } from "../adapter.ts"
import { CompletionMeter, SkipError } from "../adapter.ts"
import { withSql } from "../sql.ts"

/** The floor's method, the same for every report: 8 clients, 2 threads, prepared statements. */
const CLIENTS = 8
const THREADS = 2
const CLAIM = 100

const SCRIPT = `WITH claimed AS (
  SELECT id FROM bench_jobs
  WHERE queue = 'default' AND run_at <= now()
  ORDER BY id
  LIMIT ${CLAIM}
  FOR UPDATE SKIP LOCKED
)
DELETE FROM bench_jobs USING claimed WHERE bench_jobs.id = claimed.id;
`

/** `pgbench` on PATH, else the newest /usr/lib/postgresql/<v>/bin/pgbench. */
export const findPgbench = (): string | undefined => {
  for (const dir of (process.env["PATH"] ?? "").split(":")) {
    if (dir !== "" && existsSync(join(dir, "pgbench"))) return join(dir, "pgbench")
  }
  try {
    const versions = readdirSync("/usr/lib/postgresql").sort((a, b) => Number(b) - Number(a))
    for (const v of versions) {
      const candidate = join("/usr/lib/postgresql", v, "bin", "pgbench")
      if (existsSync(candidate)) return candidate
    }
  } catch {
    // no Debian-style install
  }
  return undefined
}

interface ShellRun {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const sh = (script: string, args: ReadonlyArray<string>): Promise<ShellRun> =>
  new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", script, "bash", ...args], { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }))
  })

/** bash `times` prints "<shell user> <shell sys>\n<children user> <children sys>", e.g. 0m0.120s. */
const childCpuMicros = (timesOutput: string): number => {
  const line = timesOutput.trim().split("\n")[1] ?? ""
  let total = 0
  for (const m of line.matchAll(/(\d+)m([\d.]+)s/g)) {
    total += (Number(m[1]) * 60 + Number(m[2])) * 1_000_000
  }
  return total
}

export const make = (): Adapter => {
  let url = ""
  let pgbench: string | undefined

  const remaining = () =>
    withSql(url, (sql) => sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM bench_jobs`).then(
      (rows) => rows[0]?.n ?? 0
    )

  return {
    name: "pgbench-floor",

    async setup(databaseUrl) {
      url = databaseUrl
      pgbench = findPgbench()
      if (pgbench === undefined) throw new SkipError("pgbench not found (PATH, /usr/lib/postgresql/*/bin)")
      await withSql(url, (sql) =>
        sql`CREATE TABLE bench_jobs (
          id bigserial PRIMARY KEY,
          queue text NOT NULL DEFAULT 'default',
          payload jsonb NOT NULL,
          run_at timestamptz NOT NULL DEFAULT now()
        )`)
    },

    async enqueueMany(count) {
      await withSql(url, (sql) =>
        sql`INSERT INTO bench_jobs (payload) SELECT '{}'::jsonb FROM generate_series(1, ${count})`)
    },

    pendingQuery: "SELECT count(*)::int AS n FROM bench_jobs",

    async drain(count, _concurrency): Promise<DrainResult> {
      if (pgbench === undefined) throw new Error("pgbench adapter: setup() was not called")
      const dir = mkdtempSync(join(tmpdir(), "bench-pgbench-"))
      const scriptFile = join(dir, "claim.sql")
      writeFileSync(scriptFile, SCRIPT)
      // Enough transactions per client to empty the table even if a few come back short;
      // the surplus ones find nothing and are cheap.
      const perClient = Math.ceil(count / CLAIM / CLIENTS) + 2
      const args = [
        pgbench, "-n", "-M", "prepared", "-c", String(CLIENTS), "-j", String(THREADS),
        "-t", String(perClient), "-f", scriptFile, url
      ]
      try {
        // The meter's start and its last `complete` bracket the pgbench process, so the runner's
        // committed clock (bench/run-one.ts) starts and begins polling at the same moments as for
        // the other systems. Its CPU figure is this Node process's; pgbench's own replaces it.
        const meter = new CompletionMeter(count)
        meter.start()
        const result = await sh(`"$@" 1>&2; rc=$?; times; exit $rc`, args)
        if (result.code !== 0) throw new Error(`pgbench failed (${result.code}):\n${result.stderr}`)
        meter.complete(count)
        const measured = await meter.done
        const left = await remaining()
        if (left !== 0) throw new Error(`pgbench left ${left} of ${count} rows`)
        return { ...measured, cpuMicros: childCpuMicros(result.stdout), stopMs: 0 }
      } finally {
        rmSync(dir, { recursive: true, force: true })
      }
    },

    async wakeLatency() {
      throw new SkipError("no worker to wake (raw SQL floor)")
    },

    async teardown() {}
  }
}
