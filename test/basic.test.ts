import { assert, describe, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"
import { makeProbe } from "./support/probes.ts"

const Greet = Job.make("greet", {
  args: Schema.Struct({ name: Schema.String }),
  success: Schema.Struct({ greeting: Schema.String }),
  queue: "basic"
})

layer(Layer_(), { excludeTestServices: true })("basic", (it) => {
  it.effect("enqueue -> worker runs the handler -> completed with its typed result", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<string>()
      const probe = yield* makeProbe
      const handler = Job.toLayer(Greet, (args, ctx) =>
        Effect.as(Deferred.succeed(seen, `${args.name}@${ctx.attempt}`), { greeting: `hello ${args.name}` }))
      yield* startWorker({ queues: { basic: { concurrency: 2 } } }, Layer.merge(handler, probe.layer))
      const jobs = yield* Jobs.Jobs
      const id = yield* jobs.enqueue(Greet, { name: "ada" })
      assert.strictEqual(yield* Deferred.await(seen), "ada@1")
      // The outcome is written after the handler returns; the Observer reports it once it is.
      const outcome = yield* probe.next(id)
      assert.strictEqual(outcome._tag, "completed")
      assert.strictEqual(outcome.job.attempt, 1)
      const row = yield* getJob(id)
      assert.strictEqual(row?.state, "completed")
      assert.deepStrictEqual(row?.result, { greeting: "hello ada" })
    }))
})

function Layer_() {
  return Jobs.layer.pipe(Layer_provideMerge(TestDb.layer()))
}
import { Layer } from "effect"
function Layer_provideMerge<A, E, R>(l: Layer.Layer<A, E, R>) {
  return <A2, E2, R2>(self: Layer.Layer<A2, E2, R2>) => Layer.provideMerge(self, l)
}
