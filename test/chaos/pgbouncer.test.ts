/**
 * Scenario 8 — behind PgBouncer in transaction mode.
 *
 * The Debian `pgbouncer` binary is started by the test on a loopback port in
 * front of the suite's database, `pool_mode = transaction`. Workers connect
 * through it with `listen: false` (NOTIFY cannot reach a client through a
 * transaction pooler) and PgClient `prepare: false` (named prepared statements
 * do not survive a change of server connection; PgBouncer 1.21+ can track them,
 * Debian 12 ships 1.18). The jobs are enqueued through it too. Every job
 * completes, none is lost or run twice, and no prepared-statement error shows.
 *
 * Skipped, with a message, where `pgbouncer` is not installed (CI machines).
 */
import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Clock, Deferred, Effect, Layer, Redacted, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { execFileSync, spawn } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort } from "../../scripts/embedded-postgres.ts"
import { Jobs } from "../../src/index.ts"
import { Chaos } from "./jobs.ts"
import * as Chaos_ from "./support.ts"

const binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"].find((p) => existsSync(p))
if (binary === undefined) {
  console.warn("chaos: PgBouncer scenario skipped: no pgbouncer binary (apt-get install -y pgbouncer to run it)")
}

const N = Chaos_.SHORT ? 1_000 : 5_000


/** Starts pgbouncer in front of `url` (transaction pooling); stopped when the scope closes. Returns its URL. */
const startPgBouncer = (url: string) =>
  Effect.gen(function*() {
    const target = new URL(url)
    const port = yield* Effect.promise(freePort)
    const dir = mkdtempSync(join(tmpdir(), "effect-jobs-pgbouncer-"))
    const asPostgres = process.getuid?.() === 0
      ? {
        uid: Number(execFileSync("id", ["-u", "postgres"]).toString().trim()),
        gid: Number(execFileSync("id", ["-g", "postgres"]).toString().trim())
      }
      : {}
    const database = target.pathname.slice(1)
    const user = decodeURIComponent(target.username || "postgres")
    const password = decodeURIComponent(target.password)
    writeFileSync(join(dir, "userlist.txt"), `"${user}" "${password}"\n`)
    writeFileSync(
      join(dir, "pgbouncer.ini"),
      [
        "[databases]",
        `${database} = host=${target.hostname} port=${target.port || 5432} dbname=${database} user=${user}${password ? ` password=${password}` : ""}`,
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        `listen_port = ${port}`,
        "unix_socket_dir =",
        "auth_type = trust",
        `auth_file = ${join(dir, "userlist.txt")}`,
        "pool_mode = transaction",
        "max_client_conn = 500",
        "default_pool_size = 20",
        "ignore_startup_parameters = extra_float_digits,search_path,options",
        `logfile = ${join(dir, "pgbouncer.log")}`,
        `pidfile = ${join(dir, "pgbouncer.pid")}`,
        ""
      ].join("\n")
    )
    if (asPostgres.uid !== undefined) {
      for (const f of ["", "userlist.txt", "pgbouncer.ini"]) chownSync(join(dir, f), asPostgres.uid, asPostgres.gid)
    }
    const child = spawn(binary!, [join(dir, "pgbouncer.ini")], { stdio: "ignore", ...asPostgres })
    const exited = yield* Deferred.make<void>()
    child.once("exit", () => Deferred.doneUnsafe(exited, Effect.void))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        child.kill("SIGINT")
        yield* Deferred.await(exited).pipe(Effect.timeout("5 seconds"), Effect.ignore)
        rmSync(dir, { recursive: true, force: true })
      })
    )
    const bouncerUrl = new URL(url)
    bouncerUrl.port = String(port)
    // Ready when a query goes through it.
    yield* Effect.scoped(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`)).pipe(
      Effect.provide(PgClient.layer({ url: Redacted.make(bouncerUrl.toString()), maxConnections: 1, prepare: false })),
      Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 50 })
    )
    return bouncerUrl.toString()
  })

layer(Chaos_.database, { excludeTestServices: true })("chaos: behind PgBouncer", (it) => {
  it.effect.skipIf(binary === undefined)(
    binary === undefined
      ? "behind PgBouncer in transaction mode (SKIPPED: pgbouncer is not installed)"
      : `${N} jobs through PgBouncer (transaction mode, listen: false, prepare: false): nothing lost, no prepared-statement errors`,
    () =>
      Effect.gen(function*() {
        const { url } = yield* Chaos_.ChaosDb
        const bouncer = yield* startPgBouncer(url)
        const ClientLive = Layer.provideMerge(
          Jobs.layer,
          PgClient.layer({ url: Redacted.make(bouncer), maxConnections: 8, prepare: false, applicationName: "chaos-test" })
        )
        yield* Effect.gen(function*() {
          const jobs = yield* Jobs.Jobs
          const args = Array.from({ length: N }, (_, i) => ({ i, sleepMs: 5 + (i % 10) }))
          for (const chunk of Chaos_.chunks(args, 1000)) yield* jobs.enqueueMany(Chaos, chunk)
          const t0 = yield* Clock.currentTimeMillis
          const config = { url: bouncer, concurrency: 10, pool: 6, listen: false, prepare: false, pollMs: 100, leaseMs: 5000, heartbeatMs: 1000 }
          yield* Chaos_.spawnWorker(config)
          yield* Chaos_.spawnWorker(config)
          const { counts, at } = yield* Chaos_.waitAllTerminal("chaos", { timeout: "5 minutes" })
          assert.deepStrictEqual(counts, { completed: N }, "every job completed")
          const runs = yield* Chaos_.loadRuns
          const byJob = Chaos_.groupByJob(runs)
          const ranTwice = Array.from(byJob.values()).filter((l) => l.length > 1).length
          const errors = Chaos_.errorSummary()
          const prepared = Object.keys(errors).filter((m) => /prepared statement/i.test(m))
          assert.deepStrictEqual(prepared, [], "no prepared-statement errors")
          assert.strictEqual(ranTwice, 0, "no job ran twice")
          yield* Chaos_.recordResult("pgbouncer", {
            pgbouncer: execFileSync(binary!, ["--version"]).toString().split("\n")[0],
            jobs: N,
            workers: 2,
            completed: counts.completed ?? 0,
            lost: N - (counts.completed ?? 0),
            jobsRunMoreThanOnce: ranTwice,
            durationMs: at - t0,
            workerErrors: errors
          })
        }).pipe(Effect.provide(ClientLive))
      }).pipe(Effect.scoped),
    { timeout: 600_000 }
  )
})

