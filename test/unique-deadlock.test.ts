/**
 * Concurrent keyed batches that meet the same keys in opposite orders (insertMany with
 * `replace`, and plain duplicates): every call succeeds, none is chosen as a deadlock victim.
 * The statements lock the keys' rows (and their index entries) in one order, the keys' order,
 * whatever order the batch lists them in.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"

const Doc = Job.make("u-deadlock", { args: Schema.Struct({ n: Schema.Number }), queue: "u-deadlock", retention: "1 day" })

const otherClient = Effect.map(
  Layer.build(Jobs.layer.pipe(Layer.provide(Layer.fresh(TestDb.pool({ maxConnections: 4 }))))),
  (context) => Context.get(context, Jobs.Jobs)
)

layer(Jobs.layer.pipe(Layer.provideMerge(TestDb.layer())), { excludeTestServices: true })("unique batches", (it) => {
  it.effect("opposite key orders from two pools, many rounds: no deadlock, one job per key, last write kept", () =>
    Effect.gen(function*() {
      const a = yield* otherClient
      const b = yield* otherClient
      const keys = Array.from({ length: 40 }, (_, i) => `doc-${String(i).padStart(2, "0")}`)
      const batch = (order: ReadonlyArray<string>, n: number) =>
        order.map((key) => ({ job: Doc, args: { n }, options: { uniqueKey: key, delay: "1 hour" as const, unique: { replace: true as const } } }))
      for (let round = 0; round < 30; round++) {
        const [ra, rb] = yield* Effect.all([
          a.insertAll(batch(keys, round * 2)),
          b.insertAll(batch([...keys].reverse(), round * 2 + 1))
        ], { concurrency: 2 })
        assert.lengthOf(ra, keys.length)
        assert.lengthOf(rb, keys.length)
      }
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM effect_jobs.jobs WHERE name = 'u-deadlock' GROUP BY unique_key`
      assert.lengthOf(rows, keys.length)
      for (const r of rows) assert.strictEqual(r.n, 1)
    }), { timeout: 60_000 })

  it.effect("keyed rows written in key order still get their ids in batch order (enqueue order)", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const keys = ["z", "m", "a", "q", "b"]
      const results = yield* jobs.insertAll([
        { job: Doc, args: { n: 0 }, options: undefined },
        ...keys.map((key, i) => ({ job: Doc, args: { n: i + 1 }, options: { uniqueKey: `order-${key}` } })),
        { job: Doc, args: { n: 9 }, options: undefined }
      ])
      const ids = results.map((r) => BigInt(r.id))
      for (let i = 1; i < ids.length; i++) assert.isTrue(ids[i]! > ids[i - 1]!, `ids in batch order: ${ids.join(", ")}`)
      assert.deepStrictEqual(results.map((r) => r.outcome), Array(7).fill("inserted"))
    }))
})
