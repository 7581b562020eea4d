/**
 * A worker in a process of its own, for tests that kill it with SIGKILL.
 * Usage: node test/support/worker-process.ts <database-url> <queue> <lease-ms>
 * Runs `sleepy` jobs whose handler prints `started <id>` and then never ends.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, Schema } from "effect"
import { Job, Worker } from "../../src/index.ts"

const [url, queue, leaseMs] = process.argv.slice(2) as [string, string, string]

export const Sleepy = Job.make("sleepy", { args: Schema.Struct({ n: Schema.Number }), queue })

const Handler = Job.toLayer(Sleepy, (_args, ctx) =>
  Effect.andThen(Effect.sync(() => process.stdout.write(`started ${ctx.id}\n`)), Effect.never))

const Main = Worker.layer({
  queues: { [queue]: { concurrency: 1, pollInterval: "100 millis" } },
  lease: Number(leaseMs),
  heartbeatInterval: Number(leaseMs) / 4
}).pipe(Layer.provide(Handler), Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 5 })))

Effect.runFork(Layer.launch(Main))
