/**
 * The schema option: every table, function, trigger and NOTIFY channel of effect-jobs lives
 * in one Postgres schema (`effect_jobs` by default, `PgSchema.layer(name)` otherwise). Two
 * schemas in one database are two independent queues; a bad name is refused with a typed
 * error before anything is created; `Migrations.sql` gives the statements for another
 * migration tool.
 */
import { assert, describe, layer } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidSchemaName, Job, Jobs, JobsAdmin, Migrations, PgSchema } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { makeProbe } from "./support/probes.ts"

const Ping = Job.make("schema-ping", {
  args: Schema.Struct({ from: Schema.String }),
  success: Schema.String,
  queue: "shared"
})

/** A worker on the schema in context whose handler records who enqueued each job it ran. */
const startRecordingWorker = (ran: Array<string>, probe: Effect.Success<typeof makeProbe>) =>
  startWorker(
    { queues: { shared: { concurrency: 4 } } },
    Layer.merge(Job.toLayer(Ping, (args) => Effect.sync(() => (ran.push(args.from), args.from))), probe.layer)
  )

/** The client and admin of another schema, built in the test's scope. */
const clientsOf = (schema: string) =>
  Effect.map(
    Layer.build(Layer.fresh(Layer.mergeAll(Jobs.layer, JobsAdmin.layer)).pipe(Layer.provide(PgSchema.layer(schema)))),
    (context) => ({ jobs: Context.get(context, Jobs.Jobs), admin: Context.get(context, JobsAdmin.JobsAdmin) })
  )

const schemaCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM pg_namespace`, (rows) => rows[0]!.n))

const migrationIds = (schema: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly id: number }>`SELECT migration_id AS id FROM ${sql(`${schema}.migrations`)} ORDER BY 1`,
      (rows) => rows.map((r) => r.id)
    ))

layer(Layer.mergeAll(Jobs.layer, JobsAdmin.layer).pipe(Layer.provideMerge(TestDb.layer())), {
  excludeTestServices: true
})("PgSchema", (it) => {
  it.effect("two schemas in one database are two independent queues", () =>
    Effect.gen(function*() {
      const other = PgSchema.layer("tenant_b")
      const applied = yield* Effect.provide(Migrations.run, other)
      assert.strictEqual(applied.length, (yield* migrationIds("effect_jobs")).length, "every migration, in the new schema")
      assert.deepStrictEqual(yield* migrationIds("tenant_b"), yield* migrationIds("effect_jobs"))

      const ranA: Array<string> = []
      const ranB: Array<string> = []
      const probeA = yield* makeProbe
      const probeB = yield* makeProbe
      yield* startRecordingWorker(ranA, probeA)
      yield* startRecordingWorker(ranB, probeB).pipe(Effect.provide(other))

      // The same job name, queue and (in each schema's own sequence) the same ids.
      const jobsA = yield* Jobs.Jobs
      const b = yield* clientsOf("tenant_b")
      const jobsB = b.jobs
      const idsA = yield* jobsA.enqueueMany(Ping, [{ from: "a" }, { from: "a" }, { from: "a" }])
      const idsB = yield* jobsB.enqueueMany(Ping, [{ from: "b" }, { from: "b" }])
      assert.deepStrictEqual(idsB, idsA.slice(0, 2), "each schema numbers its jobs from its own sequence")
      for (const id of idsA) assert.strictEqual((yield* probeA.next(id))._tag, "completed")
      for (const id of idsB) assert.strictEqual((yield* probeB.next(id))._tag, "completed")
      assert.deepStrictEqual(ranA, ["a", "a", "a"], "the default schema's worker ran only its own jobs")
      assert.deepStrictEqual(ranB, ["b", "b"], "tenant_b's worker ran only its own jobs")
      assert.strictEqual(yield* jobsB.await(Ping, idsB[0]!), "b")

      // Management sees one schema: counts, and a pause that holds only there.
      const adminA = yield* JobsAdmin.JobsAdmin
      const adminB = b.admin
      const completed = (summary: ReadonlyArray<{ readonly name: string; readonly counts: Readonly<Record<string, number>> }>) =>
        summary.find((q) => q.name === "shared")?.counts["completed"]
      assert.strictEqual(completed(yield* adminA.queues), 3)
      assert.strictEqual(completed(yield* adminB.queues), 2)

      yield* adminA.pause("shared")
      const during = yield* jobsB.enqueue(Ping, { from: "b" })
      assert.strictEqual((yield* probeB.next(during))._tag, "completed", "a pause in one schema leaves the other running")
      yield* adminA.resume("shared")
    }))

  it.effect("Migrations.sql: the statements for another migration tool, for a schema of one's choosing", () =>
    Effect.gen(function*() {
      const text = yield* Migrations.sql("via_tool")
      const code = text.replaceAll(/--.*$/gm, "")
      assert.notMatch(code, /\beffect_jobs\.|"effect_jobs"/, "no object of the default schema is named")
      assert.include(text, `CREATE SCHEMA IF NOT EXISTS "via_tool";`)
      assert.include(text, `pg_notify('via_tool.new', q)`)
      const sql = yield* SqlClient.SqlClient
      yield* sql.withTransaction(Effect.forEach(Migrations.statements(text), (s) => sql.unsafe(s), { discard: true }))

      const ran: Array<string> = []
      const probe = yield* makeProbe
      const { jobs } = yield* clientsOf("via_tool")
      yield* startRecordingWorker(ran, probe).pipe(Effect.provide(PgSchema.layer("via_tool")))
      const id = yield* jobs.enqueue(Ping, { from: "tool" })
      assert.strictEqual((yield* probe.next(id))._tag, "completed")
      assert.deepStrictEqual(ran, ["tool"])
    }))

  describe("a bad schema name is a typed error, and nothing is created", () => {
    const bad = [
      `x"; DROP TABLE effect_jobs.jobs; --`,
      "a.b",
      "Upper",
      "1abc",
      "",
      "with space",
      "tab\u0000nul",
      "pg_catalog",
      "public",
      "a".repeat(PgSchema.maxLength + 1)
    ]
    for (const name of bad) {
      it.effect(JSON.stringify(name.length > 20 ? `${name.slice(0, 20)}...` : name), () =>
        Effect.gen(function*() {
          const before = yield* schemaCount
          const made = yield* Effect.exit(PgSchema.make(name))
          const migrated = yield* Effect.exit(Effect.provide(Migrations.run, PgSchema.layer(name)))
          const text = yield* Effect.exit(Migrations.sql(name))
          const jobs = yield* Effect.exit(clientsOf(name))
          const exits: ReadonlyArray<Exit.Exit<unknown, unknown>> = [made, migrated, text, jobs]
          for (const exit of exits) {
            assert.isTrue(Exit.isFailure(exit))
            const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail")?.error : undefined
            assert.instanceOf(error, InvalidSchemaName)
            assert.match((error as InvalidSchemaName).message, /^invalid schema name: /)
          }
          assert.strictEqual(yield* schemaCount, before, "no schema was created")
        }))
    }
  })
})
