/**
 * Every example in examples/ (but main.ts, the demo) runs as its own process,
 * as a user would run it, against a fresh database cloned from the migrated
 * template, and must exit 0 having printed its key line. The demo (main.ts) and
 * the README example are run too: twice on one database (the demo, which then prints how
 * to open the dashboard on it), once with --dashboard (it serves it until SIGINT), and against
 * a database that is not there (both must print one error and exit 1).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { type AddressInfo, createServer } from "node:net"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"
import { freshDatabase } from "./support/admin.ts"

const root = fileURLToPath(new URL("..", import.meta.url))

/** A line each example prints only when it did what it shows. */
const expected: Record<string, RegExp> = {
  "basic.ts": /job (\d+) completed with messageId msg-\1\n/,
  "retries.ts": /charge-card #\d+: dead after 3 attempts/,
  "outcomes.ts": /wait-for-export: completed, attempt 1\n/,
  "transactional-enqueue.ts": /job \d+ after the rollback: does not exist/,
  "unique-jobs.ts": /enqueue twice with key welcome:42 -> ids (\d+) and \1\n/,
  "flow-global.ts": /8 exports on 2 workers of 3 slots each: at most 2 ran at once\n/,
  "flow-rate.ts": /12 calls at 5 per second on 2 workers: spread over at least 1.5 s\n/,
  "flow-per-group.ts": /36 webhooks of 3 tenants on 6 slots: at most 2\/2\/2 per tenant at once/,
  "flow-sequence.ts": /account A: 1, 2 \(failed\), 2, 3, 4; account B: 1, 2, 3, 4\n/,
  "debounce.ts": /5 edits of doc 1 -> inserted, replaced, replaced, replaced, replaced: one run, with "rev 5"\n/,
  "rate-limit.ts": /12 calls, 5 per second: 5, 5, 2 in windows 1, 2, 3\n/,
  "priorities-and-delays.ts": /order: password reset, order shipped, weekly newsletter, meeting starts, trial ends soon/,
  "graceful-shutdown.ts": /yearly is available with 0 attempts spent/,
  "request-id.ts": /stored request ids: job \d+: req-7f3a;/,
  "observability.ts": /scraped: effect_jobs_completed_total\{queue="reports",job_name="render-report"\} 5\n/,
  "otlp.ts": /collector received \d+ spans, \d+ of them job runs in the trace of "checkout"; metrics include effect_jobs_completed_total/,
  "bundles.ts": /bundle \d+ finished: completed 4, dead 1; follow-up job \d+\n/,
  "periodic.ts": /3 slots, 2000 and 2000 ms apart; jobs per slot: 1(, 1)+\n/,
  "await-result.ts": /job \d+: JobDead: no carrier ships to AQ\n/,
  "cancel-running.ts": /await\(\d+\) -> JobCancelled \(export no longer needed\)\n/,
  "runtime-settings.ts": /concurrency set to 3 in the settings store: 3 exports running \(status: 3\)\n[\s\S]*the exports are kept 10, 10, 10, 10 minutes\n/,
  "testing.ts": /TestClock: charge-card completed on attempt 3 at \+30 min, trial-reminder at \+1440 min; the virtual clock moved 24 h\n/
}

const examples = readdirSync(new URL("../examples/", import.meta.url))
  .filter((file) => file.endsWith(".ts") && file !== "main.ts")
  .sort()

interface Run {
  readonly code: number | null
  readonly output: string
}

/** Runs `node <path>` (default: under examples/) with DATABASE_URL set; kills it after 90 seconds. */
const runExample = (file: string, databaseUrl: string) =>
  Effect.callback<Run>((resume) => {
    const child = spawn(process.execPath, [file.includes("/") ? file : `examples/${file}`], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk) => (output += chunk))
    child.stderr.on("data", (chunk) => (output += chunk))
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code, output }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

let counter = 0

/** A port nothing listens on, for a database that is not there. */
const closedPort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

describe("the README example", () => {
  it("is test/readme-example.ts (which typecheck checks), but for the import path", () => {
    const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
    const block = /^## Example\n\n```ts\n([\s\S]*?)^```$/m.exec(readme)?.[1]
    const mirror = readFileSync(new URL("./readme-example.ts", import.meta.url), "utf8")
    assert.isDefined(block)
    assert.strictEqual(mirror.split("\n").slice(1).join("\n").replaceAll(`"../src/index.ts"`, `"effect-jobs"`), block)
  })

  it.live("with a database that is not there: prints DatabaseUnreachable once and exits 1", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { code, output } = yield* runExample("test/readme-example.ts", `postgres://app:pw-hidden@127.0.0.1:${port}/app`)
      assert.strictEqual(code, 1, output)
      assert.strictEqual(output.match(/DatabaseUnreachable/g)?.length, 1, output)
      assert.include(output, `cannot reach the database at 127.0.0.1:${port}/app`)
      assert.notInclude(output, "pw-hidden")
    }), 60_000)
})

describe("the demo", () => {
  it.live("with a database that is not there: prints DatabaseUnreachable once and exits 1", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { code, output } = yield* runExample("examples/main.ts", `postgres://app:pw-hidden@127.0.0.1:${port}/app`)
      assert.strictEqual(code, 1, output)
      assert.strictEqual(output.match(/DatabaseUnreachable/g)?.length, 1, output)
      assert.notInclude(output, "pw-hidden")
    }), 60_000)

  it.live("runs twice on one database, exiting 0 both times", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabase(
        inject("databaseUrl"),
        inject("templateDatabase"),
        `ej_demo_${process.pid}_${Date.now().toString(36)}_${counter++}`
      )
      for (const run of [1, 2]) {
        const { code, output } = yield* runExample("examples/main.ts", url)
        assert.strictEqual(code, 0, `run ${run} exited with ${code}:\n${output}`)
        assert.match(output, /10 completed, 1 dead: done\.\n/)
        // how to open the dashboard on this database: a URL with a password is never printed
        const database = new URL(url).password === "" ? `'${url}'` : `"$DATABASE_URL"`
        assert.include(output, `node --conditions=@effect-jobs/source src/cli/bin.ts dashboard --database-url ${database}\n`)
      }
    }), 240_000)

  it.live("with --dashboard=0: serves the dashboard on the demo's database until SIGINT, then exits 0", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabase(
        inject("databaseUrl"),
        inject("templateDatabase"),
        `ej_demo_${process.pid}_${Date.now().toString(36)}_${counter++}`
      )
      const child = spawn(process.execPath, ["examples/main.ts", "--dashboard=0"], {
        cwd: root,
        env: { ...process.env, DATABASE_URL: url },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      const exited = new Promise<number | null>((resolve) => child.on("close", resolve))
      const address = new Promise<string>((resolve) => {
        const read = (chunk: Buffer) => {
          output += chunk
          const m = /dashboard on (http:\/\/127\.0\.0\.1:\d+\/) \(Ctrl-C to stop\)\n/.exec(output)
          if (m) resolve(m[1]!)
        }
        child.stdout.on("data", read)
        child.stderr.on("data", read)
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
      const base = yield* Effect.promise(() => Promise.race([address, exited.then(() => "")]))
      assert.notStrictEqual(base, "", `the demo exited before serving the dashboard:\n${output}`)
      const queues: any = yield* Effect.promise(() => fetch(`${base}api/queues`).then((r) => r.json()))
      assert.deepInclude(queues.queues.find((q: any) => q.name === "default"), {
        counts: { scheduled: 0, available: 0, running: 0, completed: 10, dead: 1, cancelled: 0 }
      })
      child.kill("SIGINT")
      assert.strictEqual(yield* Effect.promise(() => exited), 0, output)
      assert.include(output, "dashboard stopped")
    }).pipe(Effect.scoped), 120_000)
})

describe("examples", () => {
  it("every example has an expected line", () => {
    assert.deepStrictEqual(examples, Object.keys(expected).sort())
  })

  for (const file of examples) {
    it.live(file, () =>
      Effect.gen(function*() {
        const url = yield* freshDatabase(
          inject("databaseUrl"),
          inject("templateDatabase"),
          `ej_example_${process.pid}_${Date.now().toString(36)}_${counter++}`
        )
        const { code, output } = yield* runExample(file, url)
        assert.strictEqual(code, 0, `node examples/${file} exited with ${code}:\n${output}`)
        assert.match(output, expected[file] ?? /$^/, `node examples/${file} printed:\n${output}`)
      }), 120_000)
  }
})
