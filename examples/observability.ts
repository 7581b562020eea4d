/**
 * Metrics for Prometheus while jobs run.
 *
 * `Observer.layer` (metrics + logging) given to the worker keeps Effect `Metric`s
 * up to date: counters per outcome, a run-duration histogram, worker errors, and
 * a jobs-per-state gauge sampled from the table. Effect's own Prometheus exporter
 * (`PrometheusMetrics` in `effect/observability`) renders them at `/metrics`,
 * served here by Node's `http` (see support/prometheus.ts). The example runs a
 * mix of jobs, then scrapes its own endpoint and prints what Prometheus would see.
 *
 *   node examples/observability.ts            (DATABASE_URL, or an embedded Postgres)
 *   PORT=9464 KEEP_SERVING=1 node examples/observability.ts   then: curl localhost:9464/metrics
 */
import { Console, Effect, Layer, Schedule, Schema } from "effect"
import { Job, Jobs, Observer, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import { parse, scrape, servePrometheus, valueOf } from "./support/prometheus.ts"

class Unavailable extends Schema.TaggedError<Unavailable>()("Unavailable", { message: Schema.String }) {}

const RenderReport = Job.make("render-report", { args: Schema.Struct({ id: Schema.Number }), queue: "reports" })
// Fails on its first attempt, then succeeds.
const SyncCrm = Job.make("sync-crm", {
  args: Schema.Struct({ contact: Schema.String }),
  queue: "reports",
  retry: Schedule.spaced("100 millis")
})
// Always fails: dead after two attempts.
const ParseUpload = Job.make("parse-upload", {
  args: Schema.Struct({ file: Schema.String }),
  queue: "reports",
  maxAttempts: 2,
  retry: Schedule.spaced("100 millis")
})

const Handlers = Layer.mergeAll(
  Job.toLayer(RenderReport, (args) => Effect.sleep(`${10 * args.id} millis`)),
  Job.toLayer(SyncCrm, (_args, ctx) => ctx.attempt === 1 ? Effect.fail(new Unavailable({ message: "CRM is down" })) : Effect.void),
  Job.toLayer(ParseUpload, (args) => Effect.fail(new Unavailable({ message: `${args.file} is not a CSV` })))
)

// The default observers are `Observer.layer`: metrics and logging. Here the same two, with the
// jobs-per-state gauge sampled every 100 ms instead of every 15 s, so this short run shows it.
// (`Observer.layerWith(mine)` adds an observer of your own on top of the defaults.)
const Observers = Observer.logging.pipe(Layer.provide(Observer.metricsWith({ sampleInterval: "100 millis" })))

const WorkerLive = Worker.layer({ queues: { reports: { concurrency: 4, pollInterval: "100 millis" } }, maintenanceInterval: "50 millis" })
  .pipe(Layer.provide([Handlers, Observers]))

const program = Effect.gen(function*() {
  const url = yield* servePrometheus(Number(process.env.PORT ?? 0))
  yield* Console.log(`serving Prometheus metrics at ${url}`)

  const jobs = yield* Jobs.Jobs
  const reports = yield* jobs.enqueueMany(RenderReport, [1, 2, 3, 4, 5].map((id) => ({ id })))
  const crm = yield* jobs.enqueue(SyncCrm, { contact: "ada@example.com" })
  const upload = yield* jobs.enqueue(ParseUpload, { file: "photo.jpg" })
  for (const id of reports) yield* jobs.await(RenderReport, id, { timeout: "30 seconds" })
  yield* jobs.await(SyncCrm, crm, { timeout: "30 seconds" })
  const dead = yield* Effect.flip(jobs.await(ParseUpload, upload, { timeout: "30 seconds" }))
  yield* check(dead._tag === "JobDead", "parse-upload ends dead")

  const { body } = yield* scrape(url)
  yield* Console.log(`\nGET ${url} (the effect_jobs_* series, histogram buckets left out):`)
  for (const line of body.split("\n")) {
    if (line.startsWith("effect_jobs_") && !line.includes("_bucket")) yield* Console.log(`  ${line}`)
  }
  const samples = parse(body)
  const value = (name: string, job: string) => valueOf(samples, name, { queue: "reports", job_name: job })
  yield* check(value("effect_jobs_completed_total", "render-report") === 5, "5 reports completed")
  yield* check(value("effect_jobs_retried_total", "sync-crm") === 1, "sync-crm retried once")
  yield* check(value("effect_jobs_dead_total", "parse-upload") === 1, "parse-upload dead once")
  yield* Console.log(`\nscraped: effect_jobs_completed_total{queue="reports",job_name="render-report"} ${value("effect_jobs_completed_total", "render-report")}`)

  if (process.env.KEEP_SERVING === "1") {
    yield* Console.log("serving until the example's 60 s limit (Ctrl-C to stop)")
    yield* Effect.never
  }
})

runMain(program.pipe(Effect.scoped, Effect.provide(WorkerLive), Effect.provide(Jobs.layer)))
