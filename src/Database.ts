/**
 * Database: a `PgClient` layer from a connection URL, with the URL checked first.
 *
 * `PgClient.layer` from `@effect/sql-pg` works as well; this one turns a
 * malformed URL into a typed `InvalidDatabaseUrl` that says what is wrong,
 * without echoing the password.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { InvalidDatabaseUrl } from "./Errors.ts"

/** Parses and checks a `postgres://` URL. */
export const parseUrl = (url: string): Effect.Effect<URL, InvalidDatabaseUrl> =>
  Effect.suspend(() => {
    if (typeof url !== "string" || url.trim() === "") {
      return Effect.fail(new InvalidDatabaseUrl({ message: "the database URL is empty" }))
    }
    let parsed: URL
    try {
      parsed = new URL(url)
    } catch {
      return Effect.fail(new InvalidDatabaseUrl({
        message: "the database URL is not a valid URL (expected postgres://user:password@host:port/database)"
      }))
    }
    if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
      return Effect.fail(new InvalidDatabaseUrl({
        message: `the database URL must start with postgres:// or postgresql://, not ${parsed.protocol}//`
      }))
    }
    if (parsed.hostname === "" && !parsed.searchParams.has("host")) {
      return Effect.fail(new InvalidDatabaseUrl({ message: "the database URL has no host" }))
    }
    if (parsed.port !== "" && !(Number(parsed.port) > 0 && Number(parsed.port) < 65536)) {
      return Effect.fail(new InvalidDatabaseUrl({ message: `the database URL has an invalid port: ${parsed.port}` }))
    }
    return Effect.succeed(parsed)
  })

/** A pooled `PgClient` (and `SqlClient`) for the URL. */
export const layer = (
  url: string,
  options: Omit<PgClient.PgPoolConfig, "url"> = {}
) =>
  Layer.unwrap(
    Effect.map(parseUrl(url), () => PgClient.layer({ applicationName: "effect-jobs", ...options, url: Redacted.make(url) }))
  )
