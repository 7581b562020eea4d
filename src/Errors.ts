/**
 * The typed errors of effect-jobs. Every bad input the library can be given
 * ends in one of these (or in the `SqlError` of `effect/sql`), never in a
 * defect and never in a half-written job.
 *
 * @since 0.1.0
 */
import { Cause, Schema } from "effect"

/** Arguments rejected by the job's `args` Schema at enqueue. Nothing was written. */
export class InvalidJobArgs extends Schema.TaggedError<InvalidJobArgs>()("InvalidJobArgs", {
  job: Schema.String,
  message: Schema.String
}) {}

/** Enqueue options out of range (negative delay, bad priority, empty queue name...). Nothing was written. */
export class InvalidJobOptions extends Schema.TaggedError<InvalidJobOptions>()("InvalidJobOptions", {
  job: Schema.String,
  message: Schema.String
}) {}

/**
 * A worker, queue or bundle-finisher (`Bundle.toLayer`) configuration that cannot
 * run (concurrency 0, negative poll interval...). The layer fails to build with it.
 */
export class InvalidWorkerConfig extends Schema.TaggedError<InvalidWorkerConfig>()("InvalidWorkerConfig", {
  message: Schema.String
}) {}

/**
 * The database could not be reached when `Database.layer` was built (after the retries
 * asked for, if any): `host`, `port` and `database` say where it looked, `cause` why it
 * failed. The message never contains the password.
 */
export class DatabaseUnreachable extends Schema.TaggedError<DatabaseUnreachable>()("DatabaseUnreachable", {
  host: Schema.String,
  port: Schema.Number,
  database: Schema.String,
  /** Connection attempts made. */
  attempts: Schema.Number,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/** A database URL that cannot be parsed. The message never contains the password. */
export class InvalidDatabaseUrl extends Schema.TaggedError<InvalidDatabaseUrl>()("InvalidDatabaseUrl", {
  message: Schema.String
}) {}

/** A Postgres schema name for `PgSchema` that is not a plain lower-case identifier. Nothing was created. */
export class InvalidSchemaName extends Schema.TaggedError<InvalidSchemaName>()("InvalidSchemaName", {
  schema: Schema.String,
  message: Schema.String
}) {}

/** An attempt ran longer than its job's `timeout`. Treated as a failure: retried per the job's Schedule. */
export class JobTimeout extends Schema.TaggedError<JobTimeout>()("JobTimeout", {
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `the attempt ran longer than its timeout of ${this.timeoutMillis} ms`
  }
}

/** A migration file could not be read or applied. */
export class MigrationFailed extends Schema.TaggedError<MigrationFailed>()("MigrationFailed", {
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/** No job with this id (never enqueued, or already deleted by retention). */
export class JobNotFound extends Schema.TaggedError<JobNotFound>()("JobNotFound", {
  id: Schema.String
}) {
  override get message(): string {
    return `no job with id ${JSON.stringify(this.id)} (never enqueued, or already deleted by retention)`
  }
}

/** The awaited job ended in the dead-letter state; `message` is its last error. */
export class JobDead extends Schema.TaggedError<JobDead>()("JobDead", {
  id: Schema.String,
  message: Schema.String
}) {}

/** The awaited job was cancelled. */
export class JobCancelled extends Schema.TaggedError<JobCancelled>()("JobCancelled", {
  id: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `job ${this.id} was cancelled: ${this.reason}`
  }
}

/** The awaited job did not finish within the timeout given to `await`. It is still queued or running. */
export class AwaitTimeout extends Schema.TaggedError<AwaitTimeout>()("AwaitTimeout", {
  id: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `job ${this.id} did not finish within ${this.timeoutMillis} ms; it is still queued or running`
  }
}

/** A stored result that does not decode with the job's `success` Schema. */
export class InvalidResult extends Schema.TaggedError<InvalidResult>()("InvalidResult", {
  id: Schema.String,
  message: Schema.String
}) {}

// -- management (JobsAdmin) ---------------------------------------------------------------

/** `cancel` of a job that already finished: it stays as it is, `state` says how it ended. */
export class JobAlreadyFinished extends Schema.TaggedError<JobAlreadyFinished>()("JobAlreadyFinished", {
  id: Schema.String,
  state: Schema.String,
  message: Schema.String
}) {}

/**
 * `retry` of a job that is not `dead` or `cancelled`, or whose unique key another job holds now
 * (an unfinished one, or a finished one of its unique window: `Jobs.UniqueOptions`).
 */
export class JobNotRetryable extends Schema.TaggedError<JobNotRetryable>()("JobNotRetryable", {
  id: Schema.String,
  state: Schema.String,
  message: Schema.String
}) {}

/** `delete` of a running job: cancel it first (or let it finish). */
export class JobIsRunning extends Schema.TaggedError<JobIsRunning>()("JobIsRunning", {
  id: Schema.String,
  message: Schema.String
}) {}

/**
 * `delete` of a member of a bundle whose finish step has not run yet: deleting it
 * would change what the bundle finishes with (a waiting member counts as done; a
 * finished one's result is gone). Cancel a waiting member instead; a finished one
 * can be deleted once the bundle's finish step has run (`Bundle.toLayer`).
 */
export class JobInPendingBundle extends Schema.TaggedError<JobInPendingBundle>()("JobInPendingBundle", {
  id: Schema.String,
  bundleId: Schema.String,
  state: Schema.String,
  message: Schema.String
}) {}

/** `cancelByKey` found no unfinished job with this name and unique key. */
export class UniqueKeyNotFound extends Schema.TaggedError<UniqueKeyNotFound>()("UniqueKeyNotFound", {
  job: Schema.String,
  uniqueKey: Schema.String
}) {
  override get message(): string {
    return `no unfinished job ${JSON.stringify(this.job)} with unique key ${JSON.stringify(this.uniqueKey)}`
  }
}

/** A management call given an argument it cannot use (a negative page size, zero attempts...). Nothing was changed. */
export class InvalidAdminRequest extends Schema.TaggedError<InvalidAdminRequest>()("InvalidAdminRequest", {
  message: Schema.String
}) {}

// -- outcomes a handler chooses (Job.retryAfter, snooze, discard, cancel) ---------------------

/** Retry after `delay` instead of the schedule's delay. Counts an attempt. */
export class RetryAfter extends Schema.TaggedError<RetryAfter>()("RetryAfter", {
  delayMillis: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `retry after ${this.delayMillis} ms: ${this.reason}`
  }
}

/** Run again after `delay` without spending an attempt. */
export class Snooze extends Schema.TaggedError<Snooze>()("Snooze", {
  delayMillis: Schema.Number
}) {
  override get message(): string {
    return `snoozed for ${this.delayMillis} ms`
  }
}

/** Move the job to `dead` now, whatever attempts remain. */
export class Discard extends Schema.TaggedError<Discard>()("Discard", {
  reason: Schema.String
}) {
  override get message(): string {
    return `discarded: ${this.reason}`
  }
}

/** End the job as `cancelled`. */
export class Cancel extends Schema.TaggedError<Cancel>()("Cancel", {
  reason: Schema.String
}) {
  override get message(): string {
    return `cancelled: ${this.reason}`
  }
}

// -- periodic jobs and testing --------------------------------------------------------------

/**
 * A schedule that cannot run: bad cron text, unknown time zone, interval not
 * positive, duplicate name, args its job's Schema refuses or enqueue options out
 * of range.
 */
export class InvalidSchedule extends Schema.TaggedError<InvalidSchedule>()("InvalidSchedule", {
  name: Schema.String,
  message: Schema.String
}) {}

/**
 * The defect an `enqueue` of `Testing.layerInline` dies with when the inline run
 * of its job failed (a typed failure, a timeout, a defect, no handler, args that
 * do not decode): `job` is the job's name, `jobCause` the run's `Cause`.
 */
export class InlineJobFailed extends Schema.TaggedError<InlineJobFailed>()("InlineJobFailed", {
  job: Schema.String,
  jobCause: Schema.Cause(Schema.Unknown, Schema.Unknown)
}) {
  override get message(): string {
    return `Testing.layerInline: job "${this.job}" failed:\n${Cause.pretty(this.jobCause)}`
  }
}
