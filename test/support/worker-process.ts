/**
 * A worker in a process of its own, for tests that kill it with SIGKILL.
 * Usage: node test/support/worker-process.ts <database-url> <queue> <lease-ms> [concurrency] [prefetch] [worker-id]
 * Runs `sleepy` jobs: one with `quick: true` completes at once; any other prints
 * `started <id>` and then never ends. Concurrency 1 and an adaptive prefetch unless given.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, Schema } from "effect"
import { Job, Worker } from "../../src/index.ts"

const [url, queue, leaseMs, concurrency, prefetch, workerId] = process.argv.slice(2) as [
  string,
  string,
  string,
  string | undefined,
  string | undefined,
  string | undefined
]

export const Sleepy = Job.make("sleepy", {
  args: Schema.Struct({ n: Schema.Number, quick: Schema.optional(Schema.Boolean) }),
  queue
})

const Handler = Job.toLayer(Sleepy, (args, ctx) =>
  args.quick === true
    ? Effect.void
    : Effect.andThen(Effect.sync(() => process.stdout.write(`started ${ctx.id}\n`)), Effect.never))

const Main = Worker.layer({
  queues: {
    [queue]: {
      concurrency: concurrency === undefined ? 1 : Number(concurrency),
      ...(prefetch === undefined ? {} : { prefetch: Number(prefetch) }),
      pollInterval: "100 millis"
    }
  },
  lease: Number(leaseMs),
  heartbeatInterval: Number(leaseMs) / 4,
  ...(workerId === undefined ? {} : { workerId })
}).pipe(Layer.provide(Handler), Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 5 })))

Effect.runFork(Layer.launch(Main))
