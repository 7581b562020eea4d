/**
 * JobStore: every SQL statement of effect-jobs, and nothing else.
 *
 * The producer, completer, maintenance fibers, client and admin calls never
 * write SQL themselves; they call these methods. Values are always bound
 * parameters; batches travel as one `jsonb` parameter expanded with
 * `jsonb_to_recordset`, so a 5,000-row batch is one statement with a constant
 * number of parameters.
 *
 * Times come from Effect's `Clock` and are passed in (`now`): when a job is due
 * (`run_at`: delays, retries, snoozes, promotion), when it was attempted and
 * finished, when it is pruned, the timestamps of its errors. So `TestClock`
 * controls delays and retries in tests (src/Testing.ts's drains rely on it).
 *
 * Lease deadlines are the exception: `lease_expires_at` is set (claim, heartbeat)
 * and compared (rescue) on the database's clock, `now()`, never on a process's.
 * A lease is written by one process and judged by another, and two processes'
 * clocks need not agree: a rescuer whose clock ran 10 s ahead took live jobs of
 * others. The worker watches its own leases as durations on its own clock
 * (src/internal/worker/Lease.ts). The registry's `last_seen_at` is on the
 * database's clock too.
 *
 * Ids are `bigint` in the table and strings in JavaScript (cast with `::text`),
 * so they survive JSON and never lose precision.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Exit, Layer, type Queue, Scope } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { PgSchema } from "../PgSchema.ts"
import { assertValid, qualify } from "./schemaName.ts"

/**
 * The NOTIFY channels of one schema, `<schema>.<kind>` (a dot cannot appear in a schema
 * name, so two schemas never share a channel). The bundle channel is sent by a trigger
 * (migrations/0003), the new-jobs channel by a trigger and by statements here.
 */
export interface Channels {
  /** New runnable jobs; the payload is a queue name. */
  readonly new: string
  /** Sent once per statement that finished jobs (payload empty): wakes `Jobs.await`. */
  readonly done: string
  /** Asks the worker that holds a job to interrupt it; the payload is the job id. */
  readonly cancel: string
  /** A bundle's last member finished; the payload is the bundle id. */
  readonly bundle: string
}

export type ChannelKind = keyof Channels

export const channelsOf = (schema: string): Channels => ({
  new: `${schema}.new`,
  done: `${schema}.done`,
  cancel: `${schema}.cancel`,
  bundle: `${schema}.bundle`
})

/** The library's tables in one schema, as SQL fragments (`"effect_jobs".jobs`). */
const tablesOf = (sql: SqlClient.SqlClient, schema: string) => ({
  jobs: sql.literal(qualify(schema, "jobs")),
  queues: sql.literal(qualify(schema, "queues")),
  periodic: sql.literal(qualify(schema, "periodic")),
  bundles: sql.literal(qualify(schema, "bundles")),
  workers: sql.literal(qualify(schema, "workers"))
})

/**
 * The constant mixed into a worker's advisory lock key (migrations/0006):
 * `hashtextextended(<schema> || ':' || <worker id>, 6)`.
 */
const workerLockSeed = 6

/**
 * SQL: whether the session lock of the worker whose id is the expression `id` is held by
 * some session of this database (`pg_locks`, not `pg_try_advisory_lock`: trying it would take
 * it). The 64-bit key is split by Postgres into classid (high 32 bits) and objid (low 32 bits).
 */
const workerLockHeld = (schema: string, id: string) =>
  `EXISTS (SELECT 1 FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(${
    "'" + schema.replace(/'/g, "''") + ":'"
  } || ${id}, ${workerLockSeed}))`

/**
 * A registered worker whose lock nobody holds is taken for dead once its `last_seen_at` (which
 * it moves forward every 500 ms) is this old (by the database's clock): a live worker whose
 * lock session was cut registers again well within it, and stops its runs before it
 * (src/internal/worker/Registration.ts).
 */
export const workerGraceMillis = 1500

/** After how long without being seen a dead worker's row is deleted by the rescuer. */
const deadWorkerRowMillis = 60_000

/**
 * How many times over its life a job its dead worker had only buffered (`buffered`,
 * migrations/0007) gets the attempt of that claim back at its rescue. `claim_count - attempt`
 * counts the claims that spent no attempt (these returns, snoozes, shutdown releases). The
 * mark of a job started from the buffer is cleared by the worker's next beat (every 500 ms):
 * a job that kills its worker as it starts, before that beat, is taken for never started.
 * Bounded, it spends its attempts after a few crashes and ends `dead`, instead of coming back
 * for ever.
 */
export const maxFreeReturns = 3

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
  readonly bundle_id?: string | null | undefined
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
  /**
   * The run was stopped because an operator cancelled the job: the error's message is
   * replaced by the reason they gave (`cancel_reason`), if any.
   */
  readonly by_request?: boolean | undefined
}

/** How an outcome was applied: the job's state after the write, and an operator's cancel reason. */
export interface Applied {
  readonly state: JobState
  readonly cancelReason: string | null
}

/**
 * The outcomes of `jobFinishMany` as one JSON object text keyed by job id, written by hand:
 * it is built for every batch of up to 1000 outcomes, and building an object per outcome
 * and then stringifying it cost the worker about 1 µs per job. Keys whose value would be
 * null are left out (the statement reads a missing key as NULL, the same thing). Ids are
 * the decimal text of a bigint (from the claim), states are our own words: neither needs
 * escaping; `run_at`, `result` and `error` go through `JSON.stringify`. A repeated id
 * keeps its last outcome, as in a jsonb object.
 */
export const outcomesJson = (rows: ReadonlyArray<FinishRow>): string => {
  let json = "{"
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!
    if (!/^\d+$/.test(r.id)) throw new Error(`not a job id: ${JSON.stringify(r.id)}`)
    json += `${i === 0 ? "" : ","}"${r.id}":{"token":${r.token},"state":"${r.state}","attempt_delta":${r.attempt_delta}`
    if (r.run_at != null) json += `,"run_at":${JSON.stringify(r.run_at)}`
    // (JSON.stringify gives undefined for a value JSON has no text for: left out, as before)
    const result = r.result == null ? undefined : JSON.stringify(r.result)
    if (result !== undefined) json += `,"result":${result}`
    const error = r.error == null ? undefined : JSON.stringify(r.error)
    if (error !== undefined) json += `,"error":${error}`
    if (r.by_request === true) json += `,"by_request":true`
    json += "}"
  }
  return json + "}"
}

export interface OutcomeRow {
  readonly id: string
  readonly name: string
  readonly state: JobState
  readonly result: unknown
  readonly errors: ReadonlyArray<{ readonly message?: string; readonly kind?: string }>
}

export interface BundleRow {
  readonly id: string
  readonly name: string
  readonly total: number
  readonly metadata: unknown
  readonly created_at: Date
  readonly finished_at: Date | null
}

export interface BundleProgressRow extends BundleRow {
  readonly remaining: number
  readonly follow_up_done: boolean
  readonly follow_up_id: string | null
  /** Members per state; members already deleted are not counted here. */
  readonly counts: Readonly<Record<string, number>>
}

export interface HeldJob {
  readonly id: string
  readonly token: number
}

/** What a heartbeat found (`jobHeartbeatMany`). */
export interface Heartbeat {
  /** Still held by the caller (same token, running); lease extended. */
  readonly extended: ReadonlySet<string>
  /**
   * Still held by the caller, but the row was locked by another transaction (an operator's,
   * a rescue in progress): its lease was not extended this time. Neither extended nor busy:
   * the job is no longer the caller's.
   */
  readonly busy: ReadonlySet<string>
}

const iso = (millis: number): string => new Date(millis).toISOString()

/**
 * A list of names as one Postgres array literal (`{"a","b"}`), to bind as a single
 * `text[]` parameter. Cached per list: a worker passes the same list to every claim.
 */
const textArrays = new WeakMap<ReadonlyArray<string>, string>()
const textArray = (names: ReadonlyArray<string>): string => {
  let literal = textArrays.get(names)
  if (literal === undefined) {
    literal = `{${names.map((n) => `"${n.replace(/[\\"]/g, "\\$&")}"`).join(",")}}`
    textArrays.set(names, literal)
  }
  return literal
}

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
    /**
     * Only jobs with one of these names (the worker's handlers and their aliases); jobs of
     * any name when absent. An empty list claims nothing.
     */
    readonly names?: ReadonlyArray<string> | undefined
    /**
     * How many of the rows returned (the first, in claim order) start at once: the free
     * slots. The others are marked `buffered` (migrations/0007). All start at once when absent.
     */
    readonly startNow?: number | undefined
  }) => Effect.Effect<ReadonlyArray<ClaimedJobRow>, SqlError.SqlError>
  readonly jobFinishMany: (
    rows: ReadonlyArray<FinishRow>,
    now: number
  ) => Effect.Effect<ReadonlyMap<string, Applied>, SqlError.SqlError>
  /** Extends the leases (to the database's `now() + leaseMillis`) of the jobs still held under these tokens. */
  readonly jobHeartbeatMany: (
    held: ReadonlyArray<HeldJob>,
    leaseMillis: number
  ) => Effect.Effect<Heartbeat, SqlError.SqlError>
  readonly jobPromoteScheduled: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  readonly jobRescueExpired: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  readonly notifyQueues: (queues: ReadonlyArray<string>) => Effect.Effect<void, SqlError.SqlError>
  /** State, result and errors of the given jobs (missing ids are absent). */
  readonly jobOutcomes: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<OutcomeRow>, SqlError.SqlError>
  // -- periodic jobs (src/Periodic.ts) --
  /** Records a schedule if it is new, with `slot` as its last slot; returns its last slot. */
  readonly periodicEnsure: (name: string, slot: number) => Effect.Effect<Date, SqlError.SqlError>
  /** Moves the schedule's last slot forward to `slot`; true for the one caller that did. */
  readonly periodicClaimSlot: (name: string, slot: number) => Effect.Effect<boolean, SqlError.SqlError>
  readonly periodicSetJob: (name: string, jobId: string) => Effect.Effect<void, SqlError.SqlError>
  // -- bundles (src/Bundle.ts) --
  readonly bundleInsert: (name: string, total: number, metadata: unknown) => Effect.Effect<string, SqlError.SqlError>
  readonly bundleProgress: (id: string) => Effect.Effect<BundleProgressRow | undefined, SqlError.SqlError>
  /**
   * Finished bundles whose finish step has not run, with an id above `afterId`, in id order,
   * locked for this transaction (SKIP LOCKED).
   */
  readonly bundleLockFinished: (
    limit: number,
    names: ReadonlyArray<string>,
    afterId: string
  ) => Effect.Effect<ReadonlyArray<BundleRow>, SqlError.SqlError>
  readonly bundleMembers: (id: string) => Effect.Effect<ReadonlyArray<OutcomeRow>, SqlError.SqlError>
  readonly bundleMarkDone: (id: string, followUpId: string | null) => Effect.Effect<void, SqlError.SqlError>
  /** The schema's NOTIFY channels. */
  readonly channels: Channels
  /** LISTEN on one of the schema's channels. */
  readonly listenOn: (
    channel: ChannelKind
  ) => Effect.Effect<Queue.Dequeue<{ readonly payload: string }, SqlError.SqlError>, SqlError.SqlError, Scope.Scope>
  readonly listen: Effect.Effect<Queue.Dequeue<{ readonly payload: string }, SqlError.SqlError>, SqlError.SqlError, Scope.Scope>
} & ManagementStore>()("effect-jobs/JobStore") {
  /**
   * Fresh on every use: each layer of the library that needs a store gets one on the
   * `PgClient` it is given. A memoized store would be shared by layers built against
   * different clients (two pools in one process), and transactions on one client would
   * not cover statements on the other.
   */
  static readonly layer = Layer.fresh(Layer.effect(
    JobStore,
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      // The library's queries name their columns exactly; user-configured name transforms must not apply.
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const schema = assertValid(yield* PgSchema)
      const t = tablesOf(sql, schema)
      const channels = channelsOf(schema)

      // Guards for rows edited by hand, used by the statements of the worker's hot path (finish,
      // rescue): one bad row must not fail a statement that carries the outcomes of many jobs.
      // `errors` that is not an array counts as empty; a retention beyond 100,000 years is capped
      // (now + 9e18 ms is out of the timestamp range).
      const validErrors = sql.literal(`(CASE WHEN jsonb_typeof(j.errors) = 'array' THEN j.errors ELSE '[]'::jsonb END)`)
      const retention = sql.literal(`LEAST(j.retention_ms, 3153600000000000) * interval '1 millisecond'`)

      const insertRows = (rows: ReadonlyArray<NewJobRow>) =>
        sql<{ readonly id: string; readonly name: string; readonly unique_key: string | null }>`
          INSERT INTO ${t.jobs} (name, queue, state, priority, run_at, max_attempts, args, unique_key,
                                   metadata, request_id, trace, retention_ms, max_errors, bundle_id)
          SELECT name, queue, state, priority, run_at, max_attempts, args, unique_key,
                 metadata, request_id, trace, retention_ms, max_errors, bundle_id
          FROM jsonb_to_recordset(${JSON.stringify(rows.map((row, ord) => ({ ...row, ord })))}::jsonb) AS x(
            name text, queue text, state text, priority smallint, run_at timestamptz, max_attempts integer,
            args jsonb, unique_key text, metadata jsonb, request_id text, trace jsonb, retention_ms bigint,
            max_errors smallint, bundle_id bigint, ord bigint)
          ORDER BY ord
          ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running')
          DO NOTHING
          RETURNING id::text, name, unique_key`

      const findActiveByKey = (keys: ReadonlyArray<{ readonly name: string; readonly unique_key: string }>) =>
        sql<{ readonly id: string; readonly name: string; readonly unique_key: string }>`
          SELECT j.id::text, j.name, j.unique_key
          FROM ${t.jobs} j
          JOIN jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) AS k(name text, unique_key text)
            ON j.name = k.name AND j.unique_key = k.unique_key
          WHERE j.state IN ('scheduled', 'available', 'running')`

      /**
       * Inserts in one statement. Rows with a unique key that is already taken by an
       * unfinished job are not inserted; their existing id is returned instead. If
       * that job finished between the two statements, the insert is tried again.
       */
      /**
       * The common batch: one job kind, the same options, no unique keys; only the args
       * differ. Everything else is a scalar parameter and the args travel as one JSON array,
       * a few bytes per job instead of a full record (20,000 jobs: ~0.2 MB instead of ~5 MB
       * for Postgres to parse).
       */
      const sameButArgs = (rows: ReadonlyArray<NewJobRow>): boolean => {
        const first = rows[0]!
        if (rows.length < 2 || first.unique_key !== null) return false
        for (let i = 1; i < rows.length; i++) {
          const r = rows[i]!
          if (
            r.name !== first.name || r.queue !== first.queue || r.state !== first.state || r.priority !== first.priority ||
            r.run_at !== first.run_at || r.max_attempts !== first.max_attempts || r.unique_key !== null ||
            r.metadata !== first.metadata || r.request_id !== first.request_id || r.trace !== first.trace ||
            r.retention_ms !== first.retention_ms || r.max_errors !== first.max_errors ||
            (r.bundle_id ?? null) !== (first.bundle_id ?? null)
          ) return false
        }
        return true
      }

      const insertSameButArgs = (rows: ReadonlyArray<NewJobRow>) => {
        const f = rows[0]!
        // The ids come back as one comma-separated text, not one row each: decoding 20,000
        // result rows costs the client more than the insert costs the server per row. They
        // are in insertion order: the ids are drawn from the sequence as the rows are
        // inserted, in args order, so sorting by id is sorting by position.
        return sql<{ readonly ids: string | null }>`
          WITH inserted AS (
          INSERT INTO ${t.jobs} (name, queue, state, priority, run_at, max_attempts, args, metadata, request_id,
                                   trace, retention_ms, max_errors, bundle_id)
          SELECT ${f.name}, ${f.queue}, ${f.state}, ${f.priority}, ${f.run_at}::timestamptz, ${f.max_attempts},
                 a.value, ${JSON.stringify(f.metadata)}::jsonb, ${f.request_id},
                 ${f.trace === null || f.trace === undefined ? null : JSON.stringify(f.trace)}::jsonb,
                 ${f.retention_ms}::bigint, ${f.max_errors}, ${f.bundle_id ?? null}::bigint
          FROM jsonb_array_elements(${JSON.stringify(rows.map((r) => r.args))}::jsonb) WITH ORDINALITY AS a(value, ord)
          ORDER BY a.ord
          RETURNING id
          )
          SELECT string_agg(id::text, ',' ORDER BY id) AS ids FROM inserted`
      }

      const jobInsertMany = Effect.fnUntraced(function*(rows: ReadonlyArray<NewJobRow>) {
        if (sameButArgs(rows)) {
          const [returned] = yield* insertSameButArgs(rows)
          const ids = returned?.ids == null ? [] : returned.ids.split(",")
          if (ids.length !== rows.length) {
            return yield* Effect.die(new Error(`enqueueMany inserted ${ids.length} of ${rows.length} jobs`))
          }
          return ids.map((id) => ({ id, inserted: true }))
        }
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
       * starts an attempt, takes a lease until the database's `now() + lease`, and bumps
       * the fencing token. `SKIP LOCKED` lets any number of workers claim side by side.
       * Rows past the first `startNow` (in claim order) are marked `buffered`: they wait in
       * the worker's buffer, and a rescue gives their attempt back (jobRescueExpired).
       */
      const jobClaim = Effect.fnUntraced(function*(o: {
        readonly queue: string
        readonly limit: number
        readonly now: number
        readonly leaseMillis: number
        readonly workerId: string
        readonly names?: ReadonlyArray<string> | undefined
        readonly startNow?: number | undefined
      }) {
        const now = iso(o.now)
        // The name filter is checked on the rows the claim index yields, in its order: the
        // index (queue, priority, run_at, id) is still the plan, and jobs of names the worker
        // cannot run are passed over (left `available` for a worker that can), not claimed.
        const byName = o.names === undefined ? sql.literal("") : sql`AND name = ANY(${textArray(o.names)}::text[])`
        // `id = ANY(ARRAY(...))`, not `UPDATE ... FROM (the CTE)`: with a join, the planner
        // may hash the whole table to find a few hundred rows (a sequential scan per claim,
        // which grows with history); an array of ids is always looked up in the primary key.
        // Returned in claim order (RETURNING alone has none), so the buffer starts them in order.
        // The ids in claim order, once (an InitPlan): the first `startNow` of them start at once,
        // the rest are `buffered`. Same order as the final ORDER BY: the keys are not changed.
        const startNow = Math.max(0, Math.min(o.startNow ?? o.limit, o.limit))
        return yield* sql<ClaimedJobRow>`
          WITH picked AS (
            SELECT ARRAY(
              SELECT id FROM ${t.jobs}
              WHERE state = 'available' AND queue = ${o.queue} AND run_at <= ${now}::timestamptz ${byName}
              ORDER BY priority, run_at, id
              LIMIT ${o.limit}
              FOR UPDATE SKIP LOCKED
            ) AS ids
          ),
          claimed AS (
          UPDATE ${t.jobs} j
          -- Saturate (attempt) and wrap (the fencing token) instead of overflowing: a count set
          -- absurdly high by hand must not fail every claim of its queue. The worker sends a job
          -- whose attempt is out of range to dead without running it.
          SET state = 'running',
              attempt = CASE WHEN j.attempt >= 2147483647 THEN j.attempt ELSE j.attempt + 1 END,
              claim_count = CASE WHEN j.claim_count >= 2147483647 THEN 1 ELSE j.claim_count + 1 END,
              attempted_at = ${now}::timestamptz,
              -- the database's clock: the rescuer of another process compares it (see the top of this file)
              lease_expires_at = now() + ${o.leaseMillis} * interval '1 millisecond',
              locked_by = ${o.workerId},
              buffered = j.id <> ALL((SELECT ids[1:${startNow}] FROM picked)::bigint[])
          WHERE j.id = ANY((SELECT ids FROM picked)::bigint[])
          RETURNING j.id, j.name, j.queue, j.priority, j.attempt, j.max_attempts, j.claim_count,
                    j.args, j.metadata, j.request_id, j.trace, j.run_at, j.created_at
          )
          -- (metadata '{}', the usual, comes back NULL: nothing to parse; run_at is only for the order)
          -- The ORDER BY qualifies its columns: a bare id would be the output column id::text,
          -- and '1000' sorts before '999' as text.
          SELECT id::text, name, queue, priority, attempt, max_attempts, claim_count, args,
                 NULLIF(metadata, '{}'::jsonb) AS metadata, request_id, trace, created_at
          FROM claimed ORDER BY claimed.priority, claimed.run_at, claimed.id`
      })

      /**
       * Applies the outcomes of many runs in one statement. A row is changed only if
       * it is still `running` under the same fencing token; the jobs changed are
       * returned with the state they ended in (a cancel request turns a retry into
       * `cancelled`). A completed job whose retention is 0 is deleted instead.
       */
      const jobFinishMany = Effect.fnUntraced(function*(rows: ReadonlyArray<FinishRow>, nowMillis: number) {
        const now = iso(nowMillis)
        // The outcomes as one JSON object keyed by job id. Each row is looked up in it by
        // its id (a binary search in the jsonb object), not joined with a row set: the rows
        // are found by primary key (`id = ANY(...)`, see jobClaim), and no join can turn
        // into comparing every candidate row with every outcome. That happened when the
        // table's statistics said no job was running (taken while the queue was idle): the
        // planner chose a nested loop over the batch for each row.
        const outcomes = outcomesJson(rows)
        // `(SELECT o FROM x)` is evaluated once (an InitPlan) and then read in place; `x.o`
        // in a join would copy the whole object out of the CTE for every row.
        const o = sql.literal("(SELECT o FROM x) -> j.id::text")
        // The error to append: an operator's reason replaces the generic message of a run
        // stopped at their request.
        const error = sql.literal(
          `CASE WHEN (${"(SELECT o FROM x) -> j.id::text"} ->> 'by_request') = 'true' AND j.cancel_reason IS NOT NULL ` +
            `THEN jsonb_set(${"(SELECT o FROM x) -> j.id::text"} -> 'error', '{message}', to_jsonb(j.cancel_reason)) ` +
            `ELSE ${"(SELECT o FROM x) -> j.id::text"} -> 'error' END`
        )
        const changed = yield* sql<{ readonly id: string; readonly state: JobState; readonly cancel_reason: string | null }>`
          WITH x AS (SELECT ${outcomes}::jsonb AS o),
          deleted AS (
            DELETE FROM ${t.jobs} j
            WHERE j.id = ANY(ARRAY(SELECT k::bigint FROM x, jsonb_each(x.o) AS e(k, v) WHERE v ->> 'state' = 'completed'))
              AND j.claim_count = (${o} ->> 'token')::int AND j.state = 'running'
              AND j.retention_ms = 0 AND j.bundle_id IS NULL
            RETURNING j.id, 'completed'::text AS state, NULL::text AS cancel_reason
          ),
          updated AS (
            UPDATE ${t.jobs} j SET
              -- An operator cancelled the job while it ran (migration 0002) and the run ended
              -- before the worker could stop it: it must not run again, so a retry, snooze or
              -- release ends it 'cancelled' (every outcome is then terminal).
              state = CASE WHEN j.cancel_requested_at IS NOT NULL AND ${o} ->> 'state' IN ('available', 'scheduled')
                           THEN 'cancelled' ELSE ${o} ->> 'state' END,
              run_at = COALESCE((${o} ->> 'run_at')::timestamptz, j.run_at),
              attempt = j.attempt + (${o} ->> 'attempt_delta')::int,
              result = COALESCE(NULLIF(${o} -> 'result', 'null'::jsonb), j.result),
              -- An "errors" that is not an array (edited by hand) counts as empty, rather than
              -- failing the statement and with it every outcome of the batch.
              errors = CASE WHEN jsonb_typeof(${o} -> 'error') IS DISTINCT FROM 'object' THEN j.errors ELSE (
                SELECT COALESCE(jsonb_agg(e ORDER BY n), '[]'::jsonb)
                FROM jsonb_array_elements(${validErrors} || jsonb_build_array(${error})) WITH ORDINALITY AS t(e, n)
                WHERE n > jsonb_array_length(${validErrors}) + 1 - j.max_errors) END,
              lease_expires_at = NULL,
              locked_by = NULL,
              finalized_at = CASE WHEN ${o} ->> 'state' IN ('completed', 'dead', 'cancelled') OR j.cancel_requested_at IS NOT NULL
                                  THEN ${now}::timestamptz END,
              prune_at = CASE WHEN (${o} ->> 'state' IN ('completed', 'dead', 'cancelled') OR j.cancel_requested_at IS NOT NULL)
                                   AND j.retention_ms IS NOT NULL
                              THEN ${now}::timestamptz + ${retention} END
            -- every outcome not deleted above (usually none: a batch of completions that are not kept)
            WHERE j.id = ANY(ARRAY(SELECT k::bigint FROM x, jsonb_object_keys(x.o) AS k EXCEPT ALL SELECT id FROM deleted))
              AND j.claim_count = (${o} ->> 'token')::int AND j.state = 'running'
              -- IS NOT DISTINCT FROM: a NULL retention (kept forever) must not make this NULL (no update)
              AND NOT (${o} ->> 'state' = 'completed' AND j.retention_ms IS NOT DISTINCT FROM 0 AND j.bundle_id IS NULL)
            RETURNING j.id, j.state, j.cancel_reason, j.queue
          )
          SELECT c.id::text, c.state, c.cancel_reason
          FROM (SELECT * FROM deleted UNION ALL SELECT id, state, cancel_reason FROM updated) c
          -- one notification per statement, for Jobs.await (evaluated once, not per row)
          CROSS JOIN (SELECT pg_notify(${channels.done}, '')::text AS n) notify
          -- A zero-delay retry or snooze and a shutdown release leave the job 'available': wake
          -- the sated workers of its queue, as the insert trigger does, rather than leave it to
          -- their next poll. Once per queue; no pg_notify at all when no row is 'available' (a
          -- batch of completions). An aggregate, so always one row: joined, it is evaluated
          -- (an unreferenced CTE would not be) and removes no result row.
          CROSS JOIN (SELECT count(pg_notify(${channels.new}, q.queue)) AS n
                      FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') q) wake`
        return new Map(changed.map((r) => [r.id, { state: r.state, cancelReason: r.cancel_reason }]))
      })

      /** Extends the leases of jobs still held under the given tokens; returns those still held. */
      const jobHeartbeatMany = Effect.fnUntraced(function*(
        held: ReadonlyArray<HeldJob>,
        leaseMillis: number
      ) {
        const tokens: Record<string, number> = {}
        for (const h of held) tokens[h.id] = h.token
        // Looked up by id in a JSON object rather than joined: see jobFinishMany. Rows locked
        // by another transaction are skipped (SKIP LOCKED) instead of waited for: one locked
        // row must not hold back the lease extension of every other job of this worker. The
        // last SELECT reads the statement's snapshot: a row still ours there but not extended
        // was locked, and is reported busy (its run goes on; the next heartbeat tries again).
        const ours = sql.literal(
          "j.id = ANY(ARRAY(SELECT k::bigint FROM h, jsonb_object_keys(h.o) AS k)) " +
            "AND j.claim_count = ((SELECT o FROM h) ->> j.id::text)::int AND j.state = 'running'"
        )
        const rows = yield* sql<{ readonly id: string; readonly extended: boolean }>`
          WITH h AS (SELECT ${JSON.stringify(tokens)}::jsonb AS o),
          locked AS (
            SELECT j.id FROM ${t.jobs} j WHERE ${ours} FOR UPDATE SKIP LOCKED
          ),
          extended AS (
            UPDATE ${t.jobs} j
            SET lease_expires_at = now() + ${leaseMillis} * interval '1 millisecond' -- the database's clock, as the claim
            WHERE j.id = ANY(ARRAY(SELECT id FROM locked))
            RETURNING j.id
          )
          SELECT j.id::text, j.id IN (SELECT id FROM extended) AS extended
          FROM ${t.jobs} j WHERE ${ours}`
        const extended = new Set<string>()
        const busy = new Set<string>()
        for (const r of rows) (r.extended ? extended : busy).add(r.id)
        return { extended, busy }
      })

      /** Moves due `scheduled` jobs to `available` and wakes the workers of their queues. */
      const jobPromoteScheduled = Effect.fnUntraced(function*(nowMillis: number, limit: number) {
        const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
          WITH due AS (
            SELECT id FROM ${t.jobs}
            WHERE state = 'scheduled' AND run_at <= ${iso(nowMillis)}::timestamptz
            ORDER BY run_at
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          ),
          promoted AS (
            UPDATE ${t.jobs} j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
          )
          SELECT queue, count(*)::int AS n, pg_notify(${channels.new}, queue)::text AS notified
          FROM promoted GROUP BY queue`
        return rows.reduce((sum, r) => sum + r.n, 0)
      })

      /**
       * Rescues jobs whose lease lapsed (their worker died or lost the database), and jobs
       * held by a registered worker whose session lock is gone (it died: `WorkerDied`):
       * back to `available` to run again, or to `dead` if that was their last attempt.
       * The claim already counted the lost attempt. A job its dead worker had only buffered
       * (marked `buffered`, migrations/0007: claimed ahead, and not seen started by the
       * worker's last beat) gets that attempt back, at most `maxFreeReturns` times. Leases
       * are judged by the database's clock; `nowMillis` (the caller's Clock) times the
       * `run_at`, the error entries and the finish. Also deletes the rows of workers dead for
       * a while. The fencing token is not touched here: the next claim bumps it, which is
       * what locks the old holder out.
       */
      const jobRescueExpired = Effect.fnUntraced(function*(nowMillis: number, limit: number) {
        const now = iso(nowMillis)
        // Only a registered worker's mark is trusted: its beat clears the mark of every job it
        // started (Registration.ts). An unregistered worker (`listen: false`) never does.
        const givesBack = sql.literal(
          `(buffered AND claim_count::bigint - attempt BETWEEN 0 AND ${maxFreeReturns - 1} ` +
            `AND locked_by IN (SELECT id FROM dead_workers))`
        )
        const final = sql.literal("(j.cancel_requested_at IS NOT NULL OR (NOT gone.gives_back AND j.attempt >= j.max_attempts))")
        const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
          WITH dead_workers AS (
            -- registered workers whose session lock nobody holds: their process (or its
            -- session) is gone (migrations/0006); their jobs are taken once they have not
            -- been seen for workerGraceMillis
            SELECT w.id, w.last_seen_at FROM ${t.workers} w WHERE NOT ${sql.literal(workerLockHeld(schema, "w.id"))}
          ),
          lapsed AS (
            SELECT id, false AS orphaned, ${givesBack} AS gives_back FROM ${t.jobs}
            WHERE state = 'running' AND lease_expires_at < now()
            ORDER BY lease_expires_at
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          ),
          orphaned AS (
            SELECT id, true AS orphaned, ${givesBack} AS gives_back FROM ${t.jobs}
            WHERE lease_expires_at IS NOT NULL AND state = 'running'
              AND lease_expires_at >= now()
              AND locked_by IN (SELECT id FROM dead_workers
                                WHERE last_seen_at < now() - ${workerGraceMillis} * interval '1 millisecond')
            LIMIT ${limit}
            FOR UPDATE SKIP LOCKED
          ),
          gone AS (SELECT * FROM lapsed UNION ALL SELECT * FROM orphaned),
          forgotten AS (
            -- rows of workers dead for a while, with no running job left under their name
            DELETE FROM ${t.workers} w
            WHERE w.id IN (SELECT id FROM dead_workers)
              AND w.last_seen_at < now() - ${deadWorkerRowMillis} * interval '1 millisecond'
              AND NOT EXISTS (SELECT 1 FROM ${t.jobs} r WHERE r.lease_expires_at IS NOT NULL AND r.state = 'running' AND r.locked_by = w.id)
          ),
          rescued AS (
            UPDATE ${t.jobs} j SET
              -- a job an operator cancelled while its worker was dying ends cancelled (migration 0002)
              state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                           WHEN ${final} THEN 'dead' ELSE 'available' END,
              attempt = CASE WHEN gone.gives_back THEN j.attempt - 1 ELSE j.attempt END,
              run_at = ${now}::timestamptz,
              lease_expires_at = NULL,
              locked_by = NULL,
              finalized_at = CASE WHEN ${final} THEN ${now}::timestamptz END,
              prune_at = CASE WHEN ${final} AND j.retention_ms IS NOT NULL THEN ${now}::timestamptz + ${retention} END,
              -- (the entry names the attempt the claim counted, also when it is given back)
              errors = (
                SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
                FROM jsonb_array_elements(${validErrors} || jsonb_build_array(jsonb_build_object(
                  'attempt', j.attempt, 'at', ${now}::text,
                  'kind', CASE WHEN gone.orphaned THEN 'WorkerDied' ELSE 'LeaseExpired' END,
                  'message', CASE
                    WHEN gone.gives_back
                    THEN CASE WHEN gone.orphaned THEN '' ELSE 'lease expired: ' END ||
                         'the worker holding the job (' || j.locked_by || ') died before it was seen to start the job ' ||
                         '(claimed into its buffer; or started less than a beat, 500 ms, before): the attempt is given back'
                    WHEN gone.orphaned
                    THEN 'the worker holding the job (' || j.locked_by || ') died: its database session ended'
                    ELSE 'lease expired: the worker holding the job (' || COALESCE(j.locked_by, '?') || ') stopped heartbeating' END
                ))) WITH ORDINALITY AS t(e, o)
                WHERE o > jsonb_array_length(${validErrors}) + 1 - j.max_errors)
            FROM gone WHERE j.id = gone.id
            RETURNING j.queue, j.state
          )
          SELECT queue, count(*)::int AS n, pg_notify(${channels.new}, queue)::text AS notified,
                 pg_notify(${channels.done}, '')::text AS done
          FROM rescued GROUP BY queue`
        return rows.reduce((sum, r) => sum + r.n, 0)
      })

      const notifyQueues = (queues: ReadonlyArray<string>) =>
        queues.length === 0
          ? Effect.void
          : sql`SELECT pg_notify(${channels.new}, q)::text FROM jsonb_array_elements_text(${JSON.stringify(queues)}::jsonb) AS q`.pipe(
            Effect.asVoid
          )

      const jobOutcomes = (ids: ReadonlyArray<string>) =>
        sql<OutcomeRow>`
          SELECT id::text, name, state, result, errors FROM ${t.jobs}
          WHERE id IN (SELECT jsonb_array_elements_text(${JSON.stringify(ids)}::jsonb)::bigint)`

      /**
       * An upsert that writes nothing new (`SET name = EXCLUDED.name`), for its RETURNING: on
       * a conflict with a row another scheduler is inserting (or claiming a slot on) right now,
       * DO UPDATE waits for that transaction and returns the row as committed, so a row always
       * comes back. (`DO NOTHING` with a `UNION ALL SELECT` returned none then: the SELECT reads
       * the statement's snapshot, taken before the other insert committed.)
       */
      const periodicEnsure = (name: string, slot: number) =>
        Effect.flatMap(
          sql<{ readonly last_slot: Date }>`
            INSERT INTO ${t.periodic} (name, last_slot) VALUES (${name}, ${iso(slot)}::timestamptz)
            ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
            RETURNING last_slot`,
          (rows) =>
            rows[0] === undefined
              ? Effect.die(new Error(`registering periodic schedule "${name}": the upsert returned no row`))
              : Effect.succeed(rows[0].last_slot)
        )

      const periodicClaimSlot = (name: string, slot: number) =>
        Effect.map(
          sql`UPDATE ${t.periodic} SET last_slot = ${iso(slot)}::timestamptz, updated_at = now()
              WHERE name = ${name} AND last_slot < ${iso(slot)}::timestamptz RETURNING name`,
          (rows) => rows.length === 1
        )

      const periodicSetJob = (name: string, jobId: string) =>
        Effect.asVoid(sql`UPDATE ${t.periodic} SET last_job = ${jobId}::bigint WHERE name = ${name}`)

      const bundleInsert = (name: string, total: number, metadata: unknown) =>
        Effect.map(
          sql<{ readonly id: string }>`
            INSERT INTO ${t.bundles} (name, total, remaining, metadata)
            VALUES (${name}, ${total}, ${total}, ${JSON.stringify(metadata ?? {})}::jsonb) RETURNING id::text`,
          (rows) => rows[0]!.id
        )

      const bundleProgress = (id: string) =>
        Effect.map(
          sql<BundleProgressRow>`
            SELECT b.id::text, b.name, b.total, b.remaining, b.metadata, b.created_at, b.finished_at,
                   b.follow_up_done, b.follow_up_id::text,
                   COALESCE((SELECT jsonb_object_agg(state, n) FROM (
                     SELECT state, count(*)::int AS n FROM ${t.jobs} WHERE bundle_id = b.id GROUP BY state) c), '{}') AS counts
            FROM ${t.bundles} b WHERE b.id = ${id}::bigint`,
          (rows) => rows[0]
        )

      const bundleLockFinished = (limit: number, names: ReadonlyArray<string>, afterId: string) =>
        sql<BundleRow>`
          SELECT id::text, name, total, metadata, created_at, finished_at FROM ${t.bundles}
          WHERE finished_at IS NOT NULL AND NOT follow_up_done AND id > ${afterId}::bigint
            AND remaining = 0 -- a member retried after the count reached 0 re-opens the bundle
            AND name IN (SELECT jsonb_array_elements_text(${JSON.stringify(names)}::jsonb))
          ORDER BY bundles.id LIMIT ${limit}
          FOR UPDATE SKIP LOCKED`

      const bundleMembers = (id: string) =>
        sql<OutcomeRow>`SELECT id::text, name, state, result, errors FROM ${t.jobs} WHERE bundle_id = ${id}::bigint ORDER BY jobs.id`

      const bundleMarkDone = (id: string, followUpId: string | null) =>
        Effect.asVoid(sql`
          UPDATE ${t.bundles} SET follow_up_done = true, follow_up_id = ${followUpId}::bigint
          WHERE id = ${id}::bigint`)

      return JobStore.of({
        periodicEnsure,
        periodicClaimSlot,
        periodicSetJob,
        bundleInsert,
        bundleProgress,
        bundleLockFinished,
        bundleMembers,
        bundleMarkDone,
        ...makeManagement(sql, schema), // management, retention, leadership, live controls: end of this file
        jobOutcomes,
        channels,
        listenOn: (kind) => pg.listen(channels[kind]),
        jobInsertMany,
        jobClaim,
        jobFinishMany,
        jobHeartbeatMany,
        jobPromoteScheduled,
        jobRescueExpired,
        notifyQueues,
        listen: pg.listen(channels.new)
      })
    })
  ))
}

// ===========================================================================================
// Management, retention, leadership and live controls.
//
// Used by `JobsAdmin` (src/Admin.ts), the retention leader (src/internal/maintenance/Pruner.ts), the
// jobs-per-state gauge of `Observer.metrics`, the worker's pause/cancel poll and
// `Testing.drain`. None of these statements is on the claim/finish hot path.
// ===========================================================================================

/** One (queue, state) pair and how many jobs are in it. */
export interface QueueStateCountRow {
  readonly queue: string
  readonly state: JobState
  readonly count: number
}

/** Every column of a job, as the management API shows it. */
export interface JobDetailRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly state: JobState
  readonly priority: number
  readonly attempt: number
  readonly max_attempts: number
  readonly run_at: Date
  readonly args: unknown
  readonly result: unknown
  readonly errors: ReadonlyArray<unknown>
  readonly unique_key: string | null
  readonly metadata: unknown
  readonly request_id: string | null
  readonly locked_by: string | null
  readonly lease_expires_at: Date | null
  readonly created_at: Date
  readonly attempted_at: Date | null
  readonly finalized_at: Date | null
  readonly prune_at: Date | null
  readonly cancel_requested_at: Date | null
}

export interface JobListFilter {
  readonly states: ReadonlyArray<JobState> | undefined
  readonly queue: string | undefined
  readonly name: string | undefined
  /** Only the jobs with this unique key (any name, any state). */
  readonly uniqueKey?: string | undefined
  /** Keyset cursor: only ids below (newest first) or above (oldest first) this one. */
  readonly after: string | undefined
  readonly order: "newest" | "oldest"
  readonly limit: number
}

/** What `jobCancel` found and did. */
export type CancelRow =
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Cancelled"; readonly queue: string }
  | { readonly _tag: "CancelRequested"; readonly queue: string }
  | { readonly _tag: "Finished"; readonly state: JobState }

/** What `jobRetry` found and did. */
export type RetryRow =
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Retried" }
  | { readonly _tag: "WrongState"; readonly state: JobState }
  | { readonly _tag: "KeyTaken"; readonly uniqueKey: string }

/** What `jobDelete` found and did. */
export type DeleteRow =
  | { readonly _tag: "NotFound" }
  | { readonly _tag: "Deleted" }
  | { readonly _tag: "Running" }
  /** A member of a bundle that is not terminal, or whose bundle's finish step has not run: kept. */
  | { readonly _tag: "InPendingBundle"; readonly state: JobState; readonly bundleId: string }

/** A session-level advisory lock held on a connection reserved for it (see `leaderTryAcquire`). */
export interface LeaderSession {
  /** The backend pid of the reserved connection (what `pg_locks` shows). */
  readonly pid: number
  /** Succeeds while the session (and so the lock) is alive; fails once the connection is gone. */
  readonly check: Effect.Effect<void, SqlError.SqlError>
}

/** A worker's registration (`workerRegister`): its session lock, held on a reserved connection. */
export interface WorkerSession {
  /** The backend pid of the reserved connection (what `pg_locks` shows). */
  readonly pid: number
  /**
   * The beat, one statement on the locked session: moves `last_seen_at` forward, and clears
   * the `buffered` mark (migrations/0007) of the given jobs, started from the buffer and still
   * held under these tokens. Returns the ids cleared (a row locked by another transaction
   * just then is not: send it again). Fails once the session is gone.
   */
  readonly check: (started: ReadonlyArray<HeldJob>) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
}

export interface ManagementStore {
  /** Jobs per queue and state (one queue, or all). */
  readonly adminCountByQueueState: (
    queue: string | undefined
  ) => Effect.Effect<ReadonlyArray<QueueStateCountRow>, SqlError.SqlError>
  /** One page of jobs, keyset-paged by id. */
  readonly adminList: (filter: JobListFilter) => Effect.Effect<ReadonlyArray<JobDetailRow>, SqlError.SqlError>
  /** One job with everything stored about it. */
  readonly adminGet: (id: string) => Effect.Effect<JobDetailRow | undefined, SqlError.SqlError>
  /**
   * Makes a `dead` or `cancelled` job runnable now. It gets `attempts` more attempts
   * than it has used (default: 1 if it has none left, else it keeps those it has).
   */
  readonly jobRetry: (
    id: string,
    attempts: number | undefined,
    now: number
  ) => Effect.Effect<RetryRow, SqlError.SqlError>
  /** `jobRetry` for every `dead` job of a queue (optionally of one job name); returns how many. */
  readonly jobRetryDeadOfQueue: (
    queue: string,
    name: string | undefined,
    attempts: number | undefined,
    now: number
  ) => Effect.Effect<number, SqlError.SqlError>
  /** Cancels a queued job at once, or asks the worker running it to stop it. */
  readonly jobCancel: (id: string, now: number, reason: string) => Effect.Effect<CancelRow, SqlError.SqlError>
  /** The id of the unfinished job with this name and unique key, if any. */
  readonly jobFindActiveByKey: (name: string, uniqueKey: string) => Effect.Effect<string | undefined, SqlError.SqlError>
  /**
   * Deletes one job unless it is running, or is a member of a bundle and either not
   * terminal or its bundle's finish step has not run.
   */
  readonly jobDelete: (id: string) => Effect.Effect<DeleteRow, SqlError.SqlError>
  /** Deletes up to `limit` finished jobs (but members of bundles whose finish step has not run); returns how many. */
  readonly jobDeleteFinished: (options: {
    readonly queue: string | undefined
    readonly states: ReadonlyArray<"completed" | "dead" | "cancelled">
    readonly finalizedBefore: number | undefined
    readonly limit: number
  }) => Effect.Effect<number, SqlError.SqlError>
  /** Deletes up to `limit` finished jobs whose retention ran out (`prune_at <= now`); returns how many. */
  readonly jobPruneExpired: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  /** Pauses or resumes a queue for every worker (the `queues` table's row). */
  readonly queueSetPaused: (queue: string, paused: boolean, now: number) => Effect.Effect<void, SqlError.SqlError>
  /** Every queue with a row in the `queues` table. */
  readonly queueList: Effect.Effect<
    ReadonlyArray<{ readonly name: string; readonly paused: boolean; readonly updated_at: Date }>,
    SqlError.SqlError
  >
  /**
   * The worker's control poll, one statement: which of `queues` are paused for all
   * workers, and which of the `held` jobs have a cancel request.
   */
  readonly workerControlPoll: (
    queues: ReadonlyArray<string>,
    held: ReadonlyArray<string>
  ) => Effect.Effect<{ readonly paused: ReadonlySet<string>; readonly cancel: ReadonlySet<string> }, SqlError.SqlError>
  /**
   * Jobs of these queues a worker could run now: available, running, or scheduled and due
   * (with `anyScheduled`, scheduled whenever they are due: what `withScheduled` would run).
   */
  readonly jobCountRunnable: (
    queues: ReadonlyArray<string>,
    now: number,
    options?: { readonly anyScheduled?: boolean | undefined }
  ) => Effect.Effect<number, SqlError.SqlError>
  /** Makes every scheduled job of these queues due now (for `Testing.drain({ withScheduled: true })`). */
  readonly jobScheduledDueNow: (queues: ReadonlyArray<string>, now: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * Reserves a connection and tries `pg_try_advisory_lock` on it, with `key` mixed with the
   * schema's name (`hashtextextended`), so each schema has a leader of its own. Not taken:
   * the connection goes back at once and the result is `undefined`. Taken: the
   * connection stays reserved, and the lock held, until the scope closes (then
   * it is unlocked) or the session ends (Postgres drops the lock itself).
   */
  readonly leaderTryAcquire: (key: bigint) => Effect.Effect<LeaderSession | undefined, SqlError.SqlError, Scope.Scope>
  /**
   * Registers a worker (migrations/0006): reserves a connection, takes the worker's session
   * lock on it, then writes its row. Not taken (another live session holds it: the same
   * `workerId` in two processes): nothing registered, `undefined`. Taken: until the scope
   * closes, when the row is deleted and then the lock released. `check` (the beat) moves
   * `last_seen_at` forward on the locked session, and fails once that session is gone.
   */
  readonly workerRegister: (worker: {
    readonly id: string
    readonly queues: ReadonlyArray<string>
    readonly concurrency: number
  }) => Effect.Effect<WorkerSession | undefined, SqlError.SqlError, Scope.Scope>
  /** The registered workers whose session lock is held (live), with the jobs each holds. */
  readonly workerList: Effect.Effect<ReadonlyArray<WorkerRow>, SqlError.SqlError>
}

/** One live worker (`workerList`). */
export interface WorkerRow {
  readonly id: string
  readonly queues: ReadonlyArray<string>
  readonly concurrency: number
  readonly started_at: Date
  readonly last_seen_at: Date
  readonly held: number
}

/** (Statements that select these order by `jobs.id`: a bare `id` is the text column.) */
const detailColumns = `id::text, name, queue, state, priority, attempt, max_attempts, run_at, args, result, errors,
  unique_key, metadata, request_id, locked_by, lease_expires_at, created_at, attempted_at, finalized_at, prune_at,
  cancel_requested_at`

/** The `ManagementStore` statements on a client without name transforms. */
export const makeManagement = (sql: SqlClient.SqlClient, schema: string): ManagementStore => {
  const t = tablesOf(sql, schema)
  const channels = channelsOf(schema)
  const json = (value: unknown) => JSON.stringify(value)

  const adminCountByQueueState = (queue: string | undefined) =>
    sql<QueueStateCountRow>`
      SELECT queue, state, count(*)::int AS count FROM ${t.jobs}
      WHERE ${queue === undefined ? sql.literal("TRUE") : sql`queue = ${queue}`}
      GROUP BY queue, state ORDER BY queue, state`

  const adminList = (f: JobListFilter) => {
    const where = [sql.literal("TRUE")]
    if (f.states !== undefined) where.push(sql`state IN ${sql.in(f.states)}`)
    if (f.queue !== undefined) where.push(sql`queue = ${f.queue}`)
    if (f.name !== undefined) where.push(sql`name = ${f.name}`)
    if (f.uniqueKey !== undefined) where.push(sql`unique_key = ${f.uniqueKey}`)
    if (f.after !== undefined) {
      where.push(f.order === "newest" ? sql`id < ${f.after}::bigint` : sql`id > ${f.after}::bigint`)
    }
    return sql<JobDetailRow>`
      SELECT ${sql.literal(detailColumns)} FROM ${t.jobs} WHERE ${sql.and(where)}
      ORDER BY jobs.id ${sql.literal(f.order === "newest" ? "DESC" : "ASC")} LIMIT ${f.limit}`
  }

  const adminGet = (id: string) =>
    Effect.map(
      sql<JobDetailRow>`SELECT ${sql.literal(detailColumns)} FROM ${t.jobs} WHERE id = ${id}::bigint`,
      (rows) => rows[0]
    )

  // A retried job starts over as a fresh run: no lease, not finished, nothing to prune,
  // no pending cancel request. `attempt` is kept, so its errors still read in order.
  const retrySet = (attempts: number | undefined, now: string) =>
    sql`
      state = 'available', run_at = ${now}::timestamptz,
      max_attempts = GREATEST(max_attempts, attempt + ${attempts ?? 1}::int),
      finalized_at = NULL, prune_at = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
      lease_expires_at = NULL, locked_by = NULL`

  const jobRetry = (id: string, attempts: number | undefined, nowMillis: number) =>
    sql.withTransaction(Effect.gen(function*() {
      const now = iso(nowMillis)
      const [found] = yield* sql<{ readonly state: JobState; readonly name: string; readonly unique_key: string | null }>`
        SELECT state, name, unique_key FROM ${t.jobs} WHERE id = ${id}::bigint FOR UPDATE`
      if (found === undefined) return { _tag: "NotFound" } as RetryRow
      if (found.state !== "dead" && found.state !== "cancelled") return { _tag: "WrongState", state: found.state } as RetryRow
      if (found.unique_key !== null) {
        // Another unfinished job holds the key now; making this one runnable would break uniqueness.
        const [holder] = yield* sql<{ readonly id: string }>`
          SELECT id::text FROM ${t.jobs}
          WHERE name = ${found.name} AND unique_key = ${found.unique_key}
            AND state IN ('scheduled', 'available', 'running')`
        if (holder !== undefined) return { _tag: "KeyTaken", uniqueKey: found.unique_key } as RetryRow
      }
      yield* sql`
        UPDATE ${t.jobs} SET ${retrySet(attempts, now)} WHERE id = ${id}::bigint
        RETURNING pg_notify(${channels.new}, queue)::text`
      return { _tag: "Retried" } as RetryRow
    }))

  const jobRetryDeadOfQueue = (queue: string, name: string | undefined, attempts: number | undefined, nowMillis: number) =>
    Effect.map(
      sql<{ readonly n: number }>`
        WITH candidates AS (
          -- Of several dead jobs with one unique key only the newest comes back, and none
          -- whose key an unfinished job holds: the unique index would refuse them.
          SELECT DISTINCT ON (d.name, COALESCE(d.unique_key, d.id::text)) d.id
          FROM ${t.jobs} d
          WHERE d.state = 'dead' AND d.queue = ${queue}
            AND ${name === undefined ? sql.literal("TRUE") : sql`d.name = ${name}`}
            AND (d.unique_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM ${t.jobs} a
              WHERE a.name = d.name AND a.unique_key = d.unique_key AND a.state IN ('scheduled', 'available', 'running')))
          ORDER BY d.name, COALESCE(d.unique_key, d.id::text), d.id DESC
        ),
        retried AS (
          -- No row locks above (DISTINCT ON cannot take them); the UPDATE locks each row and
          -- re-checks its state, so a concurrent retry of the same job changes it once.
          UPDATE ${t.jobs} j SET ${retrySet(attempts, iso(nowMillis))}
          FROM candidates c WHERE j.id = c.id AND j.state = 'dead'
          RETURNING j.id
        )
        SELECT count(*)::int AS n,
               CASE WHEN count(*) > 0 THEN pg_notify(${channels.new}, ${queue}) END::text AS notified
        FROM retried`,
      (rows) => rows[0]?.n ?? 0
    )

  const jobCancel = (id: string, nowMillis: number, reason: string) =>
    sql.withTransaction(Effect.gen(function*() {
      const now = iso(nowMillis)
      const [found] = yield* sql<{ readonly state: JobState; readonly queue: string }>`
        SELECT state, queue FROM ${t.jobs} WHERE id = ${id}::bigint FOR UPDATE`
      if (found === undefined) return { _tag: "NotFound" } as CancelRow
      switch (found.state) {
        case "scheduled":
        case "available": {
          const entry = json({ attempt: 0, at: now, kind: "Cancelled", message: reason })
          yield* sql`
            UPDATE ${t.jobs} SET
              state = 'cancelled', finalized_at = ${now}::timestamptz,
              prune_at = CASE WHEN retention_ms IS NOT NULL
                              THEN ${now}::timestamptz + retention_ms * interval '1 millisecond' END,
              errors = (
                SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
                FROM jsonb_array_elements(errors || jsonb_build_array((${entry}::jsonb) || jsonb_build_object('attempt', attempt)))
                  WITH ORDINALITY AS t(e, o)
                WHERE o > jsonb_array_length(errors) + 1 - max_errors)
            WHERE id = ${id}::bigint
            RETURNING pg_notify(${channels.done}, '')::text`
          return { _tag: "Cancelled", queue: found.queue } as CancelRow
        }
        case "running": {
          // The NOTIFY is delivered at COMMIT, when the request is visible to the worker.
          yield* sql`
            UPDATE ${t.jobs} SET cancel_requested_at = COALESCE(cancel_requested_at, ${now}::timestamptz),
                                   cancel_reason = COALESCE(cancel_reason, ${reason})
            WHERE id = ${id}::bigint
            RETURNING pg_notify(${channels.cancel}, id::text)::text`
          return { _tag: "CancelRequested", queue: found.queue } as CancelRow
        }
        default:
          return { _tag: "Finished", state: found.state } as CancelRow
      }
    }))

  const jobFindActiveByKey = (name: string, uniqueKey: string) =>
    Effect.map(
      sql<{ readonly id: string }>`
        SELECT id::text FROM ${t.jobs}
        WHERE name = ${name} AND unique_key = ${uniqueKey} AND state IN ('scheduled', 'available', 'running')`,
      (rows) => rows[0]?.id
    )

  // A bundle member is kept while it counts toward its bundle (not terminal: deleting it would
  // count it as done) or while the finish step may still read it (`follow_up_done` false), as
  // the pruner keeps it. `follow_up_done` never goes back to false, so a true read here stays true.
  const jobDelete = (id: string) =>
    Effect.map(
      sql<{ readonly deleted: boolean; readonly state: JobState; readonly bundle_id: string | null; readonly held: boolean }>`
        WITH target AS (
          SELECT j.id, j.state, j.bundle_id,
                 j.bundle_id IS NOT NULL AND (
                   j.state NOT IN ('completed', 'dead', 'cancelled')
                   OR EXISTS (SELECT 1 FROM ${t.bundles} b WHERE b.id = j.bundle_id AND NOT b.follow_up_done)
                 ) AS held
          FROM ${t.jobs} j WHERE j.id = ${id}::bigint FOR UPDATE OF j
        ),
        deleted AS (
          DELETE FROM ${t.jobs} j USING target t
          WHERE j.id = t.id AND t.state <> 'running' AND NOT t.held RETURNING j.id
        )
        SELECT t.state, t.bundle_id::text, t.held, EXISTS (SELECT 1 FROM deleted) AS deleted FROM target t`,
      (rows): DeleteRow => {
        const row = rows[0]
        if (row === undefined) return { _tag: "NotFound" }
        if (row.deleted) return { _tag: "Deleted" }
        if (row.state === "running") return { _tag: "Running" }
        return { _tag: "InPendingBundle", state: row.state, bundleId: row.bundle_id ?? "" }
      }
    )

  const jobDeleteFinished = (o: {
    readonly queue: string | undefined
    readonly states: ReadonlyArray<"completed" | "dead" | "cancelled">
    readonly finalizedBefore: number | undefined
    readonly limit: number
  }) => {
    if (o.states.length === 0) return Effect.succeed(0)
    const where = [sql`state IN ${sql.in(o.states)}`]
    if (o.queue !== undefined) where.push(sql`queue = ${o.queue}`)
    if (o.finalizedBefore !== undefined) where.push(sql`finalized_at < ${iso(o.finalizedBefore)}::timestamptz`)
    // members of a bundle whose finish step has not run yet are kept: it reads their results
    where.push(sql`(bundle_id IS NULL OR NOT EXISTS (
      SELECT 1 FROM ${t.bundles} b WHERE b.id = jobs.bundle_id AND NOT b.follow_up_done))`)
    return Effect.map(
      sql<{ readonly n: number }>`
        WITH doomed AS (
          SELECT id FROM ${t.jobs} WHERE ${sql.and(where)} LIMIT ${o.limit} FOR UPDATE SKIP LOCKED
        ),
        deleted AS (DELETE FROM ${t.jobs} j USING doomed d WHERE j.id = d.id RETURNING j.id)
        SELECT count(*)::int AS n FROM deleted`,
      (rows) => rows[0]?.n ?? 0
    )
  }

  // Reads only rows whose retention ran out, through jobs_prune_idx.
  const jobPruneExpired = (nowMillis: number, limit: number) =>
    Effect.map(
      sql<{ readonly n: number }>`
        WITH doomed AS (
          SELECT id FROM ${t.jobs}
          WHERE prune_at <= ${iso(nowMillis)}::timestamptz AND state IN ('completed', 'dead', 'cancelled')
            -- members of a bundle whose finish step has not run yet are kept: it reads their results
            AND (bundle_id IS NULL OR NOT EXISTS (
              SELECT 1 FROM ${t.bundles} b WHERE b.id = jobs.bundle_id AND NOT b.follow_up_done))
          ORDER BY prune_at
          LIMIT ${limit}
          FOR UPDATE SKIP LOCKED
        ),
        deleted AS (DELETE FROM ${t.jobs} j USING doomed d WHERE j.id = d.id RETURNING j.id)
        SELECT count(*)::int AS n FROM deleted`,
      (rows) => rows[0]?.n ?? 0
    )

  const queueSetPaused = (queue: string, paused: boolean, nowMillis: number) =>
    sql`
      INSERT INTO ${t.queues} (name, paused, updated_at) VALUES (${queue}, ${paused}, ${iso(nowMillis)}::timestamptz)
      ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = EXCLUDED.updated_at
      RETURNING pg_notify(${channels.new}, name)::text`.pipe(Effect.asVoid)

  const queueList = sql<{ readonly name: string; readonly paused: boolean; readonly updated_at: Date }>`
    SELECT name, paused, updated_at FROM ${t.queues} ORDER BY name`

  const workerControlPoll = (queues: ReadonlyArray<string>, held: ReadonlyArray<string>) =>
    Effect.map(
      sql<{ readonly kind: "paused" | "cancel"; readonly key: string }>`
        SELECT 'paused' AS kind, name AS key FROM ${t.queues}
        WHERE paused AND name IN (SELECT jsonb_array_elements_text(${json(queues)}::jsonb))
        UNION ALL
        SELECT 'cancel', id::text FROM ${t.jobs}
        WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(${json(held)}::jsonb)::bigint))
          AND state = 'running' AND cancel_requested_at IS NOT NULL`,
      (rows) => {
        const paused = new Set<string>()
        const cancel = new Set<string>()
        for (const r of rows) (r.kind === "paused" ? paused : cancel).add(r.key)
        return { paused, cancel }
      }
    )

  const jobCountRunnable = (
    queues: ReadonlyArray<string>,
    nowMillis: number,
    options: { readonly anyScheduled?: boolean | undefined } = {}
  ) =>
    Effect.map(
      sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM ${t.jobs}
        WHERE queue IN (SELECT jsonb_array_elements_text(${json(queues)}::jsonb))
          AND (state IN ('available', 'running')
               OR (state = 'scheduled' AND (${options.anyScheduled === true}::boolean OR run_at <= ${iso(nowMillis)}::timestamptz)))`,
      (rows) => rows[0]?.n ?? 0
    )

  const jobScheduledDueNow = (queues: ReadonlyArray<string>, nowMillis: number) =>
    Effect.map(
      sql<{ readonly n: number }>`
        WITH moved AS (
          UPDATE ${t.jobs} SET run_at = ${iso(nowMillis)}::timestamptz
          WHERE state = 'scheduled' AND run_at > ${iso(nowMillis)}::timestamptz
            AND queue IN (SELECT jsonb_array_elements_text(${json(queues)}::jsonb))
          RETURNING id
        )
        SELECT count(*)::int AS n FROM moved`,
      (rows) => rows[0]?.n ?? 0
    )

  const leaderTryAcquire = (key: bigint) =>
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const inner = yield* Scope.fork(scope)
      const conn = yield* sql.reserve.pipe(Scope.provide(inner))
      const [row] = yield* conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended($2, $1::bigint)) AS locked, pg_backend_pid() AS pid",
        [key.toString(), schema],
        undefined
      ) as Effect.Effect<ReadonlyArray<{ readonly locked: boolean; readonly pid: number }>, SqlError.SqlError>
      if (row === undefined || !row.locked) {
        yield* Scope.close(inner, Exit.void)
        return undefined
      }
      // Unlock before the connection goes back to the pool: a session lock outlives the
      // borrower, and a pooled connection holding it would make a leader of nobody.
      yield* Scope.addFinalizer(
        inner,
        Effect.ignore(conn.execute("SELECT pg_advisory_unlock(hashtextextended($2, $1::bigint))", [key.toString(), schema], undefined))
      )
      return {
        pid: row.pid,
        check: Effect.asVoid(conn.execute("SELECT 1", [], undefined))
      } satisfies LeaderSession
    })

  const workerRegister = (worker: {
    readonly id: string
    readonly queues: ReadonlyArray<string>
    readonly concurrency: number
  }) =>
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const inner = yield* Scope.fork(scope)
      const conn = yield* sql.reserve.pipe(Scope.provide(inner))
      const key = `hashtextextended($1 || ':' || $2, ${workerLockSeed})`
      const run = <A>(statement: string, params: ReadonlyArray<unknown>) =>
        conn.execute(statement, params as Array<unknown>, undefined) as Effect.Effect<ReadonlyArray<A>, SqlError.SqlError>
      const [row] = yield* run<{ readonly locked: boolean; readonly pid: number }>(
        `SELECT pg_try_advisory_lock(${key}) AS locked, pg_backend_pid() AS pid`,
        [schema, worker.id]
      )
      if (row === undefined || !row.locked) {
        yield* Scope.close(inner, Exit.void)
        return undefined
      }
      // Unlock before the connection goes back to the pool (see leaderTryAcquire), after the
      // row is gone: a rescuer never sees a registered worker with no lock while it lives.
      yield* Scope.addFinalizer(inner, Effect.ignore(run(`SELECT pg_advisory_unlock(${key})`, [schema, worker.id])))
      yield* Scope.addFinalizer(inner, Effect.ignore(run(`DELETE FROM ${qualify(schema, "workers")} WHERE id = $1`, [worker.id])))
      yield* run(
        `INSERT INTO ${qualify(schema, "workers")} (id, queues, concurrency)
         SELECT $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3
         ON CONFLICT (id) DO UPDATE SET queues = EXCLUDED.queues, concurrency = EXCLUDED.concurrency,
           started_at = now(), last_seen_at = now()`,
        [worker.id, json(worker.queues), worker.concurrency]
      )
      const beat = `
        WITH h AS (SELECT $4::jsonb AS o),
        started AS (
          -- jobs started from the buffer since the last beat: no longer only buffered
          -- (migrations/0007). Rows locked by another transaction (a finish, a rescue) are
          -- skipped, not waited for: tried again at the next beat if still running.
          UPDATE ${qualify(schema, "jobs")} j SET buffered = false
          WHERE j.id = ANY(ARRAY(
            SELECT r.id FROM ${qualify(schema, "jobs")} r
            WHERE r.id = ANY(ARRAY(SELECT k::bigint FROM h, jsonb_object_keys(h.o) AS k))
              AND r.claim_count = ((SELECT o FROM h) ->> r.id::text)::int AND r.state = 'running' AND r.buffered
            FOR UPDATE SKIP LOCKED))
          RETURNING j.id
        ),
        seen AS (
          -- a row deleted meanwhile (dead for a minute by the rescuer) comes back. (Run though
          -- the query below does not read it: a data-modifying WITH always runs.)
          INSERT INTO ${qualify(schema, "workers")} (id, queues, concurrency)
          SELECT $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), $3
          ON CONFLICT (id) DO UPDATE SET last_seen_at = now()
        )
        SELECT COALESCE(string_agg(id::text, ','), '') AS started FROM started`
      return {
        pid: row.pid,
        check: (started) => {
          const tokens: Record<string, number> = {}
          for (const h of started) tokens[h.id] = h.token
          return Effect.map(
            run<{ readonly started: string }>(beat, [worker.id, json(worker.queues), worker.concurrency, json(tokens)]),
            (rows) => new Set(rows[0]?.started ? rows[0].started.split(",") : [])
          )
        }
      } satisfies WorkerSession
    })

  const workerList = sql<WorkerRow>`
    SELECT w.id, w.queues, w.concurrency, w.started_at, w.last_seen_at,
           (SELECT count(*)::int FROM ${t.jobs} j
            WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.locked_by = w.id) AS held
    FROM ${t.workers} w
    WHERE ${sql.literal(workerLockHeld(schema, "w.id"))}
    ORDER BY w.started_at, w.id`

  return {
    workerRegister,
    workerList,
    adminCountByQueueState,
    adminList,
    adminGet,
    jobRetry,
    jobRetryDeadOfQueue,
    jobCancel,
    jobFindActiveByKey,
    jobDelete,
    jobDeleteFinished,
    jobPruneExpired,
    queueSetPaused,
    queueList,
    workerControlPoll,
    jobCountRunnable,
    jobScheduledDueNow,
    leaderTryAcquire
  }
}

// ===========================================================================================
// Migrations: which versions a schema has (for `Migrations.status`).
// ===========================================================================================

/** One row of a schema's `migrations` table (written by effect's `Migrator`). */
export interface AppliedMigrationRow {
  readonly migration_id: number
  readonly name: string
  readonly created_at: Date
}

/**
 * The migrations recorded in the schema's `migrations` table, oldest first; none when the
 * table (or the schema) does not exist. Read on a client without name transforms.
 */
export const migrationsApplied = (
  sql: SqlClient.SqlClient,
  schema: string
): Effect.Effect<ReadonlyArray<AppliedMigrationRow>, SqlError.SqlError> =>
  Effect.gen(function*() {
    const table = qualify(schema, "migrations")
    const [found] = yield* sql<{ readonly present: boolean }>`SELECT to_regclass(${table}) IS NOT NULL AS present`
    if (found?.present !== true) return []
    return yield* sql<AppliedMigrationRow>`
      SELECT migration_id, name, created_at FROM ${sql.literal(table)} ORDER BY migration_id`
  })
