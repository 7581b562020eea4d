/**
 * Database: a `PgClient` layer from a connection URL, with the URL checked first.
 *
 * `PgClient.layer` from `@effect/sql-pg` works as well; this one turns a
 * malformed URL into a typed `InvalidDatabaseUrl` that says what is wrong,
 * without echoing the password, and checks that the database answers when the
 * layer is built (`SELECT 1`): a program started with a wrong host, port or
 * database, or before the database is up, fails at start with a
 * `DatabaseUnreachable` naming host, port and database, instead of starting
 * workers that can never claim. `retry` waits for the database instead.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { DatabaseUnreachable, InvalidDatabaseUrl } from "./Errors.ts"

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

export interface Options extends Omit<PgClient.PgPoolConfig, "url"> {
  /** Check that the database answers (`SELECT 1`) when the layer is built; default true. */
  readonly check?: boolean | undefined
  /**
   * How long each check may take (connecting included) before it counts as failed;
   * default 5 seconds. A closed port is refused at once; this bounds a host that
   * does not answer at all.
   */
  readonly checkTimeout?: Duration.Input | undefined
  /**
   * Wait for the database: after a failed check, try again `times` more times
   * (default: until it answers), `delay` apart (default 1 second; on Effect's
   * `Clock`), logging a warning each time. Default: no retry, the layer fails at
   * the first failed check. An answer that waiting cannot change is not retried: the
   * server refused the login (a wrong password, an unknown role) or has no such
   * database; the layer fails at once with `DatabaseUnreachable` saying so.
   */
  readonly retry?: {
    readonly times?: number | undefined
    readonly delay?: Duration.Input | undefined
  } | undefined
}

/** Where a URL points: host, port, database, as Postgres would read them (no user, no password). */
const targetOf = (url: URL): { readonly host: string; readonly port: number; readonly database: string } => {
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      return s
    }
  }
  const host = url.searchParams.get("host") ?? decode(url.hostname.replace(/^\[(.*)\]$/, "$1"))
  const port = url.port !== "" ? Number(url.port) : Number(url.searchParams.get("port") ?? 5432)
  const database = decode(url.pathname.replace(/^\//, "")) || decode(url.username) || "postgres"
  return { host, port: Number.isFinite(port) ? port : 5432, database }
}

const durationMillis = (label: string, input: Duration.Input | undefined, fallback: number): Effect.Effect<number, InvalidDatabaseUrl> => {
  if (input === undefined) return Effect.succeed(fallback)
  const d = Duration.fromInput(input)
  const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
  return ms >= 0 && !Number.isNaN(ms)
    ? Effect.succeed(ms)
    : Effect.fail(new InvalidDatabaseUrl({ message: `Database.layer: ${label} must be a non-negative duration, got ${String(input)}` }))
}

/**
 * The SQLSTATE of the server's answer in an error's causes, if any (a `code` of five
 * characters on the driver's error, under the SqlError and its reason).
 */
const sqlStateOf = (error: unknown): string | undefined => {
  let e: unknown = error
  for (let depth = 0; typeof e === "object" && e !== null && depth < 6; depth++) {
    const code = (e as { readonly code?: unknown }).code
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code
    const next = e as { readonly cause?: unknown; readonly reason?: unknown }
    e = next.reason !== undefined && next.reason !== e ? next.reason : next.cause
  }
  return undefined
}

/**
 * Answers that waiting cannot change: the server refused the login (class 28: a wrong
 * password, an unknown role, no pg_hba.conf entry) or has no such database (3D000). A
 * database that is starting answers 57P03 or does not answer at all; those are retried.
 */
const isPermanent = (sqlState: string | undefined): boolean =>
  sqlState !== undefined && (sqlState.startsWith("28") || sqlState === "3D000")

/** The messages of an error and its causes, never an object dump (which could hold the configuration). */
const messageOf = (error: unknown): string => {
  const parts: Array<string> = []
  for (let e = error, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const message = e instanceof Error ? e.message : typeof e === "string" ? e : ""
    if (message !== "" && !parts.includes(message)) parts.push(message)
    e = e instanceof Error ? e.cause : undefined
  }
  return parts.length === 0 ? "no answer" : parts.join(": ")
}

/**
 * A pooled `PgClient` (and `SqlClient`) for the URL, checked when the layer is built:
 * fails with `InvalidDatabaseUrl` for a URL that cannot be used, and with
 * `DatabaseUnreachable` if the database does not answer `SELECT 1` (after the
 * `retry`s asked for). `check: false` builds the pool without looking.
 */
export const layer = (url: string, options: Options = {}) =>
  Layer.unwrap(Effect.gen(function*() {
    const parsed = yield* parseUrl(url)
    const { check, checkTimeout, retry, ...pool } = options
    const client = PgClient.layer({ applicationName: "effect-jobs", ...pool, url: Redacted.make(url) })
    if (check === false) return client
    const timeoutMillis = yield* durationMillis("checkTimeout", checkTimeout, 5000)
    const delayMillis = yield* durationMillis("retry.delay", retry?.delay, 1000)
    const times = retry === undefined ? 0 : retry.times ?? Infinity
    if (!(times >= 0) || (Number.isFinite(times) && !Number.isInteger(times))) {
      return yield* new InvalidDatabaseUrl({ message: `Database.layer: retry.times must be a non-negative integer, got ${String(times)}` })
    }
    const target = targetOf(parsed)
    const where = `${target.host}:${target.port}/${target.database}`
    return Layer.tap(client, (context) => {
      const sql = Context.get(context, SqlClient.SqlClient)
      const once = sql`SELECT 1`.pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(timeoutMillis),
          orElse: () => Effect.fail(new Error(`no answer within ${timeoutMillis} ms`))
        })
      )
      const attempt = (n: number): Effect.Effect<void, DatabaseUnreachable> =>
        Effect.catch(once, (error) => {
          const reason = messageOf(error)
          const permanent = isPermanent(sqlStateOf(error))
          if (n > times || permanent) {
            return Effect.fail(new DatabaseUnreachable({
              ...target,
              attempts: n,
              message: `cannot reach the database at ${where}${n > 1 ? ` (${n} attempts)` : ""}: ${reason}` +
                (permanent && n <= times ? " (not retried: the server refused the login or has no such database)" : ""),
              cause: error
            }))
          }
          const left = Number.isFinite(times) ? ` (attempt ${n} of ${times + 1})` : ` (attempt ${n})`
          return Effect.logWarning(`effect-jobs: the database at ${where} is not reachable yet${left}: ${reason}; retrying in ${delayMillis} ms`).pipe(
            Effect.andThen(Effect.sleep(Duration.millis(delayMillis))),
            Effect.andThen(Effect.suspend(() => attempt(n + 1)))
          )
        })
      return attempt(1).pipe(Effect.annotateLogs({ module: "effect-jobs/Database" }))
    })
  }))
