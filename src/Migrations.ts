/**
 * Migrations: the SQL files in `migrations/`, applied in order.
 *
 * The files are plain SQL (statements separated by `-- statement-breakpoint`),
 * usable with any migration tool. `Migrations.run` applies the missing ones with
 * Effect's `Migrator`, recording them in `effect_jobs_migrations`, inside one
 * transaction that first takes a Postgres advisory lock: many processes may
 * start at once, one migrates, the others wait and then find nothing to do.
 *
 * Keep it apart from the runtime layers, so a deployment can migrate with a
 * schema-owner role and run workers with a smaller one.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import * as Migrator from "effect/sql/Migrator"
import { readdir, readFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { MigrationFailed } from "./Errors.ts"

/** The directory of the SQL files shipped with the package. */
export const directory = fileURLToPath(new URL("../migrations/", import.meta.url))

/** Splits a migration file into statements. */
export const statements = (text: string): ReadonlyArray<string> =>
  text.split(/^-- statement-breakpoint\s*$/m).map((s) => s.trim()).filter((s) => s.replace(/^--.*$/gm, "").trim() !== "")

const loader = (dir: string): Migrator.Loader =>
  Effect.tryPromise({
    try: async () => {
      const files = (await readdir(dir)).filter((f) => /^\d+_[^.]+\.sql$/.test(f)).sort()
      return Promise.all(files.map(async (file): Promise<Migrator.ResolvedMigration> => {
        const [, id, name] = file.match(/^(\d+)_([^.]+)\.sql$/)!
        const text = await readFile(join(dir, file), "utf8")
        const run = Effect.gen(function*() {
          const sql = (yield* SqlClient.SqlClient).withoutTransforms()
          for (const statement of statements(text)) yield* sql.unsafe(statement)
        })
        return [Number(id), name!, Effect.succeed(run)]
      }))
    },
    catch: (cause) => new Migrator.MigrationError({ kind: "ImportError", message: `Cannot read migrations in ${dir}`, cause })
  })

/** An arbitrary, fixed key for `pg_advisory_xact_lock` ("effect-j" in ASCII). */
const lockKey = 0x6566666563742d6an

/** Applies the missing migrations; returns those applied now, as `[id, name]`. */
export const run = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  return yield* sql.withTransaction(
    Effect.andThen(
      sql`SELECT pg_advisory_xact_lock(${lockKey.toString()}::bigint)`,
      Migrator.make({})({ loader: loader(directory), table: "effect_jobs_migrations" })
    )
  )
}).pipe(
  Effect.mapError((e) => new MigrationFailed({ message: `migration failed: ${e.message}`, cause: e })),
  Effect.withSpan("Migrations.run")
)

/** Applies the migrations when built. */
export const layer = Layer.effectDiscard(run)
