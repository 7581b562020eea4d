/**
 * The plans of the management statements on a table of 1,000,000 jobs (issue 15): every
 * statement the dashboard's calls issue through `JobsAdmin` — counts and queues, the job
 * list with each filter (state, queue, name, unique key), both orders and the next page,
 * one job, the search by id, throughput, workers, and the single-job actions — is recorded
 * as it is sent (`Statement.CurrentTransformer`), then run again under `EXPLAIN (FORMAT
 * JSON)` with the same parameters. A sequential scan of the jobs table fails the test; so
 * does a read-only statement that touches more than `bufferBudget` buffers (`EXPLAIN
 * (ANALYZE, BUFFERS)`): the table is about 36,000 pages, so this also catches a walk of the
 * whole primary key that the first check would let through.
 *
 * The one statement allowed to read the history is the full count of finished jobs, which
 * `counts` runs once and then stores (src/internal/Counts.ts): the test checks it ran once
 * for all the counting calls. The clock is a TestClock, so the stored count never goes
 * stale here.
 *
 * The table: test/support/bigTable.ts (one INSERT ... SELECT generate_series, then
 * ANALYZE; autovacuum is off on the CI server, so no visibility map either). The fill
 * takes most of the test's time, 10 to 30 s depending on the machine.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient, Statement } from "effect/sql"
import { JobsAdmin } from "../src/index.ts"
import { fillJobs, rareName, rareQueue } from "./support/bigTable.ts"
import * as TestDb from "./support/db.ts"
import { withTestClock } from "./support/probes.ts"

const rows = 1_000_000

/**
 * Buffers (hit or read) a read-only statement may touch. The table's heap is about 36,000
 * pages; its 24,000 unfinished jobs (which the partial indexes hold, and which a statement
 * may read in full: a count of scheduled jobs, a name filter over the waiting ones) lie on
 * about 10,000 of them, the 10,000 scheduled ones spread over the whole history.
 */
const bufferBudget = 15_000

interface Recorded {
  readonly text: string
  readonly params: ReadonlyArray<unknown>
  /** The call that issued it, for the failure message. */
  readonly call: string
}

interface PlanNode {
  readonly "Node Type": string
  readonly "Relation Name"?: string
  readonly "Index Name"?: string
  readonly "Shared Hit Blocks"?: number
  readonly "Shared Read Blocks"?: number
  readonly Plans?: ReadonlyArray<PlanNode>
}

const nodesOf = (node: PlanNode): ReadonlyArray<PlanNode> => [node, ...(node.Plans ?? []).flatMap(nodesOf)]

/** The plan as one line: its nodes, with the relation or index each reads. */
const summary = (node: PlanNode): string =>
  nodesOf(node).map((n) => `${n["Node Type"]}${n["Index Name"] ? ` ${n["Index Name"]}` : n["Relation Name"] ? ` ${n["Relation Name"]}` : ""}`)
    .join(" > ")

/** The full count of finished jobs: the statement Counts.ts runs once and stores. */
const isFinishedRecount = (text: string) =>
  /WHERE state IN \('completed', 'dead', 'cancelled'\) GROUP BY queue, state/.test(text)

/** Statements EXPLAIN ANALYZE may run: plain reads, no locks taken, nothing sent or changed. */
const isPlainRead = (text: string) =>
  /^\s*SELECT\b/i.test(text) && !/FOR UPDATE|pg_notify|pg_try_advisory|INSERT|UPDATE|DELETE/i.test(text)

const TestLayer = JobsAdmin.layer.pipe(Layer.provideMerge(TestDb.layer({ maxConnections: 4 })))


layer(TestLayer, { excludeTestServices: true })("plans at 1,000,000 jobs", (it) => {
  it.effect("no management statement reads the jobs table sequentially", () =>
    Effect.gen(function*() {
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const admin = yield* JobsAdmin.JobsAdmin
      yield* fillJobs(sql, rows)

      const ids = yield* sql<{ readonly state: string; readonly id: string }>`
        SELECT DISTINCT ON (state) state, id::text FROM effect_jobs.jobs ORDER BY state, id DESC`
      const idOf = (state: string) => ids.find((r) => r.state === state)!.id
      const [keyed] = yield* sql<{ readonly unique_key: string; readonly id: string }>`
        SELECT unique_key, id::text FROM effect_jobs.jobs WHERE id = 500000`

      const recorded: Array<Recorded> = []
      let current = ""
      const recorder: Statement.Transformer = (self) =>
        Effect.sync(() => {
          const [text, params] = self.compile()
          recorded.push({ text, params, call: current })
          return self
        })
      const record = <A, E>(call: string, effect: Effect.Effect<A, E>) =>
        Effect.suspend(() => {
          current = call
          return effect
        }).pipe(Effect.provideService(Statement.CurrentTransformer, recorder))

      // Every call of the dashboard's pages, as the API makes it.
      yield* withTestClock(Date.now(), Effect.gen(function*() {
        yield* record("queues", admin.queues)
        yield* record("queues again", admin.queues)
        yield* record("counts of one queue", admin.counts({ queue: "billing" }))
        yield* record("workers", admin.workers)
        yield* record("throughput", admin.throughput())
        yield* record("throughput of one queue", admin.throughput({ queue: "emails", minutes: 360 }))
        const lists: ReadonlyArray<readonly [string, JobsAdmin.ListOptions]> = [
          ["all jobs", {}],
          ["completed", { state: "completed" }],
          ["dead", { state: "dead" }],
          ["cancelled", { state: "cancelled" }],
          ["dead and cancelled", { state: ["dead", "cancelled"] }],
          ["available", { state: "available" }],
          ["scheduled", { state: "scheduled" }],
          ["running", { state: "running" }],
          ["a large queue", { queue: "emails" }],
          ["the rare queue", { queue: rareQueue }],
          ["a common name", { name: "charge" }],
          ["the rare name", { name: rareName }],
          ["a name that is not there", { name: "no-such-job" }],
          ["a unique key", { uniqueKey: keyed!.unique_key }],
          ["a unique key that is not there", { uniqueKey: "no-such-key" }],
          ["dead of a queue", { state: "dead", queue: "billing" }],
          ["available of a queue", { state: "available", queue: "webhooks" }],
          ["running of the rare queue", { state: "running", queue: rareQueue }],
          ["completed of the rare name", { state: "completed", name: rareName }],
          ["dead of a name in a queue", { state: "dead", queue: "billing", name: "charge" }]
        ]
        for (const [label, filter] of lists) {
          for (const order of ["newest", "oldest"] as const) {
            const first = yield* record(`list ${label}, ${order} first`, admin.list({ ...filter, order }))
            if (first.next !== undefined) {
              yield* record(`list ${label}, ${order} first, page 2`, admin.list({ ...filter, order, cursor: first.next }))
            }
          }
        }
        // The search box: a job id is looked up as a unique key and as an id.
        yield* record("search by id", admin.list({ uniqueKey: "123456" }))
        yield* record("get", admin.get("123456"))
        yield* record("get a job that is not there", Effect.ignore(admin.get("9999999")))
        // The actions, on one job each (they change it: last).
        yield* record("retry", admin.retry(idOf("dead")))
        yield* record("cancel a waiting job", admin.cancel(idOf("available")))
        yield* record("cancel a running job", admin.cancel(idOf("running")))
        yield* record("delete", admin.delete(idOf("completed")))
        yield* record("retry the dead of a queue", admin.retryDead(rareQueue))
        yield* record("pause", admin.pause(rareQueue))
      }))

      const recounts = recorded.filter((r) => isFinishedRecount(r.text))
      assert.deepStrictEqual(recounts.map((r) => r.call), ["queues"], "the finished jobs are counted once, then read from the stored count")

      const failures: Array<string> = []
      let explained = 0
      for (const r of recorded) {
        if (isFinishedRecount(r.text) || !/\bjobs\b/.test(r.text)) continue
        const analyze = isPlainRead(r.text)
        const [row] = yield* sql.unsafe<{ readonly "QUERY PLAN": ReadonlyArray<{ readonly Plan: PlanNode }> }>(
          `EXPLAIN (${analyze ? "ANALYZE, BUFFERS, " : ""}FORMAT JSON) ${r.text}`,
          r.params as Array<unknown>
        )
        const plan = row!["QUERY PLAN"][0]!.Plan
        explained++
        if (process.env["PLANS_VERBOSE"] !== undefined) {
          const buffers = (plan["Shared Hit Blocks"] ?? 0) + (plan["Shared Read Blocks"] ?? 0)
          console.log(`${r.call}: ${analyze ? `${buffers} buffers, ` : ""}${summary(plan)}`)
        }
        if (nodesOf(plan).some((n) => n["Node Type"] === "Seq Scan" && n["Relation Name"] === "jobs")) {
          failures.push(`${r.call}: sequential scan of jobs: ${summary(plan)}\n    ${r.text.replace(/\s+/g, " ")}`)
        }
        const buffers = (plan["Shared Hit Blocks"] ?? 0) + (plan["Shared Read Blocks"] ?? 0)
        if (analyze && buffers > bufferBudget) {
          failures.push(`${r.call}: ${buffers} buffers (budget ${bufferBudget}): ${summary(plan)}\n    ${r.text.replace(/\s+/g, " ")}`)
        }
      }
      assert.isAbove(explained, 60, "every call's statements were explained")
      assert.deepStrictEqual(failures, [])

      // The plans above are the ones made for each call's own values. A prepared statement
      // (the driver caches them by name) may switch to a generic plan after five runs, made
      // for an average value: for `name = $1` that is the walk of the primary key, which a
      // name no job has reads to its end. The list is sent unprepared, planned for each call.
      // On a pool of one connection: `pg_prepared_statements` shows that session's statements.
      const pool = yield* Layer.build(Layer.fresh(TestDb.pool({ maxConnections: 1 })))
      const one = Context.get(
        yield* Layer.build(Layer.fresh(JobsAdmin.layer).pipe(Layer.provide(Layer.succeedContext(pool)))),
        JobsAdmin.JobsAdmin
      )
      for (let i = 0; i < 8; i++) yield* one.list({ name: "no-such-job" })
      for (let i = 0; i < 8; i++) yield* one.list({ queue: rareQueue, state: "dead" })
      const prepared = yield* Context.get(pool, SqlClient.SqlClient)<{ readonly statement: string; readonly generic_plans: number }>`
        SELECT statement, generic_plans::int FROM pg_prepared_statements`
      assert.deepStrictEqual(prepared.filter((p) => p.statement.includes("ORDER BY jobs.id")), [], "the list is never prepared")
      assert.isNotEmpty(prepared, "the session's other statements are (the check reads the right session)")
    }), 240_000)
})
