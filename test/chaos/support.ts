/**
 * Shared machinery of the chaos scenarios: a database per file, worker processes,
 * the run log (`chaos_runs`) and its checks, and the results file.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Duration, Effect, Layer, Option, Queue, Redacted, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { dirname, join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"
import { adminQuery, freshDatabase } from "../support/admin.ts"
import { waitFor } from "../support/probes.ts"
import { runsTableDdl, workerApplicationName } from "./jobs.ts"
import type { WorkerConfig } from "./worker.ts"

/** `CHAOS_SHORT=1`: the CI version (fewer jobs and faults). */
export const SHORT = process.env.CHAOS_SHORT === "1"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..")

// ---------------------------------------------------------------------------
// A database per test file
// ---------------------------------------------------------------------------

export class ChaosDb extends Context.Service<ChaosDb, { readonly url: string; readonly adminUrl: string }>()(
  "chaos/ChaosDb"
) {}

let counter = 0

/** A fresh clone of the migrated template (dropped afterwards) with the run log table. */
export const database = Layer.effect(
  ChaosDb,
  Effect.gen(function*() {
    const adminUrl = inject("chaosUrl")
    const url = yield* freshDatabase(
      adminUrl,
      inject("chaosTemplate"),
      `ej_chaos_${process.pid}_${Date.now().toString(36)}_${counter++}`
    )
    yield* adminQuery(url, (sql) => sql.unsafe(runsTableDdl))
    return { url, adminUrl }
  })
)

/** The file's database and a pool on it (the test's own connections: enqueue, checks). */
export const layer = (options: { readonly maxConnections?: number; readonly connectTimeout?: Duration.Input } = {}) =>
  Layer.provideMerge(
    Layer.unwrap(Effect.map(ChaosDb, ({ url }) =>
      PgClient.layer({
        url: Redacted.make(url),
        maxConnections: options.maxConnections ?? 8,
        ...(options.connectTimeout === undefined ? {} : { connectTimeout: options.connectTimeout }),
        applicationName: "chaos-test"
      }))),
    database
  )

export const sqlClient = Effect.map(SqlClient.SqlClient, (sql) => sql.withoutTransforms())

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

export interface WorkerError {
  readonly queue: string
  readonly message: string
  readonly cause?: string | undefined
}

export interface WorkerProcess {
  readonly workerId: string
  readonly pid: number
  readonly child: ChildProcess
  /** Worker errors reported so far. */
  readonly errors: Array<WorkerError>
  /** `started <id> <attempt>` lines (jobs enqueued with `announce: true`). */
  readonly started: Queue.Queue<{ readonly id: string; readonly attempt: number; readonly at: number }>
  /** Resolves when the process has exited, with the time it did (Date.now()). */
  readonly exited: Deferred.Deferred<{ readonly code: number | null; readonly signal: string | null; readonly at: number }>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<number>
}

let workerCounter = 0

/** Every worker process started by this test file. */
export const allWorkers: Array<WorkerProcess> = []

/** The worker errors of every worker of this file, grouped by message (causes shortened). */
export const errorSummary = (): Record<string, number> => {
  const counts: Record<string, number> = {}
  for (const w of allWorkers) {
    for (const e of w.errors) {
      // Job ids vary: group "lease of job 123 ran out" messages together.
      const message = e.message.replace(/\bjob \d+/g, "job <id>")
      const key = `${message}${e.cause === undefined ? "" : `: ${e.cause.split("\n")[0]!.slice(0, 120)}`}`
      counts[key] = (counts[key] ?? 0) + 1
    }
  }
  return counts
}

/** Error kinds recorded in the jobs' `errors` (every attempt that failed), with counts. */
export const jobErrorKinds = Effect.flatMap(sqlClient, (sql) =>
  Effect.map(
    sql<{ readonly kind: string; readonly n: number }>`
      SELECT e->>'kind' AS kind, count(*)::int AS n
      FROM effect_jobs.jobs, jsonb_array_elements(CASE WHEN jsonb_typeof(errors) = 'array' THEN errors ELSE '[]' END) e
      GROUP BY 1 ORDER BY 2 DESC`,
    (rows) => Object.fromEntries(rows.map((r) => [r.kind, r.n])) as Record<string, number>
  )).pipe(Effect.orDie)

/**
 * Starts `node test/chaos/worker.ts` and waits for its `ready` line. The process
 * is SIGKILLed when the scope closes if it is still running. `script` starts another
 * program of this folder that speaks the same lines (test/chaos/flow-worker.ts); the
 * whole `config` is passed to it as JSON.
 */
export const spawnWorker = (
  config: Omit<WorkerConfig, "url" | "workerId" | "queue"> & { readonly queue?: string; readonly url?: string },
  options: { readonly script?: string } = {}
): Effect.Effect<WorkerProcess, never, Scope.Scope | ChaosDb> =>
  Effect.gen(function*() {
    const { url } = yield* ChaosDb
    const workerId = `chaos-w${++workerCounter}`
    const full: WorkerConfig = { queue: "chaos", ...config, url: config.url ?? url, workerId }
    const child = spawn(process.execPath, [join(here, options.script ?? "worker.ts"), JSON.stringify(full)], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"]
    })
    const exited = yield* Deferred.make<{ code: number | null; signal: string | null; at: number }>()
    const ready = yield* Deferred.make<number>()
    const started = yield* Queue.unbounded<{ id: string; attempt: number; at: number }>()
    const errors: Array<WorkerError> = []
    child.once("exit", (code, signal) => {
      const at = Date.now()
      Deferred.doneUnsafe(exited, Effect.succeed({ code, signal, at }))
      Deferred.doneUnsafe(ready, Effect.die(new Error(`worker ${workerId} exited (${code ?? signal}) before it was ready`)))
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      const space = line.indexOf(" ")
      const word = space < 0 ? line : line.slice(0, space)
      const rest = space < 0 ? "" : line.slice(space + 1)
      if (word === "ready") Deferred.doneUnsafe(ready, Effect.succeed(Number(rest)))
      else if (word === "started") {
        const [id, attempt] = rest.split(" ")
        Queue.offerUnsafe(started, { id: id!, attempt: Number(attempt), at: Date.now() })
      } else if (word === "error") errors.push(JSON.parse(rest) as WorkerError)
    })
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGCONT") // in case a scenario left it stopped
          child.kill("SIGKILL")
          yield* Deferred.await(exited)
        }
      })
    )
    const pid = yield* Deferred.await(ready)
    const proc: WorkerProcess = {
      workerId,
      pid,
      child,
      errors,
      started,
      exited,
      kill: (signal) =>
        Effect.sync(() => {
          child.kill(signal)
          return Date.now()
        })
    }
    allWorkers.push(proc)
    return proc
  })

/** SIGKILLs the worker and waits until it is gone; returns the time of the kill. */
export const killHard = (w: WorkerProcess) =>
  Effect.gen(function*() {
    const at = yield* w.kill("SIGKILL")
    yield* Deferred.await(w.exited)
    return at
  })

// ---------------------------------------------------------------------------
// Waiting for the database to reach a state
// ---------------------------------------------------------------------------

/**
 * `waitFor` (test/support/probes.ts) with the chaos suite's pace: a "wait until" on the
 * database's state (the source of truth), re-read every 200 ms for up to 5 minutes by default.
 */
export const waitUntil = <A, E, R>(
  what: string,
  check: Effect.Effect<Option.Option<A>, E, R>,
  options: { readonly every?: Duration.Input; readonly timeout?: Duration.Input } = {}
): Effect.Effect<A, E, R> =>
  waitFor(what, check, { every: options.every ?? "200 millis", timeout: options.timeout ?? "5 minutes" })

/**
 * Waits until the database shows no session of the worker process (`"gone"`), or none of its
 * sessions running a statement (`"quiet"`); returns how long that took (ms).
 *
 * A signal does not stop what the process already sent: after a SIGKILL, a statement it
 * sent just before (a finish, a heartbeat) may still run, and commit, in its backend (the
 * server notices the closed client only when it next reads from it); after a SIGSTOP, the
 * same holds until the statement ends. Only then is the process's last word in the tables.
 */
export const waitSessions = (w: WorkerProcess, until: "gone" | "quiet", options: { readonly timeout?: Duration.Input } = {}) =>
  Effect.gen(function*() {
    const sql = yield* sqlClient
    const start = Date.now()
    const name = workerApplicationName(w.workerId)
    yield* waitUntil(
      `the sessions of ${w.workerId} ${until === "gone" ? "closed" : "running no statement"}`,
      Effect.map(
        until === "gone"
          ? sql<{ readonly n: number }>`
            SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = ${name}`
          : sql<{ readonly n: number }>`
            SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = ${name} AND state = 'active'`,
        (rows) => (rows[0]!.n === 0 ? Option.some(true) : Option.none())
      ).pipe(Effect.orDie),
      { every: "10 millis", timeout: options.timeout ?? "10 seconds" }
    )
    return Date.now() - start
  })

export const countStates = (queue: string) =>
  Effect.flatMap(sqlClient, (sql) =>
    Effect.map(
      sql<{ readonly state: string; readonly n: number }>`
        SELECT state, count(*)::int AS n FROM effect_jobs.jobs WHERE queue = ${queue} GROUP BY state`,
      (rows) => Object.fromEntries(rows.map((r) => [r.state, r.n])) as Record<string, number>
    )).pipe(Effect.orDie)

/** Waits until every job of the queue is terminal; returns the counts by state and when it happened. */
export const waitAllTerminal = (queue: string, options: { readonly timeout?: Duration.Input } = {}) =>
  waitUntil(
    `every job of queue ${queue} terminal`,
    Effect.map(countStates(queue), (counts) =>
      (counts.available ?? 0) + (counts.running ?? 0) + (counts.scheduled ?? 0) === 0
        ? Option.some({ counts, at: Date.now() })
        : Option.none()),
    { every: "250 millis", ...options }
  )

// ---------------------------------------------------------------------------
// The run log
// ---------------------------------------------------------------------------

export interface Run {
  readonly job_id: string
  readonly pid: number
  readonly attempt: number
  readonly token: number
  readonly started: number
  readonly finished: number | null
  readonly outcome: string | null
}

export const loadRuns = Effect.flatMap(sqlClient, (sql) =>
  Effect.map(
    sql<{
      job_id: string
      pid: number
      attempt: number
      token: number
      started_at: Date
      finished_at: Date | null
      outcome: string | null
    }>`SELECT job_id::text, pid, attempt, token, started_at, finished_at, outcome FROM chaos_runs ORDER BY job_id, token, started_at`,
    (rows) =>
      rows.map((r): Run => ({
        job_id: r.job_id,
        pid: r.pid,
        attempt: r.attempt,
        token: r.token,
        started: r.started_at.getTime(),
        finished: r.finished_at === null ? null : r.finished_at.getTime(),
        outcome: r.outcome
      }))
  )).pipe(Effect.orDie)

export const groupByJob = (runs: ReadonlyArray<Run>): Map<string, Array<Run>> => {
  const byJob = new Map<string, Array<Run>>()
  for (const r of runs) {
    let list = byJob.get(r.job_id)
    if (list === undefined) byJob.set(r.job_id, list = [])
    list.push(r)
  }
  return byJob
}

export interface OverlapReport {
  /** Pairs of runs of one job where the later began before the earlier ended. */
  readonly overlaps: ReadonlyArray<{ readonly job: string; readonly earlier: Run; readonly later: Run; readonly overlapMs: number }>
  /** Reruns of a killed worker's run: how long after the kill they began. */
  readonly rescueDelays: ReadonlyArray<number>
}

/**
 * For consecutive runs of one job (by fencing token), the later one must begin
 * after the earlier one ended: its `finished_at`, or, for a run of a process that
 * was killed, the kill. `killedAt` maps pid -> time of its SIGKILL.
 */
export const checkOverlaps = (
  byJob: ReadonlyMap<string, ReadonlyArray<Run>>,
  killedAt: ReadonlyMap<number, number>
): OverlapReport => {
  const overlaps: Array<OverlapReport["overlaps"][number]> = []
  const rescueDelays: Array<number> = []
  for (const [job, runs] of byJob) {
    for (let i = 1; i < runs.length; i++) {
      const earlier = runs[i - 1]!
      const later = runs[i]!
      const kill = killedAt.get(earlier.pid)
      const end = earlier.finished ?? kill
      if (end === undefined) {
        // A run that neither finished nor was killed: its worker must have lost the lease and stopped it.
        continue
      }
      if (earlier.finished === null && kill !== undefined) rescueDelays.push(later.started - kill)
      // Timestamps come from the database clock and Date.now() of this machine: allow 5 ms of skew.
      if (later.started + 5 < end) overlaps.push({ job, earlier, later, overlapMs: end - later.started })
    }
  }
  return { overlaps, rescueDelays }
}

export const percentile = (values: ReadonlyArray<number>, p: number): number | null => {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

export const summary = (values: ReadonlyArray<number>) => ({
  n: values.length,
  min: values.length === 0 ? null : Math.min(...values),
  p50: percentile(values, 50),
  p95: percentile(values, 95),
  max: values.length === 0 ? null : Math.max(...values)
})

// ---------------------------------------------------------------------------
// Results file
// ---------------------------------------------------------------------------

const resultsFile = join(here, "results", SHORT ? "latest-short.json" : "latest.json")

/**
 * Merges one scenario's figures into test/chaos/results/latest.json (or
 * latest-short.json for the CI version). Files run one at a time, so a
 * read-modify-write is safe.
 */
export const recordResult = (scenario: string, figures: Record<string, unknown>) =>
  Effect.sync(() => {
    mkdirSync(dirname(resultsFile), { recursive: true })
    let current: { meta?: unknown; scenarios?: Record<string, unknown> } = {}
    try {
      current = JSON.parse(readFileSync(resultsFile, "utf8"))
    } catch {
      // first scenario of the run
    }
    const scenarios = { ...(current.scenarios ?? {}), [scenario]: { ...figures, recordedAt: new Date().toISOString() } }
    const meta = {
      mode: SHORT ? "short" : "full",
      node: process.version,
      cpus: cpus().length,
      database: inject("chaosEmbedded") === null ? "DATABASE_URL" : "embedded"
    }
    writeFileSync(resultsFile, `${JSON.stringify({ meta, scenarios }, null, 2)}\n`)
  })

/** Enqueues `n` chaos jobs in batches of 5,000 (one statement each); returns their ids. */
export const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}
