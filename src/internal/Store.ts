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
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { SqlClient, type SqlError, type Statement } from "effect/sql"
import { PgSchema } from "../PgSchema.ts"
import { assertValid, qualify } from "./schemaName.ts"
import * as UniqueBatch from "./uniqueBatch.ts"
import type { Holder, Returned } from "./uniqueBatch.ts"

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
  workers: sql.literal(qualify(schema, "workers")),
  throughput: sql.literal(qualify(schema, "throughput")),
  finishedCounts: sql.literal(qualify(schema, "finished_counts"))
})

/** The start of the minute `millis` falls in, as ISO text: the key of a `throughput` row. */
const minuteOf = (millis: number): string => new Date(millis - (((millis % 60_000) + 60_000) % 60_000)).toISOString()

/**
 * SQL: adds the outcomes of one statement to the `throughput` rows of (`minute`, queue, `worker`)
 * (migrations/0009), for the statements outside the worker's hot path that end jobs (the
 * rescuer's, an operator's cancel; a worker tallies its own outcomes and writes them once a
 * second, internal/Throughput.ts). `rows` names a row set with `queue`, `state` (the job's
 * state after the write: `available` or `scheduled` is a retry) and `counted`. One row per
 * queue, none at all when nothing is counted.
 */
const countThroughput = (
  sql: SqlClient.SqlClient,
  table: Statement.Fragment,
  rows: string,
  minute: string,
  worker: string
) =>
  sql`
    INSERT INTO ${table} AS s (minute, queue, worker, completed, retried, dead, cancelled)
    SELECT ${minute}::timestamptz, c.queue, ${worker},
           count(*) FILTER (WHERE c.state = 'completed'),
           count(*) FILTER (WHERE c.state IN ('available', 'scheduled')),
           count(*) FILTER (WHERE c.state = 'dead'),
           count(*) FILTER (WHERE c.state = 'cancelled')
    FROM ${sql.literal(rows)} c
    WHERE c.counted
    GROUP BY c.queue
    ON CONFLICT (minute, queue, worker) DO UPDATE SET
      completed = s.completed + EXCLUDED.completed, retried = s.retried + EXCLUDED.retried,
      dead = s.dead + EXCLUDED.dead, cancelled = s.cancelled + EXCLUDED.cancelled`

/**
 * The constant mixed into a worker's advisory lock key (migrations/0006):
 * `hashtextextended(<schema> || ':' || <worker id>, 6)`.
 */
const workerLockSeed = 6

/**
 * The key of the transaction-level advisory lock under which one session at a time recounts
 * the finished jobs (`countsSnapshotRefresh`), mixed with the schema's name ("ej-count").
 */
const finishedCountsLockKey = 0x656a2d636f756e74n

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
 * migrations/0011) gets the attempt of that claim back at its rescue. `claim_count - attempt`
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
  /** The job's group (`EnqueueOptions.group`, migrations/0012); null: none. */
  readonly group_key?: string | null | undefined
  readonly metadata: Readonly<Record<string, unknown>>
  readonly request_id: string | null
  readonly trace: unknown
  readonly retention_ms: number
  readonly max_errors: number
  readonly bundle_id?: string | null | undefined
  /**
   * The states in which the job holds its key, when finished ones are among them
   * (migration 0010); null: only while unfinished (the index of migration 0001).
   */
  readonly unique_states?: ReadonlyArray<JobState> | null | undefined
  /** The start of the job's unique window (ISO, or "-infinity"); set with `unique_states`. */
  readonly unique_window?: string | null | undefined
  /** A duplicate updates the waiting job of its key instead of being dropped (debounce). */
  readonly replace?: "all" | "keepRunAt" | null | undefined
}

/** What an enqueue did with one row (`Jobs.EnqueueResult`). */
export interface InsertOutcome {
  readonly id: string
  readonly outcome: "inserted" | "duplicate" | "replaced"
}

/** The limits a gated claim enforces (`QueueConfig.flow`, resolved); undefined: none. */
export interface GatedFlow {
  readonly global: number | undefined
  readonly perGroup: number | undefined
  readonly sequence: boolean
  readonly onDead: "block" | "continue"
  /** Starts per window of the queue, and of each group (migrations/0013's rate_windows). */
  readonly rate: FlowRate | undefined
  readonly groupRate: FlowRate | undefined
}

export interface FlowRate {
  readonly limit: number
  readonly windowMillis: number
}

/** What a gated claim took, and how long until a rate limit that held it back frees (if one did). */
export interface GatedClaim {
  readonly rows: ReadonlyArray<ClaimedJobRow>
  readonly waitMillis: number | undefined
  /**
   * A fleet-wide limit kept runnable jobs back (the global or a group's limit reached, a
   * sequence's head running): they become claimable when runs end, possibly on another
   * worker, with no NOTIFY to say so.
   */
  readonly limited: boolean
  /**
   * With a global limit: the fleet's slots this worker holds now, the most jobs of the queue it
   * may run at once (migrations/0014's flow_grant); undefined without one.
   */
  readonly slots: number | undefined
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
  /** When it was due (epoch ms): the plain claim's rows only, for its floor (worker/ClaimFloor.ts). */
  readonly run_at_ms?: number | undefined
}

/** `jobsPlannerStats`: what the jobs table's statistics are worth now. */
export interface PlannerStats {
  readonly changed: number
  readonly sinceMillis: number | null
  readonly rows: number
}

/** Where a plain claim starts reading its queue (`jobClaim`'s `floor`). */
export interface ClaimFloorKey {
  readonly priority: number
  readonly runAtMillis: number
}

/** A state change at the end of a run, applied only if the run still holds the job (fencing token). */
export interface FinishRow {
  readonly id: string
  readonly token: number
  readonly state: "completed" | "available" | "scheduled" | "dead" | "cancelled"
  /** For `available`/`scheduled`: when to run next (ISO); null keeps the run time (a buffered job given back). */
  readonly run_at: string | null
  /** -1 gives the attempt back (snooze, graceful-shutdown release, a buffered job given back); 0 otherwise. */
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
  readonly queue: string
}

/** A worker's outcomes of one minute and queue, not yet in its `throughput` row. */
export interface ThroughputTally {
  /** The minute's start, epoch milliseconds. */
  readonly minute: number
  readonly queue: string
  readonly completed: number
  readonly retried: number
  readonly dead: number
  readonly cancelled: number
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

/** A periodic schedule's definition, as its scheduler stores it (migrations/0007). */
export interface PeriodicDefinition {
  readonly job: string
  readonly queue: string
  /** The cron and its time zone, or `everyMs`: the other is null. */
  readonly cron: string | null
  readonly timeZone: string | null
  readonly everyMs: number | null
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
  readonly jobInsertMany: (rows: ReadonlyArray<NewJobRow>) => Effect.Effect<ReadonlyArray<InsertOutcome>, SqlError.SqlError>
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
     * slots. The others are marked `buffered` (migrations/0011). All start at once when absent.
     */
    readonly startNow?: number | undefined
    /**
     * Read the claim index from here on (worker/ClaimFloor.ts): only jobs with
     * `(priority, run_at) >= (priority, runAtMillis)` and `run_at >= runAtMillis`. An index
     * range that skips what lies before it, dead entries a long transaction keeps included.
     * The whole queue when absent.
     */
    readonly floor?: ClaimFloorKey | undefined
  }) => Effect.Effect<ReadonlyArray<ClaimedJobRow>, SqlError.SqlError>
  /**
   * `jobClaim` of only the jobs that run before `priority` (a lower number): a producer whose
   * buffer holds jobs of that priority looks for better ones that arrived since (Producer.ts).
   */
  readonly jobClaimAhead: (options: {
    readonly queue: string
    readonly priority: number
    readonly limit: number
    readonly now: number
    readonly leaseMillis: number
    readonly workerId: string
    readonly names: ReadonlyArray<string>
  }) => Effect.Effect<ReadonlyArray<ClaimedJobRow>, SqlError.SqlError>
  /**
   * `jobClaim` of a queue with flow control (`QueueConfig.flow`): the function
   * `claim_gated` of migrations/0014 (first in 0012), one statement. Fleet-wide limits, round robin over
   * the groups, sequences; the rows come back in the order picked.
   */
  readonly jobClaimGated: (options: {
    readonly queue: string
    readonly limit: number
    readonly now: number
    readonly leaseMillis: number
    readonly workerId: string
    readonly names?: ReadonlyArray<string> | undefined
    readonly startNow?: number | undefined
    readonly flow: GatedFlow
    /** This worker's jobs of the queue whose runs ended, outcomes not written: they hold no slot. */
    readonly done?: ReadonlyArray<string> | undefined
    /**
     * This worker's concurrency, prefetch and runs going on for the queue, for a global limit's
     * slots (defaults: `limit`, 0, 0).
     */
    readonly concurrency?: number | undefined
    readonly prefetch?: number | undefined
    readonly running?: number | undefined
  }) => Effect.Effect<GatedClaim, SqlError.SqlError>
  /**
   * `retentionMillis` replaces each job's `retention_ms` for these outcomes (the worker's
   * `retention`; null: kept forever); undefined: each job's own.
   */
  readonly jobFinishMany: (
    rows: ReadonlyArray<FinishRow>,
    now: number,
    retentionMillis?: number | null | undefined
  ) => Effect.Effect<ReadonlyMap<string, Applied>, SqlError.SqlError>
  /**
   * Adds a worker's tallied outcomes to its `throughput` rows (migrations/0009), one row per
   * (minute, queue) of `rows` (each pair at most once).
   */
  readonly throughputAdd: (
    worker: string,
    rows: ReadonlyArray<ThroughputTally>
  ) => Effect.Effect<void, SqlError.SqlError>
  /** Extends the leases (to the database's `now() + leaseMillis`) of the jobs still held under these tokens. */
  readonly jobHeartbeatMany: (
    held: ReadonlyArray<HeldJob>,
    leaseMillis: number
  ) => Effect.Effect<Heartbeat, SqlError.SqlError>
  readonly jobPromoteScheduled: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  /**
   * The jobs table's planner statistics, as `pg_stat_user_tables` has them: rows changed since
   * the last ANALYZE (by autovacuum or anyone), how long ago that was (null: never), and the
   * rows the planner thinks the table holds (maintenance/Analyzer.ts).
   */
  readonly jobsPlannerStats: Effect.Effect<PlannerStats | undefined, SqlError.SqlError>
  /** `ANALYZE` of the jobs table: fresh statistics, and every cached plan of it made again. */
  readonly jobsAnalyze: Effect.Effect<void, SqlError.SqlError>
  /** `jobPromoteScheduled` of the given queues only (a worker's short retries and snoozes: DueTimers.ts). */
  readonly jobPromoteDue: (
    queues: ReadonlyArray<string>,
    now: number,
    limit: number
  ) => Effect.Effect<number, SqlError.SqlError>
  readonly jobRescueExpired: (now: number, limit: number) => Effect.Effect<number, SqlError.SqlError>
  readonly notifyQueues: (queues: ReadonlyArray<string>) => Effect.Effect<void, SqlError.SqlError>
  /** State, result and errors of the given jobs (missing ids are absent). */
  readonly jobOutcomes: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<OutcomeRow>, SqlError.SqlError>
  // -- periodic jobs (src/Periodic.ts) --
  /** Records a schedule if it is new, with `slot` as its last slot; returns its last slot. */
  readonly periodicEnsure: (name: string, slot: number, definition: PeriodicDefinition) => Effect.Effect<Date, SqlError.SqlError>
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
      // Needs sql-pg's client, not just any SqlClient (the statements are Postgres').
      yield* PgClient.PgClient
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

      const insertColumns = sql.literal(
        "name, queue, state, priority, run_at, max_attempts, args, unique_key, metadata, request_id, trace, " +
          "retention_ms, max_errors, bundle_id, unique_states, unique_window, group_key"
      )
      const rowType = sql.literal(`x(
            name text, queue text, state text, priority smallint, run_at timestamptz, max_attempts integer,
            args jsonb, unique_key text, metadata jsonb, request_id text, trace jsonb, retention_ms bigint,
            max_errors smallint, bundle_id bigint, unique_states text[], unique_window timestamptz, replace text,
            group_key text, ord bigint)`)
      // Rows whose key only unfinished jobs hold can only conflict on the index of migration 0001:
      // name it, as every version before 0010 did. A row with a window (migration 0010) may also
      // conflict on jobs_unique_window_idx; with no target, a conflict on either is skipped.
      const conflictOnKey = sql.literal(
        "ON CONFLICT (name, unique_key) WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running') DO NOTHING"
      )
      const conflictOnAny = sql.literal("ON CONFLICT DO NOTHING")
      /**
       * Keyed rows are written in the keys' order, not the batch's: two batches that meet the
       * same keys in opposite orders would otherwise each hold one key (a row lock, or an
       * insert in progress that the other's ON CONFLICT waits for) and wait for the other's,
       * a deadlock (test/unique-deadlock.test.ts). The ids are still drawn in batch order
       * (`nextval` in a SELECT with ORDER BY runs after the sort), so they follow enqueue order.
       */
      const withIds = sql.literal(
        `ids AS (SELECT x.*, nextval(pg_get_serial_sequence('${qualify(schema, "jobs")}', 'id')) AS id FROM x ORDER BY x.ord)`
      )
      const keyOrder = sql.literal("ORDER BY ids.name, ids.unique_key, ids.ord")

      /**
       * One statement for the batch. Rows with a key that a job holds are skipped (and found by
       * `findHolders`); with `replace`, the waiting job of the key is updated instead, in the same
       * statement, before the insert. Rows without a key come back in the order sent.
       */
      const insertRows = (rows: ReadonlyArray<NewJobRow>) => {
        const input = JSON.stringify(rows.map((row, ord) => ({ ...row, ord })))
        const conflict = rows.some((r) => r.unique_window != null) ? conflictOnAny : conflictOnKey
        if (!rows.some((r) => r.replace != null)) {
          // Returned by id: the rows without a key in the order sent (see `withIds`).
          return sql<Returned>`
            WITH x AS (SELECT * FROM jsonb_to_recordset(${input}::jsonb) AS ${rowType}),
            ${withIds},
            inserted AS (
              INSERT INTO ${t.jobs} (id, ${insertColumns})
              SELECT id, ${insertColumns} FROM ids
              ${keyOrder}
              ${conflict}
              RETURNING id, name, unique_key
            )
            SELECT id::text, name, unique_key, false AS replaced FROM inserted ORDER BY inserted.id`
        }
        // The waiting job (scheduled or available: a running one is not touched) takes the
        // enqueue's values; it keeps its id, attempts, errors, created_at and unique window. Two
        // enqueues replacing one job are applied in commit order (the second waits for the row
        // lock, then sees the first's version): last write wins. A claim that locked the row
        // first makes it running, and this UPDATE then passes it over.
        return sql<Returned>`
          WITH x AS (SELECT * FROM jsonb_to_recordset(${input}::jsonb) AS ${rowType}),
          -- the waiting jobs to replace, locked in the keys' order (see \`withIds\`)
          locked AS (
            SELECT j.id FROM ${t.jobs} j JOIN x ON j.name = x.name AND j.unique_key = x.unique_key
            WHERE x.replace IS NOT NULL AND j.state IN ('scheduled', 'available')
            ORDER BY j.name, j.unique_key
            FOR UPDATE OF j
          ),
          replaced AS (
            UPDATE ${t.jobs} j SET
              args = x.args, queue = x.queue, priority = x.priority, metadata = x.metadata,
              request_id = x.request_id, trace = x.trace, group_key = x.group_key,
              -- at least one attempt more than it has spent: a replaced job runs again
              max_attempts = GREATEST(x.max_attempts, LEAST(j.attempt, 2147483646) + 1),
              run_at = CASE WHEN x.replace = 'keepRunAt' THEN j.run_at ELSE x.run_at END,
              state = CASE WHEN x.replace = 'keepRunAt' THEN j.state ELSE x.state END
            FROM x
            WHERE x.replace IS NOT NULL AND j.name = x.name AND j.unique_key = x.unique_key
              AND j.id IN (SELECT id FROM locked) AND j.state IN ('scheduled', 'available')
            RETURNING j.id, j.name, j.unique_key, j.state, j.queue, x.ord
          ),
          ${withIds},
          inserted AS (
            INSERT INTO ${t.jobs} (id, ${insertColumns})
            SELECT id, ${insertColumns} FROM ids WHERE ids.ord NOT IN (SELECT ord FROM replaced)
            ${keyOrder}
            ${conflict}
            RETURNING id, name, unique_key
          )
          (SELECT id::text, name, unique_key, false AS replaced, NULL::text AS notified FROM inserted ORDER BY inserted.id)
          UNION ALL
          -- A job made available now wakes the workers of its queue (the insert trigger does
          -- that for new rows only); the NOTIFY is delivered at commit.
          SELECT id::text, name, unique_key, true AS replaced,
                 CASE WHEN state = 'available' THEN pg_notify(${channels.new}, queue) END::text AS notified
          FROM replaced`
      }

      /**
       * The job holding each key: the unfinished one (migration 0001's index), else one of the
       * key's window (migration 0010's index) in a state that counts for it. One lookup per key,
       * each answered from one of the two partial indexes.
       */
      const findHolders = (rows: ReadonlyArray<NewJobRow>) =>
        sql<Holder>`
          SELECT k.ord, h.id::text AS id, h.state
          FROM jsonb_to_recordset(${
          JSON.stringify(rows.map((r, ord) => ({ name: r.name, unique_key: r.unique_key, unique_window: r.unique_window ?? null, ord })))
        }::jsonb) AS k(name text, unique_key text, unique_window timestamptz, ord integer)
          CROSS JOIN LATERAL (
            (SELECT j.id, j.state FROM ${t.jobs} j
             WHERE j.name = k.name AND j.unique_key = k.unique_key AND j.state IN ('scheduled', 'available', 'running'))
            UNION ALL
            (SELECT j.id, j.state FROM ${t.jobs} j
             WHERE j.name = k.name AND j.unique_key = k.unique_key AND j.unique_window = k.unique_window
               AND j.state = ANY (j.unique_states))
            LIMIT 1
          ) h`

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
            (r.bundle_id ?? null) !== (first.bundle_id ?? null) || (r.group_key ?? null) !== (first.group_key ?? null)
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
                                   trace, retention_ms, max_errors, bundle_id, group_key)
          SELECT ${f.name}, ${f.queue}, ${f.state}, ${f.priority}, ${f.run_at}::timestamptz, ${f.max_attempts},
                 a.value, ${JSON.stringify(f.metadata)}::jsonb, ${f.request_id},
                 ${f.trace === null || f.trace === undefined ? null : JSON.stringify(f.trace)}::jsonb,
                 ${f.retention_ms}::bigint, ${f.max_errors}, ${f.bundle_id ?? null}::bigint, ${f.group_key ?? null}::text
          FROM jsonb_array_elements(${JSON.stringify(rows.map((r) => r.args))}::jsonb) WITH ORDINALITY AS a(value, ord)
          ORDER BY a.ord
          RETURNING id
          )
          SELECT string_agg(id::text, ',' ORDER BY id) AS ids FROM inserted`
      }

      /**
       * Inserts in one statement (see `insertRows`), then looks up the holders of the keys that
       * were taken: a duplicate gets its holder's id. If the holder finished (or was deleted)
       * between the two statements, or is a waiting job a replace has not seen yet, the row is
       * sent again.
       */
      const jobInsertMany = Effect.fnUntraced(function*(rows: ReadonlyArray<NewJobRow>) {
        if (sameButArgs(rows)) {
          const [returned] = yield* insertSameButArgs(rows)
          const ids = returned?.ids == null ? [] : returned.ids.split(",")
          if (ids.length !== rows.length) {
            return yield* Effect.die(new Error(`enqueueMany inserted ${ids.length} of ${rows.length} jobs`))
          }
          return ids.map((id): InsertOutcome => ({ id, outcome: "inserted" }))
        }
        const batch = UniqueBatch.make(rows)
        let pending = batch.pending
        for (let round = 0; pending.length > 0; round++) {
          const returned = yield* insertRows(pending.map((p) => p.row))
          // (a throw there is a broken invariant: a defect)
          const conflicted = yield* Effect.sync(() => batch.applyReturned(pending, returned))
          if (conflicted.length === 0) break
          const holders = yield* findHolders(conflicted.map((p) => p.row))
          pending = batch.applyHolders(conflicted, holders)
          if (round >= 10) return yield* Effect.die(new Error("unique enqueue did not settle after 10 rounds"))
        }
        return batch.results()
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
        /** Only jobs of a better priority than this (the buffer's probe: `jobClaimAhead`). */
        readonly priorityBelow?: number | undefined
        readonly startNow?: number | undefined
        readonly floor?: ClaimFloorKey | undefined
      }) {
        const now = iso(o.now)
        const ahead = o.priorityBelow === undefined ? sql.literal("") : sql`AND priority < ${o.priorityBelow}`
        // The row comparison is the index range's start (queue = $q, then (priority, run_at)):
        // the entries before it are not read at all. `run_at >= ` is checked on the entries of
        // the worse priorities, in the index, without visiting their rows.
        const at = o.floor === undefined ? undefined : iso(o.floor.runAtMillis)
        const from = o.floor === undefined
          ? sql.literal("")
          : sql`AND (priority, run_at) >= (${o.floor.priority}::smallint, ${at}::timestamptz) AND run_at >= ${at}::timestamptz`
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
              WHERE state = 'available' AND queue = ${o.queue} ${ahead} ${from} AND run_at <= ${now}::timestamptz ${byName}
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
          -- (metadata '{}', the usual, comes back NULL: nothing to parse; run_at as epoch ms, for the floor)
          -- The ORDER BY qualifies its columns: a bare id would be the output column id::text,
          -- and '1000' sorts before '999' as text.
          SELECT id::text, name, queue, priority, attempt, max_attempts, claim_count, args,
                 NULLIF(metadata, '{}'::jsonb) AS metadata, request_id, trace, created_at,
                 (extract(epoch FROM claimed.run_at) * 1000)::float8 AS run_at_ms
          FROM claimed ORDER BY claimed.priority, claimed.run_at, claimed.id`
      })

      /**
       * `jobClaim` with one more condition, `priority < $priority`, for the buffer's probe
       * (Producer.ts). The range is read from the claim index (queue, priority, run_at, id):
       * when nothing better is runnable, the scan ends at the first entry of the queue.
       */
      const jobClaimAhead = (o: {
        readonly queue: string
        readonly priority: number
        readonly limit: number
        readonly now: number
        readonly leaseMillis: number
        readonly workerId: string
        readonly names: ReadonlyArray<string>
      }) => jobClaim({ ...o, priorityBelow: o.priority, startNow: 0 }) // into a full buffer: every row is buffered

      const jobClaimGated = (o: {
        readonly queue: string
        readonly limit: number
        readonly now: number
        readonly leaseMillis: number
        readonly workerId: string
        readonly names?: ReadonlyArray<string> | undefined
        readonly startNow?: number | undefined
        readonly flow: GatedFlow
        readonly done?: ReadonlyArray<string> | undefined
        readonly concurrency?: number | undefined
        readonly prefetch?: number | undefined
        readonly running?: number | undefined
      }) =>
        Effect.map(
          sql<
            ClaimedJobRow & {
              readonly wait_ms: number | null
              readonly limited: boolean | null
              readonly slots: number | null
            }
          >`
          SELECT * FROM ${sql.literal(qualify(schema, "claim_gated"))}(
            ${o.queue}, ${o.limit}, ${iso(o.now)}::timestamptz, ${o.leaseMillis}::bigint, ${o.workerId},
            ${o.names === undefined ? null : textArray(o.names)}::text[], ${Math.max(0, Math.min(o.startNow ?? o.limit, o.limit))},
            ${o.flow.global ?? null}::integer, ${o.flow.perGroup ?? null}::integer,
            ${o.flow.sequence}, ${o.flow.onDead === "block"},
            ${o.flow.rate?.limit ?? null}::integer, ${o.flow.rate?.windowMillis ?? null}::bigint,
            ${o.flow.groupRate?.limit ?? null}::integer, ${o.flow.groupRate?.windowMillis ?? null}::bigint,
            ${`{${(o.done ?? []).join(",")}}`}::bigint[],
            ${o.concurrency ?? o.limit}::integer, ${o.prefetch ?? 0}::integer, ${o.running ?? 0}::integer)`,
          // A row without an id only says how long a rate limit holds the queue, or that a limit
          // does (nothing claimed).
          (all): GatedClaim => ({
            rows: all.filter((r) => r.id !== null),
            waitMillis: all[0]?.wait_ms ?? undefined,
            limited: all[0]?.limited === true,
            slots: all[0]?.slots ?? undefined
          })
        )

      /**
       * Applies the outcomes of many runs in one statement. A row is changed only if
       * it is still `running` under the same fencing token; the jobs changed are
       * returned with the state they ended in (a cancel request turns a retry into
       * `cancelled`). A completed job whose retention is 0 is deleted instead. The retention is
       * the job's own (`retention_ms`) unless `retentionMillis` replaces it (the worker's).
       */
      const jobFinishMany = Effect.fnUntraced(function*(
        rows: ReadonlyArray<FinishRow>,
        nowMillis: number,
        retentionMillis?: number | null | undefined
      ) {
        const now = iso(nowMillis)
        // The retention in force, in ms (NULL: kept forever). The worker's is a whole number of
        // milliseconds of 0 or more (worker/Config.ts), bound as a parameter.
        const keep = retentionMillis === undefined ? sql.literal("j.retention_ms") : sql`${retentionMillis}::bigint`
        const keepFor = sql`LEAST(${keep}, 3153600000000000) * interval '1 millisecond'`
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
        const changed = yield* sql<
          { readonly id: string; readonly state: JobState; readonly cancel_reason: string | null; readonly queue: string }
        >`
          WITH x AS (SELECT ${outcomes}::jsonb AS o),
          deleted AS (
            DELETE FROM ${t.jobs} j
            WHERE j.id = ANY(ARRAY(SELECT k::bigint FROM x, jsonb_each(x.o) AS e(k, v) WHERE v ->> 'state' = 'completed'))
              AND j.claim_count = (${o} ->> 'token')::int AND j.state = 'running'
              AND ${keep} = 0 AND j.bundle_id IS NULL
            RETURNING j.id, 'completed'::text AS state, NULL::text AS cancel_reason, j.queue
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
                                   AND ${keep} IS NOT NULL
                              THEN ${now}::timestamptz + ${keepFor} END
            -- every outcome not deleted above (usually none: a batch of completions that are not kept)
            WHERE j.id = ANY(ARRAY(SELECT k::bigint FROM x, jsonb_object_keys(x.o) AS k EXCEPT ALL SELECT id FROM deleted))
              AND j.claim_count = (${o} ->> 'token')::int AND j.state = 'running'
              -- IS NOT DISTINCT FROM: a NULL retention (kept forever) must not make this NULL (no update)
              AND NOT (${o} ->> 'state' = 'completed' AND ${keep} IS NOT DISTINCT FROM 0 AND j.bundle_id IS NULL)
            RETURNING j.id, j.state, j.cancel_reason, j.queue
          )
          SELECT c.id::text, c.state, c.cancel_reason, c.queue
          FROM (SELECT * FROM deleted UNION ALL SELECT id, state, cancel_reason, queue FROM updated) c
          -- one notification per statement, for Jobs.await (evaluated once, not per row)
          CROSS JOIN (SELECT pg_notify(${channels.done}, '')::text AS n) notify
          -- A zero-delay retry or snooze and a shutdown release leave the job 'available': wake
          -- the sated workers of its queue, as the insert trigger does, rather than leave it to
          -- their next poll. Once per queue; no pg_notify at all when no row is 'available' (a
          -- batch of completions). An aggregate, so always one row: joined, it is evaluated
          -- (an unreferenced CTE would not be) and removes no result row.
          CROSS JOIN (SELECT count(pg_notify(${channels.new}, q.queue)) AS n
                      FROM (SELECT DISTINCT queue FROM updated WHERE state = 'available') q) wake`
        return new Map(changed.map((r) => [r.id, { state: r.state, cancelReason: r.cancel_reason, queue: r.queue }]))
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

      /**
       * Moves due `scheduled` jobs (of `queues` only, when given) to `available` and wakes
       * the workers of their queues; how many.
       */
      const promote = Effect.fnUntraced(function*(nowMillis: number, limit: number, queues?: ReadonlyArray<string>) {
        const ofQueues = queues === undefined ? sql.literal("") : sql`AND queue = ANY(${textArray(queues)}::text[])`
        const rows = yield* sql<{ readonly queue: string; readonly n: number }>`
          WITH due AS (
            SELECT id FROM ${t.jobs}
            WHERE state = 'scheduled' AND run_at <= ${iso(nowMillis)}::timestamptz ${ofQueues}
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
      const jobPromoteScheduled = (nowMillis: number, limit: number) => promote(nowMillis, limit)

      const jobsPlannerStats = Effect.map(
        sql<PlannerStats>`
          SELECT s.n_mod_since_analyze::float8 AS changed,
                 (extract(epoch FROM now() - GREATEST(s.last_analyze, s.last_autoanalyze)) * 1000)::float8 AS "sinceMillis",
                 GREATEST(c.reltuples, 0)::float8 AS rows
          FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
          WHERE s.relid = to_regclass(${qualify(schema, "jobs")})`,
        (rows) => rows[0]
      )
      const jobsAnalyze = Effect.asVoid(sql`ANALYZE ${t.jobs}`)
      /** Due `scheduled` jobs of some queues to `available`, with the NOTIFY of `jobPromoteScheduled`. */
      const jobPromoteDue = (queues: ReadonlyArray<string>, nowMillis: number, limit: number) => promote(nowMillis, limit, queues)

      /**
       * Rescues jobs whose lease lapsed (their worker died or lost the database), and jobs
       * held by a registered worker whose session lock is gone (it died: `WorkerDied`):
       * back to `available` to run again, or to `dead` if that was their last attempt.
       * The claim already counted the lost attempt. A job its dead worker had only buffered
       * (marked `buffered`, migrations/0011: claimed ahead, and not seen started by the
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
          ),
          -- a lost run is a failure: back to available counts as a retry (migrations/0009)
          counted AS (${
          countThroughput(
            sql,
            t.throughput,
            "(SELECT queue, state, true AS counted FROM rescued)",
            minuteOf(nowMillis),
            "(rescuer)"
          )
        })
          SELECT queue, count(*)::int AS n, pg_notify(${channels.new}, queue)::text AS notified,
                 pg_notify(${channels.done}, '')::text AS done
          FROM rescued GROUP BY queue`
        return rows.reduce((sum, r) => sum + r.n, 0)
      })

      const throughputAdd = (worker: string, rows: ReadonlyArray<ThroughputTally>) =>
        rows.length === 0 ? Effect.void : Effect.asVoid(sql`
          INSERT INTO ${t.throughput} AS s (minute, queue, worker, completed, retried, dead, cancelled)
          SELECT to_timestamp(r.minute / 1000.0), r.queue, ${worker}, r.completed, r.retried, r.dead, r.cancelled
          FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
            AS r(minute bigint, queue text, completed integer, retried integer, dead integer, cancelled integer)
          ON CONFLICT (minute, queue, worker) DO UPDATE SET
            completed = s.completed + EXCLUDED.completed, retried = s.retried + EXCLUDED.retried,
            dead = s.dead + EXCLUDED.dead, cancelled = s.cancelled + EXCLUDED.cancelled`)

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
       * An upsert that leaves `last_slot` as it is, for its RETURNING, and writes the schedule's
       * definition (migrations/0007; the last registration wins): on a conflict with a row
       * another scheduler is inserting (or claiming a slot on) right now, DO UPDATE waits for
       * that transaction and returns the row as committed, so a row always comes back. (`DO
       * NOTHING` with a `UNION ALL SELECT` returned none then: the SELECT reads the statement's
       * snapshot, taken before the other insert committed.)
       */
      const periodicEnsure = (name: string, slot: number, d: PeriodicDefinition) =>
        Effect.flatMap(
          sql<{ readonly last_slot: Date }>`
            INSERT INTO ${t.periodic} (name, last_slot, job, queue, cron, time_zone, every_ms)
            VALUES (${name}, ${iso(slot)}::timestamptz, ${d.job}, ${d.queue}, ${d.cron}, ${d.timeZone}, ${d.everyMs}::bigint)
            ON CONFLICT (name) DO UPDATE SET job = EXCLUDED.job, queue = EXCLUDED.queue, cron = EXCLUDED.cron,
              time_zone = EXCLUDED.time_zone, every_ms = EXCLUDED.every_ms
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
        jobInsertMany,
        jobClaim,
        jobsPlannerStats,
        jobsAnalyze,
        jobClaimGated,
        jobClaimAhead,
        jobFinishMany,
        throughputAdd,
        jobHeartbeatMany,
        jobPromoteScheduled,
        jobPromoteDue,
        jobRescueExpired,
        notifyQueues
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

/** The stored count of finished jobs (`finished_counts`, migrations/0009). */
export interface FinishedCountsSnapshot {
  readonly counts: ReadonlyArray<QueueStateCountRow>
  /** Every finished job of every queue. */
  readonly total: number
  readonly countedAt: number
  readonly tookMillis: number
}

/** One minute of one queue's outcomes, summed over the workers that wrote them. */
export interface ThroughputRow {
  readonly minute: Date
  readonly queue: string
  readonly completed: number
  readonly retried: number
  readonly dead: number
  readonly cancelled: number
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
  readonly unique_states: ReadonlyArray<JobState> | null
  readonly unique_window: Date | null
  readonly group_key: string | null
  readonly metadata: unknown
  readonly request_id: string | null
  readonly locked_by: string | null
  readonly lease_expires_at: Date | null
  /** `running` and marked `buffered` (migrations/0011): claimed ahead, not seen started yet. */
  readonly buffered: boolean
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
   * the `buffered` mark (migrations/0011) of the given jobs, started from the buffer and still
   * held under these tokens. Returns the ids cleared (a row locked by another transaction
   * just then is not: send it again). Fails once the session is gone.
   */
  readonly check: (started: ReadonlyArray<HeldJob>) => Effect.Effect<ReadonlySet<string>, SqlError.SqlError>
}

export interface ManagementStore {
  /** Jobs per queue and state (one queue, or all). */
  /**
   * Unfinished jobs (scheduled, available, running) per queue and state, exactly: each state
   * through its partial index, so the cost follows the jobs waiting and running, never history.
   */
  readonly countsUnfinished: (
    queue: string | undefined
  ) => Effect.Effect<ReadonlyArray<QueueStateCountRow>, SqlError.SqlError>
  /** Finished jobs (completed, dead, cancelled) per queue and state, counted now: reads every finished row. */
  readonly countsFinished: Effect.Effect<ReadonlyArray<QueueStateCountRow>, SqlError.SqlError>
  /** The stored count of finished jobs (migrations/0009), if any. */
  readonly countsSnapshotRead: Effect.Effect<FinishedCountsSnapshot | undefined, SqlError.SqlError>
  /** Replaces the stored count of finished jobs. */
  readonly countsSnapshotWrite: (snapshot: FinishedCountsSnapshot) => Effect.Effect<void, SqlError.SqlError>
  /**
   * Recounts the finished jobs and stores the count, unless another session is doing it right
   * now (a transaction-level advisory lock, tried, not waited for) or has stored a count
   * taken after `staleBefore` (it recounted meanwhile). `measure` wraps the count and gives how long it took (Effect's `Clock`).
   * Returns the snapshot stored, or `undefined` if this call left it to the other session.
   */
  readonly countsSnapshotRefresh: (
    now: number,
    staleBefore: number,
    measure: <A, E>(count: Effect.Effect<A, E>) => Effect.Effect<readonly [A, number], E>
  ) => Effect.Effect<FinishedCountsSnapshot | undefined, SqlError.SqlError>
  /** The `throughput` rows since `since` (a minute start), summed over workers, by minute and queue. */
  readonly throughputSince: (
    since: number,
    queue: string | undefined
  ) => Effect.Effect<ReadonlyArray<ThroughputRow>, SqlError.SqlError>
  /** Deletes the `throughput` rows of minutes before `before`; returns how many. */
  readonly throughputPrune: (before: number) => Effect.Effect<number, SqlError.SqlError>
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
  readonly workerRegister: (worker: RegisteredWorker) => Effect.Effect<WorkerSession | undefined, SqlError.SqlError, Scope.Scope>
  /** The registered workers whose session lock is held (live), with the jobs each holds. */
  readonly workerList: Effect.Effect<ReadonlyArray<WorkerRow>, SqlError.SqlError>
  /**
   * What the live registered workers offer to run (migrations/0008): their queues and job
   * names (`null` for a worker that does not say). Reads the small `workers` table only.
   */
  readonly workerOffers: Effect.Effect<ReadonlyArray<OfferRow>, SqlError.SqlError>
  /**
   * Which of these queues have running jobs held by a worker that is not registered
   * (`listen: false`, or a version without the registry). Reads the running jobs (the lease index).
   */
  readonly jobQueuesHeldUnregistered: (queues: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<string>, SqlError.SqlError>
  /**
   * The queues that have `available` jobs, in name order, at most `limit`: one descent of the
   * claim index per queue (a loose index scan), however many jobs each has.
   */
  readonly jobAvailableQueues: (limit: number) => Effect.Effect<ReadonlyArray<string>, SqlError.SqlError>
  /**
   * For each queue given, the names among its first `head` runnable jobs in claim order that
   * are not in its `offered` list, with how many of those jobs have each name. Reads at most
   * `head` rows of the claim index per queue.
   */
  readonly jobUnhandledHead: (
    queues: ReadonlyArray<{ readonly queue: string; readonly offered: ReadonlyArray<string> }>,
    now: number,
    head: number
  ) => Effect.Effect<ReadonlyArray<{ readonly queue: string; readonly name: string; readonly n: number }>, SqlError.SqlError>
  /**
   * Sends to `dead`, with an error of kind `NoHandler` and the message given for its name, the
   * jobs among the first `head` runnable jobs of each queue (claim order) whose name is one of
   * that queue's (`messages`: queue -> name -> message). A job a worker claimed meanwhile is
   * left alone. Returns the jobs sent to dead.
   */
  readonly jobDeadLetterUnhandled: (
    messages: Readonly<Record<string, Readonly<Record<string, string>>>>,
    now: number,
    head: number
  ) => Effect.Effect<ReadonlyArray<DeadLetteredRow>, SqlError.SqlError>
  /** `available` jobs per (queue, name) of these queues (every available job of them is counted). */
  readonly jobCountAvailable: (
    queues: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyArray<{ readonly queue: string; readonly name: string; readonly n: number }>, SqlError.SqlError>
  // -- the dashboard's periodic and bundles pages (JobsAdmin.periodic, JobsAdmin.bundles) --
  /** Every periodic schedule's row, by name, with the state of its last job (if still there). */
  readonly periodicList: Effect.Effect<ReadonlyArray<PeriodicRow>, SqlError.SqlError>
  /** One page of bundles, newest first, keyset-paged by id (`before`: the last id of the previous page). */
  readonly bundleList: (filter: {
    /** `true`: members left (`remaining > 0`); `false`: none left; undefined: both. */
    readonly open: boolean | undefined
    readonly name: string | undefined
    readonly before: string | undefined
    readonly limit: number
  }) => Effect.Effect<ReadonlyArray<BundleListRow>, SqlError.SqlError>
}

/** A periodic schedule's row (`periodicList`); the definition is null if an older version registered it. */
export interface PeriodicRow {
  readonly name: string
  readonly job: string | null
  readonly queue: string | null
  readonly cron: string | null
  readonly time_zone: string | null
  readonly every_ms: number | null
  readonly last_slot: Date
  readonly last_job: string | null
  readonly last_job_state: JobState | null
  readonly updated_at: Date
}

/** A bundle's row (`bundleList`). */
export interface BundleListRow extends BundleRow {
  readonly remaining: number
  readonly follow_up_done: boolean
  readonly follow_up_id: string | null
}

/** A worker as it registers (`workerRegister`). */
export interface RegisteredWorker {
  readonly id: string
  /** The queues it serves now: read when it registers and at every `check` (`reconfigure` changes them). */
  readonly queues: () => ReadonlyArray<string>
  /** The job names it has handlers for, aliases included (migrations/0008). */
  readonly names: ReadonlyArray<string>
  readonly concurrency: number
}

/** What one live worker offers to run (`workerOffers`). */
export interface OfferRow {
  readonly queues: ReadonlyArray<string>
  /** null: any name (the worker does not say which it handles). */
  readonly names: ReadonlyArray<string> | null
}

/** A job sent to dead by `jobDeadLetterUnhandled`. */
export interface DeadLetteredRow {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly attempt: number
  readonly max_attempts: number
}

/** One live worker (`workerList`). */
export interface WorkerRow {
  readonly id: string
  readonly queues: ReadonlyArray<string>
  /** null for a worker that does not say (a version before migrations/0008). */
  readonly names: ReadonlyArray<string> | null
  readonly concurrency: number
  readonly started_at: Date
  readonly last_seen_at: Date
  readonly held: number
}

const allJobStates: ReadonlyArray<JobState> = ["scheduled", "available", "running", "completed", "dead", "cancelled"]
const finishedJobStates: ReadonlyArray<JobState> = ["completed", "dead", "cancelled"]

/**
 * SQL: `state` is one of `states`, as an OR of one branch per partial index that holds jobs in
 * those states: each unfinished state its own (`claim`, `scheduled`, and `lease`, whose
 * predicate is `lease_expires_at IS NOT NULL`: a running job always has a lease), the
 * finished ones together (the finished-only indexes). The states are our own words: no
 * parameters needed.
 */
const stateBranches = (states: ReadonlyArray<JobState>): string => {
  const branches: Array<string> = []
  if (states.includes("available")) branches.push("state = 'available'")
  if (states.includes("scheduled")) branches.push("state = 'scheduled'")
  if (states.includes("running")) branches.push("(state = 'running' AND lease_expires_at IS NOT NULL)")
  const finished = finishedJobStates.filter((s) => states.includes(s))
  if (finished.length > 0) branches.push(`state IN (${finished.map((s) => `'${s}'`).join(", ")})`)
  return branches.length === 0 ? "FALSE" : `(${branches.join(" OR ")})`
}

/** (Statements that select these order by `jobs.id`: a bare `id` is the text column.) */
const detailColumns = `id::text, name, queue, state, priority, attempt, max_attempts, run_at, args, result, errors,
  unique_key, unique_states, unique_window, group_key, metadata, request_id, locked_by, lease_expires_at,
  (state = 'running' AND buffered) AS buffered, created_at, attempted_at, finalized_at, prune_at, cancel_requested_at`

/** The `ManagementStore` statements on a client without name transforms. */
export const makeManagement = (sql: SqlClient.SqlClient, schema: string): ManagementStore => {
  const t = tablesOf(sql, schema)
  const channels = channelsOf(schema)
  const json = (value: unknown) => JSON.stringify(value)

  const byQueue = (queue: string | undefined) => (queue === undefined ? sql.literal("") : sql`AND queue = ${queue}`)

  // One branch per state, each with its partial index's predicate (the lease index's is
  // `lease_expires_at IS NOT NULL`: every running job has a lease, migrations/0001's CHECK).
  const countsUnfinished = (queue: string | undefined) =>
    sql<QueueStateCountRow>`
      SELECT queue, 'available' AS state, count(*)::int AS count FROM ${t.jobs}
      WHERE state = 'available' ${byQueue(queue)} GROUP BY queue
      UNION ALL
      SELECT queue, 'scheduled', count(*)::int FROM ${t.jobs}
      WHERE state = 'scheduled' ${byQueue(queue)} GROUP BY queue
      UNION ALL
      SELECT queue, 'running', count(*)::int FROM ${t.jobs}
      WHERE state = 'running' AND lease_expires_at IS NOT NULL ${byQueue(queue)} GROUP BY queue`

  const countsFinished = sql<QueueStateCountRow>`
    SELECT queue, state, count(*)::int AS count FROM ${t.jobs}
    WHERE state IN ('completed', 'dead', 'cancelled') GROUP BY queue, state`

  const snapshotOf = (row: {
    readonly counts: unknown
    readonly total: string | number
    readonly counted_at: Date
    readonly took_ms: number
  }): FinishedCountsSnapshot => ({
    counts: Array.isArray(row.counts) ? (row.counts as ReadonlyArray<QueueStateCountRow>) : [],
    total: Number(row.total),
    countedAt: row.counted_at.getTime(),
    tookMillis: row.took_ms
  })

  const countsSnapshotRead = Effect.map(
    sql<{ readonly counts: unknown; readonly total: string; readonly counted_at: Date; readonly took_ms: number }>`
      SELECT counts, total, counted_at, took_ms FROM ${t.finishedCounts}`,
    (rows) => (rows[0] === undefined ? undefined : snapshotOf(rows[0]))
  )

  const countsSnapshotWrite = (snapshot: FinishedCountsSnapshot) =>
    Effect.asVoid(sql`
      INSERT INTO ${t.finishedCounts} (only_row, counts, total, counted_at, took_ms)
      VALUES (true, ${json(snapshot.counts)}::jsonb, ${snapshot.total}, ${iso(snapshot.countedAt)}::timestamptz,
              ${Math.min(2_000_000_000, Math.max(0, Math.round(snapshot.tookMillis)))})
      ON CONFLICT (only_row) DO UPDATE SET counts = EXCLUDED.counts, total = EXCLUDED.total,
        counted_at = EXCLUDED.counted_at, took_ms = EXCLUDED.took_ms`)

  const countsSnapshotRefresh = (
    now: number,
    staleBefore: number,
    measure: <A, E>(count: Effect.Effect<A, E>) => Effect.Effect<readonly [A, number], E>
  ) =>
    sql.withTransaction(Effect.gen(function*() {
      const [lock] = yield* sql<{ readonly locked: boolean }>`
        SELECT pg_try_advisory_xact_lock(hashtextextended(${schema}, ${finishedCountsLockKey.toString()}::bigint)) AS locked`
      if (lock?.locked !== true) return undefined
      const current = yield* countsSnapshotRead
      if (current !== undefined && current.countedAt > staleBefore) return undefined
      const [counts, took] = yield* measure(countsFinished)
      const snapshot: FinishedCountsSnapshot = {
        counts,
        total: counts.reduce((sum, r) => sum + r.count, 0),
        countedAt: now,
        tookMillis: took
      }
      yield* countsSnapshotWrite(snapshot)
      return snapshot
    }))

  const throughputSince = (since: number, queue: string | undefined) =>
    sql<ThroughputRow>`
      SELECT minute, queue, sum(completed)::int AS completed, sum(retried)::int AS retried,
             sum(dead)::int AS dead, sum(cancelled)::int AS cancelled
      FROM ${t.throughput}
      WHERE minute >= ${iso(since)}::timestamptz ${byQueue(queue)}
      GROUP BY minute, queue ORDER BY minute, queue`

  const throughputPrune = (before: number) =>
    Effect.map(
      sql<{ readonly n: number }>`
        WITH deleted AS (DELETE FROM ${t.throughput} WHERE minute < ${iso(before)}::timestamptz RETURNING 1)
        SELECT count(*)::int AS n FROM deleted`,
      (rows) => rows[0]?.n ?? 0
    )

  /**
   * A page of jobs. The filter on state is written as one branch per index that holds those
   * jobs (`stateBranches`), so that for a filter no index covers on its own (a job name, a
   * unique key, a queue without a state), the planner can combine the partial indexes, each
   * proved usable by its branch, instead of reading the table: finished history through the
   * finished-only indexes (state with queue, name or unique key, migrations/0004 and 0009),
   * unfinished jobs through their own (claim, scheduled, lease), which hold only them. When the
   * filter matches many jobs, walking the primary key in id order is cheaper, and it does that.
   *
   * Oldest first among unfinished states only, the primary key is not walked: unfinished jobs
   * sit at the newest end of the ids (a job waits behind the history finished before it was
   * enqueued), and the walk from the oldest id would read the whole history before the first
   * of them. Ordering by `id + 0` makes the planner read those jobs from their partial
   * indexes and sort them (a read of the jobs in those states, never of history).
   */
  const adminList = (f: JobListFilter) => {
    const where = [sql.literal("TRUE")]
    const filtered = f.queue !== undefined || f.name !== undefined || f.uniqueKey !== undefined
    if (f.states !== undefined || filtered) where.push(sql.literal(stateBranches(f.states ?? allJobStates)))
    if (f.queue !== undefined) where.push(sql`queue = ${f.queue}`)
    if (f.name !== undefined) where.push(sql`name = ${f.name}`)
    if (f.uniqueKey !== undefined) where.push(sql`unique_key = ${f.uniqueKey}`)
    if (f.after !== undefined) {
      where.push(f.order === "newest" ? sql`id < ${f.after}::bigint` : sql`id > ${f.after}::bigint`)
    }
    const onlyUnfinished = f.states !== undefined && f.states.every((s) => !finishedJobStates.includes(s))
    const key = f.order === "oldest" && onlyUnfinished ? "jobs.id + 0" : "jobs.id"
    // Unprepared: planned for this call's values. The driver prepares statements by name, and
    // after five runs Postgres may keep a generic plan made for an average value: for
    // `name = $1` that is the walk of the primary key, which a rare name reads to its end.
    return sql<JobDetailRow>`
      SELECT ${sql.literal(detailColumns)} FROM ${t.jobs} WHERE ${sql.and(where)}
      ORDER BY ${sql.literal(key)} ${sql.literal(f.order === "newest" ? "DESC" : "ASC")} LIMIT ${f.limit}`.unprepared
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
      const [found] = yield* sql<{
        readonly state: JobState
        readonly name: string
        readonly unique_key: string | null
        readonly unique_window: string | null
      }>`
        -- (as text: '-infinity' has no Date to come back as)
        SELECT state, name, unique_key, unique_window::text FROM ${t.jobs} WHERE id = ${id}::bigint FOR UPDATE`
      if (found === undefined) return { _tag: "NotFound" } as RetryRow
      if (found.state !== "dead" && found.state !== "cancelled") return { _tag: "WrongState", state: found.state } as RetryRow
      if (found.unique_key !== null) {
        // Another job holds the key now (unfinished, or finished in this job's unique window,
        // migration 0010); making this one runnable would break uniqueness.
        const [holder] = yield* sql<{ readonly id: string }>`
          SELECT id::text FROM ${t.jobs}
          WHERE name = ${found.name} AND unique_key = ${found.unique_key}
            AND state IN ('scheduled', 'available', 'running')
          UNION ALL
          SELECT id::text FROM ${t.jobs}
          WHERE name = ${found.name} AND unique_key = ${found.unique_key} AND unique_window = ${found.unique_window}::timestamptz
            AND state = ANY (unique_states) AND id <> ${id}::bigint`
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
            -- nor any whose unique window another job holds (migration 0010)
            AND (d.unique_window IS NULL OR NOT EXISTS (
              SELECT 1 FROM ${t.jobs} w
              WHERE w.name = d.name AND w.unique_key = d.unique_key AND w.unique_window = d.unique_window
                AND w.state = ANY (w.unique_states) AND w.id <> d.id))
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
            WITH cancelled AS (
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
            RETURNING queue, state, pg_notify(${channels.done}, '')::text AS notified
            ),
            counted AS (${
            countThroughput(sql, t.throughput, "(SELECT queue, state, true AS counted FROM cancelled)", minuteOf(nowMillis), "(operator)")
          })
            SELECT notified FROM cancelled`
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

  const workerRegister = (worker: RegisteredWorker) =>
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
      const names = json(worker.names)
      yield* run(
        `INSERT INTO ${qualify(schema, "workers")} (id, queues, names, concurrency)
         SELECT $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), ARRAY(SELECT jsonb_array_elements_text($3::jsonb)), $4
         ON CONFLICT (id) DO UPDATE SET queues = EXCLUDED.queues, names = EXCLUDED.names,
           concurrency = EXCLUDED.concurrency, started_at = now(), last_seen_at = now()`,
        [worker.id, json(worker.queues()), names, worker.concurrency]
      )
      const beat = `
        WITH h AS (SELECT $4::jsonb AS o),
        started AS (
          -- jobs started from the buffer since the last beat: no longer only buffered
          -- (migrations/0011). Rows locked by another transaction (a finish, a rescue) are
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
          -- a row deleted meanwhile (dead for a minute by the rescuer) comes back; the queues served now are written. (Run though
          -- the query below does not read it: a data-modifying WITH always runs.)
          INSERT INTO ${qualify(schema, "workers")} (id, queues, names, concurrency)
          SELECT $1, ARRAY(SELECT jsonb_array_elements_text($2::jsonb)), ARRAY(SELECT jsonb_array_elements_text($5::jsonb)), $3
          ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), queues = EXCLUDED.queues
        )
        SELECT COALESCE(string_agg(id::text, ','), '') AS started FROM started`
      return {
        pid: row.pid,
        // The queues are the ones served now: the maintenance leader reads them to tell which
        // queues and names a live worker serves (migrations/0008).
        check: (started) => {
          const tokens: Record<string, number> = {}
          for (const h of started) tokens[h.id] = h.token
          return Effect.map(
            run<{ readonly started: string }>(beat, [worker.id, json(worker.queues()), worker.concurrency, json(tokens), names]),
            (rows) => new Set(rows[0]?.started ? rows[0].started.split(",") : [])
          )
        }
      } satisfies WorkerSession
    })

  const workerList = sql<WorkerRow>`
    SELECT w.id, w.queues, w.names, w.concurrency, w.started_at, w.last_seen_at,
           (SELECT count(*)::int FROM ${t.jobs} j
            WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.locked_by = w.id) AS held
    FROM ${t.workers} w
    WHERE ${sql.literal(workerLockHeld(schema, "w.id"))}
    ORDER BY w.started_at, w.id`

  const workerOffers = sql<OfferRow>`
    SELECT w.queues, w.names FROM ${t.workers} w WHERE ${sql.literal(workerLockHeld(schema, "w.id"))}`

  // (A dead registered worker's running jobs keep its row until they are rescued: not counted here.)
  const jobQueuesHeldUnregistered = (queues: ReadonlyArray<string>) =>
    queues.length === 0 ? Effect.succeed([]) : Effect.map(
      sql<{ readonly queue: string }>`
        SELECT DISTINCT j.queue FROM ${t.jobs} j
        WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running'
          AND j.queue IN (SELECT jsonb_array_elements_text(${json(queues)}::jsonb))
          AND NOT EXISTS (SELECT 1 FROM ${t.workers} w WHERE w.id = j.locked_by)`,
      (rows) => rows.map((r) => r.queue)
    )

  // A loose index scan of jobs_claim_idx: each step finds the next queue name with one descent.
  const jobAvailableQueues = (limit: number) =>
    Effect.map(
      sql<{ readonly queue: string }>`
        WITH RECURSIVE found(queue, n) AS (
          (SELECT queue, 1 FROM ${t.jobs} WHERE state = 'available' ORDER BY queue LIMIT 1)
          UNION ALL
          SELECT (SELECT j.queue FROM ${t.jobs} j WHERE j.state = 'available' AND j.queue > found.queue
                  ORDER BY j.queue LIMIT 1), found.n + 1
          FROM found WHERE found.queue IS NOT NULL AND found.n < ${limit}
        )
        SELECT queue FROM found WHERE queue IS NOT NULL`,
      (rows) => rows.map((r) => r.queue)
    )

  /**
   * The first `head` runnable jobs of each queue, in claim order (what its workers would
   * claim next): the jobs of a name no claim takes stay there, while the others are claimed.
   */
  const headOf = (head: number, now: string) =>
    sql`
      SELECT h.id, h.name FROM ${t.jobs} h
      WHERE h.state = 'available' AND h.queue = q.queue AND h.run_at <= ${now}::timestamptz
      ORDER BY h.priority, h.run_at, h.id
      LIMIT ${head}`

  const jobUnhandledHead = (
    queues: ReadonlyArray<{ readonly queue: string; readonly offered: ReadonlyArray<string> }>,
    nowMillis: number,
    head: number
  ) =>
    queues.length === 0 ? Effect.succeed([]) : sql<{ readonly queue: string; readonly name: string; readonly n: number }>`
      SELECT q.queue, h.name, count(*)::int AS n
      FROM jsonb_to_recordset(${json(queues)}::jsonb) AS q(queue text, offered jsonb)
      CROSS JOIN LATERAL (${headOf(head, iso(nowMillis))}) h
      WHERE NOT q.offered ? h.name
      GROUP BY q.queue, h.name
      ORDER BY q.queue, h.name`

  const jobDeadLetterUnhandled = (
    messages: Readonly<Record<string, Readonly<Record<string, string>>>>,
    nowMillis: number,
    head: number
  ) => {
    if (Object.keys(messages).length === 0) return Effect.succeed([])
    const now = iso(nowMillis)
    const byQueue = json(messages)
    const errors = sql.literal(`(CASE WHEN jsonb_typeof(j.errors) = 'array' THEN j.errors ELSE '[]'::jsonb END)`)
    return sql<DeadLetteredRow>`
      UPDATE ${t.jobs} j SET
        state = 'dead',
        finalized_at = ${now}::timestamptz,
        prune_at = CASE WHEN j.retention_ms IS NOT NULL
                        THEN ${now}::timestamptz + LEAST(j.retention_ms, 3153600000000000) * interval '1 millisecond' END,
        errors = (
          SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
          FROM jsonb_array_elements(${errors} || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempt, 'at', ${now}::text, 'kind', 'NoHandler',
            'message', ${byQueue}::jsonb -> j.queue ->> j.name
          ))) WITH ORDINALITY AS t(e, o)
          WHERE o > jsonb_array_length(${errors}) + 1 - j.max_errors)
      -- (id = ANY(ARRAY(...)): looked up in the primary key, see jobClaim.) The heads are locked
      -- by id alone, and their state is checked after the lock: a job a worker claimed meanwhile
      -- is not touched. With the state condition beside the ids, the planner of a table never
      -- analyzed reads them from jobs_claim_idx, walking all of it (migrations/0018 says more).
      WHERE j.id = ANY(ARRAY(
          SELECT l.id FROM (
            SELECT l.id, l.state FROM ${t.jobs} l
            WHERE l.id = ANY(ARRAY(
              SELECT h.id FROM jsonb_each(${byQueue}::jsonb) AS q(queue, names)
              CROSS JOIN LATERAL (${headOf(head, now)}) h
              WHERE q.names ? h.name))
            FOR UPDATE OFFSET 0) l
          WHERE l.state = 'available'))
      RETURNING j.id::text, j.name, j.queue, j.attempt, j.max_attempts, pg_notify(${channels.done}, '')::text AS done`
  }

  const jobCountAvailable = (queues: ReadonlyArray<string>) =>
    queues.length === 0 ? Effect.succeed([]) : sql<{ readonly queue: string; readonly name: string; readonly n: number }>`
      SELECT queue, name, count(*)::int AS n FROM ${t.jobs}
      WHERE state = 'available' AND queue IN (SELECT jsonb_array_elements_text(${json(queues)}::jsonb))
      GROUP BY queue, name ORDER BY queue, name`

  // -- the dashboard's periodic and bundles pages --

  const periodicList = sql<PeriodicRow>`
    SELECT p.name, p.job, p.queue, p.cron, p.time_zone, p.every_ms::float8 AS every_ms, p.last_slot,
           p.last_job::text AS last_job, j.state AS last_job_state, p.updated_at
    FROM ${t.periodic} p LEFT JOIN ${t.jobs} j ON j.id = p.last_job
    ORDER BY p.name`

  const bundleList = (f: {
    readonly open: boolean | undefined
    readonly name: string | undefined
    readonly before: string | undefined
    readonly limit: number
  }) => {
    const where = [sql.literal("TRUE")]
    if (f.open !== undefined) where.push(f.open ? sql.literal("remaining > 0") : sql.literal("remaining = 0"))
    if (f.name !== undefined) where.push(sql`name = ${f.name}`)
    if (f.before !== undefined) where.push(sql`bundles.id < ${f.before}::bigint`)
    return sql<BundleListRow>`
      SELECT id::text, name, total, remaining, metadata, created_at, finished_at, follow_up_done,
             follow_up_id::text AS follow_up_id
      FROM ${t.bundles} WHERE ${sql.and(where)}
      ORDER BY bundles.id DESC LIMIT ${f.limit}`
  }

  return {
    periodicList,
    bundleList,
    workerRegister,
    workerList,
    workerOffers,
    jobQueuesHeldUnregistered,
    jobAvailableQueues,
    jobUnhandledHead,
    jobDeadLetterUnhandled,
    jobCountAvailable,
    countsUnfinished,
    countsFinished,
    countsSnapshotRead,
    countsSnapshotWrite,
    countsSnapshotRefresh,
    throughputSince,
    throughputPrune,
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

// ===========================================================================================
// Rate limits: the state of `RateLimiterStore.layer` (src/RateLimiterStore.ts).
//
// Each method is one call of a function of migrations/0013, which locks the key's row, reads
// the database's clock and writes the new state, so concurrent callers of every process are
// serialised per key. The algorithms themselves are in that migration (the worker's claim
// calls `rate_grant` there on the same rows).
// ===========================================================================================

/** A fixed window's count after a take (above the limit when refused) and milliseconds to its end. */
export interface RateWindowRow {
  readonly count: number
  readonly ttl_ms: number
}

/** A token bucket's count after a take (negative when it did not fit) and milliseconds into its refill interval. */
export interface RateBucketRow {
  readonly remaining: number
  readonly elapsed_ms: number
}

/** What `rate_adaptive_consume` answers: the delay before the request, its epoch, the phase seen. */
export interface RateAdaptiveRow {
  readonly delay_ms: number
  readonly epoch: number
  readonly phase: "inactive" | "cooldown" | "learning" | "learned"
}

export interface RateLimitStore {
  readonly rateFixedWindow: (
    key: string,
    tokens: number,
    refillMillis: number,
    limit: number | undefined
  ) => Effect.Effect<RateWindowRow, SqlError.SqlError>
  readonly rateTokenBucket: (
    key: string,
    tokens: number,
    limit: number,
    refillMillis: number,
    allowOverflow: boolean
  ) => Effect.Effect<RateBucketRow, SqlError.SqlError>
  readonly rateAdaptiveConsume: (
    key: string,
    tokens: number,
    fallbackWindowMillis: number,
    graceMillis: number
  ) => Effect.Effect<RateAdaptiveRow, SqlError.SqlError>
  /** For a 429 response only; `retryAfterMillis` already clamped to 1 ms .. `maxWindowMillis`. */
  readonly rateAdaptiveFeedback: (options: {
    readonly key: string
    readonly epoch: number
    readonly tokens: number
    readonly retryAfterMillis: number
    readonly graceMillis: number
    readonly maxWindowMillis: number
  }) => Effect.Effect<void, SqlError.SqlError>
}

/** The rate-limit statements on `sql` (a client without name transforms) for `schema`. */
export const makeRateLimits = (sql: SqlClient.SqlClient, schema: string): RateLimitStore => {
  const fixedWindow = sql.literal(qualify(schema, "rate_fixed_window"))
  const tokenBucket = sql.literal(qualify(schema, "rate_token_bucket"))
  const adaptiveConsume = sql.literal(qualify(schema, "rate_adaptive_consume"))
  const adaptiveFeedback = sql.literal(qualify(schema, "rate_adaptive_feedback"))
  // Each function returns exactly one row.
  const one = <A>(rows: ReadonlyArray<A>): A => rows[0]!
  return {
    rateFixedWindow: (key, tokens, refillMillis, limit) =>
      Effect.map(
        sql<RateWindowRow>`
          SELECT count, ttl_ms FROM ${fixedWindow}(${key}, ${tokens}::float8, ${refillMillis}::float8,
            ${limit ?? null}::float8)`,
        one
      ),
    rateTokenBucket: (key, tokens, limit, refillMillis, allowOverflow) =>
      Effect.map(
        sql<RateBucketRow>`
          SELECT remaining, elapsed_ms FROM ${tokenBucket}(${key}, ${tokens}::float8, ${limit}::float8,
            ${refillMillis}::float8, ${allowOverflow})`,
        one
      ),
    rateAdaptiveConsume: (key, tokens, fallbackWindowMillis, graceMillis) =>
      Effect.map(
        sql<RateAdaptiveRow>`
          SELECT delay_ms, epoch, phase FROM ${adaptiveConsume}(${key}, ${tokens}::float8,
            ${fallbackWindowMillis}::float8, ${graceMillis}::float8)`,
        one
      ),
    rateAdaptiveFeedback: (o) =>
      Effect.asVoid(sql`
        SELECT ${adaptiveFeedback}(${o.key}, ${o.epoch}::integer, ${o.tokens}::float8, ${o.retryAfterMillis}::float8,
          ${o.graceMillis}::float8, ${o.maxWindowMillis}::float8)`)
  }
}
