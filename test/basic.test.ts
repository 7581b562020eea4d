import { assert, describe, layer } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { Job, Jobs } from "../src/index.ts"
import * as TestDb from "./support/db.ts"
import { getJob, startWorker } from "./support/harness.ts"

const Greet = Job.make("greet", {
  args: Schema.Struct({ name: Schema.String }),
  success: Schema.Struct({ greeting: Schema.String }),
  queue: "basic"
})

layer(Layer_(), { excludeTestServices: true })("basic", (it) => {
  it.effect("enqueue -> worker runs the handler -> completed with its typed result", () =>
    Effect.gen(function*() {
      const seen = yield* Deferred.make<string>()
      const handler = Job.toLayer(Greet, (args, ctx) =>
        Effect.as(Deferred.succeed(seen, `${args.name}@${ctx.attempt}`), { greeting: `hello ${args.name}` }))
      yield* startWorker({ queues: { basic: { concurrency: 2 } } }, handler)
      const jobs = yield* Jobs
      const id = yield* jobs.enqueue(Greet, { name: "ada" })
      assert.strictEqual(yield* Deferred.await(seen), "ada@1")
      // the outcome is written before the run's fiber ends; poll the row until it is
      let row = yield* getJob(id)
      while (row?.state === "running") row = yield* Effect.andThen(Effect.yieldNow, getJob(id))
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
