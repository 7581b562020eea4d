/** Creating and dropping whole databases for tests, chaos runs and benchmarks. */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as Migrations from "../../src/Migrations.ts"

/** The URL with another database name. */
export const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}


/** Runs statements on a short-lived single connection to `url`. */
export const adminQuery = <A, E>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.flatMap(SqlClient.SqlClient, f).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })),
    Effect.scoped
  )

export const createTemplate = (url: string, template: string) =>
  Effect.gen(function*() {
    yield* adminQuery(url, (sql) =>
      Effect.andThen(
        sql.unsafe(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`),
        sql.unsafe(`CREATE DATABASE "${template}"`)
      ))
    yield* Effect.provide(Migrations.run, Layer.fresh(PgClient.layer({ url: Redacted.make(withDatabase(url, template)), maxConnections: 1 })))
  })

/** A fresh database cloned from the migrated template; dropped when the scope closes. */
export const freshDatabase = (url: string, template: string, name: string) =>
  Effect.acquireRelease(
    Effect.as(adminQuery(url, (sql) => sql.unsafe(`CREATE DATABASE "${name}" TEMPLATE "${template}"`)), withDatabase(url, name)),
    () => adminQuery(url, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).pipe(Effect.ignore)
  )
