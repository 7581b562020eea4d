/**
 * An outcome that leaves its job runnable now (a retry with zero delay, `Job.snooze(0)`, the
 * release of a job at shutdown) wakes the sated workers of its queue at once, by NOTIFY, like
 * an enqueue does: it does not wait for their next poll.
 *
 * Every worker here polls once an hour and runs maintenance once an hour, so only a NOTIFY can
 * make it claim again. Before the outcome is written, each test makes sure that the worker
 * that should run the job next is listening and sated (its last claim came back short):
 * otherwise a claim of its own loop could find the job without any NOTIFY, and the test would
 * prove nothing. Without the NOTIFY, the second run never starts and the test fails on its
 * time bound (a bound on a wait, not a sleep).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Layer, Option, Queue, Schedule, Schema, Scope } from "effect"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { makeProbe, type Probe } from "./support/probes.ts"

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { message: Schema.String }) {}

/** Far longer than the NOTIFY takes, far shorter than any poll or maintenance interval here. */
const bound = Duration.seconds(5)

/** Polls and maintenance so rare that within a test only a NOTIFY makes the worker claim. */
const notifyOnly = (queue: string, concurrency: number) => ({
  queues: { [queue]: { concurrency, pollInterval: "1 hour" } },
  maintenanceInterval: "1 hour",
  pruner: false
} as const)

const Args = Schema.Struct({ probe: Schema.Boolean })

/**
 * Waits for the worker's next run of the subject, failing the test if none starts within
 * `bound`.
 */
const awaitRun = (runStarted: Deferred.Deferred<void>, what: string) =>
  Effect.gen(function*() {
    const started = yield* Deferred.await(runStarted).pipe(Effect.timeoutOption(bound))
    assert.isTrue(Option.isSome(started), `${what}: the job was not run again within ${Duration.format(bound)}`)
  })

/**
 * Makes sure the worker serving `queue` is listening and sated. Call it once the worker has
 * claimed something since it started (the subject). A probe job enqueued now can only be
 * claimed by a claim made after that one, and a producer claims again only when woken: by a
 * NOTIFY, or by the look it takes once its LISTEN is established. Either way it listens, and
 * that one-off look is behind it. Awaiting the probe's outcome, written after its run, also
 * leaves time for the claim made after the one that took the probe (if a wake came in
 * meanwhile), so the worker's last claim has come back short by then.
 */
const listeningAndSated = <E, R>(enqueueProbe: Effect.Effect<string, E, R>, probe: Probe, probesRun: Queue.Queue<void>) =>
  Effect.gen(function*() {
    const id = yield* enqueueProbe
    yield* Queue.take(probesRun)
    assert.strictEqual((yield* probe.next(id))._tag, "completed")
  })

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("wake on a runnable outcome", (it) => {
  it.effect("a failure retried with zero delay wakes the sated worker at once", () =>
    Effect.gen(function*() {
      const queue = "wake-retry"
      const Retried = Job.make("wake-retry", { args: Args, queue, retry: Schedule.spaced(Duration.zero), maxAttempts: 3 })
      const probe = yield* makeProbe
      const probesRun = yield* Queue.unbounded<void>()
      const firstStarted = yield* Deferred.make<void>()
      const fail = yield* Deferred.make<void>()
      const secondStarted = yield* Deferred.make<void>()
      yield* startWorker(
        notifyOnly(queue, 2),
        Layer.merge(
          Job.toLayer(Retried, (args, ctx) => {
            if (args.probe) return Queue.offer(probesRun, undefined).pipe(Effect.asVoid)
            if (ctx.attempt === 1) {
              return Deferred.succeed(firstStarted, undefined).pipe(
                Effect.andThen(Deferred.await(fail)),
                Effect.andThen(Effect.fail(new Flaky({ message: "first attempt fails" })))
              )
            }
            return Deferred.succeed(secondStarted, undefined).pipe(Effect.asVoid)
          }),
          probe.layer
        )
      )
      const id = yield* (yield* Jobs.Jobs).enqueue(Retried, { probe: false })
      yield* Deferred.await(firstStarted)
      yield* listeningAndSated(Jobs.Jobs.use((jobs) => jobs.enqueue(Retried, { probe: true })), probe, probesRun)

      yield* Deferred.succeed(fail, undefined)
      const retried = yield* probe.next(id)
      assert.strictEqual(retried._tag, "retryScheduled")
      assert.strictEqual(retried._tag === "retryScheduled" ? retried.delayMillis : -1, 0)
      yield* awaitRun(secondStarted, "retry with zero delay")
      assert.strictEqual((yield* probe.next(id))._tag, "completed")
    }))

  // 0.5 ms: under a millisecond the stored run time is now (whole milliseconds), so the job
  // is runnable at once and must be announced like a snooze of 0, not left for promotion.
  for (const delay of [0, 0.5]) {
    it.effect(`Job.snooze(${delay}) wakes the sated worker at once`, () =>
      Effect.gen(function*() {
        const queue = `wake-snooze-${delay}`
        const Snoozed = Job.make(`wake-snooze-${delay}`, { args: Args, queue })
        const probe = yield* makeProbe
        const probesRun = yield* Queue.unbounded<void>()
        const firstStarted = yield* Deferred.make<void>()
        const snooze = yield* Deferred.make<void>()
        const secondStarted = yield* Deferred.make<void>()
        let runs = 0 // a snooze gives its attempt back: count the runs instead
        yield* startWorker(
          notifyOnly(queue, 2),
          Layer.merge(
            Job.toLayer(Snoozed, (args) =>
              Effect.suspend(() => {
                if (args.probe) return Queue.offer(probesRun, undefined).pipe(Effect.asVoid)
                if (++runs === 1) {
                  return Deferred.succeed(firstStarted, undefined).pipe(
                    Effect.andThen(Deferred.await(snooze)),
                    Effect.andThen(Job.snooze(delay))
                  )
                }
                return Deferred.succeed(secondStarted, undefined).pipe(Effect.asVoid)
              })),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(Snoozed, { probe: false })
        yield* Deferred.await(firstStarted)
        yield* listeningAndSated(Jobs.Jobs.use((jobs) => jobs.enqueue(Snoozed, { probe: true })), probe, probesRun)

        yield* Deferred.succeed(snooze, undefined)
        assert.strictEqual((yield* probe.next(id))._tag, "rescheduled")
        yield* awaitRun(secondStarted, `snooze of ${delay} ms`)
        assert.strictEqual((yield* probe.next(id))._tag, "completed")
      }))
  }

  it.effect("a job released at shutdown wakes another, sated worker at once", () =>
    Effect.gen(function*() {
      const queue = "wake-release"
      const Held = Job.make("wake-release", { args: Args, queue })
      const probe = yield* makeProbe
      const probesRun = yield* Queue.unbounded<void>()
      const firstStarted = yield* Deferred.make<void>()
      const secondStarted = yield* Deferred.make<void>()
      let runs = 0 // a release gives its attempt back: count the runs instead
      const handlers = Layer.merge(
        Job.toLayer(Held, (args) =>
          Effect.suspend(() => {
            if (args.probe) return Queue.offer(probesRun, undefined).pipe(Effect.asVoid)
            return ++runs === 1
              ? Deferred.succeed(firstStarted, undefined).pipe(Effect.andThen(Effect.never))
              : Deferred.succeed(secondStarted, undefined).pipe(Effect.asVoid)
          })),
        probe.layer
      )
      // The first worker holds the job and claims nothing else (no prefetch, its one slot taken).
      const firstScope = yield* Scope.fork(yield* Effect.scope) // closed below, or with the test's scope
      yield* startWorker(
        { ...notifyOnly(queue, 1), queues: { [queue]: { concurrency: 1, prefetch: 0, pollInterval: "1 hour" } }, gracePeriod: "10 millis" },
        handlers
      ).pipe(Effect.provideService(Scope.Scope, firstScope))
      const id = yield* (yield* Jobs.Jobs).enqueue(Held, { probe: false })
      yield* Deferred.await(firstStarted)

      // The second worker runs the probes. Its first claim may be the one it makes at start:
      // a first probe is run to get past it, then the second shows it listening and sated.
      yield* startWorker(notifyOnly(queue, 2), handlers)
      const first = yield* (yield* Jobs.Jobs).enqueue(Held, { probe: true })
      yield* Queue.take(probesRun)
      assert.strictEqual((yield* probe.next(first))._tag, "completed")
      yield* listeningAndSated(Jobs.Jobs.use((jobs) => jobs.enqueue(Held, { probe: true })), probe, probesRun)

      // Shutting down the first worker interrupts the job and returns it to `available`.
      yield* Scope.close(firstScope, Exit.void)
      assert.strictEqual((yield* probe.next(id))._tag, "rescheduled")
      yield* awaitRun(secondStarted, "release at shutdown")
      assert.strictEqual((yield* probe.next(id))._tag, "completed")
    }))
})
