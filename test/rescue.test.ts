/**
 * Rescue in seconds when a worker dies (migrations/0006, src/internal/worker/Registration.ts):
 * a worker registers itself and holds a session advisory lock; when its database sessions are
 * gone, any other worker's rescuer sends its running jobs back at once (`WorkerDied`), long
 * before the default 30 s lease would lapse. And `JobsAdmin.workers` lists the live workers.
 *
 * A worker "process" is a worker on a pool of its own, connecting as a role of its own: its
 * death is that role losing its right to log in and its sessions being terminated, so that the
 * pool cannot reconnect (a process that died would not).
 */
import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Exit, Layer, Option, Redacted, Schema, Scope } from "effect"
import { SqlClient } from "effect/sql"
import { spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { Job, Jobs, JobsAdmin, Worker } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

/** Waits on the database's state: `waitFor` of test/support/probes.ts at 20 ms, for at most 12 s. */
const eventually = <A, E, R>(what: string, check: Effect.Effect<Option.Option<A>, E, R>) =>
  waitFor(what, check, { every: "20 millis", timeout: "12 seconds" })

const Work = Job.make("rescue-work", { args: Schema.Struct({ n: Schema.Number }), queue: "rescue" })

let roles = 0

/**
 * A role of its own for a worker "process", and the URL to connect as it. `kill` makes the
 * role unable to log in and terminates its sessions; the role is dropped when the scope closes.
 */
const processRole = Effect.gen(function*() {
  const { url } = yield* TestDb.TestDb
  const sql = yield* SqlClient.SqlClient
  const role = `ej_rescue_${process.pid}_${Date.now().toString(36)}_${roles++}`
  yield* sql.unsafe(`CREATE ROLE "${role}" LOGIN PASSWORD 'rescue'`)
  yield* sql.unsafe(`GRANT USAGE ON SCHEMA effect_jobs TO "${role}"`)
  yield* sql.unsafe(`GRANT ALL ON ALL TABLES IN SCHEMA effect_jobs TO "${role}"`)
  yield* sql.unsafe(`GRANT ALL ON ALL SEQUENCES IN SCHEMA effect_jobs TO "${role}"`)
  yield* Effect.addFinalizer(() =>
    Effect.ignore(Effect.andThen(sql.unsafe(`DROP OWNED BY "${role}"`), sql.unsafe(`DROP ROLE "${role}"`)))
  )
  const roleUrl = new URL(url)
  roleUrl.username = role
  roleUrl.password = "rescue"
  return {
    url: roleUrl.toString(),
    kill: Effect.andThen(
      sql.unsafe(`ALTER ROLE "${role}" NOLOGIN`),
      sql<{ n: number }>`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE usename = ${role}`
    ),
    revive: sql.unsafe(`ALTER ROLE "${role}" LOGIN`)
  }
})

interface Row {
  readonly id: string
  readonly state: string
  readonly attempt: number
  readonly locked_by: string | null
  readonly errors: ReadonlyArray<{ readonly kind: string; readonly message: string }>
}

const rows = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<Row>`SELECT id::text, state, attempt, locked_by, errors FROM effect_jobs.jobs WHERE queue = 'rescue' ORDER BY id`)

layer(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })(
  "a worker whose database sessions are gone",
  (it) => {
    it.effect("has its running jobs picked up by another worker within seconds, at the default 30 s lease (WorkerDied, attempt counted)", () =>
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const admin = yield* JobsAdmin.JobsAdmin
        const dying = yield* processRole
        const ids = yield* jobs.enqueueMany(Work, [{ n: 1 }, { n: 2 }, { n: 3 }])
        // The worker that dies: it runs the 3 jobs and never finishes them. Default lease (30 s).
        const dyingScope = yield* Scope.make()
        yield* Effect.addFinalizer(() => Scope.close(dyingScope, Exit.void))
        yield* Layer.buildWithScope(
          Worker.layer({
            queues: { rescue: { concurrency: 3, prefetch: 0 } },
            workerId: "dying",
            gracePeriod: "100 millis",
            pruner: false
          }).pipe(
            Layer.provide(Job.toLayer(Work, () => Effect.never)),
            Layer.provide(Layer.fresh(PgClient.layer({ url: Redacted.make(dying.url), maxConnections: 6 })))
          ),
          dyingScope
        )
        yield* eventually("the 3 jobs running on the dying worker", Effect.map(rows, (rs) =>
          rs.length === 3 && rs.every((r) => r.state === "running" && r.locked_by === "dying") ? Option.some(rs) : Option.none()))
        assert.deepStrictEqual((yield* admin.workers).map((w) => [w.id, w.jobsHeld]), [["dying", 3]])

        // The rescuing worker, on the test's pool: it runs what it gets.
        const ran: Array<number> = []
        yield* Layer.buildWithScope(
          Worker.layer({ queues: { rescue: { concurrency: 3 } }, workerId: "rescuer", pruner: false }).pipe(
            Layer.provide(Job.toLayer(Work, (args) => Effect.sync(() => void ran.push(args.n))))
          ),
          yield* Effect.scope
        )

        // The "process" dies: its sessions end and it cannot connect again.
        const killedAt = yield* Clock.currentTimeMillis
        const killed = yield* dying.kill
        assert.isAtLeast(killed[0]!.n, 1, "the dying worker's sessions were terminated")
        // Let it shut down (its late writes are refused by the fencing token) once the test is over.
        yield* Effect.addFinalizer(() => Effect.ignore(dying.revive))

        const done = yield* eventually("the 3 jobs completed by the rescuer", Effect.map(rows, (rs) =>
          rs.every((r) => r.state === "completed") ? Option.some(rs) : Option.none()))
        const tookMs = (yield* Clock.currentTimeMillis) - killedAt
        yield* Effect.log(`kill -> 3 jobs completed elsewhere: ${tookMs} ms (lease 30000 ms)`)
        assert.deepStrictEqual(done.map((r) => r.id), [...ids])
        assert.deepStrictEqual([...ran].sort(), [1, 2, 3])
        for (const r of done) {
          assert.strictEqual(r.attempt, 2, "the attempt on the dead worker counts")
          assert.deepStrictEqual(r.errors.map((e) => e.kind), ["WorkerDied"])
          assert.include(r.errors[0]!.message, "dying")
        }
        // The dead worker is no longer listed; the rescuer is.
        assert.deepStrictEqual((yield* admin.workers).map((w) => w.id), ["rescuer"])
      }), { timeout: 15_000 })
  }
)

layer(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })(
  "JobsAdmin.workers",
  (it) => {
    it.effect("lists the live workers with what they hold, and drops one after its shutdown", () =>
      Effect.gen(function*() {
        const { url } = yield* TestDb.TestDb
        const admin = yield* JobsAdmin.JobsAdmin
        const jobs = yield* Jobs.Jobs
        const Hold = Job.make("rescue-hold", { args: Schema.Struct({}), queue: "rescue-hold" })
        const start = (workerId: string, queues: Worker.Options["queues"]) =>
          Effect.gen(function*() {
            const scope = yield* Scope.make()
            yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
            yield* Layer.buildWithScope(
              Worker.layer({ queues, workerId, gracePeriod: "100 millis", pruner: false }).pipe(
                Layer.provide(Job.toLayer(Hold, () => Effect.never)),
                Layer.provide(Layer.fresh(PgClient.layer({ url: Redacted.make(url), maxConnections: 5 })))
              ),
              scope
            )
            return scope
          })
        const before = new Date(Date.now() - 1000)
        const a = yield* start("worker-a", { "rescue-hold": { concurrency: 2 }, other: { concurrency: 3 } })
        yield* start("worker-b", { "rescue-idle": { concurrency: 1 } })
        yield* jobs.enqueue(Hold, {})
        const listed = yield* eventually("worker-a holds the job", Effect.map(admin.workers, (ws) =>
          ws.length === 2 && ws.find((w) => w.id === "worker-a")?.jobsHeld === 1 ? Option.some(ws) : Option.none()))
        const byId = new Map(listed.map((w) => [w.id, w]))
        assert.deepStrictEqual([...byId.get("worker-a")!.queues].sort(), ["other", "rescue-hold"])
        assert.strictEqual(byId.get("worker-a")!.concurrency, 5)
        assert.deepStrictEqual(byId.get("worker-b")!.queues, ["rescue-idle"])
        assert.strictEqual(byId.get("worker-b")!.concurrency, 1)
        assert.strictEqual(byId.get("worker-b")!.jobsHeld, 0)
        for (const w of listed) {
          assert.isTrue(w.startedAt >= before && w.lastSeenAt >= w.startedAt, `${w.id}: started and last seen in order`)
        }
        yield* Scope.close(a, Exit.void)
        assert.deepStrictEqual((yield* admin.workers).map((w) => w.id), ["worker-b"], "worker-a deregistered at shutdown")
        const sql = yield* SqlClient.SqlClient
        const rowsLeft = yield* sql<{ id: string }>`SELECT id FROM effect_jobs.workers ORDER BY id`
        assert.deepStrictEqual(rowsLeft.map((r) => r.id), ["worker-b"], "its row is deleted")
      }), { timeout: 15_000 })
  }
)

/** The backend that holds the registration lock of `workerId` (migrations/0006), if any. */
const lockPid = (workerId: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ pid: number }>`
        SELECT pid FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint) = hashtextextended('effect_jobs:' || ${workerId}, 6)`,
      (rows) => rows[0]?.pid
    ))

layer(Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })(
  "a live worker whose registration session alone is cut",
  (it) => {
    it.effect("is not taken for dead: a rescue right after the cut takes nothing, and it registers again on a new session", () =>
      Effect.gen(function*() {
        const { url } = yield* TestDb.TestDb
        const sql = yield* SqlClient.SqlClient
        const store = yield* JobStore
        const id = yield* (yield* Jobs.Jobs).enqueue(Work, { n: 1 })
        yield* Layer.buildWithScope(
          Worker.layer({ queues: { rescue: { concurrency: 1 } }, workerId: "keeper", gracePeriod: "100 millis", pruner: false }).pipe(
            Layer.provide(Job.toLayer(Work, () => Effect.never)),
            Layer.provide(Layer.fresh(PgClient.layer({ url: Redacted.make(url), maxConnections: 5 })))
          ),
          yield* Effect.scope
        )
        yield* eventually("the job running", Effect.map(rows, (rs) => rs[0]?.state === "running" ? Option.some(rs) : Option.none()))
        const before = yield* eventually("registered", Effect.map(lockPid("keeper"), Option.fromNullishOr))
        yield* sql`SELECT pg_terminate_backend(${before}::int, 5000)`
        // The lock is gone, but the worker was seen less than a moment ago: not dead yet.
        assert.isUndefined(yield* lockPid("keeper"), "the lock went with its session")
        assert.strictEqual(yield* store.jobRescueExpired(Date.now(), 1000), 0, "nothing rescued within the grace")
        const after = yield* eventually("registered again", Effect.map(lockPid("keeper"), (pid) =>
          pid !== undefined && pid !== before ? Option.some(pid) : Option.none()))
        assert.notStrictEqual(after, before)
        assert.strictEqual(yield* store.jobRescueExpired(Date.now(), 1000), 0, "nothing rescued once registered again")
        const [row] = yield* rows
        assert.strictEqual(row?.id, id)
        assert.strictEqual(row?.state, "running")
        assert.strictEqual(row?.locked_by, "keeper")
        assert.deepStrictEqual(row?.errors, [])
      }), { timeout: 15_000 })
  }
)

interface MarkedRow {
  readonly id: string
  readonly state: string
  readonly attempt: number
  readonly claim_count: number
  readonly buffered: boolean
  readonly locked_by: string | null
  readonly errors: ReadonlyArray<{ readonly attempt: number; readonly kind: string; readonly message: string }>
}

const markedRows = (queue: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<MarkedRow>`SELECT id::text, state, attempt, claim_count, buffered, locked_by, errors FROM effect_jobs.jobs
                   WHERE queue = ${queue} ORDER BY id`)

layer(Layer.mergeAll(Jobs.layer).pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })(
  "a worker process killed (SIGKILL) with jobs in its buffer (migrations/0007)",
  (it) => {
    it.effect("its never-started jobs come back with their attempt given back; its started ones spend theirs (WorkerDied); all complete", () =>
      Effect.gen(function*() {
        const { url } = yield* TestDb.TestDb
        const queue = "rescue-buffer"
        const Sleepy = Job.make("sleepy", { args: Schema.Struct({ n: Schema.Number, quick: Schema.optional(Schema.Boolean) }), queue })
        // Jobs 1 and 2 complete at once; 3 and 4 then start from the buffer and never end; 5 to 8 wait in the buffer.
        const ids = yield* (yield* Jobs.Jobs).enqueueMany(Sleepy, Array.from({ length: 8 }, (_, i) => ({ n: i + 1, quick: i < 2 })))
        // Concurrency 2, prefetch 4: the first claim takes 1-6 (1 and 2 start at once: not marked), the
        // next one 7 and 8 (no slot free: marked). The default 30 s lease: the rescue is by the lock.
        const child = spawn(process.execPath, ["test/support/worker-process.ts", url, queue, "30000", "2", "4", "doomed"], {
          stdio: ["ignore", "pipe", "inherit"]
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
        const startedThere = new Set<string>()
        createInterface({ input: child.stdout! }).on("line", (line) => {
          const m = /^started (\d+)$/.exec(line)
          if (m !== null) startedThere.add(m[1]!)
        })
        const [s1, s2] = [ids[2]!, ids[3]!] // started from the buffer
        const buffered = ids.slice(4)
        // On the database: 1 and 2 completed; 3 and 4 running, their mark cleared by the worker's beat
        // (it saw them started); 5 to 8 running, still marked.
        const held = yield* waitFor("3 and 4 running (seen started), 5-8 buffered, on the doomed worker", Effect.map(markedRows(queue), (rs) => {
          const byId = new Map(rs.map((r) => [r.id, r]))
          const ok = ids.slice(0, 2).every((id) => byId.get(id)?.state === "completed") &&
            [s1, s2].every((id) => byId.get(id)?.state === "running" && byId.get(id)?.buffered === false) &&
            buffered.every((id) => byId.get(id)?.state === "running" && byId.get(id)?.buffered === true) &&
            ids.slice(2).every((id) => byId.get(id)?.locked_by === "doomed")
          return ok ? Option.some(rs) : Option.none()
        }), { every: "20 millis", timeout: "20 seconds" })
        assert.deepStrictEqual([...startedThere].sort(), [s1, s2].sort(), "only 3 and 4 started there")
        for (const r of held.slice(2)) assert.strictEqual(r.attempt, 1, "the claim counted an attempt")

        // The process dies: no shutdown, no release.
        const exited = Effect.callback<void>((resume) => {
          child.once("exit", () => resume(Effect.void))
        })
        child.kill("SIGKILL")
        yield* exited

        // A worker of this process rescues them (the dead worker's lock is gone) and runs them.
        const attemptRun = new Map<string, number>()
        yield* startWorker(
          { queues: { [queue]: { concurrency: 8, pollInterval: "100 millis" } }, maintenanceInterval: "100 millis", pruner: false },
          Job.toLayer(Sleepy, (_args, ctx) => Effect.sync(() => void attemptRun.set(ctx.id, ctx.attempt)))
        )
        const done = yield* waitFor("the 8 jobs completed", Effect.map(markedRows(queue), (rs) =>
          rs.length === 8 && rs.every((r) => r.state === "completed") ? Option.some(rs) : Option.none()), {
          every: "20 millis",
          timeout: "15 seconds"
        })
        const byId = new Map(done.map((r) => [r.id, r]))
        for (const id of [s1, s2]) {
          const r = byId.get(id)!
          assert.strictEqual(r.attempt, 2, `job ${id} started there: that attempt is spent`)
          assert.strictEqual(attemptRun.get(id), 2)
          assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind]), [[1, "WorkerDied"]])
          assert.include(r.errors[0]!.message, "(doomed) died: its database session ended")
        }
        for (const id of buffered) {
          const r = byId.get(id)!
          assert.strictEqual(r.attempt, 1, `job ${id} never started there: its attempt was given back`)
          assert.strictEqual(attemptRun.get(id), 1)
          assert.strictEqual(r.claim_count, 2, "claimed twice")
          assert.deepStrictEqual(r.errors.map((e) => [e.attempt, e.kind]), [[1, "WorkerDied"]])
          assert.include(r.errors[0]!.message, "(doomed) died before it was seen to start the job")
        }
        for (const id of ids.slice(0, 2)) assert.deepStrictEqual([byId.get(id)!.attempt, byId.get(id)!.errors], [1, []])
      }), { timeout: 60_000 })
  }
)
