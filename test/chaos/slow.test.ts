/**
 * Scenario 5 — slow and stuck handlers (lease 1 s, heartbeat every 250 ms).
 *
 *   a. A handler that ignores interruption past its 500 ms timeout (2.5 s
 *      uninterruptible): its attempt ends as a JobTimeout when it finally
 *      yields, is retried and completes; it is never rescued (it is still
 *      heartbeated, so nobody else may run it meanwhile), and the worker's other
 *      slots keep running jobs meanwhile.
 *   b. A handler longer than the lease that is heartbeated: completes on its
 *      first attempt, never rescued.
 *   c. A handler whose worker stops heartbeating (the process is SIGSTOPped):
 *      another worker, already running, rescues the job once the lease the frozen
 *      one last wrote has lapsed (not before) and runs it to completion; when the
 *      frozen worker is resumed, its stale run writes nothing (fencing), and the
 *      worker goes on running jobs.
 *
 * Pools of 6: a worker keeps 2 pool connections for good (its registration
 * lock, the pruner's lock; its LISTEN session is a connection of its own, outside
 * the pool), so 4 are left for claims, heartbeats, outcomes and the handlers'
 * statements. With 1 left, a heartbeat queued behind them could come more than
 * lease - heartbeat late and the job be rescued.
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Option, Queue } from "effect"
import { Jobs } from "../../src/index.ts"
import { Chaos, ChaosTimed } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const LEASE_MS = 1000
const HEARTBEAT_MS = 250
const config = (queue: string) => ({ queue, concurrency: 4, leaseMs: LEASE_MS, heartbeatMs: HEARTBEAT_MS, pool: 6, pollMs: 200 })

const jobRow = (id: string) =>
  Effect.flatMap(Chaos_.sqlClient, (sql) =>
    Effect.map(
      sql<{ state: string; attempt: number; claim_count: number; errors: ReadonlyArray<{ kind: string; attempt: number; at: string }> }>`
        SELECT state, attempt, claim_count, errors FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => rows[0]!
    )).pipe(Effect.orDie)

const runsOf = (id: string) => Effect.map(Chaos_.loadRuns, (runs) => runs.filter((r) => r.job_id === id))

layer(Layer.provideMerge(Jobs.layer, Chaos_.layer()), { excludeTestServices: true })("chaos: slow and stuck handlers", (it) => {
  it.effect("a. a handler that ignores interruption past its timeout: JobTimeout, retried, never rescued; other slots keep working", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const worker = yield* Chaos_.spawnWorker(config("slow-a"))
      const id = yield* jobs.enqueue(ChaosTimed, { i: 0, sleepMs: 0, stubbornMs: 2500, announce: true }, { queue: "slow-a" })
      const first = yield* Queue.take(worker.started)
      assert.strictEqual(first.id, id)
      // While it overstays, the three other slots run 30 short jobs.
      const others = yield* jobs.enqueueMany(Chaos, Array.from({ length: 30 }, (_, i) => ({ i, sleepMs: 20 })), { queue: "slow-a" })
      const othersDone = yield* Chaos_.waitUntil("the other jobs completed", Effect.map(Chaos_.countStates("slow-a"), (c) =>
        (c.completed ?? 0) >= others.length ? Option.some(Date.now()) : Option.none()), { every: "50 millis", timeout: "30 seconds" })
      const { at } = yield* Chaos_.waitAllTerminal("slow-a", { timeout: "30 seconds" })
      const row = yield* jobRow(id)
      const runs = yield* runsOf(id)
      assert.strictEqual(row.state, "completed")
      assert.strictEqual(row.attempt, 2, "completed on the retry")
      assert.deepStrictEqual(row.errors.map((e) => e.kind), ["JobTimeout"], "the first attempt timed out; no LeaseExpired")
      assert.strictEqual(runs.length, 2)
      assert.isAtLeast(runs[1]!.started - runs[0]!.started, 2500, "the retry began only after the stubborn run let go")
      assert.isBelow(othersDone - first.at, 2500, "the other slots were not blocked by the stubborn one")
      yield* Chaos_.recordResult("slow.ignoresInterruption", {
        timeoutMs: 500,
        uninterruptibleMs: 2500,
        retryStartedAfterMs: runs[1]!.started - runs[0]!.started,
        otherJobsCompletedMeanwhile: others.length,
        othersDoneAfterMs: othersDone - first.at,
        errors: row.errors.map((e) => e.kind),
        totalMs: at - first.at
      })
    }))

  it.effect("b. a handler longer than the lease, heartbeated: completes on its first attempt, never rescued", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const rescuer = yield* Chaos_.spawnWorker(config("slow-b")) // a second worker that would rescue it if it could
      yield* Chaos_.spawnWorker(config("slow-b"))
      const ids = yield* jobs.enqueueMany(Chaos, [0, 1, 2, 3].map((i) => ({ i, sleepMs: 3 * LEASE_MS, announce: true })), { queue: "slow-b" })
      yield* Chaos_.waitAllTerminal("slow-b", { timeout: "30 seconds" })
      for (const id of ids) {
        const row = yield* jobRow(id)
        assert.strictEqual(row.state, "completed")
        assert.strictEqual(row.attempt, 1)
        assert.strictEqual(row.claim_count, 1, "claimed once: never rescued")
        assert.deepStrictEqual(row.errors, [])
        assert.strictEqual((yield* runsOf(id)).length, 1)
      }
      assert.isFalse(rescuer.errors.some((e) => e.message.includes("lost the lease")))
      yield* Chaos_.recordResult("slow.longerThanLease", { leaseMs: LEASE_MS, handlerMs: 3 * LEASE_MS, jobs: ids.length, rescued: 0 })
    }))

  it.effect("c. a worker that stops heartbeating (SIGSTOP): rescued and rerun elsewhere; resumed, its stale run writes nothing", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const sql = yield* Chaos_.sqlClient
      const frozen = yield* Chaos_.spawnWorker(config("slow-c"))
      // The first run works for a minute (far longer than starting the rescuer below takes), the rerun 0.5 s.
      const id = yield* jobs.enqueue(Chaos, { i: 0, sleepMs: 500, firstSleepMs: 60_000, announce: true }, { queue: "slow-c" })
      yield* Queue.take(frozen.started)
      // The lease of the frozen worker's run, as long as that run holds the job (the first claim).
      const heldLease = Effect.map(
        sql<{ readonly lease_expires_at: Date }>`
          SELECT lease_expires_at FROM effect_jobs.jobs WHERE id = ${id}::bigint AND state = 'running' AND claim_count = 1`,
        (rows) => rows[0]?.lease_expires_at.getTime()
      )
      // The rescuer is running before the freeze, so the rescue is timed by the lease alone
      // (not by a process start), and an early one would show.
      const rescuer = yield* Chaos_.spawnWorker(config("slow-c"))
      const leaseBefore = yield* heldLease
      const stoppedAt = yield* frozen.kill("SIGSTOP")
      // A heartbeat sent just before the stop may still be running: once none is, the lease in
      // the row is the last the frozen worker wrote (heartbeats only move it later, so any lease
      // read while it held the job is a lower bound of that one).
      yield* Chaos_.waitSessions(frozen, "quiet")
      const lastLease = (yield* heldLease) ?? leaseBefore
      assert.isDefined(lastLease, "the frozen worker held the job when it was stopped")
      const rerun = yield* Queue.take(rescuer.started)
      assert.strictEqual(rerun.id, id)
      assert.strictEqual(rerun.attempt, 2)
      const rescuedAfterMs = rerun.at - stoppedAt
      yield* Chaos_.waitAllTerminal("slow-c", { timeout: "30 seconds" })
      const done = yield* jobRow(id)
      assert.strictEqual(done.state, "completed")
      assert.strictEqual(done.claim_count, 2)
      assert.deepStrictEqual(done.errors.map((e) => e.kind), ["LeaseExpired"])
      // Both times come from the workers' clocks (one machine), in whole milliseconds.
      const rescuedAt = Date.parse(done.errors[0]!.at)
      assert.isAtLeast(rescuedAt, lastLease!, "not rescued while the lease it last wrote was valid")

      // Resume the frozen worker: its run is stale; whatever it does, the job stays as the rescuer left it.
      const resumedAt = yield* frozen.kill("SIGCONT")
      const noticedAt = yield* Chaos_.waitUntil("the resumed worker noticed it lost the lease", Effect.sync(() =>
        // Either its lease watch (the lease ran out while it was frozen), its registration watch
        // (it could not confirm its registration while frozen; migrations/0006) or its next
        // heartbeat (the database no longer has its claim) notices: all stop the run, and
        // nothing it writes for it passes the fencing token.
        frozen.errors.some((e) =>
            e.message.includes(`lost the lease of job ${id};`) || e.message.includes(`the lease of job ${id} ran out`) ||
            (e.message.includes("registration of this worker was not confirmed") && e.message.includes(`job ${id} `))
          )
          ? Option.some(Date.now())
          : Option.none()), {
        every: "20 millis",
        timeout: "10 seconds"
      })
      const after = yield* jobRow(id)
      assert.deepStrictEqual(after, done, "the stale run changed nothing")

      // ... and it keeps working: with the rescuer gone, it runs the next job.
      yield* rescuer.kill("SIGTERM")
      yield* Deferred.await(rescuer.exited)
      const next = yield* jobs.enqueue(Chaos, { i: 1, sleepMs: 10, announce: true }, { queue: "slow-c" })
      const s = yield* Queue.take(frozen.started)
      assert.strictEqual(s.id, next)
      yield* Chaos_.waitAllTerminal("slow-c", { timeout: "30 seconds" })
      const runs = yield* runsOf(id)
      yield* Chaos_.recordResult("slow.stoppedHeartbeating", {
        leaseMs: LEASE_MS,
        heartbeatMs: HEARTBEAT_MS,
        // SIGSTOP -> the rerun started on the rescuer (lease lapsed, maintenance tick, claim)
        rescuedAfterStopMs: rescuedAfterMs,
        // the lease the frozen worker last wrote -> the rescue (LeaseExpired entry)
        rescuedAfterLeaseExpiryMs: rescuedAt - lastLease!,
        leaseLeftAtStopMs: lastLease! - stoppedAt,
        runs: runs.length,
        staleRunFinished: runs.some((r) => r.pid === frozen.pid && r.finished !== null),
        lostLeaseNoticedAfterResumeMs: noticedAt - resumedAt,
        noticedBy: frozen.errors.find((e) => e.message.includes(`job ${id}`))?.message.includes("ran out") ? "lease watch" : "heartbeat"
      })
    }))
})
