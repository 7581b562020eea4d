/**
 * The harness's own SQL (creating/dropping databases, the raw-SQL floor's table), through
 * `@effect/sql-pg`. The peers' adapters use their own drivers.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, ManagedRuntime, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import type { SqlError } from "effect/sql"

export interface SqlSession {
  readonly run: <A>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, SqlError.SqlError>) => Promise<A>
  readonly close: () => Promise<void>
}

export const openSql = (url: string, options: { readonly maxConnections?: number } = {}): SqlSession => {
  const runtime = ManagedRuntime.make(
    PgClient.layer({
      url: Redacted.make(url),
      maxConnections: options.maxConnections ?? 2,
      applicationName: "effect-jobs-bench"
    })
  )
  return {
    run: (f) =>
      runtime.runPromise(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return yield* f(sql)
      })),
    close: () => runtime.dispose()
  }
}

/** `url` with its database name replaced. */
export const withDatabase = (url: string, database: string): string => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

/** Run one function against a short-lived session. */
export const withSql = async <A>(
  url: string,
  f: (sql: SqlClient.SqlClient) => Effect.Effect<A, SqlError.SqlError>
): Promise<A> => {
  const session = openSql(url, { maxConnections: 1 })
  try {
    return await session.run(f)
  } finally {
    await session.close()
  }
}
