/**
 * JobStore: every SQL statement of effect-jobs, and nothing else.
 *
 * The producer, completer, maintenance fibers, client and admin calls never
 * write SQL themselves; they call these methods. Values are always bound
 * parameters; batches travel as one `jsonb` parameter expanded with
 * `jsonb_to_recordset`, so a 5,000-row batch is one statement with a constant
 * number of parameters.
 *
 * Times come from Effect's `Clock` and are passed in (`now`), so every process
 * and every test agrees on one clock, and `TestClock` controls delays, retries
 * and lease expiry in tests.
 *
 * Ids are `bigint` in the table and strings in JavaScript (cast with `::text`),
 * so they survive JSON and never lose precision.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, type Queue, type Scope } from "effect"
import { SqlClient, type SqlError } from "effect/sql"

/** The NOTIFY channel for new runnable jobs; the payload is a queue name. */
export const channel = "effect_jobs"
/** NOTIFY channel sent once per statement that finished jobs (payload empty): wakes `Jobs.await`. */
export const doneChannel = "effect_jobs_done"
/** NOTIFY channel asking the worker that holds a job to interrupt it; the payload is the job id. */
export const cancelChannel = "effect_jobs_cancel"

export type JobState = "scheduled" | "available" | "running" | "completed" | "dead" | "cancelled"

export interface NewJobRow {
  readonly name: string
  readonly queue: string
  readonly state: "available" | "scheduled"
  readonly priority: number
  readonly run_at: string
  readonly max_attempts: number
  readonly args: unknown
  readonly unique_key: string | null
  readonly metadata: Readonly<Record<string, unknown>>
  readonly request_id: string | null
  readonly trace: unknown
  readonly retention_ms: number
  readonly max_errors: number
}

export interface ClaimedJobRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly priority: number
  readonly attempt: number
  readonly max_attempts: number
  readonly claim_count: number
  readonly args: unknown
  readonly metadata: unknown
  readonly request_id: string | null
  readonly trace: unknown
  readonly run_at: Date
  readonly created_at: Date
}

/** A state change at the end of a run, applied only if the run still holds the job (fencing token). */
export interface FinishRow {
  readonly id: string
  readonly token: number
  readonly state: "completed" | "available" | "scheduled" | "dead" | "cancelled"
  /** For `available`/`scheduled`: when to run next (ISO). */
  readonly run_at: string | null
  /** -1 gives the attempt back (snooze, graceful-shutdown release); 0 otherwise. */
  readonly attempt_delta: number
  readonly result: unknown
  /** Appended to the job's errors, which are trimmed to its last `max_errors`. */
  readonly error: unknown
}

export interface OutcomeRow {
  readonly id: string
  readonly name: string
  readonly state: JobState
  readonly result: unknown
  readonly errors: ReadonlyArray<{ readonly message?: string; readonly kind?: string }>
}

export interface HeldJob {
  readonly id: string
  readonly token: number
}

const iso = (millis: number): string => new Date(millis).toISOString()

export class JobStore extends Context.Service<JobStore, {
  readonly jobInsertMany: (
    rows: ReadonlyArray<NewJobRow>
  ) => Effect.Effect<ReadonlyArray<{ readonly id: string; readonly inserted: boolean }>, SqlError.SqlError>
  readonly jobClaim: (options: {
    readonly queue: string
    readonly limit: number
    readonly now: number
    readonly leaseMillis: number
    readonly workerId: string
  }) => Effect.Effect<ReadonlyArray<ClaimedJobRow>, SqlError.SqlError>
  readonly jobFinishMany: (rows: ReadonlyArray<FinishRow>, now: number) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
  readonly jobHeartbeatMany: (
    held: ReadonlyArray<HeldJob>,
    now: number,
    leaseMillis: number
  ) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
  readonly jobPromoteScheduled: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  readonly jobRescueExpired: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  readonly notifyQueues: (queues: ReadonlyArray<string>) => Effect.Effect<void, SqlError.SqlError>
  /** State, result and errors of the given jobs (missing ids are absent). */
  readonly jobOutcomes: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<OutcomeRow>, SqlError.SqlError>
  /** LISTEN on any of the library's channels. */
  readonly listenOn: (
    channel: string
  ) => Effect.Effect<Queue.Dequeue<{ readonly payload: string }, SqlError.SqlError>, SqlError.SqlError, Scope.Scope>
  readonly listen: Effect.Effect<Queue.Dequeue<{ readonly payload: string }, SqlError.SqlError>, SqlError.SqlError, Scope.Scope>
}>()("effect-jobs/JobStore") {
  static readonly layer = Layer.effect(
    JobStore,
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      // The library's queries name their columns exactly; user-configured name transforms must not apply.
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()

      const insertRows = (rows: ReadonlyArray<NewJobRow>) =>
        sql<{ readonly id: string; readonly name: string; readonly unique_key: string | null }>`
          INSERT INTO effect_jobs (name, queue, state, priority, run_at, max_attempts, args, unique_key,
                                   metadata, request_id, trace, retention_ms, max_errors)
          SELECT name, queue, state, priority, run_at, max_attempts, args, unique_key,
                 metadata, request_id, trace, retention_ms, max_errors
          FROM jsonb_to_recordset(${JSON.stringify(rows.map((row, ord) => ({ ...row, ord })))}::jsonb) AS x(
            name text, queue text, state text, priority smallint, run_at timestamptz, max_attempts integer,
            args jsonb, unique_key text, metadata jsonb, request_id text, trace jsonb, retention_ms bigint,
            max_errors smallint, ord bigint)
          ORDER BY ord
          ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running')
          DO NOTHING
          RETURNING id::text, name, unique_key`

      const findActiveByKey = (keys: ReadonlyArray<{ readonly name: string; readonly unique_key: string }>) =>
        sql<{ readonly id: string; readonly name: string; readonly unique_key: string }>`
          SELECT j.id::text, j.name, j.unique_key
          FROM effect_jobs j
          JOIN jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) AS k(name text, unique_key text)
            ON j.name = k.name AND j.unique_key = k.unique_key
          WHERE j.state IN ('scheduled', 'available', 'running')`

      /**
       * Inserts in one statement. Rows with a unique key that is already taken by an
       * unfinished job are not inserted; their existing id is returned instead. If
       * that job finished between the two statements, the insert is tried again.
       */
      const jobInsertMany = Effect.fnUntraced(function*(rows: ReadonlyArray<NewJobRow>) {
        const ids: Array<{ id: string; inserted: boolean } | undefined> = new Array(rows.length)
        const keyOf = (name: string, key: string) => `${name}\u0000${key}`
        let pending = rows.map((row, index) => ({ row, index }))
        for (let round = 0; pending.length > 0; round++) {
          const returned = yield* insertRows(pending.map((p) => p.row))
          const byKey = new Map<string, string>()
          let plain = 0
          const plainIds = returned.filter((r) => r.unique_key === null)
          for (const r of returned) if (r.unique_key !== null) byKey.set(keyOf(r.name, r.unique_key), r.id)
          const conflicted: typeof pending = []
          const seen = new Set<string>()
          for (const p of pending) {
            if (p.row.unique_key === null) {
              ids[p.index] = { id: plainIds[plain++]!.id, inserted: true }
              continue
            }
            const key = keyOf(p.row.name, p.row.unique_key)
            const id = byKey.get(key)
            if (id !== undefined && !seen.has(key)) {
              seen.add(key) // a second row with the same key in one batch gets the first row's id
              ids[p.index] = { id, inserted: true }
            } else if (id !== undefined) {
              ids[p.index] = { id, inserted: false }
            } else {
              conflicted.push(p)
            }
          }
          if (conflicted.length === 0) break
          const existing = yield* findActiveByKey(
            conflicted.map((p) => ({ name: p.row.name, unique_key: p.row.unique_key! }))
          )
          const existingByKey = new Map(existing.map((e) => [keyOf(e.name, e.unique_key), e.id]))
          pending = []
          for (const p of conflicted) {
            const id = existingByKey.get(keyOf(p.row.name, p.row.unique_key!))
            if (id !== undefined) ids[p.index] = { id, inserted: false }
            else pending.push(p) // the holder finished meanwhile: insert again
          }
          if (round >= 10) return yield* Effect.die(new Error("unique enqueue did not settle after 10 rounds"))
        }
        return ids as ReadonlyArray<{ readonly id: string; readonly inserted: boolean }>
      })

      /**
       * Claims up to `limit` runnable jobs of a queue in one statement. Each claim
       * starts an attempt, takes a lease until `now + lease`, and bumps the fencing
       * token. `SKIP LOCKED` lets any number of workers claim side by side.
       */
      const jobClaim = Effect.fnUntraced(function*(o: {
        readonly queue: string
        readonly limit: number
        readonly now: number
        readonly leaseMillis: number
        readonly workerId: string
      }) {
        const now = iso(o.now)
        return yield* sql<ClaimedJobRow>`
          WITH c AS (
            SELECT id FROM effect_jobs
            WHERE state = 'available' AND queue = ${o.queue} AND run_at <= ${now}::timestamptz
            ORDER BY priority, run_at, id
            LIMIT ${o.limit}
            FOR UPDATE SKIP LOCKED
          )
          UPDATE effect_jobs j
          SET state = 'running', attempt = j.attempt + 1, claim_count = j.claim_count + 1,
              attempted_at = ${now}::timestamptz,
              lease_expires_at = ${now}::timestamptz + ${o.leaseMillis} * interval '1 millisecond',
              locked_by = ${o.workerId}
          FROM c WHERE j.id = c.id
          RETURNING j.id::text, j.name, j.queue, j.priority, j.attempt, j.max_attempts, j.claim_count,
                    j.args, j.metadata, j.request_id, j.trace, j.run_at, j.created_at`
      })

      /**
       * Applies the outcomes of many runs in one statement. A row is changed only if
       * it is still `running` under the same fencing token; the ids changed are
       * returned. A completed job whose retention is 0 is deleted instead.
       */
      const jobFinishMany = Effect.fnUntraced(function*(rows: ReadonlyArray<FinishRow>, nowMillis: number) {
        const now = iso(nowMillis)
        const changed = yield* sql<{ readonly id: string }>`
          WITH input AS (
            SELECT * FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS x(
              id bigint, token integer, state text, run_at timestamptz, attempt_delta integer, result jsonb, error jsonb)
          ),
          deleted AS (
            DELETE FROM effect_jobs j USING input i
            WHERE j.id = i.id AND j.claim_count = i.token AND j.state = 'running'
              AND i.state = 'completed' AND j.retention_ms = 0
            RETURNING j.id
          ),
          updated AS (
            UPDATE effect_jobs j SET
              state = i.state,
              run_at = COALESCE(i.run_at, j.run_at),
              attempt = j.attempt + i.attempt_delta,
              result = COALESCE(i.result, j.result),
              errors = CASE WHEN i.error IS NULL THEN j.errors ELSE (
                SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
                FROM jsonb_array_elements(j.errors || jsonb_build_array(i.error)) WITH ORDINALITY AS t(e, o)
                WHERE o > jsonb_array_length(j.errors) + 1 - j.max_errors) END,
              lease_expires_at = NULL,
              locked_by = NULL,
              finalized_at = CASE WHEN i.state IN ('completed', 'dead', 'cancelled') THEN ${now}::timestamptz END,
              prune_at = CASE WHEN i.state IN ('completed', 'dead', 'cancelled') AND j.retention_ms IS NOT NULL
                              THEN ${now}::timestamptz + j.retention_ms * interval '1 millisecond' END
            FROM input i
            WHERE j.id = i.id AND j.claim_count = i.token AND j.state = 'running'
              AND NOT (i.state = 'completed' AND j.retention_ms = 0)
            RETURNING j.id
          )
          SELECT c.id::text FROM (SELECT id FROM deleted UNION ALL SELECT id FROM updated) c
          -- one notification per statement, for Jobs.await (evaluated once, not per row)
          CROSS JOIN (SELECT pg_notify(${doneChannel}, '')::text AS n) notify`
        return new Set(changed.map((r) => r.id))
      })

      /** Extends the leases of jobs still held under the given tokens; returns those still held. */
      const jobHeartbeatMany = Effect.fnUntraced(function*(
        held: ReadonlyArray<HeldJob>,
        nowMillis: number,
        leaseMillis: number
      ) {
        const rows = yield* sql<{ readonly id: string }>`
          UPDATE effect_jobs j
          SET lease_expires_at = ${iso(nowMillis)}::timestamptz + ${leaseMillis} * interval '1 millisecond'
          FROM jsonb_to_recordset(${JSON.stringify(held)}::jsonb) AS h(id bigint, token integer)
          WHERE j.id = h.id AND j.claim_count = h.token AND j.state = 'running'
          RETURNING j.id::text`
        return new Set(rows.map((r) => r.id))
      })

      /** Moves due `scheduled` jobs to `available` and wakes the workers of their queues. */
      const jobPromoteScheduled = Effect.fnUntraced(function*(nowMillis: number, limit: number) {
        const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
          WITH due AS (
            SELECT id FROM effect_jobs
            WHERE state = 'scheduled' AND run_at <= ${iso(nowMillis)}::timestamptz
            ORDER BY run_at
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          ),
          promoted AS (
            UPDATE effect_jobs j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
          )
          SELECT queue, count(*)::int AS n, pg_notify(${channel}, queue)::text AS notified
          FROM promoted GROUP BY queue`
        return rows.reduce((sum, r) => sum + r.n, 0)
      })

      /**
       * Rescues jobs whose lease lapsed (their worker died or lost the database):
       * back to `available` to run again, or to `dead` if that was their last attempt.
       * The claim already counted the lost attempt. The fencing token is not touched
       * here: the next claim bumps it, which is what locks the old holder out.
       */
      const jobRescueExpired = Effect.fnUntraced(function*(nowMillis: number, limit: number) {
        const now = iso(nowMillis)
        const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
          WITH lapsed AS (
            SELECT id FROM effect_jobs
            WHERE state = 'running' AND lease_expires_at < ${now}::timestamptz
            ORDER BY lease_expires_at
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          ),
          rescued AS (
            UPDATE effect_jobs j SET
              state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'available' END,
              run_at = ${now}::timestamptz,
              lease_expires_at = NULL,
              locked_by = NULL,
              finalized_at = CASE WHEN j.attempt >= j.max_attempts THEN ${now}::timestamptz END,
              prune_at = CASE WHEN j.attempt >= j.max_attempts AND j.retention_ms IS NOT NULL
                              THEN ${now}::timestamptz + j.retention_ms * interval '1 millisecond' END,
              errors = (
                SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
                FROM jsonb_array_elements(j.errors || jsonb_build_array(jsonb_build_object(
                  'attempt', j.attempt, 'at', ${now}::timestamptz, 'kind', 'LeaseExpired',
                  'message', 'lease expired: the worker holding the job (' || COALESCE(j.locked_by, '?') || ') stopped heartbeating'
                ))) WITH ORDINALITY AS t(e, o)
                WHERE o > jsonb_array_length(j.errors) + 1 - j.max_errors)
            FROM lapsed WHERE j.id = lapsed.id
            RETURNING j.queue, j.state
          )
          SELECT queue, count(*)::int AS n, pg_notify(${channel}, queue)::text AS notified,
                 pg_notify(${doneChannel}, '')::text AS done
          FROM rescued GROUP BY queue`
        return rows.reduce((sum, r) => sum + r.n, 0)
      })

      const notifyQueues = (queues: ReadonlyArray<string>) =>
        queues.length === 0
          ? Effect.void
          : sql`SELECT pg_notify(${channel}, q)::text FROM jsonb_array_elements_text(${JSON.stringify(queues)}::jsonb) AS q`.pipe(
            Effect.asVoid
          )

      const jobOutcomes = (ids: ReadonlyArray<string>) =>
        sql<OutcomeRow>`
          SELECT id::text, name, state, result, errors FROM effect_jobs
          WHERE id IN (SELECT jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb)::bigint)`

      return JobStore.of({
        jobOutcomes,
        listenOn: (name) => pg.listen(name),
        jobInsertMany,
        jobClaim,
        jobFinishMany,
        jobHeartbeatMany,
        jobPromoteScheduled,
        jobRescueExpired,
        notifyQueues,
        listen: pg.listen(channel)
      })
    })
  )
}
