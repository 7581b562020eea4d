/**
 * The `effect-jobs` command line, on `effect/cli`: migrations, counts, listing and
 * inspection, retry, cancel, delete, prune, pause and resume, enqueue by name with
 * JSON arguments, and a worker process for a module of handlers. See docs/cli.md.
 *
 * Everything goes through the library's own modules (`JobsAdmin`, `Jobs`,
 * `Migrations`, `Worker`, `Database`, `PgSchema`); no SQL here. Human tables by
 * default, `--json` for scripts. Any failure is one line on stderr,
 * `effect-jobs: <what went wrong>`, and exit code 1; never a stack trace.
 *
 * @since 0.1.0
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Config, Console, type Duration, Effect, Exit, Layer, Option, Runtime, Schema } from "effect"
import { Argument, CliConfig, CliOutput, Command, Flag, GlobalFlag } from "effect/cli"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"
import { readFileSync } from "node:fs"
import { isAbsolute, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import * as Dashboard from "../Dashboard.ts"
import * as Database from "../Database.ts"
import * as Job from "../Job.ts"
import * as Jobs from "../Jobs.ts"
import * as JobsAdmin from "../JobsAdmin.ts"
import * as Migrations from "../Migrations.ts"
import * as PgSchema from "../PgSchema.ts"
import * as Worker from "../Worker.ts"
import { fields, oneLine, table, time } from "./table.ts"

/** A command used the wrong way, or given something it cannot use. Nothing was changed. */
class Usage extends Schema.TaggedError<Usage>()("Usage", { message: Schema.String }) {}

const version: string = (() => {
  try {
    return JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version ?? "unknown"
  } catch {
    return "unknown"
  }
})()

const states = ["scheduled", "available", "running", "completed", "dead", "cancelled"] as const
const finished = ["completed", "dead", "cancelled"] as const

// -- the root command and its shared flags ------------------------------------------------

const root = Command.make("effect-jobs").pipe(
  Command.withSharedFlags({
    databaseUrl: Flag.String("database-url").pipe(
      Flag.withDescription("postgres://user:password@host:port/database (default: $DATABASE_URL)"),
      Flag.withFallbackConfig(Config.String("DATABASE_URL")),
      Flag.optional
    ),
    schema: Flag.String("schema").pipe(
      Flag.withDescription("The Postgres schema that holds effect-jobs' tables"),
      Flag.withDefault(PgSchema.defaultName)
    ),
    json: Flag.Boolean("json").pipe(
      Flag.withDescription("Print JSON instead of tables (for scripts)"),
      Flag.withDefault(false)
    )
  }),
  Command.withDescription("Operate an effect-jobs queue in PostgreSQL: migrate, inspect, retry, cancel, enqueue, run a worker")
)

/** The shared flags, as every subcommand reads them (`yield* root`). */
interface Root {
  readonly databaseUrl: Option.Option<string>
  readonly schema: string
  readonly json: boolean
}

// -- connecting -----------------------------------------------------------------------------

/** The database URL and the checked schema name, or a `Usage` error saying what is missing. */
const target = (r: Root) =>
  Effect.gen(function*() {
    const schema = yield* PgSchema.make(r.schema)
    if (Option.isNone(r.databaseUrl)) {
      return yield* new Usage({ message: "no database: pass --database-url postgres://... or set DATABASE_URL" })
    }
    return { url: r.databaseUrl.value, schema }
  })

/** A pool on the database (checked with `SELECT 1` when built) with the schema provided. */
const connection = (r: Root, options: { readonly maxConnections?: number } = {}) =>
  Layer.unwrap(Effect.map(target(r), ({ schema, url }) =>
    Layer.mergeAll(
      Database.layer(url, { maxConnections: options.maxConnections ?? 2, applicationName: "effect-jobs cli" }),
      PgSchema.layer(schema)
    )))

/** Fails unless the schema has effect-jobs' tables: a clear line instead of "relation does not exist". */
const requireMigrated = (schema: string) =>
  Effect.gen(function*() {
    const status = yield* Migrations.status
    if (status.applied.length === 0) {
      const flag = schema === PgSchema.defaultName ? "" : ` --schema ${schema}`
      return yield* new Usage({
        message: `schema "${schema}" has no effect-jobs tables in this database: run \`effect-jobs migrate${flag}\`, ` +
          `or pass the --schema they are in`
      })
    }
  })

/** Runs `effect` with `JobsAdmin` and `Jobs` on the database, once the schema is known to be migrated. */
const withQueue = <A, E>(r: Root, effect: Effect.Effect<A, E, JobsAdmin.JobsAdmin | Jobs.Jobs>) =>
  Effect.andThen(requireMigrated(r.schema), effect).pipe(
    Effect.provide(Layer.mergeAll(JobsAdmin.layer, Jobs.layer).pipe(Layer.provideMerge(connection(r))))
  )

// -- output ---------------------------------------------------------------------------------

/** JSON with `undefined` as `null`, so every key is there for a script. */
const json = (value: unknown): string => JSON.stringify(value, (_, v) => (v === undefined ? null : v), 2)

/** Prints `value` as JSON with `--json`, else the human text. */
const print = (r: Root, value: unknown, human: () => string) => Console.log(r.json ? json(value) : human())

const compact = (value: unknown): string => oneLine(JSON.stringify(value) ?? "null")

/** How a job holds its unique key past the defaults: its window and the states it counts. */
const uniqueHow = (job: JobsAdmin.JobDetails): string => {
  const parts: Array<string> = []
  if (job.uniqueWindow !== undefined) parts.push(`window from ${time(job.uniqueWindow)}`)
  if (job.uniqueStates !== undefined) parts.push(`while ${job.uniqueStates.join(", ")}`)
  return parts.length === 0 ? "" : ` (${parts.join("; ")})`
}

/** Comma-separated values, each one of `allowed`. */
const listOf = <const A extends string>(label: string, text: string, allowed: ReadonlyArray<A>) =>
  Effect.gen(function*() {
    const values = text.split(",").map((s) => s.trim()).filter((s) => s !== "")
    const unknown = values.filter((v) => !allowed.includes(v as A))
    if (values.length === 0 || unknown.length > 0) {
      return yield* new Usage({
        message: `${label} must be one or more of ${allowed.join(", ")} (comma-separated), got ${JSON.stringify(text)}`
      })
    }
    return values as unknown as ReadonlyArray<A>
  })

// -- migrate ----------------------------------------------------------------------------------

const migrate = Command.make(
  "migrate",
  {
    status: Flag.Boolean("status").pipe(
      Flag.withDescription("List the applied and the pending migrations; change nothing"),
      Flag.withDefault(false)
    ),
    printSql: Flag.Boolean("print-sql").pipe(
      Flag.withDescription("Print every migration as one SQL script for the schema (for another migration tool); no database needed"),
      Flag.withDefault(false)
    )
  },
  Effect.fn(function*({ printSql, status }) {
    const r = yield* root
    if (status && printSql) return yield* new Usage({ message: "migrate: --status and --print-sql cannot be used together" })
    if (printSql) {
      const text = yield* Migrations.sql(r.schema)
      return yield* print(r, { schema: r.schema, sql: text }, () => text.trimEnd())
    }
    const { schema } = yield* target(r)
    if (status) {
      const s = yield* Migrations.status.pipe(Effect.provide(connection(r)))
      return yield* print(r, { schema, ...s }, () =>
        table(
          ["VERSION", "NAME", "STATE", "APPLIED AT"],
          [
            ...s.applied.map((m) => [String(m.id).padStart(4, "0"), m.name, "applied", time(m.appliedAt)]),
            ...s.pending.map((m) => [String(m.id).padStart(4, "0"), m.name, "pending", "-"])
          ]
        ) + `\n${s.applied.length} applied, ${s.pending.length} pending in schema ${schema}`)
    }
    const applied = yield* Migrations.run.pipe(Effect.provide(connection(r)))
    const names = applied.map(([id, name]) => `${String(id).padStart(4, "0")}_${name}`)
    return yield* print(r, { schema, applied: applied.map(([id, name]) => ({ id, name })) }, () =>
      names.length === 0
        ? `schema ${schema} is up to date`
        : `applied ${names.length} migration${names.length === 1 ? "" : "s"} to schema ${schema}: ${names.join(", ")}`)
  })
).pipe(Command.withDescription("Apply the missing migrations (creating the schema if needed), or show them"))

// -- status, list, get ----------------------------------------------------------------------

const status = Command.make(
  "status",
  {},
  Effect.fn(function*() {
    const r = yield* root
    const { queues, unserved } = yield* withQueue(
      r,
      Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => Effect.all({ queues: admin.queues, unserved: admin.unserved }))
    )
    return yield* print(r, { schema: r.schema, queues, unserved }, () => {
      if (queues.length === 0) return `no queues in schema ${r.schema} yet`
      const lines = [table(
        ["QUEUE", "PAUSED", ...states.map((s) => s.toUpperCase())],
        queues.map((q) => [oneLine(q.name), q.paused ? "yes" : "no", ...states.map((s) => String(q.counts[s]))])
      )]
      for (const u of unserved.queues) {
        lines.push(`no live worker serves queue ${oneLine(u.queue)}: ${u.available} available job(s) wait`)
      }
      for (const u of unserved.names) {
        lines.push(
          `no live worker of queue ${oneLine(u.queue)} has a handler for ${oneLine(u.name)}: ${u.available} available job(s)`
        )
      }
      return lines.join("\n")
    })
  })
).pipe(Command.withDescription("Jobs per queue and state, which queues are paused, and which jobs no live worker serves"))

const list = Command.make(
  "list",
  {
    state: Flag.String("state").pipe(
      Flag.withDescription(`Only jobs in these states (comma-separated: ${states.join(", ")})`),
      Flag.optional
    ),
    queue: Flag.String("queue").pipe(Flag.withDescription("Only jobs of this queue"), Flag.optional),
    name: Flag.String("name").pipe(Flag.withDescription("Only jobs with this name"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDescription("Jobs per page, 1 to 1000"), Flag.withDefault(50)),
    after: Flag.String("after").pipe(
      Flag.withDescription("The cursor printed under the previous page (the last id shown)"),
      Flag.optional
    ),
    order: Flag.Literals("order", ["newest", "oldest"]).pipe(
      Flag.withDescription("Newest first (default) or oldest first, by id"),
      Flag.withDefault("newest" as const)
    )
  },
  Effect.fn(function*(o) {
    const r = yield* root
    const state = Option.isSome(o.state) ? yield* listOf("--state", o.state.value, states) : undefined
    const page = yield* withQueue(
      r,
      Effect.flatMap(JobsAdmin.JobsAdmin, (admin) =>
        admin.list({
          state,
          queue: Option.getOrUndefined(o.queue),
          name: Option.getOrUndefined(o.name),
          limit: o.limit,
          cursor: Option.getOrUndefined(o.after),
          order: o.order
        }))
    )
    return yield* print(r, page, () => {
      if (page.jobs.length === 0) return "no jobs"
      const rows = table(
        ["ID", "STATE", "QUEUE", "NAME", "ATTEMPT", "RUN AT", "CREATED AT"],
        page.jobs.map((j) => [
          j.id,
          j.state,
          oneLine(j.queue),
          oneLine(j.name),
          `${j.attempt}/${j.maxAttempts}`,
          time(j.runAt),
          time(j.createdAt)
        ])
      )
      return page.next === undefined ? rows : `${rows}\nmore: --after ${page.next}`
    })
  })
).pipe(Command.withDescription("List jobs, newest first, a page at a time"))

const jobId = Argument.String("id").pipe(Argument.withDescription("The job's id"))

const get = Command.make(
  "get",
  { id: jobId },
  Effect.fn(function*({ id }) {
    const r = yield* root
    const job = yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.get(id)))
    return yield* print(r, job, () => {
      const lines = fields([
        ["id", job.id],
        ["name", oneLine(job.name)],
        ["queue", oneLine(job.queue)],
        ["state", job.cancelRequestedAt === undefined ? job.state : `${job.state} (cancel requested at ${time(job.cancelRequestedAt)})`],
        ["attempts", `${job.attempt} of ${job.maxAttempts}`],
        ["priority", String(job.priority)],
        ["run at", time(job.runAt)],
        ["created at", time(job.createdAt)],
        ["attempted at", time(job.attemptedAt)],
        ["finalized at", time(job.finalizedAt)],
        ["prune at", time(job.pruneAt)],
        ["unique key", job.uniqueKey === undefined ? "-" : oneLine(job.uniqueKey) + uniqueHow(job)],
        ["group", job.group === undefined ? "-" : oneLine(job.group)],
        ["request id", job.requestId === undefined ? "-" : oneLine(job.requestId)],
        ["locked by", job.lockedBy === undefined ? "-" : `${oneLine(job.lockedBy)} (lease until ${time(job.leaseExpiresAt)})${job.buffered ? ", buffered: not started yet" : ""}`],
        ["args", compact(job.args)],
        ["result", compact(job.result)],
        ["metadata", compact(job.metadata)]
      ])
      const errors = job.errors.length === 0
        ? "errors        none"
        : ["errors", ...job.errors.map((e) => `  attempt ${e.attempt} at ${e.at}: ${oneLine(e.kind)}: ${oneLine(e.message)}`)]
          .join("\n")
      return `${lines}\n${errors}`
    })
  })
).pipe(Command.withDescription("One job: its arguments, result, errors, attempts and times"))

// -- retry, cancel, delete, prune -----------------------------------------------------------

const retry = Command.make(
  "retry",
  {
    id: jobId.pipe(Argument.optional),
    dead: Flag.Boolean("dead").pipe(
      Flag.withDescription("Retry every dead job of --queue (of --name only, if given)"),
      Flag.withDefault(false)
    ),
    queue: Flag.String("queue").pipe(Flag.withDescription("The queue whose dead jobs --dead retries"), Flag.optional),
    name: Flag.String("name").pipe(Flag.withDescription("With --dead: only jobs with this name"), Flag.optional),
    attempts: Flag.Int("attempts").pipe(
      Flag.withDescription("Attempts it gets beyond those used (default: those it has left, or 1)"),
      Flag.optional
    )
  },
  Effect.fn(function*(o) {
    const r = yield* root
    const attempts = Option.getOrUndefined(o.attempts)
    if (Option.isSome(o.id)) {
      if (o.dead || Option.isSome(o.queue) || Option.isSome(o.name)) {
        return yield* new Usage({ message: "retry: give a job id, or --dead --queue <queue>, not both" })
      }
      const id = o.id.value
      yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.retry(id, { attempts })))
      return yield* print(r, { id, state: "available" }, () => `job ${id} is available again`)
    }
    if (!o.dead) return yield* new Usage({ message: "retry: give a job id, or --dead --queue <queue>" })
    if (Option.isNone(o.queue)) return yield* new Usage({ message: "retry --dead needs --queue <queue>" })
    const queue = o.queue.value
    const name = Option.getOrUndefined(o.name)
    const n = yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.retryDead(queue, { name, attempts })))
    return yield* print(r, { queue, retried: n }, () =>
      `${n} dead job${n === 1 ? "" : "s"} of queue ${oneLine(queue)}${name === undefined ? "" : ` named ${oneLine(name)}`} made available again`)
  })
).pipe(Command.withDescription("Make a dead or cancelled job run again, or every dead job of a queue"))

const cancel = Command.make(
  "cancel",
  {
    id: jobId.pipe(Argument.optional),
    key: Flag.String("key").pipe(Flag.withDescription("Cancel the unfinished job with this unique key (with --name)"), Flag.optional),
    name: Flag.String("name").pipe(Flag.withDescription("The job name that goes with --key"), Flag.optional),
    reason: Flag.String("reason").pipe(Flag.withDescription("Recorded with the job's errors"), Flag.optional)
  },
  Effect.fn(function*(o) {
    const r = yield* root
    const reason = Option.getOrUndefined(o.reason)
    const said = (id: string, outcome: JobsAdmin.CancelOutcome) =>
      print(r, { id, outcome }, () =>
        outcome === "cancelled" ? `job ${id} cancelled` : `job ${id} is running: its worker was asked to stop it`)
    if (Option.isSome(o.id)) {
      if (Option.isSome(o.key) || Option.isSome(o.name)) {
        return yield* new Usage({ message: "cancel: give a job id, or --key <key> --name <name>, not both" })
      }
      const id = o.id.value
      const outcome = yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.cancel(id, { reason })))
      return yield* said(id, outcome)
    }
    if (Option.isNone(o.key) || Option.isNone(o.name)) {
      return yield* new Usage({ message: "cancel: give a job id, or --key <key> --name <name>" })
    }
    const key = o.key.value
    const name = o.name.value
    const found = yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.cancelByKey(name, key, { reason })))
    return yield* said(found.id, found.outcome)
  })
).pipe(Command.withDescription("Cancel a waiting job, or ask the worker running it to stop it"))

const deleteCommand = Command.make(
  "delete",
  { id: jobId },
  Effect.fn(function*({ id }) {
    const r = yield* root
    yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.delete(id)))
    return yield* print(r, { id, deleted: true }, () => `job ${id} deleted`)
  })
).pipe(Command.withDescription("Delete a job that is not running"))

const prune = Command.make(
  "prune",
  {
    olderThan: Flag.String("older-than").pipe(
      Flag.withDescription(`Delete jobs finished longer ago than this ("7 days", "12 hours"; "0 seconds" for all)`)
    ),
    state: Flag.String("state").pipe(
      Flag.withDescription(`Only jobs in these states (comma-separated: ${finished.join(", ")}; default all three)`),
      Flag.optional
    ),
    queue: Flag.String("queue").pipe(Flag.withDescription("Only jobs of this queue"), Flag.optional)
  },
  Effect.fn(function*(o) {
    const r = yield* root
    const states = Option.isSome(o.state) ? yield* listOf("--state", o.state.value, finished) : undefined
    const queue = Option.getOrUndefined(o.queue)
    const n = yield* withQueue(
      r,
      Effect.flatMap(JobsAdmin.JobsAdmin, (admin) =>
        admin.deleteFinished({ olderThan: o.olderThan as Duration.Input, states, queue }))
    ).pipe(Effect.mapError((e) =>
      e._tag === "InvalidAdminRequest" && e.message.startsWith("olderThan")
        ? new Usage({ message: `--older-than must be a duration such as "7 days" or "12 hours", got ${JSON.stringify(o.olderThan)}` })
        : e
    ))
    return yield* print(r, { deleted: n }, () => `deleted ${n} finished job${n === 1 ? "" : "s"}`)
  })
).pipe(Command.withDescription("Delete finished jobs (completed, dead, cancelled) older than a duration"))

// -- pause, resume --------------------------------------------------------------------------

const queueArgument = Argument.String("queue").pipe(Argument.withDescription("The queue's name"))

const pause = Command.make(
  "pause",
  { queue: queueArgument },
  Effect.fn(function*({ queue }) {
    const r = yield* root
    yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.pause(queue)))
    return yield* print(r, { queue, paused: true }, () => `queue ${oneLine(queue)} paused for every worker`)
  })
).pipe(Command.withDescription("Stop every worker from claiming jobs of a queue (running jobs finish; enqueue still works)"))

const resume = Command.make(
  "resume",
  { queue: queueArgument },
  Effect.fn(function*({ queue }) {
    const r = yield* root
    yield* withQueue(r, Effect.flatMap(JobsAdmin.JobsAdmin, (admin) => admin.resume(queue)))
    return yield* print(r, { queue, paused: false }, () => `queue ${oneLine(queue)} resumed`)
  })
).pipe(Command.withDescription("Let workers claim jobs of a paused queue again"))

// -- enqueue --------------------------------------------------------------------------------

const enqueue = Command.make(
  "enqueue",
  {
    name: Argument.String("name").pipe(Argument.withDescription("The job's name, as in Job.make(name, ...)")),
    args: Flag.String("args").pipe(
      Flag.withDescription("The job's arguments as JSON, in their encoded form (default {})"),
      Flag.withDefault("{}")
    ),
    queue: Flag.String("queue").pipe(Flag.withDescription("The queue (default: default)"), Flag.optional),
    delay: Flag.String("delay").pipe(Flag.withDescription(`Run no earlier than this from now ("10 minutes")`), Flag.optional),
    priority: Flag.Int("priority").pipe(Flag.withDescription("Lower runs first (default 0)"), Flag.optional),
    uniqueKey: Flag.String("unique-key").pipe(
      Flag.withDescription("While a job with this name and key is unfinished, enqueue nothing and print its id"),
      Flag.optional
    ),
    maxAttempts: Flag.Int("max-attempts").pipe(Flag.withDescription("Attempts before it goes dead (default 25)"), Flag.optional)
  },
  Effect.fn(function*(o) {
    const r = yield* root
    let args: unknown
    try {
      args = JSON.parse(o.args)
    } catch (e) {
      return yield* new Usage({ message: `--args is not valid JSON: ${e instanceof Error ? e.message : String(e)}` })
    }
    // The arguments as given: the handler's Schema decodes them when the job runs. The row
    // gets this definition's defaults (queue "default", 25 attempts, a day's retention, 5
    // errors kept) unless the flags say otherwise.
    const job = yield* Effect.try({
      try: () => Job.make(o.name, { args: Schema.Json }),
      catch: (e) => new Usage({ message: e instanceof Error ? e.message : String(e) })
    })
    const id = yield* withQueue(
      r,
      Effect.flatMap(Jobs.Jobs, (jobs) =>
        jobs.enqueue(job, args as Schema.Json, {
          queue: Option.getOrUndefined(o.queue),
          delay: Option.getOrUndefined(o.delay) as Duration.Input | undefined,
          priority: Option.getOrUndefined(o.priority),
          uniqueKey: Option.getOrUndefined(o.uniqueKey),
          maxAttempts: Option.getOrUndefined(o.maxAttempts)
        }))
    )
    return yield* print(r, { id }, () => id)
  })
).pipe(Command.withDescription("Enqueue a job by name with JSON arguments; prints its id"))

// -- work -----------------------------------------------------------------------------------

/**
 * What `effect-jobs work <module>` imports: the module's default export (or its named
 * exports `queues`, `handlers`, `worker`).
 */
export interface WorkModule {
  /** The queues to serve, as `Worker.layer`'s `queues`. */
  readonly queues: Readonly<Record<string, Worker.QueueConfig>>
  /**
   * The handlers (`Job.toLayer`, merged). Their requirements beyond `PgClient`,
   * `SqlClient` and `Jobs` (which the command provides) must be provided inside.
   */
  readonly handlers: Layer.Layer<any, any, any>
  /** The rest of `Worker.layer`'s options. */
  readonly worker?: Omit<Worker.Options, "queues"> | undefined
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const loadModule = (path: string) =>
  Effect.gen(function*() {
    const file = isAbsolute(path) ? path : resolve(process.cwd(), path)
    const loaded = yield* Effect.tryPromise({
      try: () => import(pathToFileURL(file).href) as Promise<Record<string, unknown>>,
      catch: (e) => new Usage({ message: `cannot import ${path}: ${messageOf(e)}` })
    })
    const m = isRecord(loaded.default) ? loaded.default : loaded
    const contract = "export default { queues: { name: { concurrency } }, handlers: Layer }"
    if (!isRecord(m.queues) || Object.keys(m.queues).length === 0) {
      return yield* new Usage({ message: `${path} has no queues to serve: it must ${contract}` })
    }
    if (!Layer.isLayer(m.handlers)) {
      return yield* new Usage({ message: `${path} has no handlers layer: it must ${contract}` })
    }
    if (m.worker !== undefined && !isRecord(m.worker)) {
      return yield* new Usage({ message: `${path}: worker must be an object of Worker.layer options` })
    }
    return m as unknown as WorkModule
  })

/** Set once a `work` worker has shut down after a signal: the process then exits 0. */
let stoppedGracefully = false

const work = Command.make(
  "work",
  {
    module: Argument.String("module").pipe(
      Argument.withDescription("An ES module (.js, .mjs, or .ts on Node's type stripping) that exports { queues, handlers }")
    ),
    maxConnections: Flag.Int("max-connections").pipe(
      Flag.withDescription("The worker's connection pool size (default 10)"),
      Flag.withDefault(10)
    )
  },
  Effect.fn(function*({ maxConnections, module }) {
    const r = yield* root
    const { schema } = yield* target(r)
    const m = yield* loadModule(module)
    const queues = Object.keys(m.queues)
    // The database, the schema and a Jobs client, for the worker and the handlers.
    const base = Layer.merge(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(connection(r, { maxConnections })))
    const WorkerLive = Worker.layer({ ...m.worker, queues: m.queues }).pipe(
      Layer.provide(m.handlers as unknown as Layer.Layer<never, unknown, never>)
    )
    const serve = Effect.gen(function*() {
      const worker = yield* Worker.Worker
      yield* Console.log(`effect-jobs: worker ${worker.workerId} serving ${queues.join(", ")} in schema ${schema}; stop with Ctrl-C or SIGTERM`)
      return yield* Effect.never
    })
    yield* Effect.andThen(
      requireMigrated(schema), // before the worker starts claiming from tables that are not there
      serve.pipe(Effect.provide(WorkerLive))
    ).pipe(
      Effect.provide(base),
      // After the layers' release (the worker's graceful shutdown) has run.
      Effect.onInterrupt(() =>
        Effect.andThen(Effect.sync(() => (stoppedGracefully = true)), Console.log("effect-jobs: worker stopped")))
    )
  })
).pipe(Command.withDescription("Run a worker for the queues and handlers a module exports, until SIGTERM or SIGINT"))

// -- dashboard --------------------------------------------------------------------------------

/** Whether the dashboard listens on this machine only. */
const isLoopback = (host: string) => host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)

const dashboard = Command.make(
  "dashboard",
  {
    port: Flag.Int("port").pipe(Flag.withDescription("The TCP port (0: any free port)"), Flag.withDefault(4000)),
    host: Flag.String("host").pipe(
      Flag.withDescription("The address to listen on (default 127.0.0.1; any other than loopback needs --token)"),
      Flag.withDefault("127.0.0.1")
    ),
    readOnly: Flag.Boolean("read-only").pipe(
      Flag.withDescription("Refuse every change (retry, cancel, delete, pause, resume): look only"),
      Flag.withDefault(false)
    ),
    token: Flag.String("token").pipe(
      Flag.withDescription("Ask for this bearer token (default: $EFFECT_JOBS_DASHBOARD_TOKEN; prefer it: a flag shows in ps)"),
      Flag.withFallbackConfig(Config.String("EFFECT_JOBS_DASHBOARD_TOKEN")),
      Flag.optional
    ),
    hideArgs: Flag.String("hide-args").pipe(
      Flag.withDescription("Never show the arguments and results of these queues (comma-separated)"),
      Flag.optional
    ),
    prefix: Flag.String("prefix").pipe(Flag.withDescription("Serve under this path, e.g. /jobs"), Flag.withDefault(""))
  },
  Effect.fn(function*({ hideArgs, host, port, prefix, readOnly, token }) {
    const r = yield* root
    const { schema } = yield* target(r)
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      return yield* new Usage({ message: `--port must be 0 to 65535, got ${port}` })
    }
    if (!isLoopback(host) && Option.isNone(token)) {
      return yield* new Usage({
        message: `--host ${host} lets other machines reach the dashboard: give it a token ` +
          `(--token, or EFFECT_JOBS_DASHBOARD_TOKEN), or keep the default 127.0.0.1`
      })
    }
    if (Option.isSome(token) && token.value.length < 8) {
      return yield* new Usage({ message: "--token must be at least 8 characters" })
    }
    if (prefix !== "" && !/^\/[A-Za-z0-9._~\-/]*$/.test(prefix)) {
      return yield* new Usage({ message: `--prefix must be a path like /jobs, got ${JSON.stringify(prefix)}` })
    }
    const options: Dashboard.Options = {
      prefix,
      readOnly,
      hideArgs: Option.match(hideArgs, {
        onNone: () => [],
        onSome: (text) => text.split(",").map((q) => q.trim()).filter((q) => q !== "")
      }),
      ...(Option.isSome(token) ? { auth: { token: token.value } } : {}),
      // On loopback, only loopback names: a page on another site cannot rebind its name to 127.0.0.1.
      ...(isLoopback(host) ? { hosts: ["127.0.0.1", "localhost", "[::1]", host.includes(":") ? `[${host}]` : host] } : {})
    }
    const ServerLive = HttpRouter.serve(Dashboard.layer(options), { disableListenLog: true, disableLogger: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(createServer, { port, host }))
    )
    const serve = Effect.gen(function*() {
      const address = (yield* HttpServer.HttpServer).address
      const where = address._tag === "UnixPathAddress"
        ? address.path
        : `http://${host.includes(":") ? `[${host}]` : host}:${address.port}${prefix.replace(/\/+$/, "")}/`
      yield* Console.log(
        `effect-jobs: dashboard on ${where} for schema ${schema}` +
          `${readOnly ? " (read-only)" : ""}${Option.isSome(token) ? " (token required)" : ""}; stop with Ctrl-C or SIGTERM`
      )
      return yield* Effect.never
    })
    yield* Effect.andThen(requireMigrated(schema), serve.pipe(Effect.provide(ServerLive))).pipe(
      Effect.provide(JobsAdmin.layer.pipe(Layer.provideMerge(connection(r, { maxConnections: 5 })))),
      Effect.onInterrupt(() =>
        Effect.andThen(Effect.sync(() => (stoppedGracefully = true)), Console.log("effect-jobs: dashboard stopped")))
    )
  })
).pipe(Command.withDescription("Serve the web dashboard (queues, jobs, retry, cancel, pause) until SIGTERM or SIGINT"))

// -- running --------------------------------------------------------------------------------

const cli = root.pipe(
  Command.withSubcommands([migrate, status, list, get, retry, cancel, deleteCommand, prune, pause, resume, enqueue, work, dashboard])
)

/** The messages of an error and its causes (and a SqlError's reason), never an object dump. */
export const messageOf = (error: unknown): string => {
  const parts: Array<string> = []
  const seen = new Set<unknown>()
  const visit = (e: unknown, depth: number) => {
    if (e === undefined || e === null || depth > 6 || seen.has(e)) return
    seen.add(e)
    const message = typeof e === "string" ? e : e instanceof Error || isRecord(e) ? (e as { message?: unknown }).message : undefined
    if (typeof message === "string" && message !== "" && !parts.some((p) => p.includes(message))) {
      parts.push(message)
    }
    if (isRecord(e) || e instanceof Error) {
      visit((e as { reason?: unknown }).reason, depth + 1)
      visit((e as { cause?: unknown }).cause, depth + 1)
    }
  }
  visit(error, 0)
  return oneLine(parts.length === 0 ? String(error) : parts.join(": "))
}

/** Parse errors: one line on stderr naming the problem and the help to read; no help dump. */
const presenter: CliOutput.Presenter = {
  present: (event) =>
    event._tag === "InvalidInvocation"
      ? Console.error(
        `effect-jobs: ${event.errors.map((e) => oneLine(e.message)).join("; ")} (see \`${event.commandPath.join(" ")} --help\`)`
      )
      : CliOutput.defaultPresenter.present(event)
}

/** Every failure not shown yet becomes one line on stderr; interruption (a signal) goes through. */
const report = (cause: Cause.Cause<unknown>) => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
  const error = Cause.squash(cause)
  const shown = isRecord(error) && error[Runtime.errorReported] === false
  return Effect.andThen(shown ? Effect.void : Console.error(`effect-jobs: ${messageOf(error)}`), Effect.failCause(cause))
}

/** Exit codes: 0 on success and after a worker's graceful stop, 130 for another interrupted command, 1 on failure. */
const teardown: Runtime.Teardown = (exit, onExit) => {
  if (Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) && stoppedGracefully) return onExit(0)
  Runtime.defaultTeardown(exit, onExit)
}

export const main = cli.pipe(
  Command.run({ version }),
  Effect.catchCause(report),
  Effect.provide(Layer.mergeAll(
    NodeServices.layer,
    CliConfig.layer({ builtIns: [GlobalFlag.Help, GlobalFlag.Version, GlobalFlag.Completions, GlobalFlag.LogLevel] }),
    CliOutput.layerPresenter(presenter)
  ))
)

export const run = (): void => NodeRuntime.runMain(main, { disableErrorReporting: true, teardown })
