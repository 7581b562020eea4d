/**
 * The maintenance leader's analyzer (src/internal/maintenance/Analyzer.ts): when the jobs
 * table has changed a lot since its statistics were last gathered and nothing (autovacuum)
 * gathers them, the leader runs ANALYZE, so that the cached plans of the worker's prepared
 * statements are made again for the table as it is (a plan made while it was nearly empty
 * reads it sequentially: BENCHMARKS.md, "Under a long transaction").
 */
import { assert, describe, it as unit, layer } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import { defaults, isStale } from "../src/internal/maintenance/Analyzer.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

describe("Analyzer.isStale", () => {
  unit("many changes since an ANALYZE long ago, or never, call for one", () => {
    assert.isTrue(isStale({ changed: 5000, sinceMillis: null, rows: 0 }))
    assert.isTrue(isStale({ changed: 5000, sinceMillis: defaults.minIntervalMillis, rows: 10_000 }))
  })
  unit("few changes, or a recent ANALYZE, do not", () => {
    assert.isFalse(isStale({ changed: 900, sinceMillis: null, rows: 0 }), "under minChanged")
    assert.isFalse(isStale({ changed: 5000, sinceMillis: null, rows: 100_000 }), "under the fraction of the table")
    assert.isFalse(isStale({ changed: 5000, sinceMillis: defaults.minIntervalMillis - 1, rows: 0 }), "analyzed a moment ago")
  })
})

const TestLayer = Jobs.layer.pipe(Layer.provideMerge(TestDb.layer()))
const Task = Job.make("an-task", { args: Schema.Struct({ n: Schema.Number }), queue: "an-other" })
const Served = Job.make("an-served", { args: Schema.Struct({}), queue: "an-queue" })

layer(TestLayer, { excludeTestServices: true })("analyzer", (it) => {
  it.effect("the leader analyzes a jobs table that changed and that nothing else analyzes", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // As on a server with autovacuum off: only the leader can analyze this table.
      yield* sql`ALTER TABLE effect_jobs.jobs SET (autovacuum_enabled = false)`
      const stats = sql<{ readonly analyzed: number; readonly reltuples: number }>`
        SELECT s.analyze_count::int AS analyzed, c.reltuples::float8 AS reltuples
        FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.relid = 'effect_jobs.jobs'::regclass`
      assert.strictEqual((yield* stats)[0]?.analyzed, 0)

      yield* startWorker({ queues: { "an-queue": {} }, pruner: { interval: "100 millis" } }, Job.toLayer(Served, () => Effect.void))
      // (jobs of a queue nobody serves here: they stay in the table)
      yield* (yield* Jobs.Jobs).enqueueMany(Task, Array.from({ length: 3000 }, (_, n) => ({ n })))

      // The inserts reach the statistics counters within seconds (Postgres flushes them), then
      // the leader's next round analyzes.
      const after = yield* waitFor(
        "an ANALYZE of the jobs table",
        Effect.map(stats, ([row]) => (row !== undefined && row.analyzed > 0 ? Option.some(row) : Option.none())),
        { every: "50 millis", timeout: "30 seconds" }
      )
      assert.isAtLeast(after.reltuples, 2000, "the planner now knows the table's size")
    }), 40_000)
})
