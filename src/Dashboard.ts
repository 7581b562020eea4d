/**
 * Dashboard: a web UI and an HTTP API over `JobsAdmin`, to mount into an Effect
 * HTTP app under a path prefix (as Oban Web mounts into Phoenix), or to run on its
 * own with `effect-jobs dashboard`. See docs/dashboard.md.
 *
 * `Dashboard.layer(options)` adds its routes to the app's `HttpRouter` (under
 * `prefix`): the API under `<prefix>/api` (its OpenAPI document at
 * `<prefix>/api/openapi.json`) and the UI at `<prefix>/`. It needs `JobsAdmin`
 * (so a `PgClient`) and the services `HttpRouter.serve` gets from a platform's
 * HTTP server layer (`NodeHttpServer.layer` provides them).
 *
 * Safe by default: no route changes anything unless the request is same-origin
 * (checked on `Sec-Fetch-Site` and `Origin`, as browsers send them; clients that
 * are not browsers send neither and are not a cross-site risk), `readOnly`
 * refuses every state-changing route with 403, `auth` asks for a bearer token or a
 * user name and password, `hosts` refuses requests whose `Host` is not listed
 * (DNS rebinding), and `hideArgs` hides the arguments and results of the queues
 * that carry personal data. No SQL here: everything goes through `JobsAdmin`.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Option, Redacted, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  OpenApi
} from "effect/http-api"
import { readFileSync } from "node:fs"
import * as JobsAdmin from "./JobsAdmin.ts"

// -- errors: every 4xx is a JSON body `{ _tag, message }` ----------------------------------

/** 400: a query or a name the API cannot use (`message` says which and why). */
export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  message: Schema.String
}, { httpApiStatus: 400 }) {}

/** 401: `auth` is set and the request has no valid credentials. */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}, { httpApiStatus: 401 }) {}

/** 403: a state-changing request in read-only mode, a cross-site request, or a `Host` not allowed. */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", {
  message: Schema.String
}, { httpApiStatus: 403 }) {}

/** 404: no job with that id. */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  message: Schema.String
}, { httpApiStatus: 404 }) {}

/**
 * 409: the job is not in a state the action applies to; `reason` is the tag of
 * `JobsAdmin`'s error (`JobNotRetryable`, `JobAlreadyFinished`, `JobIsRunning`,
 * `JobInPendingBundle`).
 */
export class Conflict extends Schema.TaggedError<Conflict>()("Conflict", {
  reason: Schema.String,
  message: Schema.String
}, { httpApiStatus: 409 }) {}

/** 503: the database failed (the cause is logged on the server, not sent). */
export class DatabaseError extends Schema.TaggedError<DatabaseError>()("DatabaseError", {
  message: Schema.String
}, { httpApiStatus: 503 }) {}

// -- the API's documents --------------------------------------------------------------------

const states = ["scheduled", "available", "running", "completed", "dead", "cancelled"] as const

const StateCounts = Schema.Struct({
  scheduled: Schema.Number,
  available: Schema.Number,
  running: Schema.Number,
  completed: Schema.Number,
  dead: Schema.Number,
  cancelled: Schema.Number
})

const Queue = Schema.Struct({ name: Schema.String, paused: Schema.Boolean, counts: StateCounts })
/** A live worker (`JobsAdmin.workers`); times as ISO text. */
const WorkerJson = Schema.Struct({
  id: Schema.String,
  queues: Schema.Array(Schema.String),
  concurrency: Schema.Number,
  startedAt: Schema.String,
  lastSeenAt: Schema.String,
  jobsHeld: Schema.Number
})

/** One minute of one queue's outcomes (`JobsAdmin.throughput`); `at` is the minute's start, ISO. */
const ThroughputMinuteJson = Schema.Struct({
  at: Schema.String,
  queue: Schema.String,
  completed: Schema.Number,
  retried: Schema.Number,
  dead: Schema.Number,
  cancelled: Schema.Number
})

const JobErrorEntry = Schema.Struct({
  attempt: Schema.Number,
  at: Schema.String,
  kind: Schema.String,
  message: Schema.String
})

const Time = Schema.NullOr(Schema.String)

/** A job as the API sends it: `JobsAdmin.JobDetails` with ISO times (`null` where unset). */
const JobJson = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  queue: Schema.String,
  state: Schema.Literals(states),
  priority: Schema.Number,
  attempt: Schema.Number,
  maxAttempts: Schema.Number,
  runAt: Schema.String,
  /** `null` and `argsHidden: true` for a queue in `hideArgs` (the result is hidden too). */
  args: Schema.Unknown,
  result: Schema.Unknown,
  argsHidden: Schema.Boolean,
  errors: Schema.Array(JobErrorEntry),
  uniqueKey: Schema.NullOr(Schema.String),
  /** `JobsAdmin.JobDetails.uniqueStates` / `uniqueWindow` (ISO) / `group`. */
  uniqueStates: Schema.NullOr(Schema.Array(Schema.String)),
  uniqueWindow: Time,
  group: Schema.NullOr(Schema.String),
  metadata: Schema.Record(Schema.String, Schema.Unknown),
  requestId: Schema.NullOr(Schema.String),
  lockedBy: Schema.NullOr(Schema.String),
  leaseExpiresAt: Time,
  /** `JobsAdmin.JobDetails.buffered`: running, but waiting in its worker's buffer. */
  buffered: Schema.Boolean,
  createdAt: Schema.String,
  attemptedAt: Time,
  finalizedAt: Time,
  pruneAt: Time,
  cancelRequestedAt: Time
})

const adminErrors = [BadRequest, NotFound, Conflict, DatabaseError] as const

/** A periodic schedule (`JobsAdmin.periodic`); times as ISO text, `null` where unknown. */
const PeriodicJson = Schema.Struct({
  name: Schema.String,
  job: Schema.NullOr(Schema.String),
  queue: Schema.NullOr(Schema.String),
  /** `cron "0 3 * * *" UTC` or `every 2s`; `null` for a row no scheduler has registered since migration 0007. */
  schedule: Schema.NullOr(Schema.String),
  cron: Schema.NullOr(Schema.String),
  timeZone: Schema.NullOr(Schema.String),
  everyMillis: Schema.NullOr(Schema.Number),
  lastSlot: Schema.String,
  lastJobId: Schema.NullOr(Schema.String),
  lastJobState: Schema.NullOr(Schema.Literals(states)),
  nextSlots: Schema.Array(Schema.String),
  overdueSince: Time
})

/** A bundle with its progress (`JobsAdmin.bundles`). */
const BundleJson = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  total: Schema.Number,
  done: Schema.Number,
  metadata: Schema.Unknown,
  createdAt: Schema.String,
  finishedAt: Time,
  finishStepDone: Schema.Boolean,
  followUpId: Schema.NullOr(Schema.String)
})

/**
 * Checks every API request before its handler runs: credentials, read-only mode,
 * cross-site requests, allowed hosts. Its implementation is part of `layer`.
 */
export class Guard extends HttpApiMiddleware.Service<Guard>()("effect-jobs/Dashboard/Guard", {
  error: [Unauthorized, Forbidden]
}) {}

const JobIdParam = { id: Schema.String }
const QueueParam = { name: Schema.String }

/** The endpoints of the dashboard's API (paths relative to the mount prefix). */
export class DashboardApiGroup extends HttpApiGroup.make("dashboard")
  .add(
    HttpApiEndpoint.get("config", "/config", {
      success: Schema.Struct({
        readOnly: Schema.Boolean,
        auth: Schema.Literals(["none", "token", "basic"]),
        hiddenQueues: Schema.Array(Schema.String)
      })
    }),
    HttpApiEndpoint.get("queues", "/queues", {
      success: Schema.Struct({ queues: Schema.Array(Queue) }),
      error: adminErrors
    }),
    HttpApiEndpoint.get("throughput", "/throughput", {
      query: {
        /** One queue; every queue when absent or empty. */
        queue: Schema.optional(Schema.String),
        /** The window, 1 to 360 minutes; default 60. */
        minutes: Schema.optional(Schema.String)
      },
      success: Schema.Struct({ minutes: Schema.Array(ThroughputMinuteJson) }),
      error: adminErrors
    }),
    HttpApiEndpoint.get("workers", "/workers", {
      success: Schema.Struct({ workers: Schema.Array(WorkerJson) }),
      error: adminErrors
    }),
    HttpApiEndpoint.get("jobs", "/jobs", {
      query: {
        /** One state, or several separated by commas. */
        state: Schema.optional(Schema.String),
        queue: Schema.optional(Schema.String),
        name: Schema.optional(Schema.String),
        /** A job id or a unique key. */
        q: Schema.optional(Schema.String),
        cursor: Schema.optional(Schema.String),
        limit: Schema.optional(Schema.String),
        order: Schema.optional(Schema.String)
      },
      success: Schema.Struct({ jobs: Schema.Array(JobJson), next: Schema.NullOr(Schema.String) }),
      error: adminErrors
    }),
    HttpApiEndpoint.get("job", "/jobs/:id", { params: JobIdParam, success: JobJson, error: adminErrors }),
    HttpApiEndpoint.post("retry", "/jobs/:id/retry", { params: JobIdParam, success: JobJson, error: adminErrors }),
    HttpApiEndpoint.post("cancel", "/jobs/:id/cancel", {
      params: JobIdParam,
      success: Schema.Struct({ outcome: Schema.Literals(["cancelled", "cancelRequested"]), job: JobJson }),
      error: adminErrors
    }),
    HttpApiEndpoint.delete("delete", "/jobs/:id", {
      params: JobIdParam,
      success: HttpApiSchema.NoContent,
      error: adminErrors
    }),
    HttpApiEndpoint.post("pause", "/queues/:name/pause", {
      params: QueueParam,
      success: HttpApiSchema.NoContent,
      error: adminErrors
    }),
    HttpApiEndpoint.post("resume", "/queues/:name/resume", {
      params: QueueParam,
      success: HttpApiSchema.NoContent,
      error: adminErrors
    }),
    HttpApiEndpoint.post("retryDead", "/queues/:name/retry-dead", {
      params: QueueParam,
      success: Schema.Struct({ retried: Schema.Number }),
      error: adminErrors
    })
  )
  // -- periodic schedules and bundles (read only) --
  .add(
    HttpApiEndpoint.get("periodic", "/periodic", {
      success: Schema.Struct({ schedules: Schema.Array(PeriodicJson) }),
      error: adminErrors
    }),
    HttpApiEndpoint.get("bundles", "/bundles", {
      query: {
        /** `open` (members left) or `finished`. */
        state: Schema.optional(Schema.String),
        name: Schema.optional(Schema.String),
        cursor: Schema.optional(Schema.String),
        limit: Schema.optional(Schema.String)
      },
      success: Schema.Struct({ bundles: Schema.Array(BundleJson), next: Schema.NullOr(Schema.String) }),
      error: adminErrors
    })
  )
  .middleware(Guard)
  .prefix("/api")
{}

/** The dashboard's HTTP API (for `HttpApiClient.make`, or to read its OpenAPI document). */
export class DashboardApi extends HttpApi.make("effect-jobs-dashboard")
  .add(DashboardApiGroup)
  .annotateMerge(OpenApi.annotations({
    title: "effect-jobs dashboard",
    description: "Queues and jobs of an effect-jobs queue: look at them, retry, cancel, delete, pause, resume; its periodic schedules and bundles."
  }))
{}

// -- options ----------------------------------------------------------------------------------

/** Credentials the dashboard asks for. */
export type Auth =
  | { readonly token: string | Redacted.Redacted<string> }
  | { readonly username: string; readonly password: string | Redacted.Redacted<string> }

export interface Options {
  /** Where the dashboard is mounted, e.g. `"/jobs"`; default `""` (the root). */
  readonly prefix?: string | undefined
  /** Refuse every state-changing route (403); default `false`. */
  readonly readOnly?: boolean | undefined
  /**
   * A bearer token (`Authorization: Bearer <token>`, for the API; the UI asks for
   * it) or a user name and password (HTTP basic auth, for the UI and the API).
   * Default: none; then bind the server to a loopback address only.
   */
  readonly auth?: Auth | undefined
  /** Queues whose jobs' arguments and results are never sent (personal data). */
  readonly hideArgs?: ReadonlyArray<string> | undefined
  /**
   * The `Host` names (without port) requests may carry, e.g. `["127.0.0.1",
   * "localhost"]`; others are refused (403), which stops DNS-rebinding attacks on a
   * server bound to loopback. Default: any.
   */
  readonly hosts?: ReadonlyArray<string> | undefined
}

/** A prefix as the router wants it: `""` or `/a/b` (leading slash, no trailing one). */
const normalizePrefix = (prefix: string | undefined): string => {
  const p = (prefix ?? "").trim().replace(/\/+$/, "")
  if (p === "") return ""
  if (!/^\/[A-Za-z0-9._~\-/]*$/.test(p)) {
    throw new Error(`Dashboard: prefix must be a path like "/jobs", got ${JSON.stringify(prefix)}`)
  }
  return p
}

// -- the guard ----------------------------------------------------------------------------------

/** Compares two strings in time that depends on their lengths only. */
const sameSecret = (a: string, b: string): boolean => {
  let diff = a.length ^ b.length
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    diff |= (a.charCodeAt(i % (a.length || 1)) || 0) ^ (b.charCodeAt(i % (b.length || 1)) || 0)
  }
  return diff === 0
}

const reveal = (s: string | Redacted.Redacted<string>): string => (typeof s === "string" ? s : Redacted.value(s))

const safeMethods = new Set(["GET", "HEAD", "OPTIONS"])

/** The host name of a `Host` header (`[::1]:4000` → `[::1]`, `localhost:80` → `localhost`). */
const hostName = (host: string): string => {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d*)?$/.exec(host.trim().toLowerCase())
  return m?.[1] ?? host
}

/**
 * The refusal for a request, if any: `Unauthorized` (with its `WWW-Authenticate`
 * header) or `Forbidden`. `api`: whether the route is the API (a bearer token is
 * asked there only; the UI's files hold no data and ask for the token themselves).
 */
const makeCheck = (options: Options) => {
  const auth = options.auth
  const expected = auth === undefined
    ? undefined
    : "token" in auth
    ? `Bearer ${reveal(auth.token)}`
    : `Basic ${Buffer.from(`${auth.username}:${reveal(auth.password)}`, "utf8").toString("base64")}`
  const hosts = options.hosts?.map((h) => h.toLowerCase())
  return (request: HttpServerRequest.HttpServerRequest, api: boolean):
    | { readonly status: 401 | 403; readonly error: Unauthorized | Forbidden; readonly challenge?: string }
    | undefined =>
  {
    const headers = request.headers
    const host = headers["host"] ?? ""
    if (hosts !== undefined && !hosts.includes(hostName(host))) {
      return {
        status: 403,
        error: new Forbidden({ message: `host ${JSON.stringify(host)} is not one this dashboard answers to` })
      }
    }
    if (auth !== undefined && expected !== undefined && (api || !("token" in auth))) {
      const given = headers["authorization"] ?? ""
      if (!sameSecret(given, expected)) {
        const basic = !("token" in auth)
        return {
          status: 401,
          error: new Unauthorized({
            message: basic ? "this dashboard needs a user name and password" : "this dashboard needs its token: Authorization: Bearer <token>"
          }),
          challenge: basic ? `Basic realm="effect-jobs", charset="UTF-8"` : `Bearer realm="effect-jobs"`
        }
      }
    }
    if (!safeMethods.has(request.method)) {
      if (options.readOnly === true) {
        return { status: 403, error: new Forbidden({ message: "the dashboard is read-only: nothing can be changed from it" }) }
      }
      // Cross-origin protection as browsers allow it (the algorithm of Go's
      // http.CrossOriginProtection): Sec-Fetch-Site when sent, else Origin against Host.
      const site = headers["sec-fetch-site"]
      const origin = headers["origin"]
      const crossSite = site !== undefined
        ? site !== "same-origin" && site !== "none"
        : origin !== undefined && origin !== "null"
        ? (() => {
          try {
            return new URL(origin).host.toLowerCase() !== host.toLowerCase()
          } catch {
            return true
          }
        })()
        : origin === "null"
      if (crossSite) {
        return { status: 403, error: new Forbidden({ message: "cross-site request refused: changes are accepted from the dashboard's own pages only" }) }
      }
    }
    return undefined
  }
}

const refusalResponse = (
  refusal: { readonly status: number; readonly error: Unauthorized | Forbidden; readonly challenge?: string }
) =>
  HttpServerResponse.jsonUnsafe(
    { _tag: refusal.error._tag, message: refusal.error.message },
    {
      status: refusal.status,
      headers: refusal.challenge === undefined ? {} : { "www-authenticate": refusal.challenge }
    }
  )

// -- handlers ---------------------------------------------------------------------------------

const iso = (d: Date | undefined): string | null => (d === undefined ? null : d.toISOString())

const toJson = (hidden: ReadonlySet<string>) => (job: JobsAdmin.JobDetails): typeof JobJson.Type => {
  const hide = hidden.has(job.queue)
  return {
    id: job.id,
    name: job.name,
    queue: job.queue,
    state: job.state,
    priority: job.priority,
    attempt: job.attempt,
    maxAttempts: job.maxAttempts,
    runAt: job.runAt.toISOString(),
    args: hide ? null : job.args ?? null,
    result: hide ? null : job.result ?? null,
    argsHidden: hide,
    errors: job.errors,
    uniqueKey: job.uniqueKey ?? null,
    uniqueStates: job.uniqueStates ?? null,
    uniqueWindow: iso(job.uniqueWindow),
    group: job.group ?? null,
    metadata: job.metadata,
    requestId: job.requestId ?? null,
    lockedBy: job.lockedBy ?? null,
    leaseExpiresAt: iso(job.leaseExpiresAt),
    buffered: job.buffered,
    createdAt: job.createdAt.toISOString(),
    attemptedAt: iso(job.attemptedAt),
    finalizedAt: iso(job.finalizedAt),
    pruneAt: iso(job.pruneAt),
    cancelRequestedAt: iso(job.cancelRequestedAt)
  }
}

const periodicJson = (p: JobsAdmin.PeriodicSummary): typeof PeriodicJson.Type => ({
  name: p.name,
  job: p.job ?? null,
  queue: p.queue ?? null,
  schedule: p.schedule ?? null,
  cron: p.cron ?? null,
  timeZone: p.timeZone ?? null,
  everyMillis: p.everyMillis ?? null,
  lastSlot: p.lastSlot.toISOString(),
  lastJobId: p.lastJobId ?? null,
  lastJobState: p.lastJobState ?? null,
  nextSlots: p.nextSlots.map((d) => d.toISOString()),
  overdueSince: iso(p.overdueSince)
})

const bundleJson = (b: JobsAdmin.BundleSummary): typeof BundleJson.Type => ({
  id: b.id,
  name: b.name,
  total: b.total,
  done: b.done,
  metadata: b.metadata ?? null,
  createdAt: b.createdAt.toISOString(),
  finishedAt: iso(b.finishedAt),
  finishStepDone: b.finishStepDone,
  followUpId: b.followUpId ?? null
})

type AdminError =
  | { readonly _tag: "JobNotFound"; readonly message: string }
  | { readonly _tag: "UniqueKeyNotFound"; readonly message: string }
  | { readonly _tag: "InvalidAdminRequest"; readonly message: string }
  | { readonly _tag: "JobNotRetryable"; readonly message: string }
  | { readonly _tag: "JobAlreadyFinished"; readonly message: string }
  | { readonly _tag: "JobIsRunning"; readonly message: string }
  | { readonly _tag: "JobInPendingBundle"; readonly message: string }
  | { readonly _tag: "SqlError"; readonly message: string }
  | BadRequest

/** `JobsAdmin`'s typed errors as the API's: 404, 400, 409, and 503 for the database. */
const toHttpError = <A, E extends AdminError, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, BadRequest | NotFound | Conflict | DatabaseError, R> =>
  Effect.catch(effect, (e: AdminError): Effect.Effect<never, BadRequest | NotFound | Conflict | DatabaseError> => {
    switch (e._tag) {
      case "BadRequest":
        return Effect.fail(e)
      case "JobNotFound":
      case "UniqueKeyNotFound":
        return Effect.fail(new NotFound({ message: e.message }))
      case "InvalidAdminRequest":
        return Effect.fail(new BadRequest({ message: e.message }))
      case "SqlError":
        return Effect.andThen(
          Effect.logError("effect-jobs dashboard: the database failed", e),
          Effect.fail(new DatabaseError({ message: "the database failed; the server's log has the cause" }))
        )
      default:
        return Effect.fail(new Conflict({ reason: e._tag, message: e.message }))
    }
  })

const isJobId = (s: string) => /^[1-9][0-9]{0,18}$/.test(s)

const handlers = (options: Options) =>
  HttpApiBuilder.group(
    DashboardApi,
    "dashboard",
    Effect.fn(function*(h) {
      const admin = yield* JobsAdmin.JobsAdmin
      const hidden = new Set(options.hideArgs ?? [])
      const json = toJson(hidden)
      const auth = options.auth === undefined ? "none" as const : "token" in options.auth ? "token" as const : "basic" as const
      const getJson = (id: string) => Effect.map(admin.get(id), json)

      return h
        .handle("config", () =>
          Effect.succeed({ readOnly: options.readOnly === true, auth, hiddenQueues: Array.from(hidden) }))
        .handle("queues", () => toHttpError(Effect.map(admin.queues, (queues) => ({ queues }))))
        .handle("throughput", ({ query }) =>
          toHttpError(Effect.gen(function*() {
            const minutes = query.minutes === undefined || query.minutes === "" ? undefined : Number(query.minutes)
            if (minutes !== undefined && !Number.isInteger(minutes)) {
              return yield* new BadRequest({ message: `minutes must be an integer in [1, 360], got ${JSON.stringify(query.minutes)}` })
            }
            const rows = yield* admin.throughput({ queue: query.queue === "" ? undefined : query.queue, minutes })
            return { minutes: rows.map((m) => ({ ...m, at: m.at.toISOString() })) }
          })))
        .handle("workers", () =>
          toHttpError(Effect.map(admin.workers, (workers) => ({
            workers: workers.map((w) => ({
              id: w.id,
              queues: w.queues,
              concurrency: w.concurrency,
              startedAt: w.startedAt.toISOString(),
              lastSeenAt: w.lastSeenAt.toISOString(),
              jobsHeld: w.jobsHeld
            }))
          }))))
        .handle("jobs", ({ query }) =>
          toHttpError(Effect.gen(function*() {
            const limit = query.limit === undefined ? undefined : Number(query.limit)
            if (limit !== undefined && !Number.isInteger(limit)) {
              return yield* new BadRequest({ message: `limit must be an integer in [1, 1000], got ${JSON.stringify(query.limit)}` })
            }
            if (query.order !== undefined && query.order !== "newest" && query.order !== "oldest") {
              return yield* new BadRequest({ message: `order must be "newest" or "oldest", got ${JSON.stringify(query.order)}` })
            }
            const state = query.state === undefined || query.state === ""
              ? undefined
              : (query.state.split(",").map((s) => s.trim()) as Array<JobsAdmin.JobState>)
            const q = query.q?.trim() === "" ? undefined : query.q?.trim()
            const page = yield* admin.list({
              state,
              queue: query.queue === "" ? undefined : query.queue,
              name: query.name === "" ? undefined : query.name,
              uniqueKey: q,
              cursor: query.cursor === "" ? undefined : query.cursor,
              limit,
              order: query.order as "newest" | "oldest" | undefined
            })
            let jobs = page.jobs
            // A search for an id finds that job too (first page only), if it passes the filters.
            if (q !== undefined && isJobId(q) && query.cursor === undefined && !jobs.some((j) => j.id === q)) {
              const byId = yield* Effect.option(admin.get(q).pipe(Effect.catchTag("JobNotFound", () => Effect.fail(undefined))))
              if (
                Option.isSome(byId) &&
                (state === undefined || state.includes(byId.value.state)) &&
                (query.queue === undefined || query.queue === "" || query.queue === byId.value.queue) &&
                (query.name === undefined || query.name === "" || query.name === byId.value.name)
              ) jobs = [byId.value, ...jobs]
            }
            return { jobs: jobs.map(json), next: page.next ?? null }
          })))
        .handle("job", ({ params }) => toHttpError(getJson(params.id)))
        .handle("retry", ({ params }) => toHttpError(Effect.andThen(admin.retry(params.id), getJson(params.id))))
        .handle("cancel", ({ params }) =>
          toHttpError(Effect.gen(function*() {
            const outcome = yield* admin.cancel(params.id, { reason: "cancelled from the dashboard" })
            return { outcome, job: yield* getJson(params.id) }
          })))
        .handle("delete", ({ params }) => toHttpError(admin.delete(params.id)))
        .handle("pause", ({ params }) => toHttpError(admin.pause(params.name)))
        .handle("resume", ({ params }) => toHttpError(admin.resume(params.name)))
        .handle("retryDead", ({ params }) => toHttpError(Effect.map(admin.retryDead(params.name), (retried) => ({ retried }))))
        // -- periodic schedules and bundles --
        .handle("periodic", () =>
          toHttpError(Effect.map(admin.periodic, (schedules) => ({ schedules: schedules.map(periodicJson) }))))
        .handle("bundles", ({ query }) =>
          toHttpError(Effect.gen(function*() {
            const limit = query.limit === undefined || query.limit === "" ? undefined : Number(query.limit)
            if (limit !== undefined && !Number.isInteger(limit)) {
              return yield* new BadRequest({ message: `limit must be an integer in [1, 1000], got ${JSON.stringify(query.limit)}` })
            }
            const page = yield* admin.bundles({
              state: query.state === "" ? undefined : query.state as "open" | "finished" | undefined,
              name: query.name === "" ? undefined : query.name,
              cursor: query.cursor === "" ? undefined : query.cursor,
              limit
            })
            return { bundles: page.bundles.map(bundleJson), next: page.next ?? null }
          })))
    })
  )

// -- the UI's files ---------------------------------------------------------------------------

/** The UI: three files from the package's `ui/` folder, read once when the layer is built. */
const uiFiles = Effect.sync(() => {
  const read = (name: string) => readFileSync(new URL(`../ui/${name}`, import.meta.url), "utf8")
  return { html: read("index.html"), js: read("app.js"), css: read("app.css") }
})

const uiHeaders = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'self'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache"
}

// -- the layer --------------------------------------------------------------------------------

/**
 * The dashboard's routes (UI and API) added to the app's `HttpRouter` under
 * `options.prefix`. Serve it with `HttpRouter.serve(Dashboard.layer({...}))` (or merge
 * it with the app's own route layers); it needs `JobsAdmin.layer` and an HTTP
 * server layer (e.g. `NodeHttpServer.layer`).
 */
export const layer = (options: Options = {}) => {
  const prefix = normalizePrefix(options.prefix)
  const check = makeCheck(options)
  const api = DashboardApi.annotateMerge(OpenApi.annotations({ servers: [{ url: prefix === "" ? "/" : prefix }] }))

  const GuardLive = Layer.succeed(Guard)(
    (httpEffect) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const refusal = check(request, true)
        if (refusal !== undefined) return refusalResponse(refusal)
        return HttpServerResponse.setHeader(yield* httpEffect, "cache-control", "no-store")
      })
  )

  const ApiRoutes = HttpApiBuilder.layer(api, { openapiPath: "/api/openapi.json" }).pipe(
    Layer.provide(handlers(options)),
    Layer.provide(GuardLive)
  )

  const UiRoutes = Layer.unwrap(Effect.map(uiFiles, (files) => {
    const html = files.html.replaceAll("%BASE%", `${prefix}/`)
    const serve = (body: string, contentType: string) =>
      Effect.map(HttpServerRequest.HttpServerRequest, (request) => {
        const refusal = check(request, false)
        return refusal !== undefined
          ? refusalResponse(refusal)
          : HttpServerResponse.text(body, { contentType, headers: uiHeaders })
      })
    return HttpRouter.addAll([
      HttpRouter.route("GET", "/", serve(html, "text/html; charset=utf-8")),
      HttpRouter.route("GET", "/app.js", serve(files.js, "text/javascript; charset=utf-8")),
      HttpRouter.route("GET", "/app.css", serve(files.css, "text/css; charset=utf-8"))
    ])
  }))

  const Prefixed = Layer.effect(HttpRouter.HttpRouter)(
    Effect.map(HttpRouter.HttpRouter, (router) => (prefix === "" ? router : router.prefixed(prefix)))
  )
  return Layer.mergeAll(ApiRoutes, UiRoutes).pipe(Layer.provide(Prefixed))
}
