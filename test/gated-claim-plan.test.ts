/**
 * The gated claim's plan on a table that has not been analyzed (migration 0018). That is a
 * fresh table right after a burst of jobs, where autovacuum is off or has not come round yet.
 * claim_gated locks the rows it picked. When the locking scan also said
 * `state = 'available'`, the planner read the ids from jobs_claim_idx, whose predicate that
 * matches, and walked every entry of that index once per claim (id is its last column). On
 * PG15, a gated drain of 20,000 jobs ran at about a fifth of its rate on an analyzed table.
 * (PG18's planner takes the primary key there with or without the fix: the test tells the two
 * apart on PG15, which CI runs the suite on too.)
 *
 * The check counts the blocks of jobs_claim_idx that the claims read
 * (`pg_stat_get_xact_blocks_fetched` before and after them, in one transaction). Claims of grouped jobs read their groups from
 * jobs_group_claim_idx, so they have no reason to read the plain claim index at all.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type GatedFlow, JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"

const TestLayer = JobStore.layer.pipe(Layer.provideMerge(TestDb.layer({ maxConnections: 2 })))

const perGroup: GatedFlow = {
  global: undefined,
  perGroup: 1,
  sequence: false,
  onDead: "continue",
  rate: undefined,
  groupRate: undefined
}

layer(TestLayer, { excludeTestServices: true })("gated claim plan", (it) => {
  it.effect("on a table never analyzed, gated claims find their rows by primary key, not by walking the claim index", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      // Nothing analyzes the table during the test (autovacuum is on in the embedded server).
      yield* sql`ALTER TABLE effect_jobs.jobs SET (autovacuum_enabled = false)`
      yield* sql`
        INSERT INTO effect_jobs.jobs (name, queue, args, group_key, retention_ms)
        SELECT 'plan-job', 'plan-q', '{}', 'g' || (g % 5000), 0 FROM generate_series(1, 20000) AS g`
      const [stats] = yield* sql<{ readonly analyzed: boolean; readonly indexBlocks: number }>`
        SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) AS analyzed,
               pg_relation_size('effect_jobs.jobs_claim_idx')::float8 / current_setting('block_size')::int AS "indexBlocks"
        FROM pg_stat_user_tables WHERE relid = 'effect_jobs.jobs'::regclass`
      assert.isFalse(stats?.analyzed, "the table has not been analyzed")

      // This backend's counts not yet reported (they include the INSERT's index writes, if its
      // report is still pending): read before and after the claims, on one connection.
      const blocksRead = Effect.map(
        sql<{ readonly blocks: number }>`
          SELECT pg_stat_get_xact_blocks_fetched('effect_jobs.jobs_claim_idx'::regclass)::int AS blocks`,
        (rows) => rows[0]?.blocks ?? 0
      )
      const { blocks, claimed } = yield* sql.withTransaction(Effect.gen(function*() {
        const before = yield* blocksRead
        let claimed = 0
        // More than five calls: PL/pgSQL plans a statement afresh for its first five, then may
        // keep a generic plan, which is the one the fault was in.
        for (let i = 0; i < 10; i++) {
          const { rows } = yield* store.jobClaimGated({
            queue: "plan-q",
            limit: 100,
            now: Date.now(),
            leaseMillis: 60_000,
            workerId: "plan-test",
            flow: perGroup,
            concurrency: 100,
            prefetch: 0
          })
          claimed += rows.length
        }
        return { claimed, blocks: (yield* blocksRead) - before }
      }))
      assert.strictEqual(claimed, 1000)
      // One walk of the index per claim would be 10 x its size in blocks.
      assert.isAbove(stats!.indexBlocks, 50)
      assert.isBelow(blocks, stats!.indexBlocks, `jobs_claim_idx blocks read by 10 claims (the index has ${stats!.indexBlocks})`)
    }))
})
