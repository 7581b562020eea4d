/**
 * Settings that change at run time (`Worker.Setting`): a queue's concurrency and the
 * worker's retention given as Effects are read at startup (a read that fails, or an invalid
 * value, fails the layer with InvalidWorkerConfig) and again every `settingsInterval`. A
 * changed concurrency takes effect in place (running jobs untouched); a changed retention
 * applies to the jobs finished from then on. A later read that fails, dies or gives an
 * invalid value is reported (once per reason) and the value in force is kept.
 *
 * The reader's rounds are awaited through a test signal (`settingsRead`): after a change,
 * two rounds that ended mean one round that read it from start to end.
 */
import { assert, expect, layer } from "@effect/vitest"
import { Config, ConfigProvider, Context, Duration, Effect, Exit, Latch, Layer, Option, Queue, Ref, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig, Job, Jobs, Worker } from "../src/index.ts"
import { TestSignals } from "../src/internal/worker/TestSignals.ts"
import * as TestDb from "./support/db.ts"
import { countByState, startWorker } from "./support/harness.ts"
import { advanceUntil, makeProbe, startOfNextSecond, waitFor, withTestClock } from "./support/probes.ts"

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

const workerOf = (context: Context.Context<Worker.Worker>) => Context.get(context, Worker.Worker)

/** A `TestSignals` layer that counts the settings reader's rounds, and a wait for the next `n`. */
const roundSignals = Effect.gen(function*() {
  const rounds = yield* Queue.unbounded<void>()
  return {
    layer: Layer.succeed(TestSignals, {
      producersInterrupted: Effect.void,
      settingsRead: Queue.offer(rounds, undefined).pipe(Effect.asVoid)
    }),
    /** Waits until a round has read everything set before this call (two rounds end). */
    settled: Effect.andThen(Queue.clear(rounds), Effect.andThen(Queue.take(rounds), Queue.take(rounds))),
    /** A round that ended since the last `settled` or `poll`, if any. */
    poll: Queue.poll(rounds)
  }
})

/** A setting read from a Ref that can also be made to fail or to die. */
type Source<A> = A | { readonly fail: string } | { readonly die: string }
const fromSource = <A>(ref: Ref.Ref<Source<A>>): Effect.Effect<A, Error> =>
  Effect.flatMap(Ref.get(ref), (v) => {
    if (typeof v === "object" && v !== null && "fail" in v) return Effect.fail(new Error(v.fail))
    if (typeof v === "object" && v !== null && "die" in v) return Effect.die(new Error(v.die))
    return Effect.succeed(v as A)
  })

const statusOf = (worker: Worker.Worker["Service"], queue: string) =>
  Effect.map(worker.status, (all) => all.find((s) => s.name === queue)!)

const q = "settings"
const Hold = Job.make("settings-hold", { args: Schema.Struct({ i: Schema.Number }), queue: q })

layer(TestLayer, { excludeTestServices: true })("settings that change at run time", (it) => {
  it.effect("concurrency read from a Ref: raising it starts more jobs at once, lowering it leaves running jobs alone", () =>
    Effect.gen(function*() {
      const signals = yield* roundSignals
      const concurrency = yield* Ref.make(1)
      const gate = yield* Latch.make(false)
      const started = yield* Queue.unbounded<number>()
      let active = 0
      let maxActiveAfterOpen = 0
      let open = false
      const HoldLive = Job.toLayer(Hold, ({ i }) =>
        Effect.gen(function*() {
          active++
          if (open) maxActiveAfterOpen = Math.max(maxActiveAfterOpen, active)
          yield* Queue.offer(started, i)
          yield* gate.await
        }).pipe(Effect.ensuring(Effect.sync(() => active--))))
      const worker = workerOf(
        yield* startWorker(
          // prefetch 0: every job claimed is running, so the database's count is the slots in use
          { queues: { [q]: { concurrency: Ref.get(concurrency), prefetch: 0 } }, settingsInterval: "20 millis", pruner: false },
          Layer.mergeAll(HoldLive, signals.layer)
        )
      )
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(Hold, Array.from({ length: 8 }, (_, i) => ({ i })))
      yield* Queue.take(started)
      yield* signals.settled
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 1)
      assert.strictEqual(yield* Queue.size(started), 0, "one slot: the second job waits")
      assert.strictEqual((yield* countByState(q)).running, 1)

      yield* Ref.set(concurrency, 3)
      yield* Queue.take(started)
      yield* Queue.take(started)
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 3)
      assert.deepStrictEqual(yield* countByState(q), { running: 3, available: 5 })

      // Lowered: the three running jobs go on (none interrupted, none given back).
      yield* Ref.set(concurrency, 2)
      yield* signals.settled
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 2)
      assert.deepStrictEqual(yield* countByState(q), { running: 3, available: 5 })
      assert.strictEqual(active, 3)

      // Once they end, at most two run at once.
      open = true
      yield* gate.open
      yield* waitFor("all jobs completed", Effect.map(countByState(q), (c) => (c.completed === 8 ? Option.some(c) : Option.none())))
      assert.isAtMost(maxActiveAfterOpen, 2)
      assert.isAtLeast(maxActiveAfterOpen, 1)
    }))

  it.effect("a read that fails or dies, and an invalid value, are reported once each; the value in force is kept", () =>
    Effect.gen(function*() {
      const signals = yield* roundSignals
      const probe = yield* makeProbe
      const source = yield* Ref.make<Source<number>>(2)
      const worker = workerOf(
        yield* startWorker(
          { queues: { [q]: { concurrency: fromSource(source) } }, settingsInterval: "10 millis", pruner: false },
          Layer.mergeAll(Job.toLayer(Hold, () => Effect.void), signals.layer, probe.layer)
        )
      )
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 2)
      const errors = () => probe.workerErrors.filter((e) => e.includes("concurrency"))

      yield* Ref.set(source, { fail: "settings store unreachable" })
      yield* signals.settled
      yield* signals.settled // more rounds fail the same way: still one report
      assert.deepStrictEqual(errors(), [
        `${q}: queue "${q}": concurrency: the setting could not be read: settings store unreachable; keeping the value in force`
      ])
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 2)

      yield* Ref.set(source, { die: "bug in the settings reader" })
      yield* signals.settled
      assert.strictEqual(errors().length, 2)
      expect(errors()[1]).toContain("could not be read: bug in the settings reader")
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 2)

      yield* Ref.set(source, 0)
      yield* signals.settled
      assert.strictEqual(errors().length, 3)
      expect(errors()[2]).toContain("concurrency must be an integer in [1, 10000], got 0; keeping the value in force")
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 2)

      yield* Ref.set(source, 5)
      yield* signals.settled
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 5)
      assert.strictEqual(errors().length, 3, "a good read reports nothing")
      // A reason seen before is reported again once a good read came between.
      yield* Ref.set(source, 0)
      yield* signals.settled
      assert.strictEqual(errors().length, 4)
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 5)
    }))

  it.effect("setConcurrency replaces a concurrency given as an Effect; reconfigure can give one again", () =>
    Effect.gen(function*() {
      const signals = yield* roundSignals
      const concurrency = yield* Ref.make(2)
      const worker = workerOf(
        yield* startWorker(
          { queues: { [q]: { concurrency: Ref.get(concurrency) } }, settingsInterval: "10 millis", pruner: false },
          Layer.mergeAll(Job.toLayer(Hold, () => Effect.void), signals.layer)
        )
      )
      yield* worker.setConcurrency(q, 7)
      yield* Ref.set(concurrency, 3)
      // (no setting is left to read: the reader waits for the next reconfigure, no round comes)
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 7, "the pushed value stays")
      yield* worker.reconfigure({ [q]: { concurrency: Ref.get(concurrency) } })
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 3, "read when given")
      yield* Ref.set(concurrency, 4)
      yield* signals.settled
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 4)
      // A reconfigure whose setting cannot be read changes nothing.
      const exit = yield* Effect.exit(worker.reconfigure({ [q]: { concurrency: Effect.fail("no") } }))
      assert.isTrue(Exit.isFailure(exit))
      expect(String(exit)).toContain("the setting could not be read: no")
      yield* Ref.set(concurrency, 6)
      yield* signals.settled
      assert.strictEqual((yield* statusOf(worker, q)).concurrency, 6, "the old config, still read")
    }))

  it.effect("retention read at run time: the jobs finished after a change get its prune_at", () =>
    Effect.gen(function*() {
      const signals = yield* roundSignals
      const probe = yield* makeProbe
      const retention = yield* Ref.make<Source<Duration.Input>>("2 hours")
      const Kept = Job.make("settings-kept", { args: Schema.Struct({}), queue: q, retention: "1 hour" })
      yield* startWorker(
        { queues: { [q]: {} }, retention: fromSource(retention), settingsInterval: "10 millis", pruner: false },
        Layer.mergeAll(Job.toLayer(Kept, () => Effect.void), signals.layer, probe.layer)
      )
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      /** Runs one job to completion; how long it is kept (ms; null: forever; undefined: deleted). */
      const runOne = Effect.gen(function*() {
        const id = yield* jobs.enqueue(Kept, {})
        assert.strictEqual((yield* probe.next(id))._tag, "completed")
        return { id, kept: yield* keptFor(id) }
      })
      const keptFor = (id: string) =>
        Effect.map(
          sql<{ readonly ms: number | null }>`
            SELECT (EXTRACT(EPOCH FROM prune_at - finalized_at) * 1000)::float8 AS ms FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
          (rows) => rows.length === 0 ? undefined : rows[0]!.ms
        )
      const hours = (n: number) => n * 3_600_000

      const first = yield* runOne
      assert.strictEqual(first.kept, hours(2), "the worker's retention, over the job's own hour")

      yield* Ref.set(retention, "5 minutes")
      yield* signals.settled
      assert.strictEqual((yield* runOne).kept, 300_000)
      assert.strictEqual(yield* keptFor(first.id), hours(2), "a job finished before the change keeps its prune_at")

      yield* Ref.set(retention, { fail: "settings store unreachable" })
      yield* signals.settled
      expect(probe.workerErrors).toContain(
        "*: retention: the setting could not be read: settings store unreachable; keeping the value in force"
      )
      assert.strictEqual((yield* runOne).kept, 300_000, "the last good value")

      yield* Ref.set(retention, -1000)
      yield* signals.settled
      expect(probe.workerErrors.at(-1)).toContain("retention must be a duration of 0 or more")
      assert.strictEqual((yield* runOne).kept, 300_000)

      yield* Ref.set(retention, 0)
      yield* signals.settled
      assert.strictEqual((yield* runOne).kept, undefined, "retention 0: deleted as it completed")

      yield* Ref.set(retention, Duration.infinity)
      yield* signals.settled
      assert.strictEqual((yield* runOne).kept, null, "kept forever: no prune_at")

      // Beyond the bigint range of the statement: capped at 100,000 years, as a job's own is
      // (uncapped, the finish statement was refused and the outcome given up: the run hung).
      yield* Ref.set(retention, Duration.days(1e12))
      yield* signals.settled
      assert.strictEqual((yield* runOne).kept, 3_153_600_000_000_000)
    }))

  it.effect("the reader runs on Effect's Clock: on a TestClock, a change is read when the clock moves", () =>
    withTestClock(
      startOfNextSecond(),
      Effect.gen(function*() {
        const signals = yield* roundSignals
        const concurrency = yield* Ref.make(1)
        const worker = workerOf(
          yield* startWorker(
            { queues: { [q]: { concurrency: Ref.get(concurrency) } }, settingsInterval: "1 hour", pruner: false },
            Layer.mergeAll(Job.toLayer(Hold, () => Effect.void), signals.layer)
          )
        )
        yield* Ref.set(concurrency, 4)
        assert.isTrue(Option.isNone(yield* signals.poll), "no round before the TestClock moves")
        // The TestClock moved an hour at a time: the round it wakes reads 4 (on the real clock
        // an hour's interval would not end within the test's timeout).
        yield* advanceUntil(signals.poll, { step: "1 hour" })
        assert.strictEqual((yield* statusOf(worker, q)).concurrency, 4)
      })
    ))

  it.effect("at startup, a setting that cannot be read or is invalid fails the layer with InvalidWorkerConfig", () =>
    Effect.gen(function*() {
      const handlers = Job.toLayer(Hold, () => Effect.void)
      const build = (options: Worker.Options) => Effect.scoped(Effect.exit(startWorker(options, handlers)))
      const failure = (exit: Exit.Exit<unknown, unknown>) => {
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
        assert.instanceOf(error, InvalidWorkerConfig)
        return (error as InvalidWorkerConfig).message
      }
      expect(failure(yield* build({ queues: { [q]: { concurrency: Effect.succeed(0) } } })))
        .toBe(`queue "${q}": concurrency must be an integer in [1, 10000], got 0`)
      expect(failure(yield* build({ queues: { [q]: { concurrency: Effect.fail(new Error("store down")) } } })))
        .toBe(`queue "${q}": concurrency: the setting could not be read: store down`)
      expect(failure(yield* build({ queues: { [q]: {} }, retention: Effect.succeed(-5) })))
        .toContain("retention must be a duration of 0 or more")
      expect(failure(yield* build({ queues: { [q]: {} }, settingsInterval: 0 })))
        .toContain("settingsInterval must be a finite, positive duration")

      // An `effect/Config` is a setting too, read from the worker's ConfigProvider.
      const fromConfig: Worker.Options = { queues: { [q]: { concurrency: Config.Int("SETTINGS_TEST_CONCURRENCY") } }, pruner: false }
      expect(failure(yield* build(fromConfig).pipe(
        Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnvRecord({}))
      ))).toContain(`queue "${q}": concurrency: the setting could not be read`)
      const status = yield* Effect.scoped(
        Effect.flatMap(startWorker(fromConfig, handlers), (context) => statusOf(workerOf(context), q))
      ).pipe(Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnvRecord({ SETTINGS_TEST_CONCURRENCY: "3" })))
      assert.strictEqual(status.concurrency, 3)
    }))
})
