/**
 * A Prometheus scrape endpoint with Effect's own exporter and Node's `http` server.
 *
 * `PrometheusMetrics.layerHttp()` (from `effect/observability`) registers
 * `GET /metrics` on an Effect `HttpRouter`, rendering every metric of the
 * process's metric registry in the Prometheus text format. `effect` alone has
 * no Node HTTP server (that is `@effect/platform-node`), so the router is turned
 * into a Web handler (`HttpRouter.toWebHandler`) and served by `node:http`
 * through a ten-line adapter. With `@effect/platform-node` installed you would
 * serve the same layer with `NodeHttpServer.layer` instead.
 */
import { Effect } from "effect"
import { HttpRouter } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

/** Serves `/metrics` on `port` (0: any free port) while the scope is open; returns its URL. */
export const servePrometheus = (port = 0) =>
  Effect.gen(function*() {
    const app = yield* Effect.acquireRelease(
      Effect.sync(() => HttpRouter.toWebHandler(PrometheusMetrics.layerHttp({ path: "/metrics" }), { disableLogger: true })),
      (app) => Effect.promise(() => app.dispose())
    )
    const adapter = (req: IncomingMessage, res: ServerResponse) => {
      const headers = new Headers()
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === "string") headers.set(name, value)
      }
      app.handler(new Request(`http://localhost${req.url ?? "/"}`, { method: req.method ?? "GET", headers }))
        .then(async (response) => {
          res.writeHead(response.status, Object.fromEntries(response.headers))
          res.end(Buffer.from(await response.arrayBuffer()))
        })
        .catch((error: unknown) => {
          res.writeHead(500)
          res.end(String(error))
        })
    }
    const server = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof createServer>>((resume) => {
        const s = createServer(adapter)
        s.listen(port, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) => Effect.callback<void>((resume) => {
        s.closeAllConnections()
        s.close(() => resume(Effect.void))
      })
    )
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`
  })

/** GETs a URL as text. */
export const scrape = (url: string) =>
  Effect.promise(async () => {
    const response = await fetch(url)
    return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
  })

/** One sample of a scrape: `name{labels} value`. */
export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

/** Parses the sample lines of a Prometheus text exposition (comments skipped). */
export const parse = (text: string): ReadonlyArray<Sample> =>
  text.split("\n").flatMap((line) => {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) return []
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    return [{ name: m[1]!, labels, value: Number(m[3]) }]
  })

/** The value of the sample with this name whose labels include `labels` (undefined if none). */
export const valueOf = (samples: ReadonlyArray<Sample>, name: string, labels: Readonly<Record<string, string>>) =>
  samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value
