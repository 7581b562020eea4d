/**
 * A jobs table as a busy deployment has it, filled in one statement: for the plan test at a
 * million rows (test/plans.test.ts) and the dashboard benchmark (bench/dashboard.ts).
 *
 * The mix, of `rows` jobs with ids in creation order over the last day:
 *   - about 95 % completed, 2 % dead, 0.5 % cancelled (the finished history, spread evenly);
 *     at the newest end the unfinished jobs: 70 % of the last 2 % of the ids available (a
 *     backlog), 20 % of the last 0.2 % running, 9 % of the last 10 % scheduled (retries and
 *     short delays of the last hours), and 0.1 % of all scheduled (long delays, anywhere);
 *   - five queues of different sizes (emails, billing, reports, webhooks, default) with two
 *     or three job names each, and one rare queue `audit` with one rare name `audit-export`
 *     (one job in 997);
 *   - a unique key on one job in ten (`key-<n>`, n = the row's ordinal).
 *
 * Finished jobs are kept forever (no retention), as a table that keeps a million of them.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"

/** The rare queue and job name of the mix. */
export const rareQueue = "audit"
export const rareName = "audit-export"

/**
 * Fills `<schema>.jobs` with `rows` jobs of the mix above, then ANALYZEs it. The table's
 * secondary indexes are dropped for the insert and built again afterwards from their own
 * definitions (a sorted build is several times faster than a million index inserts), and the
 * insert trigger (a NOTIFY per queue, which would first collect every row) is skipped. What is
 * left is the table the migrations made, with these rows in it.
 */
export const fillJobs = (sql: SqlClient.SqlClient, rows: number, schema = "effect_jobs") =>
  Effect.gen(function*() {
    const jobs = `"${schema}".jobs`
    yield* sql.withTransaction(Effect.gen(function*() {
      const indexes = yield* sql<{ readonly name: string; readonly definition: string }>`
        SELECT indexname AS name, indexdef AS definition FROM pg_indexes
        WHERE schemaname = ${schema} AND tablename = 'jobs' AND indexname <> 'jobs_pkey'`
      for (const i of indexes) yield* sql.unsafe(`DROP INDEX "${schema}"."${i.name}"`)
      yield* sql.unsafe(`SET LOCAL session_replication_role = replica`)
      yield* sql.unsafe(fillStatement(jobs, rows))
      for (const i of indexes) yield* sql.unsafe(i.definition)
    }))
    yield* sql.unsafe(`ANALYZE ${jobs}`)
  })

const fillStatement = (jobs: string, rows: number) => `
  INSERT INTO ${jobs} (name, queue, state, run_at, attempt, claim_count, lease_expires_at, locked_by,
    args, result, errors, unique_key, created_at, attempted_at, finalized_at)
  SELECT
    CASE WHEN g % 997 = 0 THEN '${rareName}'
         ELSE (ARRAY['send-welcome', 'send-digest', 'send-receipt', 'charge', 'refund', 'render-pdf', 'render-csv',
                     'deliver-hook', 'deliver-hook', 'sync-crm', 'sync-crm', 'reindex'])[1 + h % 12] END,
    CASE WHEN g % 997 = 0 THEN '${rareQueue}'
         ELSE (ARRAY['emails', 'emails', 'emails', 'billing', 'billing', 'reports', 'reports', 'webhooks', 'webhooks',
                     'default', 'default', 'default'])[1 + h % 12] END,
    st,
    CASE WHEN st = 'scheduled' THEN now() + (h % 3600) * interval '1 second' ELSE created END,
    CASE WHEN st IN ('available', 'scheduled') THEN 0 ELSE 1 END,
    CASE WHEN st IN ('available', 'scheduled') THEN 0 ELSE 1 END,
    CASE WHEN st = 'running' THEN now() + interval '5 minutes' END,
    CASE WHEN st = 'running' THEN 'bench-worker-' || (h % 4) END,
    '{"to": "someone@example.com", "template": "welcome"}'::jsonb,
    CASE WHEN st = 'completed' THEN '{"ok": true}'::jsonb END,
    CASE WHEN st = 'dead' THEN '[{"attempt": 1, "at": "2026-01-01T00:00:00.000Z", "kind": "Boom", "message": "boom"}]'::jsonb
         ELSE '[]'::jsonb END,
    CASE WHEN g % 10 = 0 THEN 'key-' || g END,
    created,
    CASE WHEN st NOT IN ('available', 'scheduled') THEN created END,
    CASE WHEN st IN ('completed', 'dead', 'cancelled') THEN created END
  FROM (
    SELECT g, h, now() - (${rows} - g) * (interval '1 day' / ${rows}) AS created,
      CASE WHEN g > ${rows} - ${Math.floor(rows / 50)} AND h % 10 < 7 THEN 'available'
           WHEN g > ${rows} - ${Math.floor(rows / 500)} AND h % 10 < 9 THEN 'running'
           WHEN g > ${rows} - ${Math.floor(rows / 10)} AND h % 100 < 9 THEN 'scheduled'
           WHEN h % 1000 = 999 THEN 'scheduled'
           WHEN h % 1000 < 20 THEN 'dead'
           WHEN h % 1000 < 25 THEN 'cancelled'
           ELSE 'completed' END AS st
    FROM (SELECT g, (g::bigint * 2654435761) % 1000003 AS h FROM generate_series(1, ${rows}) AS g) hashed
    -- evaluated once per row (a subquery pulled up would repeat the CASE in every column)
    OFFSET 0
  ) s`
