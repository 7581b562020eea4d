/**
 * JobsAdmin, call by call, on a real database: counts, paged listing, get with
 * errors and result, retry and re-drive of dead jobs, cancel (waiting and
 * running jobs, by id and by unique key), delete, delete finished (neither
 * touches a bundle whose finish step has not run), pause flags, and the typed
 * errors for bad input.
 */
import { assert, expect, layer } from "@effect/vitest"
import { Deferred, Effect, Exit, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Bundle, Job, Jobs, JobsAdmin, Observer } from "../src/index.ts"
import { type ClaimedJobRow, JobStore } from "../src/internal/Store.ts"
import type { ListOptions } from "../src/JobsAdmin.ts"
import * as TestDb from "./support/db.ts"
import { startWorker, toPowerOfTen } from "./support/harness.ts"
import { leaseLapsed, makeProbe, row } from "./support/probes.ts"

const Task = Job.make("admin-task", { args: Schema.Struct({ n: Schema.Number }), queue: "adm" })
const Keyed = Job.make("admin-keyed", { args: Schema.Struct({}), queue: "adm-key" })
const WithResult = Job.make("admin-result", {
  args: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ doubled: Schema.Number }),
  queue: "adm-get",
  maxAttempts: 3
})

/** The ids of every page of a listing, following the cursor; each page holds at most `limit` jobs. */
const allPages = (filter: ListOptions & { readonly limit: number }) =>
  Effect.gen(function*() {
    const admin = yield* JobsAdmin.JobsAdmin
    const seen: Array<string> = []
    let cursor: string | undefined
    do {
      const page = yield* admin.list({ ...filter, cursor })
      assert.isAtMost(page.jobs.length, filter.limit)
      seen.push(...page.jobs.map((j) => j.id))
      cursor = page.next
    } while (cursor !== undefined)
    return seen
  })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

/** Ends claimed jobs `dead` or `completed` through the store, as a worker would. */
const finishClaimed = (claimed: ReadonlyArray<ClaimedJobRow>, state: "dead" | "completed") =>
  Effect.gen(function*() {
    const store = yield* JobStore
    const now = Date.now()
    yield* store.jobFinishMany(
      claimed.map((r) => ({
        id: r.id,
        token: r.claim_count,
        state,
        run_at: null,
        attempt_delta: 0,
        result: null,
        error: state === "dead" ? { attempt: r.attempt, at: new Date(now).toISOString(), kind: "Boom", message: "boom" } : null
      })),
      now
    )
    return claimed.map((r) => r.id)
  })

/** Claims every available job of `queue`, as a worker would. */
const claimAll = (queue: string) =>
  Effect.flatMap(JobStore, (store) =>
    store.jobClaim({ queue, limit: 1000, now: Date.now(), leaseMillis: 60_000, workerId: "test" }))

/** Claims every available job of `queue` and ends it `dead` through the store, as a worker would. */
const killAll = (queue: string) => Effect.flatMap(claimAll(queue), (claimed) => finishClaimed(claimed, "dead"))

/** Runs the finish step of `bundle` (a `Bundle.toLayer` on a pool of its own) until `bundleId` is done. */
const runFinishStep = (bundle: Bundle.Bundle, bundleId: string) =>
  Effect.scoped(Effect.gen(function*() {
    const done = yield* Deferred.make<void>()
    yield* Layer.build(
      Bundle.toLayer(bundle).pipe(
        Layer.provide([
          Observer.add({
            ...Observer.noop,
            bundleFinished: (b) => (b.id === bundleId ? Deferred.succeed(done, undefined) : Effect.void)
          }),
          Layer.fresh(TestDb.pool({ maxConnections: 3 }))
        ])
      )
    )
    yield* Deferred.await(done)
  }))

layer(TestLayer, { excludeTestServices: true })("JobsAdmin", (it) => {
  it.effect("get shows a job's group and how it holds its unique key (window start, states); undefined when unset", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const plain = yield* admin.get(yield* jobs.enqueue(Task, { n: 1 }))
      assert.deepStrictEqual([plain.group, plain.uniqueStates, plain.uniqueWindow], [undefined, undefined, undefined])
      const id = yield* jobs.enqueue(Keyed, {}, {
        group: "tenant-7",
        uniqueKey: "k-shown",
        unique: { period: "1 hour", states: ["scheduled", "available", "running", "completed"] }
      })
      const shown = yield* admin.get(id)
      assert.strictEqual(shown.group, "tenant-7")
      assert.sameMembers([...(shown.uniqueStates ?? [])], ["scheduled", "available", "running", "completed"])
      assert.instanceOf(shown.uniqueWindow, Date)
      assert.strictEqual(shown.uniqueWindow!.getTime() % 3_600_000, 0, "the window starts on the hour")
    }))

  it.effect("counts per queue and state, and queue summaries with pause flags", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      yield* jobs.enqueueMany(Task, [{ n: 1 }, { n: 2 }], { queue: "adm-count-a" })
      yield* jobs.enqueue(Task, { n: 3 }, { queue: "adm-count-a", delay: "1 hour" })
      yield* jobs.enqueue(Task, { n: 4 }, { queue: "adm-count-b" })
      const a = yield* admin.counts({ queue: "adm-count-a" })
      assert.deepStrictEqual(a, [
        { queue: "adm-count-a", state: "available", count: 2 },
        { queue: "adm-count-a", state: "scheduled", count: 1 }
      ])
      const all = yield* admin.counts()
      assert.deepInclude(all, { queue: "adm-count-b", state: "available", count: 1 })

      yield* admin.pause("adm-count-b")
      const summaries = yield* admin.queues
      const b = summaries.find((q) => q.name === "adm-count-b")
      assert.strictEqual(b?.paused, true)
      assert.strictEqual(b?.counts.available, 1)
      assert.strictEqual(b?.counts.dead, 0)
      assert.strictEqual(summaries.find((q) => q.name === "adm-count-a")?.paused, false)
      yield* admin.resume("adm-count-b")
      assert.strictEqual((yield* admin.queues).find((q) => q.name === "adm-count-b")?.paused, false)
    }))

  it.effect("list: filters by state, queue and name; keyset pages newest or oldest first", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const ids = yield* jobs.enqueueMany(Task, [1, 2, 3, 4, 5].map((n) => ({ n })), { queue: "adm-list" })
      yield* jobs.enqueue(Keyed, {}, { queue: "adm-list" }) // another name in the same queue
      yield* jobs.enqueue(Task, { n: 6 }, { queue: "adm-list", delay: "1 hour" }) // another state

      const seen = yield* allPages({ queue: "adm-list", name: "admin-task", state: "available", limit: 2 })
      assert.deepStrictEqual(seen, [...ids].reverse(), "newest first, every job once, across pages")

      const oldest = yield* admin.list({ queue: "adm-list", name: "admin-task", state: ["available"], order: "oldest", limit: 3 })
      assert.deepStrictEqual(oldest.jobs.map((j) => j.id), ids.slice(0, 3))
      assert.deepStrictEqual(oldest.jobs[0]?.args, { n: 1 })

      const scheduled = yield* admin.list({ queue: "adm-list", state: "scheduled" })
      assert.strictEqual(scheduled.jobs.length, 1)
      assert.strictEqual(scheduled.next, undefined)

      const keyed = yield* jobs.enqueue(Keyed, {}, { queue: "adm-list", uniqueKey: "list:key" })
      const byKey = yield* admin.list({ uniqueKey: "list:key" })
      assert.deepStrictEqual(byKey.jobs.map((j) => j.id), [keyed], "uniqueKey: that job only")
      assert.strictEqual((yield* admin.list({ uniqueKey: "list:other" })).jobs.length, 0)

      for (
        const bad of [{ limit: 0 }, { limit: 1001 }, { limit: 1.5 }, { state: "sleeping" as never }, { cursor: "x" }, {
          uniqueKey: "a\u0000b"
        }]
      ) {
        const error = yield* Effect.flip(admin.list(bad))
        assert.strictEqual(error._tag, "InvalidAdminRequest")
        expect(error.message.length).toBeGreaterThan(10)
      }
    }))

  it.effect("list: ids across a power of ten page in numeric order (999 before 1000)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      yield* toPowerOfTen
      const ids = yield* jobs.enqueueMany(Task, [1, 2, 3, 4, 5, 6].map((n) => ({ n })), { queue: "adm-digits" })
      assert.notStrictEqual(ids[0]!.length, ids[5]!.length, "the ids cross a power of ten")
      for (const order of ["oldest", "newest"] as const) {
        const seen = yield* allPages({ queue: "adm-digits", order, limit: 2 })
        assert.deepStrictEqual(seen, order === "oldest" ? ids : [...ids].reverse(), `${order} first, every job once`)
      }
    }))

  it.effect("get: a job with its errors and its result; unknown ids are JobNotFound", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      yield* startWorker(
        { queues: { "adm-get": { pollInterval: "20 millis" } }, maintenanceInterval: "20 millis", pruner: false },
        Layer.mergeAll(
          Job.toLayer(WithResult, (args, ctx) =>
            ctx.attempt === 1 ? Job.retryAfter("1 millis", "not yet") : Effect.succeed({ doubled: args.n * 2 })),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(WithResult, { n: 21 }, { metadata: { tenant: "t1" } })
      assert.strictEqual((yield* probe.next(id))._tag, "retryScheduled")
      assert.strictEqual((yield* probe.next(id))._tag, "completed")
      const admin = yield* JobsAdmin.JobsAdmin
      const job = yield* admin.get(id)
      assert.strictEqual(job.state, "completed")
      assert.strictEqual(job.name, "admin-result")
      assert.strictEqual(job.attempt, 2)
      assert.deepStrictEqual(job.result, { doubled: 42 })
      assert.deepStrictEqual(job.args, { n: 21 })
      assert.deepStrictEqual(job.metadata, { tenant: "t1" })
      assert.strictEqual(job.errors.length, 1)
      assert.strictEqual(job.errors[0]?.kind, "RetryAfter")
      assert.strictEqual(job.errors[0]?.message, "not yet")
      assert.strictEqual(job.errors[0]?.attempt, 1)
      assert.isDefined(job.finalizedAt)
      assert.isDefined(job.pruneAt, "kept for its retention, then pruned")

      for (const unknown of ["999999999", "0", "-1", "abc", "", "99999999999999999999"]) {
        const error = yield* Effect.flip(admin.get(unknown))
        assert.strictEqual(error._tag, "JobNotFound")
        assert.strictEqual((error as { id: string }).id, unknown)
      }
    }))

  it.effect("retry: a dead job runs again (with more attempts if asked); other states are refused", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [deadId] = yield* jobs.enqueueMany(Task, [{ n: 1 }], { queue: "adm-retry", maxAttempts: 1 })
      yield* killAll("adm-retry")
      assert.strictEqual((yield* admin.get(deadId!)).state, "dead")

      yield* admin.retry(deadId!, { attempts: 3 })
      const retried = yield* admin.get(deadId!)
      assert.strictEqual(retried.state, "available")
      assert.strictEqual(retried.maxAttempts, 4, "1 used + 3 more")
      assert.strictEqual(retried.finalizedAt, undefined)
      assert.strictEqual(retried.pruneAt, undefined)
      assert.strictEqual(retried.errors.length, 1, "its history is kept")

      // A worker runs it again: attempt 2.
      const attempts = yield* Deferred.make<number>()
      yield* startWorker(
        { queues: { "adm-retry": { pollInterval: "20 millis" } }, pruner: false },
        Job.toLayer(Task, (_args, ctx) => Deferred.succeed(attempts, ctx.attempt))
      )
      assert.strictEqual(yield* Deferred.await(attempts), 2)

      // Refused: a job that is not dead or cancelled; an unknown id; zero attempts.
      const waiting = yield* jobs.enqueue(Task, { n: 2 }, { queue: "adm-retry-other" })
      const notRetryable = yield* Effect.flip(admin.retry(waiting))
      assert.strictEqual(notRetryable._tag, "JobNotRetryable")
      expect(notRetryable.message).toContain("available")
      assert.strictEqual((yield* Effect.flip(admin.retry("424242424242")))._tag, "JobNotFound")
      assert.strictEqual((yield* Effect.flip(admin.retry(waiting, { attempts: 0 })))._tag, "InvalidAdminRequest")
    }))

  it.effect("retry: refused when an unfinished job has taken the dead job's unique key", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const first = yield* jobs.enqueue(Keyed, {}, { queue: "adm-retry-key", uniqueKey: "k1" })
      yield* killAll("adm-retry-key")
      const second = yield* jobs.enqueue(Keyed, {}, { queue: "adm-retry-key", uniqueKey: "k1" })
      assert.notStrictEqual(second, first, "the key is free once the first job is dead")
      const error = yield* Effect.flip(admin.retry(first))
      assert.strictEqual(error._tag, "JobNotRetryable")
      expect(error.message).toContain("unique key")
      assert.strictEqual((yield* admin.get(first)).state, "dead")
    }))

  it.effect("retryDead re-drives the dead jobs of one queue (one per unique key), nothing else", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const plain = yield* jobs.enqueueMany(Task, [{ n: 1 }, { n: 2 }, { n: 3 }], { queue: "adm-redrive" })
      const keyedA = yield* jobs.enqueue(Keyed, {}, { queue: "adm-redrive", uniqueKey: "dup" })
      yield* killAll("adm-redrive")
      const keyedB = yield* jobs.enqueue(Keyed, {}, { queue: "adm-redrive", uniqueKey: "dup" })
      yield* killAll("adm-redrive") // two dead jobs with one key
      const elsewhere = yield* jobs.enqueue(Task, { n: 9 }, { queue: "adm-redrive-other" })
      yield* killAll("adm-redrive-other")

      assert.strictEqual(yield* admin.retryDead("adm-redrive"), 4, "3 plain + the newest of the two keyed")
      for (const id of plain) assert.strictEqual((yield* admin.get(id)).state, "available")
      assert.strictEqual((yield* admin.get(keyedB)).state, "available")
      assert.strictEqual((yield* admin.get(keyedA)).state, "dead", "its key is taken by the re-driven one")
      assert.strictEqual((yield* admin.get(elsewhere)).state, "dead", "another queue is not touched")
      assert.strictEqual(yield* admin.retryDead("adm-redrive"), 0)

      // Restricted to one job name.
      yield* killAll("adm-redrive")
      assert.strictEqual(yield* admin.retryDead("adm-redrive", { name: "admin-keyed" }), 1)
      assert.strictEqual((yield* admin.get(plain[0]!)).state, "dead")
      assert.strictEqual((yield* Effect.flip(admin.retryDead("")))._tag, "InvalidAdminRequest")
    }))

  it.effect("cancel: waiting jobs end cancelled at once; finished jobs are a typed error that says so", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const available = yield* jobs.enqueue(Task, { n: 1 }, { queue: "adm-cancel" })
      const scheduled = yield* jobs.enqueue(Task, { n: 2 }, { queue: "adm-cancel", delay: "1 day" })
      assert.strictEqual(yield* admin.cancel(available), "cancelled")
      assert.strictEqual(yield* admin.cancel(scheduled, { reason: "not needed" }), "cancelled")
      const r = yield* admin.get(scheduled)
      assert.strictEqual(r.state, "cancelled")
      assert.isDefined(r.finalizedAt)
      assert.deepInclude(r.errors[r.errors.length - 1], { kind: "Cancelled", message: "not needed" })

      const again = yield* Effect.flip(admin.cancel(available))
      assert.strictEqual(again._tag, "JobAlreadyFinished")
      if (again._tag === "JobAlreadyFinished") {
        assert.strictEqual(again.state, "cancelled")
        expect(again.message).toContain("already cancelled")
      }
      const dead = yield* jobs.enqueue(Task, { n: 3 }, { queue: "adm-cancel-dead" })
      yield* killAll("adm-cancel-dead")
      const finished = yield* Effect.flip(admin.cancel(dead))
      assert.strictEqual(finished._tag, "JobAlreadyFinished")
      expect(finished.message).toContain("already dead")
      assert.strictEqual((yield* Effect.flip(admin.cancel("31337313373")))._tag, "JobNotFound")
    }))

  it.effect("get: a job claimed ahead of a free slot is running and buffered; the one that started is not", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const Held = Job.make("admin-held", { args: Schema.Struct({ n: Schema.Number }), queue: "adm-buffered" })
      // enqueued first, so that the worker's first claim takes all three: one slot, two ahead
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(Held, [1, 2, 3].map((n) => ({ n })))
      yield* startWorker(
        { queues: { "adm-buffered": { concurrency: 1, prefetch: 2 } }, pruner: false },
        Job.toLayer(Held, () => Effect.andThen(Deferred.succeed(started, undefined), Deferred.await(release)))
      )
      yield* Deferred.await(started)
      const admin = yield* JobsAdmin.JobsAdmin
      const jobs = yield* Effect.forEach(ids, (id) => admin.get(id))
      assert.deepStrictEqual(jobs.map((j) => [j.state, j.buffered]), [["running", false], ["running", true], ["running", true]])
      yield* Deferred.succeed(release, undefined)
    }))

  it.effect("cancel: a running job is interrupted by its worker and ends cancelled", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const Blocking = Job.make("admin-blocking", { args: Schema.Struct({}), queue: "adm-cancel-running" })
      yield* startWorker(
        { queues: { "adm-cancel-running": {} }, pruner: false },
        Layer.mergeAll(
          Job.toLayer(Blocking, () =>
            Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
              Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
            )),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Blocking, {})
      yield* Deferred.await(started)
      const admin = yield* JobsAdmin.JobsAdmin
      assert.strictEqual(yield* admin.cancel(id, { reason: "the customer withdrew" }), "cancelRequested")
      const event = yield* probe.next(id)
      assert.strictEqual(event._tag, "cancelled")
      // the operator's reason reaches the Observer and the job's last error
      if (event._tag === "cancelled") assert.strictEqual(event.message, "the customer withdrew")
      assert.isTrue(yield* Deferred.isDone(interrupted), "the handler was interrupted (its finalizers ran)")
      const job = yield* admin.get(id)
      assert.strictEqual(job.state, "cancelled")
      assert.isDefined(job.cancelRequestedAt)
      assert.strictEqual(job.errors.at(-1)?.message, "the customer withdrew")
      assert.strictEqual((yield* Effect.flip(admin.cancel(id)))._tag, "JobAlreadyFinished")
    }))

  it.effect("cancel: a run that fails before its worker stops it ends cancelled, reported as cancelled (not as a retry)", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const Failing = Job.make("admin-failing", { args: Schema.Struct({}), queue: "adm-cancel-failing", maxAttempts: 5 })
      // A handler that ignores interruption while it fails: the cancel request is in the
      // database before the run ends, but the run ends in a failure (a retry), not an interrupt.
      yield* startWorker(
        { queues: { "adm-cancel-failing": {} }, pruner: false, listen: false },
        Layer.mergeAll(
          Job.toLayer(Failing, () =>
            Effect.uninterruptible(
              Effect.andThen(Deferred.succeed(started, undefined), Deferred.await(release)).pipe(
                Effect.andThen(Effect.fail("boom"))
              )
            )),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Failing, {})
      yield* Deferred.await(started)
      const admin = yield* JobsAdmin.JobsAdmin
      assert.strictEqual(yield* admin.cancel(id, { reason: "stop it" }), "cancelRequested")
      yield* Deferred.succeed(release, undefined)
      const event = yield* probe.next(id)
      assert.strictEqual(event._tag, "cancelled")
      if (event._tag === "cancelled") assert.strictEqual(event.message, "stop it")
      const job = yield* admin.get(id)
      assert.strictEqual(job.state, "cancelled")
      assert.strictEqual(job.attempt, 1, "not run again")
    }))

  it.effect("cancel: a worker that does not LISTEN finds the request at its control poll", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const started = yield* Deferred.make<void>()
      const Deaf = Job.make("admin-deaf", { args: Schema.Struct({}), queue: "adm-cancel-poll" })
      yield* startWorker(
        { queues: { "adm-cancel-poll": { pollInterval: "50 millis" } }, listen: false, pruner: false },
        Layer.mergeAll(Job.toLayer(Deaf, () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never)), probe.layer)
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Deaf, {})
      yield* Deferred.await(started)
      assert.strictEqual(yield* (yield* JobsAdmin.JobsAdmin).cancel(id), "cancelRequested")
      assert.strictEqual((yield* probe.next(id))._tag, "cancelled")
      assert.strictEqual((yield* row(id)).state, "cancelled")
    }))

  it.effect("cancel of a running job that ends before its worker hears: a retry or release ends cancelled, never runs again", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const store = yield* JobStore
      const [a, b] = yield* jobs.enqueueMany(Task, [{ n: 1 }, { n: 2 }], { queue: "adm-cancel-race" })
      const now = Date.now()
      const claimed = yield* store.jobClaim({ queue: "adm-cancel-race", limit: 2, now, leaseMillis: 50, workerId: "test" })
      assert.strictEqual(claimed.length, 2)
      assert.strictEqual(yield* admin.cancel(a!), "cancelRequested")
      assert.strictEqual(yield* admin.cancel(b!), "cancelRequested")
      // a: its run failed and asked for a retry (the worker never heard of the cancel)
      const tokenA = claimed.find((r) => r.id === a)!.claim_count
      yield* store.jobFinishMany([{
        id: a!,
        token: tokenA,
        state: "scheduled",
        run_at: new Date(now + 1000).toISOString(),
        attempt_delta: 0,
        result: null,
        error: null
      }], now)
      assert.strictEqual((yield* row(a!)).state, "cancelled")
      // b: its worker died; the rescue of the lapsed lease ends it cancelled, not available
      yield* leaseLapsed(b!)
      yield* store.jobRescueExpired(now + 5000, 100)
      assert.strictEqual((yield* row(b!)).state, "cancelled")
      assert.lengthOf(yield* store.jobClaim({ queue: "adm-cancel-race", limit: 10, now: now + 10_000, leaseMillis: 1000, workerId: "test" }), 0)
    }))

  it.effect("cancelByKey cancels the unfinished job with that name and key", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const id = yield* jobs.enqueue(Keyed, {}, { queue: "adm-cancel-key", uniqueKey: "welcome:42" })
      assert.deepStrictEqual(yield* admin.cancelByKey(Keyed, "welcome:42"), { id, outcome: "cancelled" })
      assert.strictEqual((yield* admin.get(id)).state, "cancelled")
      const missing = yield* Effect.flip(admin.cancelByKey("admin-keyed", "welcome:42"))
      assert.strictEqual(missing._tag, "UniqueKeyNotFound")
      // the key is free again
      const next = yield* jobs.enqueue(Keyed, {}, { queue: "adm-cancel-key", uniqueKey: "welcome:42" })
      assert.notStrictEqual(next, id)
    }))

  it.effect("delete: one job that is not running; running jobs and unknown ids are refused", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const store = yield* JobStore
      const [waiting, held] = yield* jobs.enqueueMany(Task, [{ n: 1 }], { queue: "adm-delete" }).pipe(
        Effect.zip(jobs.enqueue(Task, { n: 2 }, { queue: "adm-delete-running" })),
        Effect.map(([[w], h]) => [w!, h] as const)
      )
      yield* admin.delete(waiting)
      assert.strictEqual((yield* Effect.flip(admin.get(waiting)))._tag, "JobNotFound")
      assert.strictEqual((yield* Effect.flip(admin.delete(waiting)))._tag, "JobNotFound")
      yield* store.jobClaim({ queue: "adm-delete-running", limit: 1, now: Date.now(), leaseMillis: 60_000, workerId: "test" })
      const running = yield* Effect.flip(admin.delete(held))
      assert.strictEqual(running._tag, "JobIsRunning")
      assert.strictEqual((yield* admin.get(held)).state, "running")
    }))

  it.effect("deleteFinished removes finished jobs by queue, state and age, and nothing unfinished", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const sql = yield* SqlClient.SqlClient
      const q = "adm-purge"
      const [c1, c2] = yield* jobs.enqueueMany(Task, [{ n: 1 }, { n: 2 }], { queue: q })
      yield* admin.cancel(c1!)
      yield* admin.cancel(c2!)
      const deadIds = yield* Effect.andThen(jobs.enqueue(Task, { n: 3 }, { queue: q }), killAll(q))
      const waiting = yield* jobs.enqueue(Task, { n: 4 }, { queue: q })
      const otherQueue = yield* jobs.enqueue(Task, { n: 5 }, { queue: "adm-purge-other" })
      yield* admin.cancel(otherQueue)
      // one cancelled job finished two hours ago
      yield* sql`UPDATE effect_jobs.jobs SET finalized_at = now() - interval '2 hours' WHERE id = ${c1!}::bigint`

      assert.strictEqual(yield* admin.deleteFinished({ queue: q, states: ["cancelled"], olderThan: "1 hour" }), 1)
      assert.strictEqual((yield* Effect.flip(admin.get(c1!)))._tag, "JobNotFound")
      assert.strictEqual((yield* admin.get(c2!)).state, "cancelled")
      assert.strictEqual(yield* admin.deleteFinished({ queue: q }), 2, "the other cancelled one and the dead one")
      assert.strictEqual((yield* Effect.flip(admin.get(deadIds[0]!)))._tag, "JobNotFound")
      assert.strictEqual((yield* admin.get(waiting)).state, "available", "unfinished jobs stay")
      assert.strictEqual((yield* admin.get(otherQueue)).state, "cancelled", "other queues stay")
      assert.strictEqual(
        (yield* Effect.flip(admin.deleteFinished({ states: ["available" as never] })))._tag,
        "InvalidAdminRequest"
      )
      assert.strictEqual((yield* Effect.flip(admin.deleteFinished({ olderThan: -5 })))._tag, "InvalidAdminRequest")
    }))

  it.effect("delete: a bundle member is refused while it counts toward its bundle or its finish step may read it", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const Kind = Bundle.make("adm-bundle-delete")
      const { bundleId, ids: [waiting, dead, held] } = yield* jobs.enqueueBundle(Kind, [
        Jobs.entry(Task, { n: 1 }, { queue: "adm-bd-waiting" }),
        Jobs.entry(Task, { n: 2 }, { queue: "adm-bd-dead" }),
        Jobs.entry(Task, { n: 3 }, { queue: "adm-bd-running" })
      ])
      const refused = (id: string) =>
        Effect.map(Effect.flip(admin.delete(id)), (e) => {
          assert.strictEqual(e._tag, "JobInPendingBundle")
          return e as Extract<typeof e, { readonly _tag: "JobInPendingBundle" }>
        })

      // waiting: deleting it would count it as done for the bundle
      const e1 = yield* refused(waiting!)
      assert.deepStrictEqual([e1.id, e1.bundleId, e1.state], [waiting, bundleId, "available"])
      assert.match(e1.message, /cancel it instead/)
      // terminal, but the finish step has not run: it reads this member
      yield* killAll("adm-bd-dead")
      const e2 = yield* refused(dead!)
      assert.strictEqual(e2.state, "dead")
      assert.match(e2.message, /finish step has not run/)
      // running: JobIsRunning, as for any job
      const claimed = yield* claimAll("adm-bd-running")
      assert.strictEqual((yield* Effect.flip(admin.delete(held!)))._tag, "JobIsRunning")
      // nothing changed: the bundle still waits for two members
      const progress = yield* jobs.bundleProgress(bundleId)
      assert.deepStrictEqual([progress.remaining, progress.finished, progress.counts], [2, false, { available: 1, dead: 1, running: 1 }])

      // every member ends; the bundle is finished, but its finish step has not run: still refused
      yield* finishClaimed(claimed, "completed")
      assert.strictEqual(yield* admin.cancel(waiting!), "cancelled")
      assert.isTrue((yield* jobs.bundleProgress(bundleId)).finished)
      for (const id of [waiting!, dead!, held!]) yield* refused(id)

      // once it has run, finished members are ordinary finished jobs
      yield* runFinishStep(Kind, bundleId)
      for (const id of [waiting!, dead!, held!]) yield* admin.delete(id)
      assert.strictEqual((yield* Effect.flip(admin.get(dead!)))._tag, "JobNotFound")
      const after = yield* jobs.bundleProgress(bundleId)
      assert.deepStrictEqual([after.remaining, after.finished, after.counts], [0, true, {}])
    }))

  it.effect("deleteFinished keeps the finished members of a bundle until its finish step has run", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const Kind = Bundle.make("adm-bundle-purge")
      const q = "adm-purge-bundle"
      const { bundleId, ids } = yield* jobs.enqueueBundle(Kind, [Jobs.entry(Task, { n: 1 }, { queue: q }), Jobs.entry(Task, { n: 2 }, { queue: q })])
      const loose = yield* jobs.enqueue(Task, { n: 3 }, { queue: q })
      yield* killAll(q)
      assert.isTrue((yield* jobs.bundleProgress(bundleId)).finished)
      assert.strictEqual(yield* admin.deleteFinished({ queue: q }), 1, "only the job outside the bundle")
      assert.strictEqual((yield* Effect.flip(admin.get(loose)))._tag, "JobNotFound")
      for (const id of ids) assert.strictEqual((yield* admin.get(id)).state, "dead")
      yield* admin.deleteFinished() // nor with no filter
      for (const id of ids) assert.strictEqual((yield* admin.get(id)).state, "dead")

      yield* runFinishStep(Kind, bundleId)
      assert.strictEqual(yield* admin.deleteFinished({ queue: q, states: ["dead"] }), 2)
      assert.deepStrictEqual((yield* jobs.bundleProgress(bundleId)).counts, {})
    }))

  it.effect("JobsAdmin needs only a PgClient", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(JobsAdmin.JobsAdmin.use((a) => a.counts()).pipe(Effect.provide(JobsAdmin.layer)))
      assert.isTrue(Exit.isSuccess(exit))
    }))
})
