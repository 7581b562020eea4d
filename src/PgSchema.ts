/**
 * PgSchema: the Postgres schema that holds effect-jobs' tables, functions and triggers.
 *
 * `effect_jobs` unless told otherwise. The client, worker, admin, periodic
 * scheduler, bundle finisher and migrations all read it from here, so one
 * `PgSchema.layer("billing_jobs")` below them moves the whole queue. Two schemas in
 * one database are two independent queues: their tables, NOTIFY channels and
 * migrations are apart.
 *
 * ```ts
 * const Queue = Layer.mergeAll(Worker.layer(options), Jobs.layer).pipe(
 *   Layer.provide(PgSchema.layer("billing_jobs"))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer } from "effect"
import { InvalidSchemaName } from "./Errors.ts"
import { maxLength as maxNameLength, problem } from "./internal/schemaName.ts"

/** The schema used when none is provided. */
export const defaultName = "effect_jobs"

/**
 * The longest name accepted (48). NOTIFY channel names are the schema's name plus a
 * suffix (`.cancel`), and Postgres cuts identifiers at 63 bytes.
 */
export const maxLength: number = maxNameLength

/** The schema's name, checked. Build it with `make` or `layer`, which validate. */
export const PgSchema = Context.Reference<string>("effect-jobs/PgSchema", { defaultValue: () => defaultName })

/**
 * Checks a schema name: lower-case letters, digits and `_`, not starting with a
 * digit, at most `maxLength` characters, not `pg_*`, `information_schema` or
 * `public`. Anything else (quotes, dots, spaces, upper case) is refused rather
 * than quoted, so the name reads the same in SQL, in `psql` and in channel names.
 */
export const make = (name: string): Effect.Effect<string, InvalidSchemaName> =>
  Effect.suspend(() => {
    const reason = problem(name)
    return reason === undefined
      ? Effect.succeed(name)
      : Effect.fail(new InvalidSchemaName({ schema: String(name).slice(0, 100), message: `invalid schema name: ${reason}` }))
  })

/** Uses the given schema; fails to build with `InvalidSchemaName` when the name is not valid. */
export const layer = (name: string) => Layer.effect(PgSchema, make(name))
