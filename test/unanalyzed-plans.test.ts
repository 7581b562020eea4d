/**
 * Plans on a jobs table that has not been analyzed: a fresh table right after a burst of jobs,
 * where autovacuum is off or has not come round yet. A statement that looks rows up by id and
 * also says `state = 'available'` lets the planner read the ids from jobs_claim_idx, whose
 * predicate that matches, by walking every entry of that index (id is its last column). The
 * statements below lock the rows by id alone and check their state after the lock.
 *
 * - The gated claim (migration 0018): on PG15, a gated drain of 20,000 jobs ran at about a
 *   fifth of its rate on an analyzed table.
 * - The no-handler check's dead-lettering (`jobDeadLetterUnhandled`), once per leader round
 *   while jobs of an unhandled name wait.
 *
 * The check counts the blocks of jobs_claim_idx that the statements read
 * (`pg_stat_get_xact_blocks_fetched` before and after them, in one transaction). Each may read
 * the head of its queue there; a walk of the whole index per call reads it many times over.
 * (PG18's planner takes the primary key here with or without the fix: the test tells the two
 * apart on PG15, which CI runs the suite on too.)
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

/**
 * 20,000 available jobs of `queue` (with `groups` groups, if given), in a table nothing
 * analyzes; returns the size of jobs_claim_idx in blocks.
 */
const unanalyzedJobs = (queue: string, name: string, groups: number | undefined) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    // (autovacuum is on in the embedded server)
    yield* sql`ALTER TABLE effect_jobs.jobs SET (autovacuum_enabled = false)`
    yield* sql`
      INSERT INTO effect_jobs.jobs (name, queue, args, group_key, retention_ms)
      SELECT ${name}, ${queue}, '{}', ${groups === undefined ? null : "g"}::text || (g % ${groups ?? 1}), 0
      FROM generate_series(1, 20000) AS g`
    const [stats] = yield* sql<{ readonly analyzed: boolean; readonly indexBlocks: number }>`
      SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) AS analyzed,
             pg_relation_size('effect_jobs.jobs_claim_idx')::float8 / current_setting('block_size')::int AS "indexBlocks"
      FROM pg_stat_user_tables WHERE relid = 'effect_jobs.jobs'::regclass`
    assert.isFalse(stats?.analyzed, "the table has not been analyzed")
    assert.isAbove(stats!.indexBlocks, 50)
    return stats!.indexBlocks
  })

/**
 * The jobs_claim_idx blocks that `statements` read, run in one transaction. This backend's
 * counts not yet reported (they include the INSERT's index writes, if its report is still
 * pending) are read before and after them, on one connection.
 */
const claimIndexBlocksRead = <A, E, R>(statements: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const blocksRead = Effect.map(
      sql<{ readonly blocks: number }>`
        SELECT pg_stat_get_xact_blocks_fetched('effect_jobs.jobs_claim_idx'::regclass)::int AS blocks`,
      (rows) => rows[0]?.blocks ?? 0
    )
    return yield* sql.withTransaction(Effect.gen(function*() {
      const before = yield* blocksRead
      const result = yield* statements
      return { result, blocks: (yield* blocksRead) - before }
    }))
  })

/**
 * More than five calls: a prepared statement (and PL/pgSQL) is planned afresh for its first
 * five runs, then may keep a generic plan, which is the one the fault was in.
 */
const calls = 10

layer(TestLayer, { excludeTestServices: true })("plans on a table never analyzed", (it) => {
  it.effect("gated claims find their rows by primary key, not by walking the claim index", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const indexBlocks = yield* unanalyzedJobs("plan-q", "plan-job", 5000)
      const { blocks, result: claimed } = yield* claimIndexBlocksRead(Effect.gen(function*() {
        let claimed = 0
        for (let i = 0; i < calls; i++) {
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
        return claimed
      }))
      assert.strictEqual(claimed, 1000)
      // One walk of the index per claim would be `calls` x its size in blocks.
      assert.isBelow(blocks, indexBlocks, `jobs_claim_idx blocks read by ${calls} claims (the index has ${indexBlocks})`)
    }))

  it.effect("the no-handler check dead-letters the heads it found by primary key, not by walking the claim index", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const indexBlocks = yield* unanalyzedJobs("orphan-q", "orphan-job", undefined)
      const messages = { "orphan-q": { "orphan-job": "no worker handles orphan-job" } }
      const { blocks, result: dead } = yield* claimIndexBlocksRead(Effect.gen(function*() {
        let dead = 0
        for (let i = 0; i < calls; i++) dead += (yield* store.jobDeadLetterUnhandled(messages, Date.now(), 10)).length
        return dead
      }))
      assert.strictEqual(dead, 10 * calls)
      assert.isBelow(blocks, indexBlocks, `jobs_claim_idx blocks read by ${calls} dead-letterings (the index has ${indexBlocks})`)
    }))
})
