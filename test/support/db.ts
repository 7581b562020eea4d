/**
 * The database of one test file: a fresh clone of the migrated template, dropped
 * afterwards. `TestDb.layer` provides `PgClient`/`SqlClient` for it and exposes its URL.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, Redacted } from "effect"
import { inject } from "vitest"
import { freshDatabase } from "./admin.ts"

export class TestDb extends Context.Service<TestDb, { readonly url: string }>()("test/TestDb") {}

let counter = 0

/** Creates the file's database; `TestDb` holds its URL for building more pools (other "processes"). */
export const database = Layer.effect(
  TestDb,
  Effect.map(
    freshDatabase(
      inject("databaseUrl"),
      inject("templateDatabase"),
      `ej_test_${process.pid}_${Date.now().toString(36)}_${counter++}`
    ),
    (url) => ({ url })
  )
)

/** A pool on the test database. Call it again for an independent pool (a separate worker "process"). */
export const pool = (options: { readonly maxConnections?: number } = {}) =>
  Layer.unwrap(
    Effect.map(TestDb, ({ url }) =>
      PgClient.layer({ url: Redacted.make(url), maxConnections: options.maxConnections ?? 10 }))
  )

/** Database + one pool: what most tests need. Built once per `layer(...)` block. */
export const layer = (options: { readonly maxConnections?: number } = {}) =>
  Layer.provideMerge(pool(options), database)
