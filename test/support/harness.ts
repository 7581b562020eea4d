/** Small helpers shared by the integration tests. */
import { Effect, Layer, Scope } from "effect"
import { SqlClient } from "effect/sql"
import type { PgClient } from "@effect/sql-pg"
import * as Worker from "../../src/Worker.ts"

/**
 * Starts a worker in the current scope (the test's): it shuts down gracefully
 * when the test ends, or earlier with `Scope.close` on a scope of your own.
 */
export const startWorker = <E, R>(
  options: Worker.Options,
  handlers: Layer.Layer<any, E, R>
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.Scope
    const context = yield* Layer.buildWithScope(Worker.layer(options).pipe(Layer.provide(handlers)), scope)
    return context
  })

export interface JobRowView {
  readonly id: string
  readonly name: string
  readonly queue: string
  readonly state: string
  readonly attempt: number
  readonly max_attempts: number
  readonly priority: number
  readonly run_at: Date
  readonly errors: ReadonlyArray<{ readonly attempt: number; readonly at: string; readonly kind: string; readonly message: string }>
  readonly result: unknown
  readonly request_id: string | null
  readonly claim_count: number
}

export const getJob = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<JobRowView>`SELECT id::text, name, queue, state, attempt, max_attempts, priority, run_at, errors, result, request_id, claim_count
                      FROM effect_jobs.jobs WHERE id = ${id}::bigint`,
      (rows) => rows[0]
    ))

export const countByState = (queue: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly state: string; readonly n: number }>`SELECT state, count(*)::int AS n FROM effect_jobs.jobs WHERE queue = ${queue} GROUP BY state`,
      (rows) => Object.fromEntries(rows.map((r) => [r.state, r.n])) as Record<string, number>
    ))

export type Pg = PgClient.PgClient

/**
 * Moves the id sequence to just below the next power of ten, so that the next ids differ in
 * length (998, 999, 1000, ...): ordered as text, "1000" would sort before "999".
 */
export const toPowerOfTen = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`SELECT setval(pg_get_serial_sequence('effect_jobs.jobs', 'id'),
        (10::numeric ^ length(GREATEST(last_value, 100)::text))::bigint - 3) FROM effect_jobs.jobs_id_seq`)
