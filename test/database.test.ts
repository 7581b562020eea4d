/**
 * Database.layer checks that the database answers when it is built: a server
 * that is not there fails the layer at once with a `DatabaseUnreachable` that
 * names host, port and database (never the password); `retry` waits for it.
 */
import { assert, describe, expect, it, layer } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Logger, Scope } from "effect"
import { SqlClient } from "effect/sql"
import * as net from "node:net"
import { inject } from "vitest"
import { Database, DatabaseUnreachable } from "../src/index.ts"
import * as TestDb from "./support/db.ts"

/** A TCP server on `port` (default: a free one) of 127.0.0.1, closed (with its connections) when the scope closes. */
const tcpServer = (onConnection: (socket: net.Socket) => void, port = 0) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly server: net.Server; readonly port: number; readonly sockets: Set<net.Socket> }>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        onConnection(socket)
      })
      server.listen(port, "127.0.0.1", () => resume(Effect.succeed({ server, port: (server.address() as net.AddressInfo).port, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.callback<void>((resume) => {
        for (const s of sockets) s.destroy()
        server.close(() => resume(Effect.void))
      })
  )

/** A port nothing listens on (taken from the OS, then let go). */
const freePort = Effect.scoped(Effect.map(tcpServer(() => {}), ({ port }) => port))

/** Warnings logged while `self` runs, and a Deferred resolved on the first one. */
const withWarnings = Effect.gen(function*() {
  const warnings: Array<string> = []
  const first = yield* Deferred.make<void>()
  const logger = Logger.make(({ logLevel, message }) => {
    if (logLevel !== "Warn") return
    warnings.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
    Deferred.doneUnsafe(first, Exit.void)
  })
  return { warnings, first, layer: Logger.layer([logger]) }
})

const selectOne = Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ readonly one: number }>`SELECT 1 AS one`)

describe("Database.layer on a server that is not there", () => {
  it.live("fails fast with DatabaseUnreachable naming host, port and database, not the password", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const started = Date.now()
      const exit = yield* Effect.exit(Effect.provide(selectOne, Database.layer(`postgres://bob:s3cret-pw@127.0.0.1:${port}/billing`)))
      const elapsed = Date.now() - started
      assert.isTrue(Exit.isFailure(exit))
      if (!Exit.isFailure(exit)) return
      const error = Cause.squash(exit.cause)
      assert.instanceOf(error, DatabaseUnreachable)
      if (!(error instanceof DatabaseUnreachable)) return
      assert.deepInclude(error, { host: "127.0.0.1", port, database: "billing", attempts: 1 })
      expect(error.message).toContain(`127.0.0.1:${port}/billing`)
      expect(error.message).toContain("ECONNREFUSED")
      assert.isDefined(error.cause, "carries the cause")
      for (const text of [error.message, JSON.stringify(error), Cause.pretty(exit.cause), String(error)]) {
        expect(text).not.toContain("s3cret-pw")
      }
      assert.isBelow(elapsed, 3000, `failed after ${elapsed} ms`)
    }))

  it.live("with retry: { times: 3 }, makes 4 attempts, warning after each failed one but the last", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const logs = yield* withWarnings
      const error = yield* Effect.flip(
        Effect.provide(selectOne, Database.layer(`postgres://u@127.0.0.1:${port}/db`, { retry: { times: 3, delay: "10 millis" } }))
      ).pipe(Effect.provide(logs.layer))
      assert.strictEqual(error._tag, "DatabaseUnreachable")
      assert.strictEqual((error as DatabaseUnreachable).attempts, 4)
      assert.strictEqual(logs.warnings.length, 3)
      expect(logs.warnings[0]).toContain(`the database at 127.0.0.1:${port}/db is not reachable yet (attempt 1 of 4)`)
    }))

  it.live("a server that accepts and never answers fails after checkTimeout", () =>
    Effect.gen(function*() {
      const { port } = yield* tcpServer(() => {}) // holds every connection, says nothing
      const started = Date.now()
      const error = yield* Effect.flip(
        Effect.provide(selectOne, Database.layer(`postgres://u@127.0.0.1:${port}/db`, { checkTimeout: "300 millis" }))
      )
      assert.strictEqual(error._tag, "DatabaseUnreachable")
      expect(error.message).toContain("no answer within 300 ms")
      assert.isBelow(Date.now() - started, 3000)
    }))

  it.live("with retry, succeeds once the database becomes reachable", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const logs = yield* withWarnings
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      // The real server's URL (its user, password and database) with the proxy's address:
      // the embedded server wants the password, the machine's may not.
      const target = new URL(inject("databaseUrl"))
      const viaProxy = new URL(target.href)
      viaProxy.hostname = "127.0.0.1"
      viaProxy.port = String(port)
      // The layer is built in the background: it keeps failing (nothing listens) ...
      const building = yield* Layer.buildWithScope(
        Database.layer(viaProxy.href, {
          retry: { delay: "50 millis" },
          maxConnections: 2
        }),
        scope
      ).pipe(Effect.provide(logs.layer), Effect.forkChild)
      yield* Deferred.await(logs.first)
      // ... until a proxy to the real server opens on its port.
      yield* tcpServer((socket) => {
        const upstream = net.connect(Number(target.port || 5432), target.hostname)
        socket.pipe(upstream).pipe(socket)
        socket.on("close", () => upstream.destroy())
        upstream.on("close", () => socket.destroy())
        upstream.on("error", () => socket.destroy())
        socket.on("error", () => upstream.destroy())
      }, port)
      const context = yield* Fiber.join(building).pipe(Effect.timeout("30 seconds"))
      const rows = yield* selectOne.pipe(Effect.provideContext(context))
      assert.strictEqual(rows[0]?.one, 1)
      assert.isAtLeast(logs.warnings.length, 1)
    }))
})

describe("Database.layer refused by the server", () => {
  it.live("a login the server refuses fails at once, even with retry forever: one attempt, no warning, the reason given", () =>
    Effect.gen(function*() {
      const logs = yield* withWarnings
      // The test server, as a role that does not exist (class 28: "role does not exist" on a
      // trust server, "password authentication failed" on one that wants a password).
      const url = new URL(inject("databaseUrl"))
      url.username = "no_such_role_here"
      url.password = "not-the-password"
      const exit = yield* Effect.exit(
        Effect.provide(selectOne, Database.layer(url.href, { retry: { delay: "10 millis" } })).pipe(
          Effect.provide(logs.layer),
          Effect.timeout("20 seconds")
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      if (!Exit.isFailure(exit)) return
      const error = Cause.squash(exit.cause)
      assert.instanceOf(error, DatabaseUnreachable)
      assert.strictEqual((error as DatabaseUnreachable).attempts, 1)
      assert.include((error as DatabaseUnreachable).message, "not retried")
      assert.notInclude((error as DatabaseUnreachable).message, "not-the-password")
      assert.deepStrictEqual(logs.warnings, [])
    }))

  it.live("a database that does not exist fails at once too", () =>
    Effect.gen(function*() {
      const url = new URL(inject("databaseUrl"))
      url.pathname = "/no_such_database_here"
      const exit = yield* Effect.exit(
        Effect.provide(selectOne, Database.layer(url.href, { retry: { times: 50, delay: "10 millis" } })).pipe(Effect.timeout("20 seconds"))
      )
      assert.isTrue(Exit.isFailure(exit))
      if (!Exit.isFailure(exit)) return
      const error = Cause.squash(exit.cause)
      assert.instanceOf(error, DatabaseUnreachable)
      assert.strictEqual((error as DatabaseUnreachable).attempts, 1)
      assert.include((error as DatabaseUnreachable).message, "no_such_database_here")
    }))
})

layer(TestDb.layer())("Database.layer on the test database", (it) => {
  it.effect("builds, and its client works", () =>
    Effect.gen(function*() {
      const { url } = yield* TestDb.TestDb
      const rows = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ readonly db: string }>`SELECT current_database() AS db`).pipe(
        Effect.provide(Database.layer(url))
      )
      assert.strictEqual(rows[0]?.db, new URL(url).pathname.slice(1))
    }))
})
