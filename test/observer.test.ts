/**
 * The Observer as metrics and logging layers, checked from the outside: a known
 * mix of outcomes is scraped from a Prometheus endpoint served by Effect's own
 * exporter; the jobs-per-state gauge is sampled from the table; the default
 * observers and the user's own all see every event; each run is one span,
 * child of the span that enqueued the job; and the handler middleware stack.
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Clock, Deferred, Duration, Effect, Layer, Logger, Metric, Option, Queue, Redacted, References, Schedule, Schema, Tracer } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { parse, scrape, servePrometheus, valueOf } from "../examples/support/prometheus.ts"
import { Job, Jobs, Metrics, Observer, RequestId } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { advanceUntil, makeProbe, startOfNextSecond, waitFor, withTestClock } from "./support/probes.ts"

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { message: Schema.String }) {}

const q = "obs-mix"
const Ok = Job.make("obs-ok", { args: Schema.Struct({ n: Schema.Number }), queue: q })
const FlakyJob = Job.make("obs-flaky", { args: Schema.Struct({}), queue: q, retry: Schedule.spaced("1 millis") })
const Poison = Job.make("obs-poison", { args: Schema.Struct({}), queue: q, maxAttempts: 1 })
const Cancelling = Job.make("obs-cancel", { args: Schema.Struct({}), queue: q })
const Sleepy = Job.make("obs-snooze", { args: Schema.Struct({}), queue: q })

const Handlers = Layer.mergeAll(
  Job.toLayer(Ok, () => Effect.void),
  Job.toLayer(FlakyJob, (_args, ctx) => ctx.attempt === 1 ? Effect.fail(new Flaky({ message: "first try" })) : Effect.void),
  Job.toLayer(Poison, () => Effect.fail(new Flaky({ message: "always" }))),
  Job.toLayer(Cancelling, () => Job.cancel("not wanted")),
  Job.toLayer(Sleepy, (_args, ctx) => ctx.runs === 1 ? Job.snooze("1 millis") : Effect.void)
)

/** A pool of its own, with an application name, so the test can find (and cut) the worker's connections. */
const namedPool = (applicationName: string) =>
  Layer.fresh(Layer.unwrap(Effect.map(TestDb.TestDb, ({ url }) =>
    PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections: 6 }))))

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))

layer(TestLayer, { excludeTestServices: true })("observer", (it) => {
  it.effect("metrics: a known mix of outcomes, scraped from the Prometheus endpoint", () =>
    Effect.gen(function*() {
      const probe = yield* makeProbe
      const workerErrors = yield* Queue.unbounded<string>()
      const errorProbe = Observer.add({ ...Observer.noop, workerError: (_q, message) => Queue.offer(workerErrors, message) })
      // The default observers (metrics + logging), then two of the test's own on top.
      const observers = errorProbe.pipe(Layer.provide(probe.layer), Layer.provide(Observer.layer))
      // A memo map of its own: otherwise the worker would reuse the JobStore (and so the pool)
      // that the test layer built for Jobs.layer, and not the named pool.
      yield* startWorker(
        { queues: { [q]: { concurrency: 4, pollInterval: "20 millis" } }, maintenanceInterval: "20 millis", pruner: false },
        Layer.mergeAll(Handlers, observers).pipe(Layer.provideMerge(namedPool("obs-worker")))
      ).pipe(
        Effect.provideService(Layer.CurrentMemoMap, Layer.makeMemoMapUnsafe()),
        Effect.provide(Logger.layer([])) // the logging observer runs, quietly
      )
      const url = yield* servePrometheus()

      const jobs = yield* Jobs.Jobs
      const ok = yield* jobs.enqueueMany(Ok, [{ n: 1 }, { n: 2 }, { n: 3 }])
      const flaky = yield* jobs.enqueue(FlakyJob, {})
      const poison = yield* jobs.enqueue(Poison, {})
      const cancelled = yield* jobs.enqueue(Cancelling, {})
      const snoozed = yield* jobs.enqueue(Sleepy, {})
      for (const id of ok) assert.strictEqual((yield* probe.next(id))._tag, "completed")
      assert.deepStrictEqual([(yield* probe.next(flaky))._tag, (yield* probe.next(flaky))._tag], ["retryScheduled", "completed"])
      assert.strictEqual((yield* probe.next(poison))._tag, "dead")
      assert.strictEqual((yield* probe.next(cancelled))._tag, "cancelled")
      assert.deepStrictEqual([(yield* probe.next(snoozed))._tag, (yield* probe.next(snoozed))._tag], ["rescheduled", "completed"])

      // A worker error: cut the worker's LISTEN session (one for new jobs and cancel requests).
      const sql = yield* SqlClient.SqlClient
      const cut = yield* sql<{ readonly n: number }>`
        SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE application_name = 'obs-worker' AND query LIKE 'LISTEN%'`
      assert.strictEqual(cut[0]?.n, 1)
      expect(yield* Queue.take(workerErrors)).toContain("LISTEN")

      const response = yield* scrape(url)
      assert.strictEqual(response.status, 200)
      expect(response.contentType).toContain("text/plain")
      const samples = parse(response.body)
      const value = (name: string, job: string, extra: Record<string, string> = {}) =>
        valueOf(samples, name, { queue: q, job_name: job, ...extra })
      const expected: ReadonlyArray<[string, string, number]> = [
        ["effect_jobs_started_total", "obs-ok", 3],
        ["effect_jobs_started_total", "obs-flaky", 2],
        ["effect_jobs_started_total", "obs-snooze", 2],
        ["effect_jobs_completed_total", "obs-ok", 3],
        ["effect_jobs_completed_total", "obs-flaky", 1],
        ["effect_jobs_completed_total", "obs-snooze", 1],
        ["effect_jobs_retried_total", "obs-flaky", 1],
        ["effect_jobs_rescheduled_total", "obs-snooze", 1],
        ["effect_jobs_dead_total", "obs-poison", 1],
        ["effect_jobs_cancelled_total", "obs-cancel", 1]
      ]
      for (const [name, job, n] of expected) assert.strictEqual(value(name, job), n, `${name}{job_name="${job}"}`)
      for (const name of ["effect_jobs_completed_total", "effect_jobs_retried_total", "effect_jobs_dead_total"]) {
        assert.strictEqual(value(name, "obs-cancel"), undefined, `${name} has no series for a job that never had that outcome`)
      }
      assert.strictEqual(valueOf(samples, "effect_jobs_worker_errors_total", { queue: "*" }), 1)
      // The run-duration histogram: one observation per run, by outcome.
      const histogramCount = (job: string, outcome: string) =>
        value("effect_jobs_run_duration_seconds_count", job, { outcome })
      assert.strictEqual(histogramCount("obs-ok", "completed"), 3)
      assert.strictEqual(histogramCount("obs-flaky", "retried"), 1)
      assert.strictEqual(histogramCount("obs-flaky", "completed"), 1)
      assert.strictEqual(histogramCount("obs-poison", "dead"), 1)
      assert.strictEqual(histogramCount("obs-cancel", "cancelled"), 1)
      assert.strictEqual(histogramCount("obs-snooze", "rescheduled"), 1)
      assert.strictEqual(value("effect_jobs_run_duration_seconds_bucket", "obs-ok", { outcome: "completed", le: "+Inf" }), 3)
      expect(response.body).toContain("# TYPE effect_jobs_completed_total counter")
      expect(response.body).toContain("# TYPE effect_jobs_run_duration_seconds histogram")
    }))

  it.effect("the jobs-per-state gauge is sampled from the table (every state of a queue, 0 where empty)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      yield* jobs.enqueueMany(Ok, [{ n: 1 }, { n: 2 }], { queue: "obs-gauge" })
      yield* jobs.enqueue(Ok, { n: 3 }, { queue: "obs-gauge", delay: "1 hour" })
      // The first sample is taken while the layer is built (released with the test's scope,
      // whether the assertions pass or not).
      yield* Layer.build(Observer.metricsWith({ sampleInterval: "1 hour" }))
      const samples = parse((yield* scrape(yield* servePrometheus())).body)
      const gauge = (state: string) => valueOf(samples, "effect_jobs_jobs", { queue: "obs-gauge", state })
      assert.strictEqual(gauge("available"), 2)
      assert.strictEqual(gauge("scheduled"), 1)
      assert.strictEqual(gauge("running"), 0)
      assert.strictEqual(gauge("completed"), 0)
      assert.strictEqual(gauge("dead"), 0)
    }).pipe(Effect.scoped))

  it.effect("the jobs-per-state gauge is sampled again every sampleInterval on the Clock (a state that empties reads 0)", () => {
    const start = startOfNextSecond()
    const interval = 60_000
    const queue = "obs-gauge-resample"
    const states = ["scheduled", "available", "running", "completed", "dead", "cancelled"] as const
    /** The gauge's current value for every state of the queue, as the registry holds it. */
    const gauge = Effect.map(
      Effect.forEach(states, (state) => Metric.value(Metric.withAttributes(Metrics.jobs, { queue, state }))),
      (values) => Object.fromEntries(states.map((state, i) => [state, values[i]!.value]))
    )
    const counts = (c: Partial<Record<(typeof states)[number], number>>) =>
      Object.fromEntries(states.map((state) => [state, c[state] ?? 0]))
    const same = (a: Record<string, number>, b: Record<string, number>) => states.every((state) => a[state] === b[state])
    /**
     * Moves the clock to 1 ms before `due` in 1-second steps, each leaving real time for the SQL of
     * a sample the step would have started: the gauge must read `before` all the way.
     */
    const unchangedUntil = (due: number, before: Record<string, number>) =>
      Effect.gen(function*() {
        const seen = yield* advanceUntil(
          Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            const g = yield* gauge
            return !same(g, before) || now >= due - 1 ? Option.some({ now, gauge: g }) : Option.none()
          }),
          { step: "1 second", limit: due - 1 }
        )
        assert.deepStrictEqual(seen, { now: due - 1, gauge: before }, "not sampled before the interval elapsed")
      })
    /** Waits (real time, bounded) for the sample the clock just made due: the gauge differs from `before`. */
    const resampled = (before: Record<string, number>) =>
      TestClock.withLive(waitFor(
        "the gauge to be sampled again once the interval elapsed",
        Effect.map(gauge, (g) => (same(g, before) ? Option.none() : Option.some(g))),
        { timeout: "5 seconds" }
      ))
    return withTestClock(
      start,
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const sql = yield* SqlClient.SqlClient
        yield* jobs.enqueueMany(Ok, [{ n: 1 }, { n: 2 }], { queue })
        yield* jobs.enqueue(Ok, { n: 3 }, { queue, delay: "1 hour" })
        // Built on the TestClock: the first sample now, then one every `interval` of virtual time.
        // A pool of its own that never times out a connect (the clock jumps).
        yield* Layer.build(
          Observer.metricsWith({ sampleInterval: interval }).pipe(
            Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 2, connectTimeout: Duration.infinity })))
          )
        )
        assert.deepStrictEqual(yield* gauge, counts({ available: 2, scheduled: 1 }), "the first sample, at build")

        // The table changes: three more available jobs; the scheduled one is moved to dead.
        yield* jobs.enqueueMany(Ok, [{ n: 4 }, { n: 5 }, { n: 6 }], { queue })
        yield* sql`UPDATE effect_jobs.jobs SET state = 'dead', finalized_at = now() WHERE queue = ${queue} AND state = 'scheduled'`

        // Up to 1 ms before the interval elapses, the gauge still shows the first sample.
        yield* unchangedUntil(start + interval, counts({ available: 2, scheduled: 1 }))
        // The interval elapses: the sample runs its SQL (in real time) and the gauge follows the table.
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(
          yield* resampled(counts({ available: 2, scheduled: 1 })),
          counts({ available: 5, dead: 1 }),
          "the new counts; scheduled reads 0 again, not its last count (1)"
        )

        // And it goes on, one sample per interval: the available jobs complete, the dead one is deleted.
        yield* sql`UPDATE effect_jobs.jobs SET state = 'completed', finalized_at = now() WHERE queue = ${queue} AND state = 'available'`
        yield* sql`DELETE FROM effect_jobs.jobs WHERE queue = ${queue} AND state = 'dead'`
        yield* unchangedUntil(start + 2 * interval, counts({ available: 5, dead: 1 }))
        yield* TestClock.adjust(1)
        assert.deepStrictEqual(yield* resampled(counts({ available: 5, dead: 1 })), counts({ completed: 5 }))
      })
    )
  })

  it.effect("a bad sample interval is refused when the layer is defined", () =>
    Effect.sync(() => {
      expect(() => Observer.metricsWith({ sampleInterval: -1 })).toThrow(/sampleInterval must be a finite, positive duration/)
      expect(() => Observer.metricsWith({ sampleInterval: 0 })).toThrow(/sampleInterval/)
      assert.isTrue(Layer.isLayer(Observer.metricsWith({ sampleInterval: false })))
    }))

  it.effect("Observer.layerWith: metrics, logging and the user's observer all see the events", () =>
    Effect.gen(function*() {
      const Logged = Job.make("obs-logged", { args: Schema.Struct({}), queue: "obs-logs", maxAttempts: 1 })
      const lines: Array<{ message: string; level: string; annotations: Record<string, unknown> }> = []
      const capture = Logger.make(({ fiber, logLevel, message }) => {
        lines.push({
          message: String(Array.isArray(message) ? message[0] : message),
          level: logLevel,
          annotations: fiber.getRef(References.CurrentLogAnnotations)
        })
      })
      const mine = yield* Deferred.make<string>()
      yield* startWorker(
        { queues: { "obs-logs": { pollInterval: "20 millis" } }, pruner: false },
        Layer.mergeAll(
          Job.toLayer(Logged, () => Effect.die(new Error("kaboom"))),
          Observer.layerWith({ ...Observer.noop, dead: (_job, reason) => Deferred.succeed(mine, reason) })
        )
      ).pipe(Effect.provide(Logger.layer([capture])))
      const id = yield* (yield* Jobs.Jobs).enqueue(Logged, {})
      expect(yield* Deferred.await(mine)).toContain("kaboom")
      const dead = lines.find((l) => l.message === "job moved to dead")
      assert.isDefined(dead, "the logging observer logged it")
      assert.strictEqual(dead?.level, "Warn")
      assert.deepInclude(dead?.annotations, { jobId: id, job: "obs-logged", queue: "obs-logs" })
      const samples = parse((yield* scrape(yield* servePrometheus())).body)
      assert.strictEqual(valueOf(samples, "effect_jobs_dead_total", { queue: "obs-logs", job_name: "obs-logged" }), 1)
    }))

  it.effect("one span per run, child of the span that enqueued the job", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.NativeSpan> = []
      const tracer = Tracer.make({
        span(options) {
          const span = new Tracer.NativeSpan(options)
          spans.push(span)
          return span
        }
      })
      const Traced = Job.make("obs-traced", { args: Schema.Struct({}), queue: "obs-trace", retry: Schedule.spaced("1 millis") })
      const probe = yield* makeProbe
      const program = Effect.gen(function*() {
        yield* startWorker(
          { queues: { "obs-trace": { pollInterval: "20 millis" } }, maintenanceInterval: "20 millis", pruner: false },
          Layer.mergeAll(
            Job.toLayer(Traced, (_args, ctx) =>
              (ctx.attempt === 1 ? Effect.fail(new Flaky({ message: "once" })) : Effect.void).pipe(Effect.withSpan("handler.inner"))),
            probe.layer
          )
        )
        const id = yield* (yield* Jobs.Jobs).enqueue(Traced, {}).pipe(Effect.withSpan("http.request"))
        assert.strictEqual((yield* probe.next(id))._tag, "retryScheduled")
        assert.strictEqual((yield* probe.next(id))._tag, "completed")
        return id
      })
      const id = yield* program.pipe(Effect.provideService(Tracer.Tracer, tracer))

      const request = spans.find((s) => s.name === "http.request")!
      const enqueue = spans.find((s) => s.name === "Jobs.enqueueAll")!
      assert.strictEqual(enqueue.traceId, request.traceId)
      const runs = spans.filter((s) => s.name === "effect-jobs.run obs-traced")
      assert.strictEqual(runs.length, 2, "one span per run")
      for (const [i, run] of runs.entries()) {
        assert.strictEqual(run.traceId, request.traceId, "same trace as the request that enqueued it")
        assert.strictEqual(run.parent._tag === "Some" ? run.parent.value.spanId : undefined, enqueue.spanId)
        assert.strictEqual(run.kind, "consumer")
        assert.strictEqual(run.attributes.get("job.id"), id)
        assert.strictEqual(run.attributes.get("job.attempt"), i + 1)
        assert.strictEqual(run.status._tag, "Ended")
        // ended with the run's exit: the first attempt failed, the second succeeded
        assert.strictEqual(run.status._tag === "Ended" && run.status.exit._tag, i === 0 ? "Failure" : "Success")
      }
      // spans made inside the handler are children of the run's span
      const inner = spans.filter((s) => s.name === "handler.inner")
      assert.deepStrictEqual(
        inner.map((s) => (s.parent._tag === "Some" ? s.parent.value.spanId : undefined)),
        runs.map((r) => r.spanId)
      )
    }))

  it.effect("the trace context is stored with a job only when a tracer is installed (the native one exports nothing)", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const jobs = yield* Jobs.Jobs
      const Plain = Job.make("obs-trace-stored", { args: Schema.Struct({}), queue: "obs-trace-stored" })
      const traceOf = (id: string) =>
        Effect.map(sql<{ readonly trace: unknown }>`SELECT trace FROM effect_jobs.jobs WHERE id = ${id}::bigint`, (r) => r[0]?.trace)
      // effect's default, nativeTracer: spans exist in the process, but nothing exports them
      const untraced = yield* jobs.enqueue(Plain, {}).pipe(Effect.withSpan("http.request"))
      assert.isNull(yield* traceOf(untraced))
      const tracer = Tracer.make({ span: (options) => new Tracer.NativeSpan(options) })
      const traced = yield* jobs.enqueue(Plain, {}).pipe(Effect.withSpan("http.request"), Effect.provideService(Tracer.Tracer, tracer))
      const stored = (yield* traceOf(traced)) as { traceId?: unknown; spanId?: unknown } | null
      assert.isString(stored?.traceId)
      assert.isString(stored?.spanId)
    }))

  it.effect("middleware wraps every run inside the default stack; defaultMiddleware: false turns the stack off", () =>
    Effect.gen(function*() {
      const Wrapped = Job.make("obs-wrapped", { args: Schema.Struct({}), queue: "obs-mw" })
      const Bare = Job.make("obs-bare", { args: Schema.Struct({}), queue: "obs-mw-bare" })
      const seen = yield* Queue.unbounded<string>()
      const spans: Array<string> = []
      const tracer = Tracer.make({
        span(options) {
          spans.push(options.name)
          return new Tracer.NativeSpan(options)
        }
      })
      const middleware = (run: Effect.Effect<unknown, unknown>, job: Job.JobContext) =>
        Effect.gen(function*() {
          const requestId = yield* RequestId.RequestId
          yield* Queue.offer(seen, `before ${job.name}#${job.attempt} request=${requestId ?? "none"}`)
          const value = yield* run
          yield* Queue.offer(seen, `after ${job.name}`)
          return value
        })
      const handler = (label: string) => Effect.flatMap(RequestId.RequestId, (r) => Queue.offer(seen, `${label} request=${r ?? "none"}`))
      yield* Effect.gen(function*() {
        yield* startWorker(
          { queues: { "obs-mw": {} }, middleware: [middleware], pruner: false },
          Job.toLayer(Wrapped, () => handler("handler"))
        )
        yield* startWorker(
          { queues: { "obs-mw-bare": {} }, defaultMiddleware: false, pruner: false },
          Job.toLayer(Bare, () => handler("bare handler"))
        )
        const jobs = yield* Jobs.Jobs
        yield* jobs.enqueue(Wrapped, {}).pipe(Effect.provideService(RequestId.RequestId, "req-1"))
        assert.deepStrictEqual(
          [yield* Queue.take(seen), yield* Queue.take(seen), yield* Queue.take(seen)],
          ["before obs-wrapped#1 request=req-1", "handler request=req-1", "after obs-wrapped"]
        )
        yield* jobs.enqueue(Bare, {}).pipe(Effect.provideService(RequestId.RequestId, "req-2"))
        assert.strictEqual(yield* Queue.take(seen), "bare handler request=none", "no request id without the default stack")
      }).pipe(Effect.provideService(Tracer.Tracer, tracer))
      assert.include(spans, "effect-jobs.run obs-wrapped")
      assert.notInclude(spans, "effect-jobs.run obs-bare", "no run span without the default stack")
    }))
})

describe("Observer.combine", () => {
  const job = { id: "1", name: "obs-combine", queue: "q", attempt: 1, maxAttempts: 1 }
  it("a side that does nothing on an event adds no step (the worker skips an event nobody observes)", () => {
    const order: Array<string> = []
    const mark = Effect.sync(() => void order.push("mine"))
    const mine: Observer.Events = { ...Observer.noop, completed: () => mark }
    // the default observer (worker errors logged) plus one that observes only `completed`
    const combined = Observer.combine(Observer.defaults, mine)
    assert.strictEqual(combined.started(job), Effect.void, "nobody observes `started`: no step")
    assert.strictEqual(combined.completed(job, 1), mark, "only one side observes `completed`: its effect alone")
    // two sides that both observe: both run, left first
    const theirs: Observer.Events = { ...Observer.noop, completed: () => Effect.sync(() => void order.push("theirs")) }
    Effect.runSync(Observer.combine(combined, theirs).completed(job, 1))
    assert.deepStrictEqual(order, ["mine", "theirs"])
  })
})

describe("Observer.metricsEvents", () => {
  const job = { id: "1", name: "obs-series", queue: "obs-series-q", attempt: 1, maxAttempts: 1, runMillis: 20 }
  /** The series of `id` in a fresh registry, as attributes and state. */
  const seriesOf = (id: string) =>
    Effect.map(Metric.snapshot, (all) => all.filter((s) => s.id === id).map((s) => ({ attributes: s.attributes, state: s.state })))
  const fresh = <A>(effect: Effect.Effect<A>) => Effect.provideService(effect, Metric.MetricRegistry, new Map())

  it("updates the same series as Metric.withAttributes on the definitions of src/Metrics.ts", () => {
    const events = Observer.metricsEvents()
    const [started, durations] = Effect.runSync(fresh(Effect.gen(function*() {
      yield* events.started(job)
      yield* events.completed(job, 20)
      // the series as a user would address them from the public definitions
      const attributes = { queue: job.queue, job_name: job.name }
      yield* Metric.update(Metric.withAttributes(Metrics.started, attributes), 1)
      yield* Metric.update(Metric.withAttributes(Metrics.runDuration, { ...attributes, outcome: "completed" }), 0.02)
      return [yield* seriesOf("effect_jobs_started_total"), yield* seriesOf("effect_jobs_run_duration_seconds")]
    })))
    assert.deepStrictEqual(started, [{ attributes: { job_name: job.name, queue: job.queue }, state: { count: 2, incremental: true } }])
    assert.strictEqual(durations.length, 1, "one histogram series")
    assert.strictEqual((durations[0]!.state as { readonly count: number }).count, 2)
  })

  it("the context's own metric attributes are kept, and ours win where they name the same", () => {
    const events = Observer.metricsEvents()
    const run = (context: Readonly<Record<string, string>>) =>
      Effect.runSync(fresh(Effect.andThen(events.started(job), seriesOf("effect_jobs_started_total")).pipe(
        Effect.provideService(Metric.CurrentMetricAttributes, context)
      )))
    assert.deepStrictEqual(run({ service: "api" }), [
      { attributes: { job_name: job.name, queue: job.queue, service: "api" }, state: { count: 1, incremental: true } }
    ])
    assert.deepStrictEqual(run({ service: "api", queue: "theirs" }), [
      { attributes: { job_name: job.name, queue: job.queue, service: "api" }, state: { count: 1, incremental: true } }
    ])
  })
})
