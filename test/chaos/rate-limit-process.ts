/**
 * One process of the rate-limit fleet check (test/chaos/rate-limit-fleet.test.ts):
 * `node test/chaos/rate-limit-process.ts '<json RateLimitProcessConfig>'`.
 *
 * It builds Effect's `RateLimiter` on the Postgres store (`RateLimiterStore.layer`) and, once
 * told `go <start>` on stdin (a `Date.now()` instant: the three processes begin together), runs `fibers` loops that each, as fast as they can for `runMs`, wait for
 * a token of `key` (`RateLimiter.sleep`: consume in delay mode, then sleep the delay it
 * returns) and log the grant in `rate_limit_log` (created by the test), on the database's clock. Lines on stdout:
 *
 *   ready <pid>      the store answered a first call (the pool is connected)
 *   done <grants>    the run is over; the process exits 0
 */
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Redacted } from "effect"
import { RateLimiter } from "effect/persistence"
import { SqlClient } from "effect/sql"
import { createInterface } from "node:readline"
import { RateLimiterStore } from "../../src/index.ts"

export interface RateLimitProcessConfig {
  readonly url: string
  /** This process's number in the log. */
  readonly process: number
  readonly key: string
  readonly limit: number
  readonly windowMs: number
  readonly runMs: number
  /** Concurrent loops in this process. */
  readonly fibers: number
}

const say = (line: string) => process.stdout.write(`${line}\n`)

/** Waits for the `go <start>` line, then until `start` on this machine's clock. */
const go = Effect.flatMap(
  Effect.callback<number>((resume) => {
    createInterface({ input: process.stdin }).on("line", (line) => {
      const [word, start] = line.trim().split(" ")
      if (word === "go") resume(Effect.succeed(Number(start)))
    })
  }),
  (start) => Effect.sleep(Duration.millis(Math.max(0, start - Date.now())))
)

const main = (config: RateLimitProcessConfig) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const limiter = yield* RateLimiter.RateLimiter
    const options = { key: config.key, limit: config.limit, window: Duration.millis(config.windowMs) } as const
    // A first call on another key: the store works and the pool is open before the start.
    yield* limiter.consume({ ...options, key: `${config.key}:warm-up:${config.process}` })
    say(`ready ${process.pid}`)
    yield* go
    const deadline = Date.now() + config.runMs
    let grants = 0
    const loop = Effect.gen(function*() {
      while (Date.now() < deadline) {
        yield* RateLimiter.sleep(limiter, options)
        yield* sql`INSERT INTO rate_limit_log (process) VALUES (${config.process})`
        grants++
      }
    })
    yield* Effect.all(Array.from({ length: config.fibers }, () => loop), { concurrency: "unbounded", discard: true })
    say(`done ${grants}`)
  })

const config = JSON.parse(process.argv[2]!) as RateLimitProcessConfig
const Live = RateLimiter.layer.pipe(
  Layer.provideMerge(RateLimiterStore.layer),
  Layer.provideMerge(PgClient.layer({
    url: Redacted.make(config.url),
    maxConnections: config.fibers + 1,
    applicationName: `rate-limit-process ${config.process}`
  }))
)

Effect.runPromiseExit(main(config).pipe(Effect.provide(Live))).then((exit) => {
  if (exit._tag === "Failure") process.stderr.write(`rate-limit process failed: ${String(exit.cause)}\n`)
  process.exit(exit._tag === "Failure" ? 1 : 0)
})
