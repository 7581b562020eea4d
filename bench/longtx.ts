/**
 * The `longtx` scenario: claim latency and throughput while another session of the same
 * database sits idle in a transaction that holds an xid (`BEGIN; SELECT txid_current();`).
 * Such a session holds back the xmin horizon: vacuum cannot remove the dead rows that every
 * claim and completion leaves behind, so index and heap scans wade through more of them the
 * longer it lasts.
 *
 * One worker (`startWorkers`, `concurrency`) runs while a paced producer in the same process
 * enqueues `rate` jobs per second (every 10 ms, what is due since the start), each stamped
 * with `performance.now()` (`enqueueStamped`). Timeline from the producer's start:
 *
 *   0 .. WARMUP_MS                 warm-up, not reported
 *   .. + beforeMs                  "before": no long transaction
 *   .. + holdMs                    the session holds its transaction; "hold-end" is the
 *                                  last minute of the hold, or its last third if the
 *                                  hold is shorter than 3 minutes (the case is
 *                                  "the last minute" of a 10-minute hold)
 *   then                           the transaction commits, the producer stops, and the
 *                                  worker gets a bounded time to start what is left.
 *
 * Claim latency = handler start - enqueue call, per job, grouped by the phase the job was
 * enqueued in; throughput = handlers started per second in the phase.
 */
import { Effect } from "effect"
import { performance } from "node:perf_hooks"
import type { Adapter } from "./adapter.ts"
import { delay, SkipError, withTimeout } from "./adapter.ts"
import type { LongTxPhase, LongTxResult, OneOptions } from "./protocol.ts"
import { openSql } from "./sql.ts"
import { percentile, round } from "./stats.ts"

const WARMUP_MS = 3_000
const TICK_MS = 10
const DRAIN_AFTER_MS = 30_000
/** The "hold-end" window: the "last minute of the hold", at most a third of it. */
const HOLD_END_MAX_MS = 60_000

interface Holder {
  readonly info: { readonly xid: string; readonly pid: number }
  readonly release: () => Promise<void>
}

/** A session of its own: BEGIN, take an xid, then stay idle in transaction until released. */
const holdTransaction = async (url: string): Promise<Holder> => {
  const session = openSql(url, { maxConnections: 1 })
  let release: () => void = () => {}
  const released = new Promise<void>((resolve) => (release = resolve))
  let gotInfo: (info: { xid: string; pid: number }) => void = () => {}
  const info = new Promise<{ xid: string; pid: number }>((resolve) => (gotInfo = resolve))
  const done = session.run((sql) =>
    sql.withTransaction(Effect.gen(function*() {
      const rows = yield* sql<{ xid: string; pid: number }>`SELECT txid_current()::text AS xid, pg_backend_pid() AS pid`
      gotInfo(rows[0] ?? { xid: "?", pid: 0 })
      yield* Effect.promise(() => released)
    }))
  )
  done.catch(() => undefined)
  return {
    info: await withTimeout(info, 10_000, "long transaction start"),
    release: async () => {
      release()
      await done
      await session.close()
    }
  }
}

export const runLongTx = async (adapter: Adapter, url: string, options: OneOptions): Promise<LongTxResult> => {
  if (adapter.startWorkers === undefined || adapter.enqueueStamped === undefined) {
    throw new SkipError(`${adapter.name} has no startWorkers/enqueueStamped`)
  }
  const enqueueStamped = adapter.enqueueStamped.bind(adapter)
  const enqueues: Array<{ readonly at: number; readonly n: number }> = []
  const starts: Array<{ readonly t: number; readonly at: number }> = []
  const workers = await adapter.startWorkers(options.concurrency, () => {}, {
    onStart: (t) => {
      if (t !== undefined) starts.push({ t, at: performance.now() })
    }
  })
  const t0 = performance.now()
  let sent = 0
  let producing = true
  const producer = (async () => {
    while (producing) {
      const due = Math.floor((options.longtxRate * (performance.now() - t0)) / 1000) - sent
      if (due > 0) {
        const at = performance.now()
        await enqueueStamped(due)
        enqueues.push({ at, n: due })
        sent += due
      }
      await delay(TICK_MS)
    }
  })()
  let holder: Holder | undefined
  let holderInfo = { xid: "?", pid: 0 }
  try {
    const holdFrom = WARMUP_MS + options.longtxBeforeMs
    const holdTo = holdFrom + options.longtxHoldMs
    await Promise.race([delay(holdFrom), producer])
    holder = await holdTransaction(url)
    holderInfo = holder.info
    await Promise.race([delay(Math.max(0, t0 + holdTo - performance.now())), producer])
    await holder.release()
    holder = undefined
    producing = false
    await producer
    const deadline = performance.now() + DRAIN_AFTER_MS
    while (starts.length < sent && performance.now() < deadline) await delay(50)
    const phase = (name: LongTxPhase["name"], fromMs: number, toMs: number): LongTxPhase => {
      const from = t0 + fromMs
      const to = t0 + toMs
      const mine = starts.filter((s) => s.t >= from && s.t < to)
      const latencies = mine.map((s) => s.at - s.t)
      const seconds = (toMs - fromMs) / 1000
      const enqueued = enqueues.filter((e) => e.at >= from && e.at < to).reduce((a, e) => a + e.n, 0)
      const p50 = percentile(latencies, 50)
      const p99 = percentile(latencies, 99)
      return {
        name,
        fromMs: Math.round(fromMs),
        toMs: Math.round(toMs),
        samples: mine.length,
        claimP50Ms: p50 === null ? null : round(p50, 2),
        claimP99Ms: p99 === null ? null : round(p99, 2),
        enqueuedPerSec: round(enqueued / seconds, 1),
        startedPerSec: round(starts.filter((s) => s.at >= from && s.at < to).length / seconds, 1)
      }
    }
    return {
      holdMs: options.longtxHoldMs,
      ratePerSec: options.longtxRate,
      concurrency: options.concurrency,
      phases: [
        phase("before", WARMUP_MS, holdFrom),
        phase("hold-end", holdTo - Math.min(HOLD_END_MAX_MS, options.longtxHoldMs / 3), holdTo)
      ],
      enqueued: sent,
      started: starts.length,
      notStarted: sent - starts.length,
      holder: holderInfo
    }
  } finally {
    producing = false
    await producer.catch(() => undefined)
    await holder?.release().catch(() => undefined)
    await workers.stop()
  }
}
