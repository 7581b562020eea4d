/**
 * CPU time used by the Postgres server, read from /proc (Linux, server on this machine).
 *
 * The runner finds the postmaster's pid and passes it to the child processes in
 * `BENCH_PG_PID`. The server's CPU time is the postmaster's own time, plus the time of
 * its exited (reaped) children (`cutime`/`cstime`), plus the time of its live children
 * (backends, walwriter, checkpointer ...). A backend that exits between two readings
 * moves from "live child" to "reaped child", so the difference stays exact.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"

let ticksPerSecond: number | undefined
const clockTicks = (): number => {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100
    } catch {
      ticksPerSecond = 100
    }
  }
  return ticksPerSecond
}

/** Fields after the `(comm)` part of /proc/<pid>/stat; index 0 is `state` (field 3). */
const statFields = (pid: string): ReadonlyArray<string> | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    return text.slice(text.lastIndexOf(")") + 2).split(" ")
  } catch {
    return undefined
  }
}

const field = (fields: ReadonlyArray<string>, n: number): number => Number(fields[n - 3] ?? 0)

/** Total CPU µs of the server rooted at `pid`, or null if it cannot be read. */
export const serverCpuMicros = (pid: number): number | null => {
  const own = statFields(String(pid))
  if (own === undefined) return null
  let ticks = field(own, 14) + field(own, 15) + field(own, 16) + field(own, 17)
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || entry === String(pid)) continue
    const fields = statFields(entry)
    if (fields !== undefined && field(fields, 4) === pid) {
      ticks += field(fields, 14) + field(fields, 15)
    }
  }
  return (ticks * 1_000_000) / clockTicks()
}

/** Server CPU µs for the pid in `BENCH_PG_PID`, or null. */
export const dbCpuMicros = (): number | null => {
  const pid = Number(process.env["BENCH_PG_PID"] ?? "")
  return Number.isInteger(pid) && pid > 0 ? serverCpuMicros(pid) : null
}

/**
 * Busy CPU µs of the whole machine so far (all CPUs, any process: /proc/stat minus idle
 * and iowait), or null off Linux. Over a timed window, busy - worker CPU - server CPU
 * is what *other* processes took: the colleague's test run, not the benchmark.
 */
export const machineBusyMicros = (): number | null => {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? ""
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number)
    const total = f.reduce((a, b) => a + b, 0)
    return ((total - (f[3] ?? 0) - (f[4] ?? 0)) * 1_000_000) / clockTicks()
  } catch {
    return null
  }
}
