/** Serving `Dashboard.layer` on a free port of 127.0.0.1 for a test, on the test's database. */
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"
import { Dashboard } from "../../src/entry/dashboard.ts"
import * as JobsAdmin from "../../src/JobsAdmin.ts"
import { JobStore } from "../../src/internal/Store.ts"

/** The server layer a test (or `effect-jobs dashboard`) builds: the dashboard alone in an app. */
export const serverLayer = (options: Dashboard.Options, mount?: { readonly app: Layer.Layer<never, never, HttpRouter.HttpRouter> }) =>
  HttpRouter.serve(mount === undefined ? Dashboard.layer(options) : Layer.mergeAll(Dashboard.layer(options), mount.app), {
    disableLogger: true,
    disableListenLog: true
  }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
    Layer.provide(JobsAdmin.layer)
  )

/**
 * Runs `f` with the base URL (`http://127.0.0.1:<port>`) of a dashboard started with
 * `options`; the server stops when `f` ends.
 */
export const withDashboard = <A, E, R>(
  options: Dashboard.Options,
  f: (base: string) => Effect.Effect<A, E, R>,
  mount?: { readonly app: Layer.Layer<never, never, HttpRouter.HttpRouter> }
) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(serverLayer(options, mount))
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag === "UnixPathAddress") return yield* Effect.die("the dashboard is not on TCP")
    return yield* f(`http://127.0.0.1:${address.port}`)
  }))

export interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly body: any
}

/** One request with `fetch`; the body parsed as JSON when it is JSON. */
export const call = (url: string, init: RequestInit = {}) =>
  Effect.promise(async (): Promise<Reply> => {
    const res = await fetch(url, init)
    const text = await res.text()
    let body: unknown = text
    if ((res.headers.get("content-type") ?? "").includes("json") && text !== "") body = JSON.parse(text)
    return { status: res.status, headers: res.headers, body }
  })

/**
 * Claims every available job of `queue` and ends it `dead` with an error entry, through
 * the store, as a worker whose handler failed its last attempt would. Returns the ids.
 */
export const killAll = (queue: string) =>
  Effect.gen(function*() {
    const store = yield* JobStore
    const now = Date.now()
    const claimed = yield* store.jobClaim({ queue, limit: 1000, now, leaseMillis: 60_000, workerId: "test" })
    yield* store.jobFinishMany(
      claimed.map((r) => ({
        id: r.id,
        token: r.claim_count,
        state: "dead" as const,
        run_at: null,
        attempt_delta: 0,
        result: null,
        error: { attempt: r.attempt, at: new Date(now).toISOString(), kind: "Boom", message: `boom ${r.id}` }
      })),
      now
    )
    return claimed.map((r) => r.id)
  })

/** Claims every available job of `queue` (it is `running` then, held by worker "test"). */
export const claimAll = (queue: string) =>
  Effect.flatMap(JobStore, (store) =>
    Effect.map(
      store.jobClaim({ queue, limit: 1000, now: Date.now(), leaseMillis: 60_000, workerId: "test" }),
      (rows) => rows.map((r) => r.id)
    ))
