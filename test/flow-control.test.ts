/**
 * Fleet-wide flow control (docs/flow-control.md; migrations/0012): a global limit per queue,
 * a limit per group, fair claims across groups, FIFO sequences per group, and the typed
 * errors of bad options. Two workers with pools of their own stand for two processes; the
 * multi-process tests are in test/chaos.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Layer, Option, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidJobOptions, InvalidWorkerConfig } from "../src/Errors.ts"
import { Job, Jobs, Worker } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

const Args = Schema.Struct({ n: Schema.Number })

/** Jobs running at once, overall and per group, and the highest either reached. */
const makeGauge = () => {
  const active = new Map<string, number>()
  const max = new Map<string, number>()
  let total = 0
  let maxTotal = 0
  const enter = (group: string) => {
    total++
    maxTotal = Math.max(maxTotal, total)
    const n = (active.get(group) ?? 0) + 1
    active.set(group, n)
    max.set(group, Math.max(max.get(group) ?? 0, n))
  }
  const leave = (group: string) => {
    total--
    active.set(group, active.get(group)! - 1)
  }
  return { enter, leave, max, total: () => total, maxTotal: () => maxTotal }
}

/** A worker "process": a pool of its own. */
const worker = (options: Worker.Options, handlers: Layer.Layer<any>) =>
  Effect.map(
    startWorker({ pruner: false, ...options }, Layer.merge(handlers, Layer.fresh(TestDb.pool({ maxConnections: 4 })))),
    (context) => Context.get(context, Worker.Worker)
  )

const countWhere = (queue: string, state: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = ${queue} AND state = ${state}`,
      (rows) => rows[0]!.n
    ))

const allDone = (queue: string, total: number) =>
  waitFor(`${total} jobs of ${queue} completed`, Effect.map(countWhere(queue, "completed"), (n) => n === total ? Option.some(n) : Option.none()), {
    timeout: "30 seconds"
  })

layer(TestLayer, { excludeTestServices: true })("flow control", (it) => {
  it.effect("global: never more than N jobs of the queue run at once across two workers", () =>
    Effect.gen(function*() {
      const G = Job.make("flow-global", { args: Args, queue: "flow-global", retention: "1 day" })
      const gauge = makeGauge()
      const gate = yield* Deferred.make<void>()
      const handlers = Job.toLayer(G, () =>
        Effect.sync(() => gauge.enter("")).pipe(
          Effect.andThen(Deferred.await(gate)),
          Effect.ensuring(Effect.sync(() => gauge.leave("")))
        ))
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(G, Array.from({ length: 40 }, (_, n) => ({ n })))
      const config = { queues: { "flow-global": { concurrency: 4, flow: { global: 3 } } } }
      const a = yield* worker({ ...config, workerId: "a" }, handlers)
      const b = yield* worker({ ...config, workerId: "b" }, handlers)
      yield* waitFor("3 handlers running", Effect.sync(() => gauge.total() === 3 ? Option.some(true) : Option.none()))
      // Both workers have free slots (8 in all) and jobs are waiting: every claim they make
      // now must come back empty. Wake them a few times, and check the rows as well.
      for (let i = 0; i < 5; i++) {
        yield* a.wake
        yield* b.wake
        yield* Effect.yieldNow
      }
      assert.strictEqual(yield* countWhere("flow-global", "running"), 3)
      yield* Deferred.succeed(gate, undefined)
      yield* allDone("flow-global", 40)
      assert.strictEqual(gauge.maxTotal(), 3, "at most 3 at once, and 3 reached")
    }), { timeout: 60_000 })

  it.effect("global with a prefetch: buffered jobs hold no slot, runs never exceed N, and the slots are shared", () =>
    Effect.gen(function*() {
      const G = Job.make("flow-global-buffered", { args: Args, queue: "flow-global-buffered", retention: "1 day" })
      const gauge = makeGauge()
      const gate = yield* Deferred.make<void>()
      const byWorker = new Map<string, number>()
      const handlers = (id: string) =>
        Job.toLayer(G, () =>
          Effect.sync(() => {
            gauge.enter("")
            byWorker.set(id, (byWorker.get(id) ?? 0) + 1)
          }).pipe(
            Effect.andThen(Deferred.await(gate)),
            Effect.ensuring(Effect.sync(() => gauge.leave("")))
          ))
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(G, Array.from({ length: 60 }, (_, n) => ({ n })))
      const config = { queues: { "flow-global-buffered": { concurrency: 2, prefetch: 10, flow: { global: 3 } } } }
      const a = yield* worker({ ...config, workerId: "a" }, handlers("a"))
      const b = yield* worker({ ...config, workerId: "b" }, handlers("b"))
      yield* waitFor("3 handlers running", Effect.sync(() => gauge.total() === 3 ? Option.some(true) : Option.none()))
      for (let i = 0; i < 5; i++) {
        yield* a.wake
        yield* b.wake
        yield* Effect.yieldNow
      }
      // Both workers buffer beyond their slots (before migration 0014 a buffered job held a
      // slot of the limit, so the rows running were at most 3), and both run: the one that
      // claimed first holds 2 slots, the other the third.
      assert.isAbove(yield* countWhere("flow-global-buffered", "running"), 3, "jobs buffered beyond the limit")
      assert.strictEqual(gauge.total(), 3)
      assert.deepStrictEqual([...byWorker.values()].sort(), [1, 2], "the slots are shared by the workers")
      yield* Deferred.succeed(gate, undefined)
      yield* allDone("flow-global-buffered", 60)
      assert.strictEqual(gauge.maxTotal(), 3, "at most 3 at once, and 3 reached")
    }), { timeout: 60_000 })

  it.effect("a worker at the global limit claims again as soon as its outcomes are written, not at the next poll", () =>
    Effect.gen(function*() {
      const W = Job.make("flow-written", { args: Args, queue: "flow-written", retention: "1 day" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(W, Array.from({ length: 50 }, (_, n) => ({ n })))
      // Every claim comes back short (2 of the 4 free slots): the queue looks drained. Only the
      // written outcomes (Executor -> Producer.written) make it claim again; the poll is an hour.
      yield* worker({ queues: { "flow-written": { concurrency: 4, pollInterval: "1 hour", flow: { global: 2 } } } }, Job.toLayer(W, () => Effect.void))
      yield* allDone("flow-written", 50)
    }), { timeout: 60_000 })

  it.effect("a sequence's next job is claimed by an idle worker soon after another worker's run of its head ends, not at the poll", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const queue = "flow-limited"
      // B alone can run the head, A alone the rest: the group's next job is A's to claim.
      const First = Job.make("flow-limited-first", { args: Args, queue, retention: "1 day" })
      const Next = Job.make("flow-limited-next", { args: Args, queue, retention: "1 day" })
      const jobs = yield* Jobs.Jobs
      const [head, next] = yield* jobs.enqueueAll([Jobs.entry(First, { n: 1 }, { group: "g" }), Jobs.entry(Next, { n: 2 }, { group: "g" })])
      const stateOf = (id: string) =>
        Effect.map(sql<{ state: string }>`SELECT state FROM effect_jobs.jobs WHERE id = ${id}::bigint`, (r) => r[0]?.state)
      const reaches = (id: string, state: string) =>
        waitFor(`job ${id} ${state}`, Effect.map(stateOf(id), (s) => s === state ? Option.some(s) : Option.none()))
      const options = { queues: { [queue]: { concurrency: 2, pollInterval: "1 hour", flow: { sequence: true } } } } as const
      const release = yield* Deferred.make<void>()
      yield* worker(options, Job.toLayer(First, () => Deferred.await(release)))
      yield* reaches(head!, "running")
      // A: its claims find the group's head running on B (limited). The job of another group
      // shows that A has claimed (and, once its outcome is written, claimed again: short).
      yield* worker(options, Job.toLayer(Next, () => Effect.void))
      // Both workers LISTEN (a LISTEN put in place wakes its worker's claims, which could
      // otherwise come after B's outcome below and find the next job without any backoff).
      yield* waitFor("two workers listening", Effect.map(
        sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
                           WHERE datname = current_database() AND query ILIKE 'LISTEN%'`,
        (r) => r[0]!.n >= 2 ? Option.some(true) : Option.none()
      ))
      const [other] = yield* jobs.enqueueAll([Jobs.entry(Next, { n: 3 }, { group: "h" })])
      yield* reaches(other!, "completed")
      assert.strictEqual(yield* stateOf(next!), "available")
      // B's run of the head ends and its outcome is written: no NOTIFY, and B cannot run the
      // next job. A claims it after a short backoff; with the poll alone, in an hour.
      yield* Deferred.succeed(release, undefined)
      yield* reaches(next!, "completed")
    }), { timeout: 60_000 })

  it.effect("a slot held by a job of a dead worker comes back when the rescuer returns the job", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const D = Job.make("flow-rescued", { args: Args, queue: "flow-rescued", retention: "1 day" })
      const jobs = yield* Jobs.Jobs
      const [first] = yield* jobs.enqueueMany(D, [{ n: 1 }, { n: 2 }])
      // A worker that dies right after its claim: its job holds the only slot, on a 1 ms lease.
      const ghost = yield* store.jobClaimGated({
        queue: "flow-rescued",
        limit: 1,
        now: Date.now(),
        leaseMillis: 1,
        workerId: "ghost",
        flow: { global: 1, perGroup: undefined, sequence: false, onDead: "block", rate: undefined, groupRate: undefined }
      })
      assert.deepStrictEqual(ghost.rows.map((r) => r.id), [first])
      const again = yield* store.jobClaimGated({
        queue: "flow-rescued",
        limit: 1,
        now: Date.now(),
        leaseMillis: 30_000,
        workerId: "other",
        flow: { global: 1, perGroup: undefined, sequence: false, onDead: "block", rate: undefined, groupRate: undefined }
      })
      assert.strictEqual(again.rows.length, 0, "the slot is taken")
      yield* worker({ queues: { "flow-rescued": { concurrency: 2, flow: { global: 1 } } }, maintenanceInterval: "50 millis" }, Job.toLayer(D, () => Effect.void))
      yield* allDone("flow-rescued", 2)
    }), { timeout: 60_000 })

  it.effect("perGroup: never more than N jobs of one group run at once across two workers", () =>
    Effect.gen(function*() {
      const P = Job.make("flow-per-group", { args: Schema.Struct({ g: Schema.String }), queue: "flow-pg", retention: "1 day" })
      const gauge = makeGauge()
      const handlers = Job.toLayer(P, ({ g }) =>
        Effect.sync(() => gauge.enter(g)).pipe(
          Effect.andThen(Effect.sleep("3 millis")), // the work
          Effect.ensuring(Effect.sync(() => gauge.leave(g)))
        ))
      const jobs = yield* Jobs.Jobs
      for (const g of ["A", "B", "C"]) {
        yield* jobs.enqueueAll(Array.from({ length: 20 }, () => Jobs.entry(P, { g }, { group: g })))
      }
      const config = { queues: { "flow-pg": { concurrency: 5, flow: { perGroup: 2 } } } }
      yield* worker({ ...config, workerId: "a" }, handlers)
      yield* worker({ ...config, workerId: "b" }, handlers)
      yield* allDone("flow-pg", 60)
      for (const g of ["A", "B", "C"]) assert.isAtMost(gauge.max.get(g)!, 2, `group ${g}`)
      assert.isAbove(gauge.maxTotal(), 2, "the groups ran side by side")
    }), { timeout: 60_000 })

  it.effect("sequence: a group's jobs run one at a time in id order; a retried job holds its group", () =>
    Effect.gen(function*() {
      const S = Job.make("flow-seq", {
        args: Schema.Struct({ g: Schema.String, n: Schema.Number }),
        queue: "flow-seq",
        retention: "1 day",
        maxAttempts: 3,
        retry: Schedule.spaced("50 millis")
      })
      const gauge = makeGauge()
      const log: Array<{ g: string; n: number; event: "start" | "end" }> = []
      let failedOnce = false
      const handlers = Job.toLayer(S, ({ g, n }) =>
        Effect.gen(function*() {
          gauge.enter(g)
          log.push({ g, n, event: "start" })
          yield* Effect.sleep("2 millis") // the work
          log.push({ g, n, event: "end" })
          gauge.leave(g)
          if (g === "X" && n === 3 && !failedOnce) {
            failedOnce = true
            return yield* Effect.fail("first attempt fails")
          }
        }))
      const jobs = yield* Jobs.Jobs
      // interleaved enqueues: ids of X and Y alternate
      for (let n = 0; n < 12; n++) {
        yield* jobs.enqueue(S, { g: "X", n }, { group: "X" })
        yield* jobs.enqueue(S, { g: "Y", n }, { group: "Y" })
      }
      const config = { queues: { "flow-seq": { concurrency: 4, flow: { sequence: true } } } }
      yield* worker({ ...config, workerId: "a" }, handlers)
      yield* worker({ ...config, workerId: "b" }, handlers)
      yield* allDone("flow-seq", 24)
      assert.strictEqual(gauge.max.get("X"), 1)
      assert.strictEqual(gauge.max.get("Y"), 1)
      for (const g of ["X", "Y"]) {
        const starts = log.filter((e) => e.g === g && e.event === "start").map((e) => e.n)
        const expected = Array.from({ length: 12 }, (_, n) => n)
        if (g === "X") expected.splice(3, 0, 3) // job 3 ran twice, and job 4 only after its retry
        assert.deepStrictEqual(starts, expected, `group ${g} in order`)
      }
    }), { timeout: 60_000 })

  it.effect("sequence onDead: block holds the group until the dead job is deleted; continue goes on", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const make = (queue: string) =>
        Job.make(`flow-dead-${queue}`, { args: Schema.Struct({ n: Schema.Number }), queue, retention: "1 day", maxAttempts: 1 })
      const Block = make("flow-block")
      const Continue = make("flow-continue")
      const fails = ({ n }: { n: number }) => n === 1 ? Effect.fail("dies") : Effect.void
      const handlers = Layer.merge(Job.toLayer(Block, fails), Job.toLayer(Continue, fails))
      const jobs = yield* Jobs.Jobs
      const [b1, b2] = yield* jobs.enqueueAll([Jobs.entry(Block, { n: 1 }, { group: "a" }), Jobs.entry(Block, { n: 2 }, { group: "a" })])
      const [, c2] = yield* jobs.enqueueAll([Jobs.entry(Continue, { n: 1 }, { group: "a" }), Jobs.entry(Continue, { n: 2 }, { group: "a" })])
      const w = yield* worker({
        queues: {
          "flow-block": { concurrency: 2, flow: { sequence: true } },
          "flow-continue": { concurrency: 2, flow: { sequence: { onDead: "continue" } } }
        }
      }, handlers)
      const stateOf = (id: string) =>
        Effect.map(sql<{ state: string }>`SELECT state FROM effect_jobs.jobs WHERE id = ${id}::bigint`, (r) => r[0]?.state)
      const reaches = (id: string, state: string) =>
        waitFor(`job ${id} ${state}`, Effect.map(stateOf(id), (s) => s === state ? Option.some(s) : Option.none()))
      yield* reaches(c2!, "completed") // continue: the dead job 1 does not hold its group
      yield* reaches(b1!, "dead")
      // block: a job of another group (after "a" in the round) is claimed, so claims have
      // passed over group "a" since its head died; its second job is still waiting.
      const [other] = yield* jobs.enqueueAll([Jobs.entry(Block, { n: 3 }, { group: "b" })])
      yield* reaches(other!, "completed")
      assert.strictEqual(yield* stateOf(b2!), "available")
      // An operator deletes the dead job: the group goes on.
      yield* sql`DELETE FROM effect_jobs.jobs WHERE id = ${b1!}::bigint`
      yield* w.wake
      yield* reaches(b2!, "completed")
    }), { timeout: 60_000 })

  it.effect("fair claims: a small group's jobs start within a few claims behind a 5,000-job backlog", () =>
    Effect.gen(function*() {
      const F = Job.make("flow-fair", { args: Schema.Struct({ g: Schema.String, n: Schema.Number }), queue: "flow-fair" })
      let bigStarts = 0
      const started = new Map<number, Deferred.Deferred<number>>()
      const handlers = Job.toLayer(F, ({ g, n }) =>
        Effect.suspend(() => {
          if (g === "big") {
            bigStarts++
            return Effect.void
          }
          return Deferred.succeed(started.get(n)!, bigStarts)
        }))
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(F, Array.from({ length: 5000 }, (_, n) => ({ g: "big", n })), { group: "big" })
      yield* worker({ queues: { "flow-fair": { concurrency: 4, flow: { global: 4 } } } }, handlers)
      yield* waitFor("the backlog running", Effect.sync(() => bigStarts >= 100 ? Option.some(true) : Option.none()))
      const waited: Array<number> = []
      for (let n = 0; n < 10; n++) {
        const d = yield* Deferred.make<number>()
        started.set(n, d)
        // "small" sorts after "big": each claim comes to it after one job of the backlog.
        // Counted from the enqueue's commit: claims made while the enqueue's own round trip
        // was under way (a loaded machine: several) could not see the job yet.
        yield* jobs.enqueue(F, { g: "small", n }, { group: "small" })
        const before = bigStarts
        waited.push((yield* Deferred.await(d)) - before)
      }
      // In id order, each would wait for the rest of the backlog (thousands of starts).
      // Round robin: at most the jobs claimed before the commit (a claim in flight, jobs
      // handed to the executor not started yet: 4 each) plus one in front of it in its claim.
      assert.isAtMost(Math.max(...waited), 12, `backlog starts before each small job: ${waited.join(", ")}`)
      assert.isBelow(bigStarts, 5000, "the backlog was not drained first")
      console.log(`fair claims: backlog starts before each small job: ${waited.join(", ")}`)
    }), { timeout: 60_000 })

  it.effect("claims racing on one queue never exceed the global limit (the advisory lock)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const R = Job.make("flow-race", { args: Args, queue: "flow-race" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueAll(Array.from({ length: 200 }, (_, n) => Jobs.entry(R, { n }, { group: `g${n % 50}` })))
      // two claimers on pools of their own
      const claimer = (workerId: string) =>
        Effect.map(
          Layer.build(JobStore.layer.pipe(Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 2 }))))),
          (ctx) => {
            const store = Context.get(ctx, JobStore)
            return Effect.suspend(() =>
              store.jobClaimGated({
                queue: "flow-race",
                limit: 2,
                now: Date.now(),
                leaseMillis: 30_000,
                workerId,
                flow: { global: 2, perGroup: undefined, sequence: false, onDead: "block", rate: undefined, groupRate: undefined }
              })
            )
          }
        )
      const a = yield* claimer("a")
      const b = yield* claimer("b")
      for (let round = 0; round < 150; round++) {
        const [ra, rb] = yield* Effect.all([a, b], { concurrency: 2 })
        assert.isAtMost(ra.rows.length + rb.rows.length, 2, `round ${round}`)
        assert.strictEqual(yield* countWhere("flow-race", "running"), ra.rows.length + rb.rows.length)
        yield* sql`UPDATE effect_jobs.jobs SET state = 'available', lease_expires_at = NULL, locked_by = NULL
                   WHERE queue = 'flow-race' AND state = 'running'`
      }
    }), { timeout: 60_000 })

  it.effect("bad group: InvalidJobOptions, nothing written", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const B = Job.make("flow-bad", { args: Args, queue: "flow-bad" })
      const jobs = yield* Jobs.Jobs
      for (const group of ["", "a\u0000b", "x".repeat(10_000), 42 as unknown as string, "\ud800"]) {
        const e1 = yield* Effect.flip(jobs.enqueue(B, { n: 1 }, { group }))
        assert.instanceOf(e1, InvalidJobOptions)
        const e2 = yield* Effect.flip(jobs.enqueueMany(B, [{ n: 1 }, { n: 2 }], { group }))
        assert.instanceOf(e2, InvalidJobOptions)
        const e3 = yield* Effect.flip(jobs.insertAll([Jobs.entry(B, { n: 1 }, { group: "ok" }), Jobs.entry(B, { n: 2 }, { group })]))
        assert.instanceOf(e3, InvalidJobOptions)
        const e4 = yield* Effect.flip(sql.withTransaction(jobs.enqueue(B, { n: 1 }, { group })))
        assert.instanceOf(e4, InvalidJobOptions)
      }
      const counted = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE queue = 'flow-bad'`
      assert.strictEqual(counted[0]!.n, 0)
      // a good group is stored, by every path of the enqueue
      const ids = [
        yield* jobs.enqueue(B, { n: 1 }, { group: "t1" }),
        ...(yield* jobs.enqueueMany(B, [{ n: 2 }, { n: 3 }], { group: "t2" })), // one statement for the batch
        ...(yield* jobs.insertAll([Jobs.entry(B, { n: 4 }, { group: "t3", uniqueKey: "k" })])).map((r) => r.id),
        yield* sql.withTransaction(jobs.enqueue(B, { n: 5 }, { group: "t4" })),
        yield* jobs.enqueue(B, { n: 6 })
      ]
      const rows = yield* sql<{ group_key: string | null }>`
        SELECT group_key FROM effect_jobs.jobs WHERE id = ANY(${ids.map(Number)}::bigint[]) ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => r.group_key), ["t1", "t2", "t2", "t3", "t4", null])
    }))

  it.effect("bad flow options: InvalidWorkerConfig, nothing claimed", () =>
    Effect.gen(function*() {
      const B = Job.make("flow-bad-config", { args: Args, queue: "flow-bad-config" })
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueue(B, { n: 1 })
      const bad: ReadonlyArray<unknown> = [
        { global: 0 },
        { global: -1 },
        { global: 1.5 },
        { perGroup: 0 },
        { perGroup: "2" },
        { perGroup: Number.NaN },
        { sequence: { onDead: "skip" } },
        { sequence: "yes" },
        "fast"
      ]
      for (const flow of bad) {
        const e = yield* Effect.flip(worker({
          queues: { "flow-bad-config": { flow: flow as Worker.FlowOptions } }
        }, Job.toLayer(B, () => Effect.void)))
        assert.instanceOf(e, InvalidWorkerConfig, JSON.stringify(flow))
      }
      assert.strictEqual(yield* countWhere("flow-bad-config", "available"), 1)
    }))
})
