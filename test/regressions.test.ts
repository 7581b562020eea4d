/**
 * Regression tests for the defects the chaos suite (test/chaos/, RELIABILITY.md)
 * found in the library. Each test fails on the code before its fix.
 */
import { assert, expect, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Latch, Layer, Option, Redacted, Schedule, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs, JobsAdmin, Observer, Periodic, Worker } from "../src/index.ts"
import { inject } from "vitest"
import { adminQuery } from "./support/admin.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import * as WorkerConfig from "../src/internal/worker/Config.ts"

/** Re-checks `check` every 20 ms until it gives a value; dies after `timeoutMs`. */
const eventually = <A, E, R>(what: string, check: Effect.Effect<Option.Option<A>, E, R>, timeoutMs = 15_000) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    while (true) {
      const value = yield* check
      if (Option.isSome(value)) return value.value
      if ((yield* Clock.currentTimeMillis) - start > timeoutMs) return yield* Effect.die(new Error(`timed out: ${what}`))
      yield* Effect.sleep("20 millis")
    }
  })

interface Row {
  readonly id: string
  readonly state: string
  readonly attempt: number
  readonly claim_count: number
  readonly errors: ReadonlyArray<{ readonly kind: string; readonly message: string }>
  readonly prune_at: Date | null
}

const rowOf = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<Row>`SELECT id::text, state, attempt, claim_count, errors, prune_at FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => rows[0]!
    )).pipe(Effect.orDie)

const terminal = (ids: ReadonlyArray<string>) =>
  eventually(
    `jobs ${ids.join(",")} terminal`,
    Effect.map(Effect.forEach(ids, rowOf), (rows) =>
      rows.every((r) => ["completed", "dead", "cancelled"].includes(r.state)) ? Option.some(rows) : Option.none())
  )

/** Inserts a job row by hand, then applies `set` (SQL) to it: a row "edited by hand". */
const insertEdited = (name: string, queue: string, set: string, args = `{"n":1}`) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.gen(function*() {
      const [row] = yield* sql<{ readonly id: string }>`
        INSERT INTO effect_jobs.jobs (name, queue, args, max_attempts, retention_ms)
        VALUES (${name}, ${queue}, ${args}::jsonb, 3, 3600000) RETURNING id::text`
      yield* sql.unsafe(`UPDATE effect_jobs.jobs SET ${set} WHERE id = $1::bigint`, [row!.id])
      return row!.id
    })).pipe(Effect.orDie)

const fast = (queue: string): Worker.Options => ({
  queues: { [queue]: { concurrency: 4, pollInterval: "20 millis" } },
  maintenanceInterval: "20 millis",
  lease: "1 second"
})

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("regressions", (it) => {
  // -- rows edited by hand must not wedge a queue or a batch of outcomes ------------------------

  it.effect("claim: an attempt or fencing token at int max does not fail every claim of the queue", () =>
    Effect.gen(function*() {
      const Row = Job.make("r-claim", { args: Schema.Struct({ n: Schema.Number }), queue: "r-claim", maxAttempts: 3 })
      const ran: Array<number> = []
      // Claimed first (priority -1): before the fix, "integer out of range" failed every claim.
      const maxAttempt = yield* insertEdited("r-claim", "r-claim", "attempt = 2147483647, priority = -1", `{"n":1}`)
      const maxToken = yield* insertEdited("r-claim", "r-claim", "claim_count = 2147483647, priority = -1", `{"n":2}`)
      const normal = yield* insertEdited("r-claim", "r-claim", "priority = 0", `{"n":3}`)
      yield* startWorker(fast("r-claim"), Job.toLayer(Row, (args) => Effect.sync(() => void ran.push(args.n))))
      const [a, b, c] = yield* terminal([maxAttempt, maxToken, normal])
      assert.strictEqual(a!.state, "dead")
      assert.strictEqual(a!.errors.at(-1)?.kind, "AttemptOutOfRange")
      assert.strictEqual(b!.state, "completed")
      assert.strictEqual(b!.claim_count, 1, "the fencing token wrapped")
      assert.strictEqual(c!.state, "completed")
      assert.deepStrictEqual([...ran].sort(), [2, 3], "the job with no attempt left was not run")
    }))

  it.effect("an attempt below 1 or past max_attempts (edited by hand) is dead on arrival, not run", () =>
    Effect.gen(function*() {
      const Row = Job.make("r-range", { args: Schema.Struct({ n: Schema.Number }), queue: "r-range", maxAttempts: 3 })
      let runs = 0
      const low = yield* insertEdited("r-range", "r-range", "attempt = -5")
      const high = yield* insertEdited("r-range", "r-range", "attempt = 30")
      yield* startWorker(fast("r-range"), Job.toLayer(Row, () => Effect.sync(() => void runs++)))
      for (const r of yield* terminal([low, high])) {
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.errors.at(-1)?.kind, "AttemptOutOfRange")
        expect(r.errors.at(-1)?.message).toContain("outside [1, 3]")
      }
      assert.strictEqual(runs, 0)
    }))

  it.effect("finish and rescue: a non-array `errors` and a retention past the timestamp range do not fail the batch", () =>
    Effect.gen(function*() {
      const Row = Job.make("r-finish", {
        args: Schema.Struct({ n: Schema.Number }),
        queue: "r-finish",
        maxAttempts: 3,
        retry: Schedule.spaced("10 millis")
      })
      const failing = yield* insertEdited("r-finish", "r-finish", `errors = '{"a":1}', max_attempts = 1`, `{"n":-1}`)
      const scalar = yield* insertEdited("r-finish", "r-finish", `errors = 'null', max_attempts = 1`, `{"n":-1}`)
      const forever = yield* insertEdited("r-finish", "r-finish", "retention_ms = 9223372036854775807")
      const rescued = yield* insertEdited(
        "r-finish",
        "r-finish",
        `state = 'running', lease_expires_at = now() - interval '1 minute', attempt = 1, errors = '"garbage"'`
      )
      const normal = yield* insertEdited("r-finish", "r-finish", "priority = 0")
      yield* startWorker(fast("r-finish"), Job.toLayer(Row, (args) => (args.n < 0 ? Effect.fail("failing on purpose") : Effect.void)))
      const [f, s, r, q, n] = yield* terminal([failing, scalar, forever, rescued, normal])
      assert.strictEqual(f!.state, "dead")
      assert.deepStrictEqual(f!.errors.map((e) => e.kind), ["string"], "the bad errors were replaced by the new entry")
      assert.strictEqual(s!.state, "dead")
      assert.strictEqual(r!.state, "completed")
      assert.isTrue(r!.prune_at !== null && r!.prune_at.getUTCFullYear() > 100_000, "retention capped at 100,000 years")
      assert.strictEqual(q!.state, "completed")
      assert.deepStrictEqual(q!.errors.map((e) => e.kind), ["LeaseExpired"])
      assert.strictEqual(n!.state, "completed")
    }))

  it.effect("a failure message with NUL or an unpaired surrogate is stored (replaced) and retried like any failure", () =>
    Effect.gen(function*() {
      const Fails = Job.make("r-fail-text", {
        args: Schema.Struct({ n: Schema.Number }),
        queue: "r-fail-text",
        maxAttempts: 2,
        retry: Schedule.spaced("10 millis")
      })
      const jobs = yield* Jobs.Jobs
      const release = yield* Latch.make(false)
      // Everyone finishes at once, so the outcomes share batches.
      yield* startWorker(
        { queues: { "r-fail-text": { concurrency: 12, pollInterval: "20 millis" } }, maintenanceInterval: "20 millis" },
        Job.toLayer(Fails, (args) =>
          Effect.andThen(release.await, args.n === 0 ? Effect.fail(new Error("bad\u0000byte \uD800")) : Effect.void))
      )
      const failing = yield* jobs.enqueue(Fails, { n: 0 })
      const good = yield* jobs.enqueueMany(Fails, Array.from({ length: 8 }, (_, i) => ({ n: i + 1 })))
      yield* release.open
      const rows = yield* terminal([failing, ...good])
      for (const r of rows.slice(1)) assert.strictEqual(r.state, "completed", `job ${r.id} of the same batch`)
      const f = rows[0]!
      assert.strictEqual(f.state, "dead", "failed twice: dead, both failures recorded")
      assert.deepStrictEqual(f.errors.map((e) => e.message), [
        "bad\uFFFDbyte \uFFFD",
        "bad\uFFFDbyte \uFFFD (attempt 2 of 2: no attempts left)"
      ])
    }))

  it.effect("a result the database cannot store: the job is dead with the reason, and other jobs complete", () =>
    Effect.gen(function*() {
      const Nul = Job.make("r-nul-result", { args: Schema.Struct({ n: Schema.Number }), success: Schema.String, queue: "r-nul" })
      const jobs = yield* Jobs.Jobs
      yield* startWorker(
        { queues: { "r-nul": { concurrency: 8, pollInterval: "20 millis" } } },
        Job.toLayer(Nul, (args) => Effect.succeed(args.n === 0 ? "a\u0000b" : args.n === 1 ? "\uD800" : `ok ${args.n}`))
      )
      const ids = yield* jobs.enqueueMany(Nul, Array.from({ length: 10 }, (_, n) => ({ n })))
      const rows = yield* terminal(ids)
      for (const r of rows.slice(0, 2)) {
        assert.strictEqual(r.state, "dead")
        assert.strictEqual(r.errors.at(-1)?.kind, "OutcomeNotRecorded")
      }
      for (const r of rows.slice(2)) assert.strictEqual(r.state, "completed")
    }))

  // -- the database away ------------------------------------------------------------------

  it.effect("unreachable database: runs past their lease are stopped; shutdown gives up unwritten outcomes after 5 s", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const sql = yield* SqlClient.SqlClient
      const Long = Job.make("r-away", { args: Schema.Struct({ n: Schema.Number }), queue: "r-away" })
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Deferred.make<void>()
      const finish = yield* Latch.make(false)
      const errors: Array<string> = []
      // The worker's scope, closed below; a child of the test's, so a failure before that stops the worker too.
      const scope = yield* Scope.fork(yield* Effect.scope)
      yield* Layer.buildWithScope(
        Worker.layer({
          queues: { "r-away": { concurrency: 2, pollInterval: "50 millis" } },
          lease: "1 second",
          heartbeatInterval: "200 millis",
          gracePeriod: "200 millis",
          pruner: false
        }).pipe(
          Layer.provide(Layer.mergeAll(
            Job.toLayer(Long, (args) =>
              args.n === 0
                ? Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
                  Effect.onInterrupt(() => Deferred.succeed(interrupted, undefined))
                )
                : finish.await),
            Observer.replace({ ...Observer.noop, workerError: (_q, m) => Effect.sync(() => void errors.push(m)) })
          )),
          Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 6, applicationName: "r-away" }))
        ),
        scope
      )
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueue(Long, { n: 0 })
      yield* jobs.enqueue(Long, { n: 1 })
      yield* Deferred.await(started)
      yield* eventually("both running", Effect.map(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'r-away' AND state = 'running'`,
        (rows) => (rows[0]!.n === 2 ? Option.some(true) : Option.none())
      ))
      // The worker's database goes away (new connections refused, its sessions cut).
      const db = (yield* sql<{ db: string }>`SELECT current_database() AS db`)[0]!.db
      const server = inject("databaseUrl") // another database of the server: one cannot lock out its own
      yield* adminQuery(server, (admin) => admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`))
      yield* Effect.addFinalizer(() =>
        adminQuery(server, (admin) => admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`)).pipe(Effect.ignore)
      )
      yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'r-away'`
      const cutAt = yield* Clock.currentTimeMillis
      // The other job finishes now; its outcome cannot be written.
      yield* finish.open
      // 1. No heartbeat reaches the database for a whole lease: the worker stops the run. The
      //    last heartbeat that got through read the clock before the cut, so the lease runs out
      //    at most 1000 ms after the cut, and the lease watch (every 200 ms) sees it at most
      //    200 ms later: 1200 ms at worst; the bound is twice that.
      yield* Deferred.await(interrupted).pipe(Effect.timeout("5 seconds"))
      assert.isAtMost((yield* Clock.currentTimeMillis) - cutAt, 2 * (1000 + 200), "stopped about a lease after the last heartbeat")
      // (or, as soon, by the registration watch: its session lock is gone too; migrations/0006)
      assert.isTrue(errors.some((m) => m.includes("ran out with no heartbeat") || m.includes("registration of this worker was not confirmed")))
      // 2. Shutdown: grace (200 ms), then at most 5 s trying to write that outcome, then it gives
      //    up. The bound is twice that: it tells "gives up" from "retries until the 30 s timeout".
      const closeAt = yield* Clock.currentTimeMillis
      yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("30 seconds"))
      const closeMs = (yield* Clock.currentTimeMillis) - closeAt
      assert.isAtMost(closeMs, 2 * (200 + 5000), "shutdown bounded")
      assert.isAtLeast(closeMs, 4000, "... after trying to write for the bound")
      assert.isTrue(errors.some((m) => m.startsWith("gave up recording")))
    }), { timeout: 60_000 })

  it.effect("after an outage of several seconds, a pending outcome is written within about a second of the database's return", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const sql = yield* SqlClient.SqlClient
      const Quick = Job.make("r-back", { args: Schema.Struct({}), queue: "r-back" })
      const finish = yield* Latch.make(false)
      const started = yield* Deferred.make<void>()
      yield* Layer.build(
        Worker.layer({ queues: { "r-back": { pollInterval: "50 millis" } }, lease: "30 seconds", pruner: false }).pipe(
          Layer.provide(Job.toLayer(Quick, () => Effect.andThen(Deferred.succeed(started, undefined), finish.await))),
          Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 4, applicationName: "r-back" }))
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Quick, {})
      yield* Deferred.await(started)
      const db = (yield* sql<{ db: string }>`SELECT current_database() AS db`)[0]!.db
      const server = inject("databaseUrl")
      const allow = (on: boolean) =>
        adminQuery(server, (admin) => admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS ${on}`))
      yield* allow(false)
      yield* Effect.addFinalizer(() => allow(true).pipe(Effect.ignore))
      yield* sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'r-back'`
      yield* finish.open // the outcome is queued now, and cannot be written
      yield* Effect.sleep("6 seconds") // the outage: the writes back off meanwhile
      yield* allow(true)
      const backAt = yield* Clock.currentTimeMillis
      yield* eventually("the outcome written", Effect.map(rowOf(id), (r) => (r.state === "completed" ? Option.some(r) : Option.none())))
      // The write's retry may have just started its longest wait (1 s, jittered up to 1.2 s),
      // then it connects anew; a retry that kept doubling would wait several seconds.
      assert.isBelow((yield* Clock.currentTimeMillis) - backAt, 3000, "written about a second after the database is back")
    }), { timeout: 60_000 })

  it.effect("LISTEN comes back within a second after each of 6 cuts in a row (the backoff restarts)", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const sql = yield* SqlClient.SqlClient
      const Noop = Job.make("r-listen", { args: Schema.Struct({}), queue: "r-listen" })
      yield* Layer.build(
        Worker.layer({ queues: { "r-listen": { pollInterval: "1 hour" } }, pruner: false }).pipe(
          Layer.provide(Job.toLayer(Noop, () => Effect.void)),
          Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 4, applicationName: "r-listen" }))
        )
      )
      const listening = Effect.map(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                           WHERE application_name = 'r-listen' AND query LIKE 'LISTEN%' AND state = 'idle'`,
        (rows) => rows[0]!.n
      ).pipe(Effect.orDie)
      // One session, for both channels (new jobs, cancel requests).
      yield* eventually("listening", Effect.map(listening, (n) => (n === 1 ? Option.some(n) : Option.none())))
      for (let cut = 1; cut <= 6; cut++) {
        // Waits (up to 5 s each) until the backends are gone, so that they are not counted below.
        yield* sql`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                   WHERE application_name = 'r-listen' AND query LIKE 'LISTEN%'`
        const at = yield* Clock.currentTimeMillis
        // A lost session is set up again after about 100 ms (a failed attempt: 100 ms more, then
        // 200): a few hundred ms at worst. Without the backoff restarting, a cut costs 5 s.
        yield* eventually(`listening again after cut ${cut}`, Effect.map(listening, (n) => (n === 1 ? Option.some(n) : Option.none())))
        assert.isBelow((yield* Clock.currentTimeMillis) - at, 1000, `LISTEN back within 1 s after cut ${cut}`)
      }
    }), { timeout: 60_000 })

  it.effect("a pool too small for the connections the worker keeps fails to start, with a message", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const Noop = Job.make("r-pool", { args: Schema.Struct({}), queue: "r-pool" })
      const build = (options: Partial<Worker.Options>, maxConnections: number) =>
        Effect.exit(Effect.scoped(Layer.build(
          Worker.layer({ queues: { "r-pool": {} }, ...options }).pipe(
            Layer.provide(Job.toLayer(Noop, () => Effect.void)),
            Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections }))
          )
        )))
      // The registration lock (migrations/0006) and the pruner's leader lock; the LISTEN session
      // (internal/Notifier.ts) is a connection of its own, outside the pool.
      const tooSmall = yield* build({}, 2)
      assert.isTrue(Exit.isFailure(tooSmall))
      expect(Cause.pretty((tooSmall as Exit.Failure<unknown, unknown>).cause)).toContain("InvalidWorkerConfig")
      assert.isTrue(Exit.isSuccess(yield* build({}, 3)))
      assert.isTrue(Exit.isSuccess(yield* build({ listen: false, pruner: false }, 1)))
    }))

  // -- hostile input ----------------------------------------------------------------------

  it.effect("enqueue: unpaired surrogates are a typed error; the text `\\u0000` (not a NUL) is accepted", () =>
    Effect.gen(function*() {
      const T = Job.make("r-text", { args: Schema.Struct({ s: Schema.String }), queue: "r-text" })
      const jobs = yield* Jobs.Jobs
      const tag = <A, E>(e: Effect.Effect<A, E>) => Effect.map(Effect.flip(e), (x) => (x as { _tag: string })._tag)
      assert.strictEqual(yield* tag(jobs.enqueue(T, { s: "x\uD800" })), "InvalidJobArgs")
      assert.strictEqual(yield* tag(jobs.enqueue(T, { s: "x\u0000" })), "InvalidJobArgs")
      assert.strictEqual(yield* tag(jobs.enqueue(T, { s: "ok" }, { queue: "q\uDC00" })), "InvalidJobOptions")
      assert.strictEqual(yield* tag(jobs.enqueue(T, { s: "ok" }, { uniqueKey: "\uD83D" })), "InvalidJobOptions")
      assert.strictEqual(yield* tag(jobs.enqueue(T, { s: "ok" }, { metadata: { ["k\uD800"]: 1 } })), "InvalidJobOptions")
      const id = yield* jobs.enqueue(T, { s: "\\u0000 is six characters" })
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ args: { s: string } }>`SELECT args FROM effect_jobs.jobs WHERE id = ${id}::bigint`
      assert.strictEqual(row!.args.s, "\\u0000 is six characters")
    }))

  it.effect("status and await: a malformed id is JobNotFound (no SQL); a bad timeout is InvalidJobOptions", () =>
    Effect.gen(function*() {
      const T = Job.make("r-await", { args: Schema.Struct({}), queue: "r-await" })
      const jobs = yield* Jobs.Jobs
      const tag = <A, E>(e: Effect.Effect<A, E>) => Effect.map(Effect.flip(e), (x) => (x as { _tag: string })._tag)
      for (const id of ["abc", "", "1; DROP TABLE effect_jobs.jobs", "99999999999999999999", "-1", "a\u0000"]) {
        assert.strictEqual(yield* tag(jobs.status(T, id)), "JobNotFound", `status ${JSON.stringify(id)}`)
        assert.strictEqual(yield* tag(jobs.await(T, id, { timeout: "1 second" })), "JobNotFound", `await ${JSON.stringify(id)}`)
      }
      const id = yield* jobs.enqueue(T, {})
      assert.strictEqual(yield* tag(jobs.await(T, id, { timeout: "soon" as never })), "InvalidJobOptions")
      assert.strictEqual(yield* tag(jobs.await(T, id, { timeout: -5 })), "InvalidJobOptions")
      // A waiter on a malformed id used to make the shared check fail for every waiter.
      const bad = yield* Effect.forkChild(Effect.exit(jobs.await(T, "not-an-id", { timeout: "10 seconds" })))
      const good = yield* Effect.forkChild(jobs.await(T, id, { timeout: "10 seconds" }))
      yield* startWorker({ queues: { "r-await": { pollInterval: "20 millis" } } }, Job.toLayer(T, () => Effect.void))
      const start = yield* Clock.currentTimeMillis
      yield* Fiber.join(good)
      assert.isBelow((yield* Clock.currentTimeMillis) - start, 3000)
      yield* Fiber.join(bad)
    }))

  it("Job.make refuses names PostgreSQL cannot store; retryAfter/snooze take any duration without throwing", () => {
    expect(() => Job.make("a\u0000b", { args: Schema.Struct({}) })).toThrow(/NUL/)
    expect(() => Job.make("a\uD800", { args: Schema.Struct({}) })).toThrow(/surrogate/)
    for (const d of ["garbage", "1e400 millis", null, -5] as Array<Duration.Input>) {
      const retry = Effect.runSyncExit(Job.retryAfter(d))
      const snooze = Effect.runSyncExit(Job.snooze(d))
      assert.isTrue(Exit.isFailure(retry) && Exit.isFailure(snooze))
      const error = Exit.isFailure(retry) ? retry.cause.reasons.find(Cause.isFailReason)?.error : undefined
      assert.strictEqual((error as { delayMillis: number }).delayMillis, 0)
    }
  })

  it.effect("Worker.validate: a workerId with NUL and a queue name with an unpaired surrogate are InvalidWorkerConfig", () =>
    Effect.gen(function*() {
      const a = yield* Effect.flip(WorkerConfig.validate({ queues: { q: {} }, workerId: "w\u0000" }))
      assert.strictEqual(a._tag, "InvalidWorkerConfig")
      const b = yield* Effect.flip(WorkerConfig.validate({ queues: { ["q\uD800"]: {} } }))
      assert.strictEqual(b._tag, "InvalidWorkerConfig")
    }))

  it.effect("admin: NUL in a key, a name or a reason, and an absurd olderThan, give typed answers", () =>
    Effect.gen(function*() {
      const admin = yield* JobsAdmin.JobsAdmin
      const jobs = yield* Jobs.Jobs
      const T = Job.make("r-admin", { args: Schema.Struct({}), queue: "r-admin" })
      const tag = <A, E>(e: Effect.Effect<A, E>) => Effect.map(Effect.flip(e), (x) => (x as { _tag: string })._tag)
      assert.strictEqual(yield* tag(admin.cancelByKey("r-admin", "k\u0000")), "UniqueKeyNotFound")
      const id = yield* jobs.enqueue(T, {}, { delay: "1 hour" })
      assert.strictEqual(yield* admin.cancel(id, { reason: "a\u0000b" }), "cancelled")
      assert.deepStrictEqual(yield* admin.counts({ queue: "\u0000" }), [])
      assert.strictEqual(yield* tag(admin.list({ queue: "\u0000" })), "InvalidAdminRequest")
      assert.strictEqual(yield* admin.deleteFinished({ queue: "r-admin-none", olderThan: 10n ** 30n }), 0)
    }))

  it.effect("Periodic: a cron that never fires and a name with NUL are InvalidSchedule, not a defect", () =>
    Effect.gen(function*() {
      const T = Job.make("r-periodic", { args: Schema.Struct({}), queue: "r-periodic" })
      for (const spec of [{ cron: "0 0 31 2 *" }, { name: "a\u0000", every: "1 hour" }] as Array<Periodic.Spec>) {
        const exit = yield* Effect.exit(Effect.scoped(Layer.build(Periodic.layer([Periodic.make(T, {}, spec)]))))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? exit.cause.reasons.find(Cause.isFailReason)?.error : undefined
        assert.strictEqual((error as { _tag?: string } | undefined)?._tag, "InvalidSchedule", JSON.stringify(spec))
      }
    }))
})
