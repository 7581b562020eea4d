/**
 * Traces and metrics over OTLP, with Effect's own exporter (`Otlp` in `effect/observability`).
 *
 * Every job run is a span (`effect-jobs.run <job name>`, kind consumer) whose
 * parent is the span that enqueued the job, even across processes: the trace
 * context is stored with the job. With `Observer.layer` the job metrics are
 * exported too. All it takes is `Otlp.layerJson(...)` (plus an `HttpClient`)
 * under the worker and the client.
 *
 * By default the example starts a small collector stub on a free port and shows
 * what it received; with OTEL_EXPORTER_OTLP_ENDPOINT set (e.g. http://localhost:4318)
 * it sends to your collector instead. Then it points the exporter at a port where
 * nothing listens, to show that a missing collector does not fail the jobs.
 *
 *   node examples/otlp.ts                    (DATABASE_URL, or an embedded Postgres)
 */
import { Console, Effect, Layer, Schema } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp } from "effect/observability"
import { Job, Jobs, Observer, Worker } from "effect-jobs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { check, runMain } from "./support/database.ts"

const SendInvoice = Job.make("send-invoice", {
  args: Schema.Struct({ order: Schema.String }),
  success: Schema.Struct({ invoice: Schema.String }),
  queue: "billing"
})

const Handlers = Job.toLayer(SendInvoice, (args) =>
  Effect.succeed({ invoice: `inv-${args.order}` }).pipe(Effect.withSpan("render-pdf")))

/** The OTLP/HTTP (JSON) exporter for traces, metrics and logs, sending to `baseUrl`. */
const OtlpLive = (baseUrl: string) =>
  Otlp.layerJson({
    baseUrl,
    resource: { serviceName: "effect-jobs-example", serviceVersion: "0.1.0" },
    tracerExportInterval: "200 millis",
    metricsExportInterval: "200 millis",
    shutdownTimeout: "2 seconds"
  }).pipe(Layer.provide(FetchHttpClient.layer))

// -- a collector stub: records what is POSTed to /v1/traces and /v1/metrics ----------------------

interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
}

const collectorStub = Effect.acquireRelease(
  Effect.callback<{ readonly url: string; readonly spans: Array<OtlpSpan>; readonly metrics: Set<string>; readonly close: () => void }>(
    (resume) => {
      const spans: Array<OtlpSpan> = []
      const metrics = new Set<string>()
      const server = createServer((req, res) => {
        let body = ""
        req.on("data", (chunk) => (body += chunk))
        req.on("end", () => {
          const json = JSON.parse(body || "{}")
          for (const r of json.resourceSpans ?? []) for (const s of r.scopeSpans ?? []) spans.push(...(s.spans ?? []))
          for (const r of json.resourceMetrics ?? []) for (const s of r.scopeMetrics ?? []) for (const m of s.metrics ?? []) metrics.add(m.name)
          res.writeHead(200, { "content-type": "application/json" })
          res.end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
          spans,
          metrics,
          close: () => {
            server.closeAllConnections()
            server.close()
          }
        })))
    }
  ),
  (stub) => Effect.sync(stub.close)
)

// -- the program ---------------------------------------------------------------------------------

/** A worker and a client that both export to `baseUrl`; enqueues three invoices in one "checkout" span. */
const checkout = (baseUrl: string) =>
  Effect.gen(function*() {
    const jobs = yield* Jobs.Jobs
    const ids = yield* jobs.enqueueMany(SendInvoice, [{ order: "A-1" }, { order: "A-2" }, { order: "A-3" }]).pipe(
      Effect.withSpan("checkout")
    )
    for (const id of ids) yield* jobs.await(SendInvoice, id, { timeout: "30 seconds" })
    return ids
  }).pipe(
    Effect.provide(Worker.layer({ queues: { billing: { concurrency: 3 } } }).pipe(Layer.provide([Handlers, Observer.metrics]))),
    Effect.provide(Jobs.layer),
    // Outermost, so the worker and the client are built with its tracer; released last, which flushes.
    Effect.provide(OtlpLive(baseUrl))
  )

const program = Effect.gen(function*() {
  const endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT
  if (endpoint !== undefined) {
    const ids = yield* checkout(endpoint)
    yield* Console.log(`sent the traces and metrics of ${ids.length} jobs to ${endpoint}`)
  } else {
    const stub = yield* collectorStub
    yield* checkout(stub.url)
    const root = stub.spans.find((s) => s.name === "checkout")
    const runs = stub.spans.filter((s) => s.name === "effect-jobs.run send-invoice")
    const inTrace = runs.filter((s) => s.traceId === root?.traceId)
    yield* Console.log(`collector stub at ${stub.url}; spans received:`)
    for (const name of new Set(stub.spans.map((s) => s.name))) {
      yield* Console.log(`  ${name} x${stub.spans.filter((s) => s.name === name).length}`)
    }
    yield* check(root !== undefined && inTrace.length === 3, "each run is in the trace of the checkout that enqueued it")
    yield* check(stub.metrics.has("effect_jobs_completed_total"), "the job metrics were exported")
    yield* Console.log(
      `collector received ${stub.spans.length} spans, ${inTrace.length} of them job runs in the trace of "checkout"; ` +
        `metrics include effect_jobs_completed_total`
    )
  }

  // Nothing listens on port 1: exports fail (and are dropped), the jobs do not.
  const ids = yield* checkout("http://127.0.0.1:1")
  yield* Console.log(`with no collector at all, ${ids.length} more jobs completed`)
})

runMain(program.pipe(Effect.scoped))
