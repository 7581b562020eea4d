/**
 * The registration fence (src/internal/worker/Registration.ts) stops a worker's runs when it
 * could not confirm its registration for `fenceMillis`: a rescuer elsewhere may take the jobs
 * of a worker whose session is gone. A process whose event loop was only blocked (a handler
 * that computes synchronously for longer than that) still has its session and its lock, so no
 * rescuer can act; the fence must not stop its runs and give their jobs back, which let
 * another worker run a job that was still running here (a double run, seen once in CI).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Option, Schema } from "effect"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const Waits = Job.make("fence-waits", { args: Schema.Struct({}), queue: "fence" })
const Blocks = Job.make("fence-blocks", { args: Schema.Struct({ ms: Schema.Number }), queue: "fence" })

/** Keeps the thread busy: nothing else in the process runs meanwhile (timers, sockets). */
const blockThread = (ms: number) => {
  const until = performance.now() + ms
  while (performance.now() < until) { /* the event loop is blocked */ }
}

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("registration fence", (it) => {
  it.effect("a blocked event loop does not stop the runs of a worker whose session is alive", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const started = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const runs = { waits: 0 }
      yield* startWorker(
        { queues: { fence: { concurrency: 2 } }, pruner: false },
        Layer.mergeAll(
          Job.toLayer(Waits, () =>
            Effect.gen(function*() {
              runs.waits++
              yield* Deferred.succeed(started, undefined)
              yield* Deferred.await(release)
            })
          ),
          // 1.6 s: past the fence (1 s unconfirmed) and past the rescuers' grace (1.5 s)
          Job.toLayer(Blocks, ({ ms }) => Effect.sync(() => blockThread(ms)))
        )
      )
      const waits = yield* jobs.enqueue(Waits, {})
      yield* Deferred.await(started)
      const blocks = yield* jobs.enqueue(Blocks, { ms: 1600 })
      yield* waitFor("the blocking job completed", Effect.map(getJob(blocks), (r) => r?.state === "completed" ? Option.some(r) : Option.none()), {
        every: "20 millis",
        timeout: "20 seconds"
      })
      // Still running here, on its first claim: not stopped, not given back, not taken by anyone.
      const during = (yield* getJob(waits))!
      assert.strictEqual(during.state, "running")
      assert.strictEqual(during.claim_count, 1)
      assert.deepStrictEqual(during.errors.map((e) => e.kind), [])
      yield* Deferred.succeed(release, undefined)
      const done = yield* waitFor("the waiting job completed", Effect.map(getJob(waits), (r) => r?.state === "completed" ? Option.some(r) : Option.none()), {
        every: "20 millis",
        timeout: "20 seconds"
      })
      assert.strictEqual(done.attempt, 1)
      assert.strictEqual(done.claim_count, 1)
      assert.deepStrictEqual(done.errors.map((e) => e.kind), [])
      assert.strictEqual(runs.waits, 1)
    }), { timeout: 40_000 })
})
