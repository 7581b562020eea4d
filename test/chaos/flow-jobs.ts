/**
 * The job of the flow-control chaos scenarios (test/chaos/flow.test.ts), shared by the test
 * (which enqueues it) and by the worker processes (test/chaos/flow-worker.ts, which run it).
 *
 * Every run writes one row of the run log `flow_log` when it starts and stamps its end when
 * it stops, both on the database clock (`clock_timestamp()`), through the worker's own pool.
 * The row lies inside the time the run held its slot (the claim committed before the
 * handler starts, the completion is written after the handler returns), so overlaps counted
 * from the log never exceed the overlaps of the slots: a limit seen exceeded in the log was
 * exceeded for real. A SIGKILLed run leaves its row open; the test records the kill on the
 * database clock in `flow_kills`, and the checks count the run as ended then (the process,
 * and with it the run, stopped at the kill).
 */
import { Schedule, Schema } from "effect"
import { Job } from "../../src/index.ts"

export const FlowArgs = Schema.Struct({
  /** Index in the batch, for humans reading a failure. */
  i: Schema.Number,
  /** The group (tenant) the job was enqueued with, logged by the run. */
  grp: Schema.String,
  /** How long the handler works (a timer, interruptible). */
  sleepMs: Schema.Number,
  /** The handler fails (a typed failure, retried) while `ctx.attempt <= failUntil`. */
  failUntil: Schema.optional(Schema.Number)
})
export type FlowArgs = typeof FlowArgs.Type

export const FlowJob = Job.make("flow", {
  args: FlowArgs,
  queue: "flow",
  maxAttempts: 100,
  // Retries are near-immediate: a failing job of a sequence holds its group only briefly.
  retry: Schedule.spaced("10 millis"),
  retention: "1 day"
})

/** The run log and the kill record, one statement each. */
export const flowLogDdl: ReadonlyArray<string> = [
  `CREATE TABLE IF NOT EXISTS flow_log (
    id         bigserial   PRIMARY KEY,
    queue      text        NOT NULL,
    job_id     bigint      NOT NULL,
    grp        text        NOT NULL,
    pid        integer     NOT NULL,
    attempt    integer     NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at   timestamptz,
    outcome    text
  )`,
  `CREATE INDEX IF NOT EXISTS flow_log_queue ON flow_log (queue, job_id)`,
  `CREATE TABLE IF NOT EXISTS flow_kills (
    pid       integer     PRIMARY KEY,
    killed_at timestamptz NOT NULL
  )`
]
