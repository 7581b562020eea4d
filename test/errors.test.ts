/**
 * Every typed error has a message that says what happened (the Schema.TaggedError
 * classes without a `message` field compute one), so a failure printed with
 * `Cause.pretty` or logged is never just a tag.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Cause } from "effect"
import {
  AwaitTimeout,
  Cancel,
  DatabaseUnreachable,
  Discard,
  InlineJobFailed,
  InvalidAdminRequest,
  InvalidDatabaseUrl,
  InvalidJobArgs,
  InvalidJobOptions,
  InvalidResult,
  InvalidSchedule,
  InvalidSchemaName,
  InvalidWorkerConfig,
  JobAlreadyFinished,
  JobCancelled,
  JobDead,
  JobInPendingBundle,
  JobIsRunning,
  JobNotFound,
  JobNotRetryable,
  JobTimeout,
  MigrationFailed,
  RetryAfter,
  Snooze,
  UniqueKeyNotFound
} from "../src/index.ts"

describe("error messages", () => {
  it("the errors without a message field say what happened", () => {
    const cases: ReadonlyArray<[Error, string]> = [
      [new JobNotFound({ id: "42" }), `no job with id "42" (never enqueued, or already deleted by retention)`],
      [new AwaitTimeout({ id: "42", timeoutMillis: 500 }), "job 42 did not finish within 500 ms; it is still queued or running"],
      [new JobTimeout({ timeoutMillis: 30000 }), "the attempt ran longer than its timeout of 30000 ms"],
      [new JobCancelled({ id: "42", reason: "not needed" }), "job 42 was cancelled: not needed"],
      [new UniqueKeyNotFound({ job: "send-email", uniqueKey: "welcome:42" }), `no unfinished job "send-email" with unique key "welcome:42"`],
      [new RetryAfter({ delayMillis: 1000, reason: "rate limited" }), "retry after 1000 ms: rate limited"],
      [new Snooze({ delayMillis: 300 }), "snoozed for 300 ms"],
      [new Discard({ reason: "bad input" }), "discarded: bad input"],
      [new Cancel({ reason: "obsolete" }), "cancelled: obsolete"]
    ]
    for (const [error, message] of cases) {
      assert.strictEqual(error.message, message)
      // and it is what a printed cause shows
      expect(Cause.pretty(Cause.fail(error))).toContain(`${(error as { _tag?: string })._tag}: ${message}`)
    }
  })

  it("no error of the library has an empty message", () => {
    const all: ReadonlyArray<Error> = [
      new InvalidJobArgs({ job: "j", message: "m" }),
      new InvalidJobOptions({ job: "j", message: "m" }),
      new InvalidWorkerConfig({ message: "m" }),
      new InvalidDatabaseUrl({ message: "m" }),
      new DatabaseUnreachable({ host: "h", port: 1, database: "d", attempts: 1, message: "m" }),
      new JobTimeout({ timeoutMillis: 1 }),
      new MigrationFailed({ message: "m" }),
      new JobNotFound({ id: "1" }),
      new JobDead({ id: "1", message: "m" }),
      new JobCancelled({ id: "1", reason: "r" }),
      new AwaitTimeout({ id: "1", timeoutMillis: 1 }),
      new InvalidResult({ id: "1", message: "m" }),
      new JobAlreadyFinished({ id: "1", state: "completed", message: "m" }),
      new JobNotRetryable({ id: "1", state: "running", message: "m" }),
      new JobIsRunning({ id: "1", message: "m" }),
      new JobInPendingBundle({ id: "1", bundleId: "2", state: "completed", message: "m" }),
      new UniqueKeyNotFound({ job: "j", uniqueKey: "k" }),
      new InvalidAdminRequest({ message: "m" }),
      new InvalidSchedule({ name: "n", message: "m" }),
      new RetryAfter({ delayMillis: 1, reason: "r" }),
      new Snooze({ delayMillis: 1 }),
      new Discard({ reason: "r" }),
      new Cancel({ reason: "r" }),
      new InvalidSchemaName({ schema: "s", message: "m" }),
      new InlineJobFailed({ job: "j", jobCause: Cause.fail("e") })
    ]
    for (const error of all) {
      assert.notStrictEqual(error.message, "", (error as { _tag?: string })._tag)
      // One tag convention: every error's tag is its class's name (no "effect-jobs/..." prefix).
      assert.strictEqual((error as { _tag?: string })._tag, error.constructor.name)
    }
  })
})
