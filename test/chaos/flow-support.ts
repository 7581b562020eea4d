/**
 * The checks of the flow-control scenarios, computed in SQL on the run log `flow_log`
 * (test/chaos/flow-jobs.ts says what a row is), so every time compared is a time of the
 * database clock.
 *
 * A run's end is its `ended_at`; a run of a SIGKILLed process has none, and ends at the
 * kill, recorded in `flow_kills` by `killAndRecord` right after the process is gone (a little
 * after the real kill: the run is counted a little longer than it lasted, which can only
 * make a limit look exceeded, never hide it). A run that neither ended nor was killed is
 * reported by `openRuns` (its worker must have lost it some other way).
 */
import { Effect } from "effect"
import { flowLogDdl } from "./flow-jobs.ts"
import * as Chaos from "./support.ts"

/** Creates the run log and the kill record in the file's database (once per file is enough). */
export const createLog = Effect.flatMap(Chaos.sqlClient, (sql) => Effect.forEach(flowLogDdl, (ddl) => sql.unsafe(ddl))).pipe(
  Effect.asVoid,
  Effect.orDie
)

/** SIGKILLs the worker, waits until it is gone, and records the kill on the database clock. */
export const killAndRecord = (w: Chaos.WorkerProcess) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    yield* Chaos.killHard(w)
    yield* sql`INSERT INTO flow_kills (pid, killed_at) VALUES (${w.pid}, clock_timestamp())`.pipe(Effect.orDie)
  })

/** The runs of `queue` with their effective end (the fragment every check starts from). */
const runsOf = (queue: string) =>
  Effect.map(Chaos.sqlClient, (sql) =>
    sql`
      SELECT l.id, l.job_id, l.grp, l.pid, l.attempt, l.outcome, l.started_at AS s,
             COALESCE(l.ended_at, k.killed_at) AS e
      FROM flow_log l LEFT JOIN flow_kills k ON k.pid = l.pid
      WHERE l.queue = ${queue}`)

export interface Overlap {
  /** The most runs of the queue at once. */
  readonly max: number
  /** The most runs of one group at once, per group. */
  readonly perGroup: Readonly<Record<string, number>>
  /** Runs logged. */
  readonly runs: number
}

/**
 * The most runs at once, by an event sweep: +1 at each start, -1 at each end, summed in
 * time order, an end before a start at the same instant (a slot handed on is not an overlap).
 * Runs without an end (see `openRuns`) are left out.
 */
export const overlap = (queue: string) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    const runs = yield* runsOf(queue)
    const rows = yield* sql<{ readonly grp: string; readonly global: number; readonly per_group: number; readonly runs: number }>`
      WITH r AS (${runs}),
      ev AS (
        SELECT grp, s AS t, 1 AS d FROM r WHERE e IS NOT NULL
        UNION ALL
        SELECT grp, e AS t, -1 AS d FROM r WHERE e IS NOT NULL
      ),
      sweep AS (
        SELECT grp,
               sum(d) OVER (ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS global,
               sum(d) OVER (PARTITION BY grp ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS per_group
        FROM ev
      )
      SELECT grp, max(global)::int AS global, max(per_group)::int AS per_group, (count(*) / 2)::int AS runs
      FROM sweep GROUP BY grp ORDER BY grp`.pipe(Effect.orDie)
    const result: Overlap = {
      max: rows.reduce((m, r) => Math.max(m, r.global), 0),
      perGroup: Object.fromEntries(rows.map((r) => [r.grp, r.per_group])),
      runs: rows.reduce((n, r) => n + r.runs, 0)
    }
    return result
  })

/** Runs of `queue` with no end and no kill of their process. */
export const openRuns = (queue: string) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    const runs = yield* runsOf(queue)
    return yield* sql<{ readonly id: string; readonly job_id: string; readonly pid: number }>`
      WITH r AS (${runs}) SELECT id::text, job_id::text, pid FROM r WHERE e IS NULL`.pipe(Effect.orDie)
  })

export interface SequenceBreak {
  readonly grp: string
  readonly job_id: string
  readonly prev_job: string
  /** The run began before the previous run of its group ended (ms; 0 or less: no overlap). */
  readonly overlap_ms: number
}

/**
 * Runs that break a sequence: within a group, taken in start order, a run of a job with a
 * smaller id than the run before it (a job ran after a later one had started: out of order,
 * or retried after its successor ran), or a run that began before the previous one ended.
 */
export const sequenceBreaks = (queue: string) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    const runs = yield* runsOf(queue)
    return yield* sql<SequenceBreak>`
      WITH r AS (${runs}),
      o AS (
        SELECT grp, job_id, s,
               lag(job_id) OVER w AS prev_job,
               lag(e) OVER w AS prev_end
        FROM r WINDOW w AS (PARTITION BY grp ORDER BY s, id)
      )
      SELECT grp, job_id::text, prev_job::text,
             (extract(epoch FROM (prev_end - s)) * 1000)::float8 AS overlap_ms
      FROM o
      WHERE prev_job IS NOT NULL AND (job_id < prev_job OR prev_end IS NULL OR s < prev_end)
      ORDER BY grp, s`.pipe(Effect.orDie)
  })

/** Jobs of `queue` and how many of their runs finished well: `{ none, once, more }` counts. */
export const okRuns = (queue: string) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    const [row] = yield* sql<{ readonly none: number; readonly once: number; readonly more: number }>`
      WITH per AS (
        SELECT j.id, count(l.id) FILTER (WHERE l.outcome = 'ok') AS n
        FROM effect_jobs.jobs j LEFT JOIN flow_log l ON l.job_id = j.id AND l.queue = j.queue
        WHERE j.queue = ${queue} GROUP BY j.id
      )
      SELECT count(*) FILTER (WHERE n = 0)::int AS none, count(*) FILTER (WHERE n = 1)::int AS once,
             count(*) FILTER (WHERE n > 1)::int AS more
      FROM per`.pipe(Effect.orDie)
    return row!
  })

/**
 * For the jobs of `queue` in group `grp`, how long each waited, from its enqueue (`created_at`)
 * to the start of its first run (`wait`), and that wait's two parts: in the table until a claim
 * took it (`toClaim`), then from the claim to the start (`claimToStart`: the claim's round trip,
 * any time in the worker's buffer, and the run's first statement). Milliseconds; the claim's
 * time (`attempted_at`) is the claiming worker's clock, on the database's machine here.
 */
export const waits = (queue: string, grp: string) =>
  Effect.gen(function*() {
    const sql = yield* Chaos.sqlClient
    const rows = yield* sql<{ readonly wait_ms: number; readonly to_claim_ms: number; readonly claim_to_start_ms: number }>`
      SELECT (extract(epoch FROM (min(l.started_at) - j.created_at)) * 1000)::float8 AS wait_ms,
             (extract(epoch FROM (j.attempted_at - j.created_at)) * 1000)::float8 AS to_claim_ms,
             (extract(epoch FROM (min(l.started_at) - j.attempted_at)) * 1000)::float8 AS claim_to_start_ms
      FROM effect_jobs.jobs j JOIN flow_log l ON l.job_id = j.id AND l.queue = j.queue
      WHERE j.queue = ${queue} AND l.grp = ${grp}
      GROUP BY j.id, j.created_at, j.attempted_at`.pipe(Effect.orDie)
    return {
      wait: rows.map((r) => r.wait_ms),
      toClaim: rows.map((r) => r.to_claim_ms),
      claimToStart: rows.map((r) => r.claim_to_start_ms)
    }
  })

/** Error kinds in the `errors` of the jobs of `queue` (every failed attempt), with counts. */
export const errorKinds = (queue: string) =>
  Effect.flatMap(Chaos.sqlClient, (sql) =>
    Effect.map(
      sql<{ readonly kind: string; readonly n: number }>`
        SELECT e->>'kind' AS kind, count(*)::int AS n
        FROM effect_jobs.jobs, jsonb_array_elements(CASE WHEN jsonb_typeof(errors) = 'array' THEN errors ELSE '[]' END) e
        WHERE queue = ${queue}
        GROUP BY 1 ORDER BY 2 DESC`,
      (rows) => Object.fromEntries(rows.map((r) => [r.kind, r.n])) as Record<string, number>
    )).pipe(Effect.orDie)

/** The first jobs of `queue` with more than one run, with their runs and errors (for the record when a check fails). */
export const ranTwice = (queue: string) =>
  Effect.flatMap(Chaos.sqlClient, (sql) =>
    sql<{ readonly job_id: string; readonly runs: unknown; readonly errors: unknown }>`
      SELECT l.job_id::text,
             json_agg(json_build_object('pid', l.pid, 'attempt', l.attempt, 'started', l.started_at, 'ended', l.ended_at,
                                        'outcome', l.outcome) ORDER BY l.started_at) AS runs,
             (SELECT errors FROM effect_jobs.jobs j WHERE j.id = l.job_id) AS errors
      FROM flow_log l WHERE l.queue = ${queue}
      GROUP BY l.job_id HAVING count(*) > 1 ORDER BY l.job_id LIMIT 5`).pipe(Effect.orDie)

/** What a scenario's run log shows, for its assertions and its recorded result. */
export const runFigures = (queue: string) =>
  Effect.all({ overlap: overlap(queue), ok: okRuns(queue), jobErrorKinds: errorKinds(queue) })
