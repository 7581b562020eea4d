/**
 * The database of one test file: a fresh clone of the migrated template, dropped
 * afterwards. `TestDb.layer` provides `PgClient`/`SqlClient` for it and exposes its URL.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, type Duration, Effect, Layer, Redacted } from "effect"
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

/**
 * A pool on the test database. Call it again for an independent pool (a separate worker "process").
 * Under a TestClock, pass `connectTimeout: Duration.infinity`: the pool's connect timeout runs on
 * the clock it finds, and a virtual jump would time out a connection that is being opened.
 */
export const pool = (options: { readonly maxConnections?: number; readonly connectTimeout?: Duration.Input } = {}) =>
  Layer.unwrap(
    Effect.map(TestDb, ({ url }) =>
      PgClient.layer({
        url: Redacted.make(url),
        maxConnections: options.maxConnections ?? 10,
        ...(options.connectTimeout === undefined ? {} : { connectTimeout: options.connectTimeout })
      }))
  )

/** Database + one pool: what most tests need. Built once per `layer(...)` block. */
export const layer = (options: { readonly maxConnections?: number } = {}) =>
  Layer.provideMerge(pool(options), database)
