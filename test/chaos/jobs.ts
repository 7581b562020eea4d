/**
 * The jobs of the chaos suite, shared by the test files (which enqueue them) and
 * by the worker processes (test/chaos/worker.ts, which run them).
 *
 * What a run does is in its arguments, so one worker program serves every
 * scenario: sleep for a while, fail its first attempts, hold a connection in a
 * transaction, or ignore interruption. Every run records itself in `chaos_runs`
 * (job id, worker pid, attempt, fencing token, start and end on the database
 * clock), which is what the scenarios check afterwards.
 */
import { Schedule, Schema } from "effect"
import { Job } from "../../src/index.ts"

export const ChaosArgs = Schema.Struct({
  /** Index in the batch, for humans reading a failure. */
  i: Schema.Number,
  /** How long the handler works (interruptible). */
  sleepMs: Schema.Number,
  /** On the first attempt, work this long instead of `sleepMs` (interruptible): a run sure to outlast a step of the scenario. */
  firstSleepMs: Schema.optional(Schema.Number),
  /** The handler fails (a typed failure, retried) while `ctx.attempt <= failUntil`. */
  failUntil: Schema.optional(Schema.Number),
  /** Do the work inside `sql.withTransaction`, holding a pooled connection throughout. */
  hold: Schema.optional(Schema.Boolean),
  /** On the first attempt, then keep working this long ignoring interruption (overstaying a timeout). */
  stubbornMs: Schema.optional(Schema.Number),
  /** Print `started <id> <attempt>` when the run starts (for scenarios that wait on a run). */
  announce: Schema.optional(Schema.Boolean)
})
export type ChaosArgs = typeof ChaosArgs.Type

/** Retries are near-immediate, so a retry storm is a storm. */
const tinyBackoff = Schedule.spaced("10 millis")

export const Chaos = Job.make("chaos", {
  args: ChaosArgs,
  queue: "chaos",
  maxAttempts: 100,
  retry: tinyBackoff,
  retention: "1 day"
})

/** Same, with an attempt timeout of 500 ms. */
export const ChaosTimed = Job.make("chaos-timed", {
  args: ChaosArgs,
  queue: "chaos",
  maxAttempts: 100,
  retry: tinyBackoff,
  timeout: "500 millis",
  retention: "1 day"
})

/**
 * The `application_name` of every connection of a worker process (test/chaos/worker.ts), so a
 * scenario can find that process's sessions in `pg_stat_activity`.
 */
export const workerApplicationName = (workerId: string): string => `chaos-worker ${workerId}`

export const runsTableDdl = `
  CREATE TABLE IF NOT EXISTS chaos_runs (
    id          bigserial   PRIMARY KEY,
    job_id      bigint      NOT NULL,
    pid         integer     NOT NULL,
    attempt     integer     NOT NULL,
    token       integer     NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome     text
  )`
