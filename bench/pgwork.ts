/**
 * What Postgres did for one drain, measured the same way for every system, from a
 * connection of the runner's own (never the system's):
 *
 * - committed: after the last handler returned (or the adapter's drain resolved), the
 *   system's `pendingQuery` (a count of its unfinished jobs on its own table) is polled
 *   every `POLL_MS` until it reads 0. Polling starts only then, so the polls add no load
 *   while the workers run (an outcome cannot be written before its handler returned).
 * - server CPU: /proc (bench/proc.ts), from the start until committed.
 * - WAL bytes: `pg_current_wal_lsn()` at the start and when committed (`pg_wal_lsn_diff`).
 *   This is the whole server's WAL: on a server other people use, their writes count too.
 *   So, after the teardown, the records of that LSN range are read back with `pg_walinspect`
 *   (a contrib extension that needs no preload; created in the bench database) and those
 *   that reference a block of one of the bench database's relations are summed: the
 *   database's own WAL. Records without a block (commits, checkpoints) are not counted:
 *   a commit record is some 40 bytes per transaction, well under a byte per job here.
 * - statements: `pg_stat_statements` top-level calls in the database, when the module is
 *   loaded (`--pg-stat-statements` on the embedded server); otherwise null.
 * - transactions: `xact_commit + xact_rollback` of the database in `pg_stat_database`.
 *   Backends publish these counters when idle at most once a second, and always when they
 *   exit, so the closing reading is taken after the adapter's teardown, once no other
 *   backend is connected to the database (bounded wait).
 *
 * Statements and transactions cover start -> after teardown (the stop and the pools'
 * shutdown included); the runner's own statements on this connection are subtracted
 * (each is one statement and one transaction).
 */
import { performance } from "node:perf_hooks"
import type { PgWork } from "./adapter.ts"
import { delay } from "./adapter.ts"
import { dbCpuMicros } from "./proc.ts"
import { openSql } from "./sql.ts"

const POLL_MS = 2

interface Counters {
  readonly lsn: string
  readonly xacts: number
  readonly statements: number | null
}

export interface PgWorkWatch {
  /** Take the starting readings; call just before the drain starts. */
  readonly begin: () => Promise<void>
  /**
   * Poll until the pending count reads 0 (at most `timeoutMs`); returns `performance.now()`
   * of that reading, or null if it never did. Takes the CPU and WAL readings then.
   */
  readonly waitCommitted: (timeoutMs: number) => Promise<number | null>
  /** After the adapter's teardown: the closing statement/transaction readings. */
  readonly finish: () => Promise<PgWork>
  readonly close: () => Promise<void>
}

export const watchPgWork = (url: string, database: string, pendingQuery: string | undefined): PgWorkWatch => {
  const session = openSql(url, { maxConnections: 1 })
  let own = 0 // statements this connection sent since `begin`
  const query = async <A extends object>(text: string): Promise<ReadonlyArray<A>> => {
    own++
    return session.run((sql) => sql.unsafe<A>(text))
  }
  let hasPgss = false
  let start: Counters | undefined
  let ownAtStart = 0
  let cpu0: number | null = null
  let cpuCommitted: number | null = null
  let walBytes: number | null = null
  let endLsn: string | undefined
  let polls = 0

  const counters = async (): Promise<Counters> => {
    // Publish this backend's own pending counters first, so they are all in the reading.
    await query("SELECT pg_stat_force_next_flush()").catch(() => undefined)
    const rows = await query<{ lsn: string; xacts: string; statements: string | null }>(`
      SELECT pg_current_wal_lsn()::text AS lsn,
             (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database())::text AS xacts,
             ${hasPgss
      ? `(SELECT sum(calls) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND toplevel)::text`
      : "NULL::text"} AS statements`)
    const row = rows[0]
    return {
      lsn: row?.lsn ?? "0/0",
      xacts: Number(row?.xacts ?? 0),
      statements: row?.statements === null || row?.statements === undefined ? (hasPgss ? 0 : null) : Number(row.statements)
    }
  }

  /** The bench database's own WAL in [start, committed], or null (no pg_walinspect, WAL gone). */
  const ownWal = async (): Promise<number | null> => {
    if (start === undefined || endLsn === undefined) return null
    try {
      await query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
      // block_ref reads "blkref #0: rel <tablespace>/<database>/<relfilenode> ..." per block
      const rows = await query<{ bytes: string | null }>(`
        SELECT sum(record_length)::text AS bytes
        FROM pg_get_wal_records_info('${start.lsn}', '${endLsn}')
        WHERE block_ref LIKE '%rel %/' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '/%'`)
      return Number(rows[0]?.bytes ?? 0)
    } catch {
      return null
    }
  }

  return {
    async begin() {
      const ext = await query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'pg_stat_statements'"
      )
      if ((ext[0]?.n ?? 0) > 0) {
        // The extension can exist without the library being preloaded: then reading fails.
        hasPgss = await query("SELECT 1 FROM pg_stat_statements LIMIT 1").then(() => true, () => false)
      }
      ownAtStart = own
      start = await counters()
      cpu0 = dbCpuMicros()
    },

    async waitCommitted(timeoutMs) {
      if (pendingQuery === undefined) return null
      const deadline = performance.now() + timeoutMs
      while (performance.now() < deadline) {
        polls++
        const rows = await query<{ n: number | string }>(pendingQuery)
        if (Number(rows[0]?.n ?? 1) === 0) {
          const at = performance.now()
          const cpu1 = dbCpuMicros()
          cpuCommitted = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null
          const lsn = await query<{ bytes: string; lsn: string }>(
            `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${start?.lsn ?? "0/0"}')::text AS bytes, pg_current_wal_lsn()::text AS lsn`
          )
          walBytes = start === undefined ? null : Number(lsn[0]?.bytes ?? 0)
          endLsn = lsn[0]?.lsn
          return at
        }
        await delay(POLL_MS)
      }
      return null
    },

    async finish() {
      // Wait (bounded) until the system's backends are gone: exiting backends publish their counters.
      for (let i = 0; i < 200; i++) {
        const rows = await query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = '${database}' AND pid <> pg_backend_pid()`
        )
        if ((rows[0]?.n ?? 0) === 0) break
        await delay(25)
      }
      // Ours in the window: everything since the opening force-flush (which the opening reading
      // already counts) up to and including the closing force-flush (not the closing reading).
      const ownCounted = own - ownAtStart
      const end = await counters()
      const databaseWalBytes = await ownWal()
      return {
        dbCpuMicros: cpuCommitted,
        walBytes,
        databaseWalBytes,
        statements: start?.statements !== null && start?.statements !== undefined && end.statements !== null
          ? end.statements - start.statements - ownCounted
          : null,
        transactions: start !== undefined ? end.xacts - start.xacts - ownCounted : null,
        polls
      }
    },

    close: () => session.close()
  }
}
