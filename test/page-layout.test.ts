/**
 * Where a job's row versions are written (migration 0017). A claim and a kept completion
 * are UPDATEs that change `state`, so they are never HOT. Where the new version goes still
 * matters: on another page Postgres logs an extra Heap/LOCK record on the old version, and on
 * the row's own page it does not (and leaves out the bytes the two versions share at their
 * start and end). The jobs table's
 * fillfactor leaves room on each page for its rows' next versions. This test reads each
 * row's page (`ctid`) before and after, for jobs enqueued in one batch with arguments of
 * an ordinary size, as `enqueueMany` writes them.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import * as TestDb from "./support/db.ts"

const Email = Job.make("page-email", {
  args: Schema.Struct({ to: Schema.String, template: Schema.String, locale: Schema.String, userId: Schema.Number }),
  queue: "pages"
})

const TestLayer = Layer.mergeAll(Jobs.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

/** Each job's heap page, by id. */
const pagesOf = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<{ readonly id: string; readonly page: number }>`
      SELECT id::text, (ctid::text::point)[0]::int AS page
      FROM effect_jobs.jobs WHERE id = ANY(${`{${ids.join(",")}}`}::bigint[])`
    return new Map(rows.map((r) => [r.id, r.page]))
  })

/** The jobs whose row is on another page than in `before`. */
const moved = (before: ReadonlyMap<string, number>, after: ReadonlyMap<string, number>) =>
  Array.from(before).filter(([id, page]) => after.get(id) !== page).map(([id]) => id)

layer(TestLayer, { excludeTestServices: true })("page layout", (it) => {
  it.effect("a claim writes every job's next row version on its own page, a kept completion nearly every one", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const sql = (yield* SqlClient.SqlClient).withoutTransforms()
      const [options] = yield* sql<{ readonly fillfactor: string | null }>`
        SELECT (SELECT split_part(o, '=', 2) FROM unnest(reloptions) AS o WHERE o LIKE 'fillfactor=%') AS fillfactor
        FROM pg_class WHERE oid = 'effect_jobs.jobs'::regclass`
      assert.strictEqual(options?.fillfactor, "45")

      const count = 300
      const ids = yield* (yield* Jobs.Jobs).enqueueMany(
        Email,
        Array.from({ length: count }, (_, i) => ({
          to: `user-${i}@example.com`,
          template: "welcome-v2",
          locale: "en-GB",
          userId: 100_000 + i
        }))
      )
      const inserted = yield* pagesOf(ids)
      assert.isAbove(new Set(inserted.values()).size, 5, "the jobs span several pages")

      const now = Date.now()
      const claimed = yield* store.jobClaim({
        queue: "pages",
        limit: count,
        now,
        leaseMillis: 60_000,
        workerId: "page-layout-test:12345:0a1b2c3d"
      })
      assert.lengthOf(claimed, count)
      const afterClaim = yield* pagesOf(ids)
      assert.deepStrictEqual(moved(inserted, afterClaim), [], "claimed rows moved to another page")

      // Kept (the job's default retention), so the completion is an UPDATE. Page pruning frees
      // the inserted versions first; but within the one statement that completes them all, the
      // claimed versions of a page's rows stay until it commits, so the page must hold two
      // versions of each row at once, and the last row of a page may not fit (at fillfactor 80,
      // most moved).
      const finished = yield* store.jobFinishMany(
        claimed.map((row) => ({
          id: row.id,
          token: row.claim_count,
          state: "completed" as const,
          run_at: null,
          attempt_delta: 0,
          result: null,
          error: null
        })),
        now + 10
      )
      assert.strictEqual(finished.size, count)
      const afterFinish = yield* pagesOf(ids)
      const movedAtFinish = moved(afterClaim, afterFinish)
      assert.isAtMost(movedAtFinish.length, count / 10, `completed rows moved to another page: ${movedAtFinish.join(", ")}`)
    }))
})
