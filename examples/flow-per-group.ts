/**
 * A limit per group, and fair claims (docs/flow-control.md): `flow: { perGroup: 2 }`.
 *
 * Webhooks are delivered for several tenants; a tenant's endpoint should see at most
 * 2 deliveries at once, however many slots the workers have. Each job carries its
 * tenant as its `group`. The gated claim counts each group's running jobs across every
 * worker, and goes round the groups that have work, one job per group per turn: the
 * tenant with a backlog of 30 does not make the others wait behind it.
 */
import { Console, Effect, Layer, Schema } from "effect"
import { Job, Jobs, Worker } from "effect-jobs"
import { check, runMain } from "./support/database.ts"
import * as EventLog from "./support/events.ts"

const Deliver = Job.make("deliver-webhook", {
  args: Schema.Struct({ tenant: Schema.String, event: Schema.Number }),
  queue: "webhooks"
})

const running = new Map<string, number>()
const most = new Map<string, number>()
const order: Array<string> = []
const Handlers = Job.toLayer(Deliver, ({ tenant }) =>
  Effect.gen(function*() {
    const now = (running.get(tenant) ?? 0) + 1
    running.set(tenant, now)
    most.set(tenant, Math.max(most.get(tenant) ?? 0, now))
    order.push(tenant)
    yield* Effect.sleep("20 millis") // the HTTP call
    running.set(tenant, running.get(tenant)! - 1)
  }))

const program = Effect.gen(function*() {
  const jobs = yield* Jobs.Jobs
  const events = yield* EventLog.make
  // acme has a backlog of 30; globex and initech enqueue 3 each, after it
  const entries = [
    ...Array.from({ length: 30 }, (_, event) => Jobs.entry(Deliver, { tenant: "acme", event }, { group: "acme" })),
    ...["globex", "initech"].flatMap((tenant) =>
      Array.from({ length: 3 }, (_, event) => Jobs.entry(Deliver, { tenant, event }, { group: tenant }))
    )
  ]
  const ids = yield* jobs.enqueueAll(entries)
  yield* Layer.build(
    Worker.layer({ queues: { webhooks: { concurrency: 6, flow: { perGroup: 2 } } } }).pipe(
      Layer.provide([Handlers, events.layer])
    )
  )
  for (const id of ids) yield* events.waitFor(id, "completed")
  const lastSmall = Math.max(order.lastIndexOf("globex"), order.lastIndexOf("initech"))
  yield* Console.log(
    `36 webhooks of 3 tenants on 6 slots: at most ${[...most.values()].join("/")} per tenant at once; ` +
      `globex and initech were done after ${order.slice(0, lastSmall + 1).filter((t) => t === "acme").length} of acme's 30`
  )
  yield* check([...most.values()].every((n) => n <= 2), "at most 2 per tenant")
  yield* check(order.slice(0, lastSmall + 1).filter((t) => t === "acme").length < 10, "the small tenants did not wait for the backlog")
})

runMain(program.pipe(Effect.scoped, Effect.provide(Jobs.layer)))
