/**
 * Migrations (src/Migrations.ts): many processes may start at once, and each runs the
 * migrations. One applies them; the others wait on the advisory lock, then find nothing to do.
 *
 * These tests build databases of their own: an EMPTY one for the concurrent first run (the
 * other test files clone a template that is migrated already), and a clone of that migrated
 * template for the re-run. Each is dropped when its test ends.
 */
import { assert, describe, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Fiber, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { readdirSync } from "node:fs"
import { inject } from "vitest"
import * as Migrations from "../src/Migrations.ts"
import { adminQuery, freshDatabase, withDatabase } from "./support/admin.ts"
import { waitFor } from "./support/probes.ts"

/**
 * The key of Migrations.ts's `pg_advisory_xact_lock`, pinned here on purpose: processes of
 * two versions migrating at once serialise only if they take the same lock, so changing
 * it is a compatibility break, not a refactoring.
 */
const migrationLockKey = 0x6566666563742d6an

/** The migrations shipped in migrations/, as `Migrations.run` reports them: `[id, name]`, in order. */
const shipped: ReadonlyArray<readonly [number, string]> = readdirSync(Migrations.directory)
  .filter((f) => /^\d+_[^.]+\.sql$/.test(f))
  .sort()
  .map((f) => {
    const [, id, name] = f.match(/^(\d+)_([^.]+)\.sql$/)!
    return [Number(id), name!] as const
  })

let counter = 0
const databaseName = (kind: string) => `ej_migrations_${kind}_${process.pid}_${Date.now().toString(36)}_${counter++}`

/** A new database with nothing of ours in it (CREATE DATABASE from the server's default template); dropped afterwards. */
const emptyDatabase = Effect.gen(function*() {
  const server = inject("databaseUrl")
  const name = databaseName("empty")
  return yield* Effect.acquireRelease(
    Effect.as(adminQuery(server, (sql) => sql.unsafe(`CREATE DATABASE "${name}"`)), withDatabase(server, name)),
    () => adminQuery(server, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).pipe(Effect.ignore)
  )
})

/** A pool of its own on `url`, like a separate process's. */
const pool = (url: string) => Layer.fresh(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))

/** Runs the migrations on a pool of its own, opened for the run and closed after it. */
const migrate = (url: string) => Effect.provide(Migrations.run, pool(url))

/** A client on `url` for the test's own queries, closed with the test's scope. */
const client = (url: string) =>
  Effect.map(Layer.build(pool(url)), (context) => Context.get(context, SqlClient.SqlClient).withoutTransforms())

/** Everything the migrations create (tables, columns, indexes, constraints, functions, triggers), as text. */
const schemaOf = (sql: SqlClient.SqlClient) =>
  Effect.all({
    relations: sql`SELECT c.relname, c.relkind::text FROM pg_class c
                   WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1`,
    columns: sql`SELECT table_name, column_name, data_type, column_default, is_nullable
                 FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`,
    indexes: sql`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`,
    constraints: sql`SELECT conrelid::regclass::text AS relation, conname, pg_get_constraintdef(oid) AS definition
                     FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2`,
    functions: sql`SELECT proname, pg_get_functiondef(oid) AS definition
                   FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2`,
    triggers: sql`SELECT tgrelid::regclass::text AS relation, tgname, pg_get_triggerdef(oid) AS definition
                  FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2`
  })

/** The migrations table as recorded, with when each was applied. */
const recorded = (sql: SqlClient.SqlClient) =>
  sql<{ readonly migration_id: number; readonly name: string; readonly created_at: Date }>`
    SELECT migration_id, name, created_at FROM effect_jobs.migrations ORDER BY migration_id`

const tableExists = (sql: SqlClient.SqlClient, table: string) =>
  Effect.map(sql<{ readonly t: string | null }>`SELECT to_regclass(${table})::text AS t`, (rows) => rows[0]?.t === table)

/** Sessions of this database waiting (not granted) for the migration lock. */
const lockWaiters = (sql: SqlClient.SqlClient) =>
  Effect.map(
    sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_locks
      WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND ((classid::bigint << 32) | objid::bigint) = ${migrationLockKey.toString()}::bigint`,
    (rows) => rows[0]?.n ?? 0
  )

describe("migrations", () => {
  it.live("4 pools migrate an empty database at once: one applies every migration, the others wait and apply none", () =>
    Effect.gen(function*() {
      assert.isAtLeast(shipped.length, 5, `the migrations directory was read: ${JSON.stringify(shipped)}`)
      const url = yield* emptyDatabase
      const sql = yield* client(url)
      assert.isFalse(yield* tableExists(sql, "effect_jobs.migrations"), "the database starts empty")
      assert.isFalse(yield* tableExists(sql, "effect_jobs.jobs"), "the database starts empty")

      // Hold the migration lock, so that the 4 runs are all under way, queued on it, before
      // any of them may start: they overlap for certain, not only if the timing happens to
      // be right.
      const held = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.forkChild(
        Effect.flatMap(SqlClient.SqlClient, (lockSql) =>
          lockSql.withTransaction(Effect.gen(function*() {
            yield* lockSql`SELECT pg_advisory_xact_lock(${migrationLockKey.toString()}::bigint)`
            yield* Deferred.succeed(held, undefined)
            yield* Deferred.await(release)
          }))).pipe(Effect.provide(pool(url)))
      )
      yield* Deferred.await(held)
      const runs = yield* Effect.forEach([1, 2, 3, 4], () => Effect.forkChild(migrate(url)))
      // Other sessions queued on a lock announce nothing: pg_locks is where they show. A run
      // that ends meanwhile did not wait for the lock: that fails the test at once.
      yield* Effect.raceFirst(
        waitFor(
          "4 migration runs to wait on the migration lock",
          Effect.map(lockWaiters(sql), (n) => (n === 4 ? Option.some(n) : Option.none()))
        ),
        Effect.flatMap(
          Effect.raceAllFirst(runs.map(Fiber.await)),
          (exit) => Effect.die(new Error(`a run ended while another session held the migration lock: ${String(exit)}`))
        )
      )
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)

      // Every run succeeds; exactly one applied the migrations, each of them once.
      const applied = yield* Effect.forEach(runs, Fiber.join)
      const appliers = applied.filter((a) => a.length > 0)
      assert.strictEqual(appliers.length, 1, `one run applied migrations: ${JSON.stringify(applied)}`)
      assert.deepStrictEqual(appliers[0], shipped, "... all of them, in order")
      assert.strictEqual(applied.filter((a) => a.length === 0).length, 3, "the others found nothing to do")
      const rows = yield* recorded(sql)
      assert.deepStrictEqual(rows.map((r) => [r.migration_id, r.name]), shipped.map(([id, name]) => [id, name]), "each recorded once")
      assert.isTrue(yield* tableExists(sql, "effect_jobs.jobs"), "effect_jobs.jobs exists")

      // The schema is the one a single run builds. (Compared with a database of its own: a
      // session on the shared template would make the other files' clones of it fail.)
      const schema = yield* schemaOf(sql)
      const single = yield* emptyDatabase
      assert.deepStrictEqual(yield* migrate(single), shipped)
      assert.deepStrictEqual(schema, yield* schemaOf(yield* client(single)), "the same schema as one run gives")

      // A second run is a no-op.
      assert.deepStrictEqual(yield* migrate(url), [], "a second run applies nothing")
      assert.deepStrictEqual(yield* recorded(sql), rows, "the migrations table is unchanged")
      assert.deepStrictEqual(yield* schemaOf(sql), schema, "the schema is unchanged")
    }))

  it.live("migrating an already migrated database (with jobs in it) changes nothing", () =>
    Effect.gen(function*() {
      const url = yield* freshDatabase(inject("databaseUrl"), inject("templateDatabase"), databaseName("migrated"))
      const sql = yield* client(url)
      yield* sql`INSERT INTO effect_jobs.jobs (name, queue, args, max_attempts, retention_ms)
                 VALUES ('migrations-test', 'migrations', '{"n":1}'::jsonb, 3, 3600000)`
      const jobs = () => sql`SELECT * FROM effect_jobs.jobs ORDER BY id`
      const before = { schema: yield* schemaOf(sql), migrations: yield* recorded(sql), jobs: yield* jobs() }
      assert.deepStrictEqual(before.migrations.map((r) => [r.migration_id, r.name]), shipped.map(([id, name]) => [id, name]))
      assert.strictEqual(before.jobs.length, 1)

      // Two processes starting at once on it, then a third later.
      const concurrent = yield* Effect.all([migrate(url), migrate(url)], { concurrency: "unbounded" })
      assert.deepStrictEqual(concurrent, [[], []], "nothing applied")
      assert.deepStrictEqual(yield* migrate(url), [], "nothing applied")

      const after = { schema: yield* schemaOf(sql), migrations: yield* recorded(sql), jobs: yield* jobs() }
      assert.deepStrictEqual(after, before, "schema, migrations table and rows unchanged")
    }))
})
