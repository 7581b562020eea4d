/**
 * The `effect-jobs` command line as a user runs it: the BUILT bin (`npm run build` once,
 * then `node dist/cli/bin.js ...`) as a child process against a real Postgres, every
 * command's output and exit code, `--json`, `--help`, and the bad inputs (unknown id,
 * malformed JSON, unreachable database, wrong schema) that must give one line on
 * stderr and exit 1, never a stack trace. `work` runs a module of handlers
 * (test/fixtures/cli-work.ts) until SIGTERM and exits 0.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Layer, Redacted, Scope } from "effect"
import { execFileSync, spawn } from "node:child_process"
import { type AddressInfo, createServer } from "node:net"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest"
import { Jobs, Migrations } from "../src/index.ts"
import { type ClaimedJobRow, JobStore } from "../src/internal/Store.ts"
import { Greet } from "./fixtures/cli-work.ts"
import { adminQuery, freshDatabase, withDatabase } from "./support/admin.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const bin = "dist/cli/bin.js"

/**
 * The children run as a user's would: without the source condition vitest sets, so
 * "effect-jobs" (imported by the work module) is the built package, like the bin.
 */
const childEnv = (): NodeJS.ProcessEnv => {
  const { DATABASE_URL: _, ...env } = process.env
  return {
    ...env,
    NODE_OPTIONS: (env.NODE_OPTIONS ?? "").replace(/--conditions[= ]@effect-jobs\/source/g, "").trim(),
    NO_COLOR: "1"
  }
}

interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the bin to its end (killed after 30 s); `DATABASE_URL` is `databaseUrl` unless `env` says otherwise. */
const cli = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}): Promise<Result> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: root,
      env: { ...childEnv(), DATABASE_URL: databaseUrl, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += chunk))
    child.stderr.on("data", (chunk) => (stderr += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.on("error", reject)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })

/** Succeeds, prints nothing on stderr; returns stdout. */
const ok = async (args: ReadonlyArray<string>, env?: Record<string, string | undefined>): Promise<string> => {
  const r = await cli(args, env)
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" })
  return r.stdout
}

const okJson = async (args: ReadonlyArray<string>, env?: Record<string, string | undefined>): Promise<any> =>
  JSON.parse(await ok([...args, "--json"], env))

/** Fails with exit code 1, one line on stderr (matching `message`), nothing on stdout, no stack trace. */
const fails = async (args: ReadonlyArray<string>, message: RegExp, env?: Record<string, string | undefined>) => {
  const r = await cli(args, env)
  expect({ args, code: r.code, stdout: r.stdout }).toEqual({ args, code: 1, stdout: "" })
  expect(r.stderr).toMatch(/^effect-jobs: [^\n]+\n$/)
  expect(r.stderr).toMatch(message)
  expect(r.stderr).not.toMatch(/\bat .+:\d+:\d+/) // a stack frame
}

/** A port nothing listens on. */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })

const scope = Effect.runSync(Scope.make())
let databaseUrl = ""
let emptyUrl = ""

const run = <A, E>(effect: Effect.Effect<A, E, PgClient.PgClient | JobStore | Jobs.Jobs>) =>
  Effect.runPromise(effect.pipe(
    Effect.provide(
      Layer.mergeAll(JobStore.layer, Jobs.layer).pipe(
        Layer.provideMerge(Layer.fresh(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })))
      )
    ),
    Effect.scoped
  ))

/** Claims every available job of `queue` and ends each one `state`, as a worker would. */
const finishAll = (queue: string, state: "dead" | "completed") =>
  run(Effect.gen(function*() {
    const store = yield* JobStore
    const now = Date.now()
    const claimed: ReadonlyArray<ClaimedJobRow> = yield* store.jobClaim({ queue, limit: 100, now, leaseMillis: 30_000, workerId: "cli-test" })
    yield* store.jobFinishMany(
      claimed.map((r) => ({
        id: r.id,
        token: r.claim_count,
        state,
        run_at: null,
        attempt_delta: 0,
        result: state === "completed" ? { ok: true } : null,
        error: state === "dead" ? { attempt: r.attempt, at: new Date(now).toISOString(), kind: "Boom", message: "boom" } : null
      })),
      now
    )
    return claimed.map((r) => r.id)
  }))

beforeAll(async () => {
  execFileSync(process.execPath, ["scripts/build.ts"], { cwd: root, stdio: "pipe" })
  const name = `ej_cli_${process.pid}_${Date.now().toString(36)}`
  databaseUrl = await Effect.runPromise(
    freshDatabase(inject("databaseUrl"), inject("templateDatabase"), name).pipe(Scope.provide(scope))
  )
  // A database with no effect-jobs tables at all, for `migrate`.
  emptyUrl = await Effect.runPromise(
    Effect.acquireRelease(
      Effect.as(adminQuery(inject("databaseUrl"), (sql) => sql.unsafe(`CREATE DATABASE "${name}_empty"`)), withDatabase(inject("databaseUrl"), `${name}_empty`)),
      () => adminQuery(inject("databaseUrl"), (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${name}_empty" WITH (FORCE)`)).pipe(Effect.ignore)
    ).pipe(Scope.provide(scope))
  )
}, 120_000)

afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

const commands = ["migrate", "status", "list", "get", "retry", "cancel", "delete", "prune", "pause", "resume", "enqueue", "work", "dashboard"]

describe("the framework's parts", () => {
  it("--help on the root and on every command: usage, exit 0", async () => {
    const top = await ok(["--help"])
    for (const command of commands) expect(top).toMatch(new RegExp(`^  ${command}\\b`, "m"))
    const helps = await Promise.all(commands.map((command) => ok([command, "--help"])))
    commands.forEach((command, i) => {
      expect(helps[i]).toContain(`effect-jobs ${command}`)
      expect(helps[i]).toContain("--database-url")
    })
  })

  it("--version prints the package's version; --completions prints a shell script", async () => {
    const { version } = JSON.parse(execFileSync("node", ["-p", "JSON.stringify(require('./package.json'))"], { cwd: root, encoding: "utf8" }))
    expect(await ok(["--version"])).toContain(version)
    expect(await ok(["--completions", "bash"])).toMatch(/complete .*effect-jobs/)
  })

  it("an unknown command, an unknown flag or a missing argument: one line naming it and the help to read, exit 1", async () => {
    await fails(["frobnicate"], /Unknown subcommand "frobnicate".*effect-jobs --help/)
    await fails(["list", "--bogus"], /Unrecognized flag: --bogus.*effect-jobs list --help/)
    await fails(["get"], /Missing required argument: id/)
    await fails(["prune"], /Missing required flag: --older-than/)
    await fails(["list", "--limit", "many"], /limit/)
  })
})

describe("migrate", () => {
  it("--print-sql prints Migrations.sql(schema), without a database", async () => {
    const expected = await Effect.runPromise(Migrations.sql("billing_jobs"))
    expect(await ok(["migrate", "--print-sql", "--schema", "billing_jobs"], { DATABASE_URL: undefined })).toBe(`${expected.trimEnd()}\n`)
    const asJson = await okJson(["migrate", "--print-sql"], { DATABASE_URL: undefined })
    expect(asJson).toEqual({ schema: "effect_jobs", sql: await Effect.runPromise(Migrations.sql()) })
  })

  it("--status lists pending versions, migrate applies them once, --status lists them applied", async () => {
    const env = { DATABASE_URL: emptyUrl }
    await fails(["status"], /schema "effect_jobs" has no effect-jobs tables in this database: run `effect-jobs migrate`/, env)
    const before = await okJson(["migrate", "--status"], env)
    expect(before.applied).toEqual([])
    expect(before.pending.map((m: { id: number }) => m.id)).toEqual([1, 2, 3, 4, 5, 6, 7])
    const human = await ok(["migrate", "--status"], env)
    expect(human).toMatch(/^VERSION\s+NAME\s+STATE\s+APPLIED AT\n0001\s+create_jobs\s+pending\s+-\n/)
    expect(human).toContain("0 applied, 7 pending in schema effect_jobs")

    expect(await ok(["migrate"], env)).toMatch(/^applied 7 migrations to schema effect_jobs: 0001_create_jobs, 0002_cancel_requests, .*0006_workers, 0007_buffered\n$/)
    expect(await ok(["migrate"], env)).toBe("schema effect_jobs is up to date\n")
    expect(await okJson(["migrate"], env)).toEqual({ schema: "effect_jobs", applied: [] })
    const after = await okJson(["migrate", "--status"], env)
    expect(after.pending).toEqual([])
    expect(after.applied.map((m: { id: number; name: string }) => `${m.id}_${m.name}`)).toEqual(before.pending.map((m: { id: number; name: string }) => `${m.id}_${m.name}`))
    expect(Number.isNaN(Date.parse(after.applied[0].appliedAt))).toBe(false)

    // Another schema in the same database is a queue of its own, migrated apart.
    expect(await ok(["migrate", "--schema", "other_jobs"], env)).toMatch(/^applied 7 migrations to schema other_jobs/)
    expect(await okJson(["status", "--schema", "other_jobs"], env)).toEqual({ schema: "other_jobs", queues: [] })
    await fails(["migrate", "--status", "--print-sql"], /cannot be used together/, env)
  })
})

describe("enqueue, list, get, status", () => {
  it("enqueue prints the id; get shows what was stored; a unique key returns the same id", async () => {
    const id = (await ok(["enqueue", "send-email", "--args", `{"to":"ada@example.com","n":1}`, "--queue", "cli-mail", "--priority", "3", "--max-attempts", "4", "--unique-key", "welcome:1"])).trim()
    expect(id).toMatch(/^[1-9]\d*$/)
    expect(await okJson(["enqueue", "send-email", "--args", `{"to":"other"}`, "--queue", "cli-mail", "--unique-key", "welcome:1"])).toEqual({ id })

    const job = await okJson(["get", id])
    expect(job).toMatchObject({
      id,
      name: "send-email",
      queue: "cli-mail",
      state: "available",
      priority: 3,
      attempt: 0,
      maxAttempts: 4,
      args: { to: "ada@example.com", n: 1 },
      result: null,
      errors: [],
      uniqueKey: "welcome:1",
      finalizedAt: null
    })
    const human = await ok(["get", id])
    expect(human).toMatch(new RegExp(`^id\\s+${id}\\n`))
    expect(human).toMatch(/^args\s+\{"n":1,"to":"ada@example.com"\}$/m) // jsonb orders keys
    expect(human).toMatch(/^attempts\s+0 of 4$/m)
    expect(human).toMatch(/^errors\s+none$/m)

    const later = (await ok(["enqueue", "reminder", "--queue", "cli-mail", "--delay", "1 hour"])).trim()
    const scheduled = await okJson(["get", later])
    expect(scheduled.state).toBe("scheduled")
    expect(scheduled.args).toEqual({})
    expect(Date.parse(scheduled.runAt) - Date.parse(scheduled.createdAt)).toBeGreaterThan(59 * 60_000)
  })

  it("bad enqueue input: malformed JSON, a bad delay, an empty name; nothing is written", async () => {
    const before = (await okJson(["list", "--queue", "cli-bad"])).jobs.length
    await fails(["enqueue", "x", "--args", "{nope", "--queue", "cli-bad"], /--args is not valid JSON/)
    await fails(["enqueue", "x", "--delay", "soonish", "--queue", "cli-bad"], /delay must be a finite, non-negative duration/)
    await fails(["enqueue", "x", "--priority", "99999", "--queue", "cli-bad"], /priority must be an integer/)
    await fails(["enqueue", "", "--queue", "cli-bad"], /Job name must have 1 to 255 characters/)
    expect((await okJson(["list", "--queue", "cli-bad"])).jobs.length).toBe(before)
  })

  it("list filters by state, queue and name, and pages with --limit and --after", async () => {
    const ids: Array<string> = []
    for (let i = 0; i < 5; i++) ids.push((await ok(["enqueue", i % 2 === 0 ? "even" : "odd", "--args", `{"i":${i}}`, "--queue", "cli-list"])).trim())
    const page1 = await okJson(["list", "--queue", "cli-list", "--limit", "2"])
    expect(page1.jobs.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[3]])
    expect(page1.next).toBe(ids[3])
    const page2 = await okJson(["list", "--queue", "cli-list", "--limit", "2", "--after", page1.next])
    expect(page2.jobs.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]])
    const page3 = await okJson(["list", "--queue", "cli-list", "--limit", "2", "--after", page2.next])
    expect(page3.jobs.map((j: { id: string }) => j.id)).toEqual([ids[0]])
    expect(page3.next).toBeNull()
    expect((await okJson(["list", "--queue", "cli-list", "--order", "oldest", "--limit", "1"])).jobs[0].id).toBe(ids[0])

    expect((await okJson(["list", "--queue", "cli-list", "--name", "odd"])).jobs.map((j: { id: string }) => j.id)).toEqual([ids[3], ids[1]])
    expect((await okJson(["list", "--queue", "cli-list", "--state", "completed,dead"])).jobs).toEqual([])
    expect((await okJson(["list", "--queue", "cli-list", "--state", "available"])).jobs.length).toBe(5)

    const human = await ok(["list", "--queue", "cli-list", "--limit", "2"])
    const lines = human.trimEnd().split("\n")
    expect(lines[0]).toMatch(/^ID\s+STATE\s+QUEUE\s+NAME\s+ATTEMPT\s+RUN AT\s+CREATED AT$/)
    expect(lines[1]).toMatch(new RegExp(`^${ids[4]}\\s+available\\s+cli-list\\s+even\\s+0/25\\s`))
    expect(lines[3]).toBe(`more: --after ${ids[3]}`)
    expect(await ok(["list", "--queue", "no-such-queue"])).toBe("no jobs\n")

    await fails(["list", "--state", "done"], /--state must be one or more of scheduled, available, running, completed, dead, cancelled/)
    await fails(["list", "--limit", "0"], /limit must be an integer in \[1, 1000\], got 0/)
    await fails(["list", "--after", "not-a-cursor"], /cursor must be the "next" of a previous page/)
  })

  it("status counts jobs per queue and state and shows paused queues; pause and resume", async () => {
    for (let i = 0; i < 3; i++) await ok(["enqueue", "counted", "--queue", "cli-status"])
    await finishAll("cli-status", "completed")
    await ok(["enqueue", "counted", "--queue", "cli-status"])
    expect(await ok(["pause", "cli-status"])).toBe("queue cli-status paused for every worker\n")
    const queues = (await okJson(["status"])).queues
    expect(queues.find((q: { name: string }) => q.name === "cli-status")).toEqual({
      name: "cli-status",
      paused: true,
      counts: { scheduled: 0, available: 1, running: 0, completed: 3, dead: 0, cancelled: 0 }
    })
    const human = await ok(["status"])
    expect(human).toMatch(/^QUEUE\s+PAUSED\s+SCHEDULED\s+AVAILABLE\s+RUNNING\s+COMPLETED\s+DEAD\s+CANCELLED$/m)
    expect(human).toMatch(/^cli-status\s+yes\s+0\s+1\s+0\s+3\s+0\s+0$/m)
    expect(await okJson(["resume", "cli-status"])).toEqual({ queue: "cli-status", paused: false })
    expect((await okJson(["status"])).queues.find((q: { name: string }) => q.name === "cli-status").paused).toBe(false)
    await fails(["pause", ""], /queue must be a name of 1 to 255 characters/)
  })
})

describe("retry, cancel, delete, prune", () => {
  it("cancel by id and by key; retry a cancelled job; the wrong state is one line, exit 1", async () => {
    const a = (await ok(["enqueue", "cancel-me", "--queue", "cli-cancel"])).trim()
    expect(await ok(["cancel", a, "--reason", "not needed"])).toBe(`job ${a} cancelled\n`)
    const cancelled = await okJson(["get", a])
    expect(cancelled.state).toBe("cancelled")
    expect(cancelled.errors.at(-1)).toMatchObject({ kind: "Cancelled", message: "not needed" })
    await fails(["cancel", a], new RegExp(`job ${a} is already cancelled`))

    expect(await ok(["retry", a])).toBe(`job ${a} is available again\n`)
    expect((await okJson(["get", a])).state).toBe("available")
    await fails(["retry", a], new RegExp(`job ${a} is available: only dead or cancelled jobs can be retried`))

    const b = (await ok(["enqueue", "keyed", "--queue", "cli-cancel", "--unique-key", "k-1"])).trim()
    expect(await okJson(["cancel", "--key", "k-1", "--name", "keyed"])).toEqual({ id: b, outcome: "cancelled" })
    await fails(["cancel", "--key", "k-1", "--name", "keyed"], /no unfinished job "keyed" with unique key "k-1"/)
    await fails(["cancel"], /cancel: give a job id, or --key <key> --name <name>/)
    await fails(["cancel", b, "--key", "k-1", "--name", "keyed"], /not both/)
  })

  it("retry --dead --queue re-drives the dead jobs of a queue", async () => {
    for (let i = 0; i < 2; i++) await ok(["enqueue", "doomed", "--queue", "cli-dead"])
    const dead = await finishAll("cli-dead", "dead")
    expect(dead.length).toBe(2)
    const shown = await ok(["get", dead[0]!])
    expect(shown).toMatch(/^  attempt 1 at \S+: Boom: boom$/m)
    expect(await ok(["retry", "--dead", "--queue", "cli-dead"])).toBe("2 dead jobs of queue cli-dead made available again\n")
    expect((await okJson(["list", "--queue", "cli-dead", "--state", "available"])).jobs.length).toBe(2)
    expect(await okJson(["retry", "--dead", "--queue", "cli-dead"])).toEqual({ queue: "cli-dead", retried: 0 })
    await fails(["retry", "--dead"], /retry --dead needs --queue <queue>/)
    await fails(["retry"], /retry: give a job id, or --dead --queue <queue>/)
    await fails(["retry", "1", "--dead", "--queue", "cli-dead"], /not both/)
  })

  it("delete removes a job; prune deletes finished jobs older than --older-than, by state", async () => {
    const a = (await ok(["enqueue", "delete-me", "--queue", "cli-del"])).trim()
    expect(await ok(["delete", a])).toBe(`job ${a} deleted\n`)
    await fails(["get", a], new RegExp(`no job with id "${a}"`))
    await fails(["delete", a], new RegExp(`no job with id "${a}"`))

    for (let i = 0; i < 3; i++) await ok(["enqueue", "prune-me", "--queue", "cli-prune"])
    await finishAll("cli-prune", "completed")
    await ok(["enqueue", "prune-dead", "--queue", "cli-prune"])
    await finishAll("cli-prune", "dead")
    expect(await ok(["prune", "--older-than", "1 hour", "--queue", "cli-prune"])).toBe("deleted 0 finished jobs\n")
    expect(await okJson(["prune", "--older-than", "0 seconds", "--queue", "cli-prune", "--state", "completed"])).toEqual({ deleted: 3 })
    expect((await okJson(["list", "--queue", "cli-prune"])).jobs.map((j: { state: string }) => j.state)).toEqual(["dead"])
    expect(await ok(["prune", "--older-than", "0 seconds", "--queue", "cli-prune"])).toBe("deleted 1 finished job\n")
    await fails(["prune", "--older-than", "a while"], /--older-than must be a duration such as "7 days"/)
    await fails(["prune", "--older-than", "1 day", "--state", "running"], /--state must be one or more of completed, dead, cancelled/)
  })
})

describe("bad input: one line on stderr, exit 1, never a stack trace", () => {
  it("an unknown or malformed id", async () => {
    await fails(["get", "987654321"], /no job with id "987654321"/)
    await fails(["get", "abc"], /no job with id "abc"/)
    await fails(["cancel", "987654321"], /no job with id "987654321"/)
    await fails(["delete", "0"], /no job with id "0"/)
  })

  it("an unreachable database, a malformed URL, no URL at all", async () => {
    const port = await closedPort()
    await fails(["status"], new RegExp(`cannot reach the database at 127\\.0\\.0\\.1:${port}/nowhere: .*ECONNREFUSED`), {
      DATABASE_URL: `postgres://postgres:secret-pw@127.0.0.1:${port}/nowhere`
    })
    const r = await cli(["list", "--database-url", `postgres://postgres:secret-pw@127.0.0.1:${port}/nowhere`])
    expect(r.code).toBe(1)
    expect(r.stderr).not.toContain("secret-pw")
    await fails(["status"], /the database URL is not a valid URL/, { DATABASE_URL: "not a url" })
    await fails(["status"], /no database: pass --database-url postgres:\/\/\.\.\. or set DATABASE_URL/, { DATABASE_URL: undefined })
  })

  it("a schema name that is not valid, and one that holds no effect-jobs tables", async () => {
    await fails(["status", "--schema", "Bad-Name"], /invalid schema name: "Bad-Name" may contain only lower-case letters/)
    await fails(["migrate", "--print-sql", "--schema", "public"], /invalid schema name: public is the application's schema/)
    await fails(["list", "--schema", "nobody_here"], /schema "nobody_here" has no effect-jobs tables in this database: run `effect-jobs migrate --schema nobody_here`/)
  })
})

describe("work", () => {
  it("runs the module's handlers until SIGTERM, then shuts down gracefully and exits 0", async () => {
    const child = spawn(process.execPath, [bin, "work", "test/fixtures/cli-work.ts"], {
      cwd: root,
      env: { ...childEnv(), DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk) => (stdout += chunk))
    child.stderr.on("data", (chunk) => (stderr += chunk))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on("close", (code, signal) => resolve({ code, signal }))
    )
    try {
      const id = (await ok(["enqueue", "cli-greet", "--args", `{"name":"ada"}`, "--queue", "cli-work"])).trim()
      // Woken by the NOTIFY the worker's completion sends; fails after 30 s.
      const result = await run(Effect.flatMap(Jobs.Jobs, (jobs) => jobs.await(Greet, id, { timeout: "30 seconds" })))
      expect(result).toEqual({ greeting: "hello ada" })
      expect((await okJson(["get", id])).state).toBe("completed")
      // Arguments the handler's Schema does not decode (enqueue stores them as given): dead, with the Schema's message.
      const bad = (await ok(["enqueue", "cli-greet", "--args", `{"nom":1}`, "--queue", "cli-work"])).trim()
      const exit = await run(Effect.exit(Effect.flatMap(Jobs.Jobs, (jobs) => jobs.await(Greet, bad, { timeout: "30 seconds" }))))
      expect(exit._tag).toBe("Failure")
      const dead = await okJson(["get", bad])
      expect(dead.state).toBe("dead")
      expect(dead.errors.at(-1)).toMatchObject({ kind: "InvalidArgs" })
      expect(dead.errors.at(-1).message).toMatch(/arguments do not decode/)
      child.kill("SIGTERM")
      expect(await exited).toEqual({ code: 0, signal: null })
      expect(stdout).toMatch(/^effect-jobs: worker \S+ serving cli-work in schema effect_jobs; stop with Ctrl-C or SIGTERM\n/)
      expect(stdout).toMatch(/effect-jobs: worker stopped\n$/)
      expect(stderr).toBe("")
    } finally {
      child.kill("SIGKILL")
    }
  })

  it("SIGINT (Ctrl-C) stops it gracefully too: exit 0", async () => {
    const child = spawn(process.execPath, [bin, "work", "test/fixtures/cli-work.ts"], {
      cwd: root,
      env: { ...childEnv(), DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on("close", (code, signal) => resolve({ code, signal }))
    )
    try {
      // Interrupt it once it says it serves (its worker is up), not at some guessed moment.
      await new Promise<void>((resolve) =>
        child.stdout.on("data", (chunk) => {
          stdout += chunk
          if (stdout.includes("serving cli-work")) resolve()
        })
      )
      child.kill("SIGINT")
      expect(await exited).toEqual({ code: 0, signal: null })
      expect(stdout).toMatch(/effect-jobs: worker stopped\n$/)
    } finally {
      child.kill("SIGKILL")
    }
  })

  it("a module that is missing or does not export queues and handlers, or an unmigrated schema: one line, exit 1", async () => {
    await fails(["work", "test/fixtures/cli-work.ts", "--schema", "never_migrated"], /schema "never_migrated" has no effect-jobs tables/)
    await fails(["work", "test/fixtures/no-such-module.ts"], /cannot import test\/fixtures\/no-such-module\.ts/)
    await fails(["work", "test/fixtures/cli-work-empty.mjs"], /has no queues to serve: it must export default \{ queues/)
  })
})

describe("dashboard", () => {
  /** Starts `dashboard args...`; resolves once it prints its address (it listens then). */
  const start = async (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
    const child = spawn(process.execPath, [bin, "dashboard", "--port", "0", ...args], {
      cwd: root,
      env: { ...childEnv(), DATABASE_URL: databaseUrl, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stderr.on("data", (chunk) => (stderr += chunk))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on("close", (code, signal) => resolve({ code, signal }))
    )
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (chunk) => {
        stdout += chunk
        const m = /dashboard on (http:\/\/\S+\/) /.exec(stdout)
        if (m) resolve(m[1]!)
      })
      exited.then(() => reject(new Error(`dashboard exited: ${stderr}`)))
    })
    return { child, url, exited, output: () => ({ stdout, stderr }) }
  }

  it("serves the UI and the API on 127.0.0.1; --read-only refuses changes; SIGTERM stops it, exit 0", async () => {
    const { child, exited, output, url } = await start(["--read-only"])
    try {
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
      const page = await fetch(url)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain(`<base href="/">`)
      const queues = await fetch(`${url}api/queues`)
      expect(queues.status).toBe(200)
      expect(Array.isArray(((await queues.json()) as any).queues)).toBe(true)
      const refused = await fetch(`${url}api/queues/cli-dash/pause`, { method: "POST" })
      expect(refused.status).toBe(403)
      expect((await okJson(["status"])).queues.find((q: any) => q.name === "cli-dash")).toBeUndefined()
      child.kill("SIGTERM")
      expect(await exited).toEqual({ code: 0, signal: null })
      expect(output().stdout).toMatch(/\(read-only\); stop with Ctrl-C or SIGTERM\n[^]*effect-jobs: dashboard stopped\n$/)
      expect(output().stderr).toBe("")
    } finally {
      child.kill("SIGKILL")
    }
  })

  it("a token from EFFECT_JOBS_DASHBOARD_TOKEN guards the API; changes pass with it", async () => {
    const { child, exited, url } = await start(["--prefix", "/ops"], { EFFECT_JOBS_DASHBOARD_TOKEN: "cli-token-123" })
    try {
      expect(url).toMatch(/\/ops\/$/)
      expect((await fetch(`${url}api/queues`)).status).toBe(401)
      const paused = await fetch(`${url}api/queues/cli-dash-token/pause`, {
        method: "POST",
        headers: { authorization: "Bearer cli-token-123" }
      })
      expect(paused.status).toBe(204)
      expect((await okJson(["status"])).queues.find((q: any) => q.name === "cli-dash-token")?.paused).toBe(true)
      child.kill("SIGINT")
      expect(await exited).toEqual({ code: 0, signal: null })
    } finally {
      child.kill("SIGKILL")
    }
  })

  it("a host other than loopback without a token, a bad port or prefix, an unmigrated schema: one line, exit 1", async () => {
    await fails(["dashboard", "--host", "0.0.0.0"], /--host 0\.0\.0\.0 lets other machines reach the dashboard: give it a token/)
    await fails(["dashboard", "--port", "70000"], /--port must be 0 to 65535/)
    await fails(["dashboard", "--prefix", "jobs"], /--prefix must be a path like \/jobs/)
    await fails(["dashboard", "--token", "short"], /--token must be at least 8 characters/)
    await fails(["dashboard", "--schema", "never_migrated"], /schema "never_migrated" has no effect-jobs tables/)
  })
})
