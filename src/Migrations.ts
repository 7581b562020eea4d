/**
 * Migrations: the SQL files in `migrations/`, applied in order.
 *
 * The files are plain SQL (statements separated by `-- statement-breakpoint`),
 * written for the default schema `effect_jobs`. `Migrations.run` creates the
 * schema named by `PgSchema` (src/PgSchema.ts) and applies the missing files,
 * rewritten for it, with Effect's `Migrator`, recording them in
 * `<schema>.migrations`, inside one transaction that first takes a Postgres
 * advisory lock: many processes may start at once, one migrates, the others wait
 * and then find nothing to do. `Migrations.sql(schema)` gives the same statements
 * as text, for users of another migration tool.
 *
 * Keep it apart from the runtime layers, so a deployment can migrate with a
 * schema-owner role and run workers with a smaller one.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import * as Migrator from "effect/sql/Migrator"
import { readdir, readFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { type InvalidSchemaName, MigrationFailed } from "./Errors.ts"
import { assertValid } from "./internal/schemaName.ts"
import { migrationsApplied } from "./internal/Store.ts"
import * as PgSchema from "./PgSchema.ts"

/** The directory of the SQL files shipped with the package. */
export const directory = fileURLToPath(new URL("../migrations/", import.meta.url))

const breakpoint = "\n-- statement-breakpoint\n"

/** Splits a migration file (or the text of `sql`) into statements. */
export const statements = (text: string): ReadonlyArray<string> =>
  text.split(/^-- statement-breakpoint\s*$/m).map((s) => s.trim()).filter((s) => s.replace(/^--.*$/gm, "").trim() !== "")

/**
 * A migration file's text for the given schema: `effect_jobs.` (an object of the
 * schema) becomes `"<schema>".`, and a NOTIFY channel `'effect_jobs.<name>'`
 * becomes `'<schema>.<name>'`.
 */
const forSchema = (text: string, schema: string): string =>
  text.replace(/('?)\beffect_jobs\./g, (_, quote: string) => quote === "'" ? `'${schema}.` : `"${schema}".`)

interface MigrationFile {
  readonly id: number
  readonly name: string
  readonly text: string
}

const readFiles = (dir: string): Promise<ReadonlyArray<MigrationFile>> =>
  readdir(dir).then((all) => {
    const files = all.filter((f) => /^\d+_[^.]+\.sql$/.test(f)).sort()
    return Promise.all(files.map(async (file) => {
      const [, id, name] = file.match(/^(\d+)_([^.]+)\.sql$/)!
      return { id: Number(id), name: name!, text: await readFile(join(dir, file), "utf8") }
    }))
  })

const loader = (dir: string, schema: string): Migrator.Loader =>
  Effect.tryPromise({
    try: async () => {
      const files = await readFiles(dir)
      return files.map(({ id, name, text: raw }): Migrator.ResolvedMigration => {
        const text = forSchema(raw, schema)
        const run = Effect.gen(function*() {
          const sql = (yield* SqlClient.SqlClient).withoutTransforms()
          for (const statement of statements(text)) yield* sql.unsafe(statement)
        })
        return [id, name, Effect.succeed(run)]
      })
    },
    catch: (cause) => new Migrator.MigrationError({ kind: "ImportError", message: `Cannot read migrations in ${dir}`, cause })
  })

/** An arbitrary, fixed key for `pg_advisory_xact_lock` ("effect-j" in ASCII). */
const lockKey = 0x6566666563742d6an

/**
 * Applies the missing migrations to the schema named by `PgSchema` (creating it if
 * needed); returns those applied now, as `[id, name]`.
 */
export const run = Effect.gen(function*() {
  const schema = assertValid(yield* PgSchema.PgSchema)
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  return yield* sql.withTransaction(
    Effect.andThen(
      Effect.andThen(
        sql`SELECT pg_advisory_xact_lock(${lockKey.toString()}::bigint)`,
        sql.unsafe(`CREATE SCHEMA IF NOT EXISTS "${schema}"`)
      ),
      Migrator.make({})({ loader: loader(directory, schema), table: `${schema}.migrations` })
    )
  )
}).pipe(
  Effect.mapError((e) => new MigrationFailed({ message: `migration failed: ${e.message}`, cause: e })),
  Effect.withSpan("Migrations.run")
)

/**
 * Every migration as one SQL script for the given schema, for users of another
 * migration tool: `CREATE SCHEMA`, then each file's statements in order, each
 * ending with `;`, separated by `-- statement-breakpoint` lines (a comment to
 * `psql`; `statements` splits on them, for a client that runs one statement per
 * query). Recording which versions ran is left to that tool.
 */
export const sql = (schema: string = PgSchema.defaultName): Effect.Effect<string, InvalidSchemaName | MigrationFailed> =>
  Effect.flatMap(PgSchema.make(schema), (checked) =>
    Effect.tryPromise({
      try: async () => {
        const files = await readFiles(directory)
        const parts = files.map(({ id, name, text }) =>
          `-- ${String(id).padStart(4, "0")}_${name}\n` +
          statements(forSchema(text, checked)).map((statement) => `${statement.replace(/;\s*$/, "")};\n`).join(breakpoint))
        return [`CREATE SCHEMA IF NOT EXISTS "${checked}";\n`, ...parts].join(breakpoint)
      },
      catch: (cause) => new MigrationFailed({ message: `cannot read migrations in ${directory}`, cause })
    }))

/** A migration the package ships, as `status` lists it. */
export interface Migration {
  /** The file's number: `1` for `0001_create_jobs.sql`. */
  readonly id: number
  readonly name: string
}

/** What `status` found: the versions recorded in the schema, and those the package ships that are not. */
export interface Status {
  /** Oldest first, with the time each was applied (versions unknown to this package included). */
  readonly applied: ReadonlyArray<Migration & { readonly appliedAt: Date }>
  /** Shipped with the package and not applied yet, in the order `run` would apply them. */
  readonly pending: ReadonlyArray<Migration>
}

/**
 * Which migrations the schema named by `PgSchema` has and which it lacks; reads
 * only (a schema that does not exist has every migration pending).
 */
export const status: Effect.Effect<Status, MigrationFailed | SqlError.SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const schema = assertValid(yield* PgSchema.PgSchema)
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const rows = yield* migrationsApplied(sql, schema)
  const files = yield* Effect.tryPromise({
    try: () => readFiles(directory),
    catch: (cause) => new MigrationFailed({ message: `cannot read migrations in ${directory}`, cause })
  })
  const done = new Set(rows.map((r) => r.migration_id))
  return {
    applied: rows.map((r) => ({ id: r.migration_id, name: r.name, appliedAt: r.created_at })),
    pending: files.filter((f) => !done.has(f.id)).map(({ id, name }) => ({ id, name }))
  }
}).pipe(Effect.withSpan("Migrations.status"))

/** Applies the migrations when built. */
export const layer = Layer.effectDiscard(run)
