/**
 * The dashboard's HTTP API on a real server (a free port of 127.0.0.1) and a real
 * database, called with fetch: every route's status and body, the typed errors as
 * 400/404/409 JSON, read-only mode, bearer and basic auth, the refusal of cross-site
 * state-changing requests, hidden arguments, allowed hosts, the periodic schedules (next
 * slots from the stored cron) and the bundles (members done of total), and the dashboard mounted
 * under a prefix beside an app's own route. Each refusal is checked to change nothing
 * in the database.
 */
import { assert, layer } from "@effect/vitest"
import { Cron, Effect, Exit, Layer, Schema, Scope } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { SqlClient } from "effect/sql"
import { request as httpRequest } from "node:http"
import { Job, Jobs, JobsAdmin, Periodic } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import { call, claimAll, killAll, withDashboard } from "./support/dashboard.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { withTestClock } from "./support/probes.ts"

const Email = Job.make("dash-email", { args: Schema.Struct({ to: Schema.String }), queue: "dash-mail" })
const Other = Job.make("dash-other", { args: Schema.Struct({ n: Schema.Number }), queue: "dash-other" })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

const post = (url: string, headers: Record<string, string> = {}) => call(url, { method: "POST", headers })

/** A request with a `Host` header of our choosing (fetch may not set it). */
const withHost = (url: string, host: string) =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest(url, { headers: { host } }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on("error", reject)
      req.end()
    })
  )

layer(TestLayer, { excludeTestServices: true })("Dashboard API", (it) => {
  it.effect("workers: the live workers from the registry, gone once shut down", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const Idle = Job.make("dash-idle", { args: Schema.Struct({}), queue: "dash-w" })
      yield* startWorker({ queues: { "dash-w": { concurrency: 3 } }, workerId: "dash-worker-1" }, Job.toLayer(Idle, () => Effect.void)).pipe(
        Scope.provide(scope)
      )
      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const listed = yield* call(`${base}/api/workers`)
          assert.strictEqual(listed.status, 200)
          const mine = listed.body.workers.find((w: any) => w.id === "dash-worker-1")
          assert.deepInclude(mine, { id: "dash-worker-1", queues: ["dash-w"], concurrency: 3, jobsHeld: 0 })
          assert.isFalse(Number.isNaN(Date.parse(mine.lastSeenAt)))
          yield* Scope.close(scope, Exit.void)
          const after = yield* call(`${base}/api/workers`)
          assert.isUndefined(after.body.workers.find((w: any) => w.id === "dash-worker-1"), "deregistered at shutdown")
        }))
    }))

  it.effect("periodic: every schedule with its definition, last slot and next slots computed from the stored cron", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const Report = Job.make("dash-report", { args: Schema.Struct({}), queue: "dash-reports" })
      // Slots far apart (03:00 in Paris on the 1st of the month, every 7 days): none comes due
      // while the test runs.
      yield* Effect.flatMap(
        Layer.build(Periodic.layer([
          Periodic.make(Report, {}, { name: "dash-monthly", cron: "0 3 1 * *", timeZone: "Europe/Paris" }),
          Periodic.make(Report, {}, { name: "dash-weekly", every: "7 days", options: { queue: "dash-weekly-q" } })
        ])),
        (ctx) => Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.ready), ctx)
      )
      // A row no scheduler of this version registered (no definition), and one whose slot of
      // an hour ago was never enqueued (no scheduler ran).
      yield* sql`INSERT INTO effect_jobs.periodic (name, last_slot) VALUES ('dash-legacy', now())`
      yield* sql`INSERT INTO effect_jobs.periodic (name, last_slot, job, queue, every_ms)
                 VALUES ('dash-stale', date_trunc('minute', now()) - interval '2 hours', 'dash-report', 'dash-reports', 60000)`

      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const now = Date.now()
          const reply = yield* call(`${base}/api/periodic`)
          assert.strictEqual(reply.status, 200)
          const byName = new Map<string, any>(reply.body.schedules.map((s: any) => [s.name, s]))
          assert.deepStrictEqual(reply.body.schedules.map((s: any) => s.name), ["dash-legacy", "dash-monthly", "dash-stale", "dash-weekly"])

          const monthly = byName.get("dash-monthly")
          const cron = Cron.parseUnsafe("0 3 1 * *", "Europe/Paris")
          const expected: Array<string> = []
          for (const d of Cron.sequence(cron, new Date(now))) {
            expected.push(d.toISOString())
            if (expected.length === 3) break
          }
          assert.deepInclude(monthly, {
            job: "dash-report",
            queue: "dash-reports",
            schedule: `cron "0 3 1 * *" Europe/Paris`,
            cron: "0 3 1 * *",
            timeZone: "Europe/Paris",
            everyMillis: null,
            lastJobId: null,
            overdueSince: null
          })
          assert.deepStrictEqual(monthly.nextSlots, expected)
          // 03:00 in Paris on the 1st is 01:00 or 02:00 UTC that day, as the season has it.
          for (const slot of monthly.nextSlots) assert.match(slot, /-01T0[12]:00:00\.000Z$/)

          const week = 7 * 24 * 3600_000
          const weekly = byName.get("dash-weekly")
          assert.deepInclude(weekly, { queue: "dash-weekly-q", schedule: "every 7d", everyMillis: week, cron: null })
          const first = (Math.floor(now / week) + 1) * week
          assert.deepStrictEqual(weekly.nextSlots, [first, first + week, first + 2 * week].map((t) => new Date(t).toISOString()))
          assert.strictEqual(weekly.lastSlot, new Date(first - week).toISOString(), "registered at the slot it started in")

          assert.deepInclude(byName.get("dash-legacy"), { job: null, schedule: null, nextSlots: [], overdueSince: null })
          const stale = byName.get("dash-stale")
          assert.strictEqual(Date.parse(stale.overdueSince) - Date.parse(stale.lastSlot), 60_000, "the first slot not enqueued")
          assert.strictEqual(stale.nextSlots.length, 3)
        }))
    }))

  it.effect("bundles: newest first with members done of total, filters, pages, and bad queries as 400", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const open = yield* jobs.enqueueBundle({ name: "dash-album" }, [
        Jobs.entry(Email, { to: "m1" }, { queue: "dash-b1" }),
        Jobs.entry(Email, { to: "m2" }, { queue: "dash-b1" }),
        Jobs.entry(Email, { to: "m3" }, { queue: "dash-b2" })
      ], { metadata: { album: "summer" } })
      yield* killAll("dash-b1") // two of three members end dead
      const finished = yield* jobs.enqueueBundle({ name: "dash-single" }, [Jobs.entry(Email, { to: "m4" }, { queue: "dash-b3" })])
      yield* killAll("dash-b3")

      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const all = yield* call(`${base}/api/bundles`)
          assert.strictEqual(all.status, 200)
          assert.deepStrictEqual(all.body.bundles.map((b: any) => b.id), [finished.bundleId, open.bundleId])
          assert.deepInclude(all.body.bundles[1], {
            id: open.bundleId,
            name: "dash-album",
            total: 3,
            done: 2,
            metadata: { album: "summer" },
            finishedAt: null,
            finishStepDone: false,
            followUpId: null
          })
          assert.deepInclude(all.body.bundles[0], { total: 1, done: 1, finishStepDone: false })
          assert.isString(all.body.bundles[0].finishedAt)
          assert.strictEqual(all.body.next, null)

          const openOnly = yield* call(`${base}/api/bundles?state=open`)
          assert.deepStrictEqual(openOnly.body.bundles.map((b: any) => b.id), [open.bundleId])
          const finishedOnly = yield* call(`${base}/api/bundles?state=finished`)
          assert.deepStrictEqual(finishedOnly.body.bundles.map((b: any) => b.id), [finished.bundleId])
          const byName = yield* call(`${base}/api/bundles?name=dash-album`)
          assert.deepStrictEqual(byName.body.bundles.map((b: any) => b.id), [open.bundleId])

          const page1 = yield* call(`${base}/api/bundles?limit=1`)
          assert.deepStrictEqual(page1.body.bundles.map((b: any) => b.id), [finished.bundleId])
          assert.strictEqual(page1.body.next, finished.bundleId)
          const page2 = yield* call(`${base}/api/bundles?limit=1&cursor=${page1.body.next}`)
          assert.deepStrictEqual(page2.body.bundles.map((b: any) => b.id), [open.bundleId])

          for (const bad of ["state=done", "limit=0", "limit=x", "cursor=nope"]) {
            const reply = yield* call(`${base}/api/bundles?${bad}`)
            assert.strictEqual(reply.status, 400, bad)
            assert.strictEqual(reply.body._tag, "BadRequest")
          }
        }))
    }))

  it.effect("throughput: outcomes per minute as { minutes: [...] }, of one queue or all; a bad window is 400", () =>
    Effect.gen(function*() {
      const store = yield* JobStore
      const now = Date.now()
      // A worker's counts of this minute, as it writes them (internal/Throughput.ts).
      yield* store.throughputAdd("dash-worker", [{ minute: now - (now % 60_000), queue: "dash-tp", completed: 0, retried: 0, dead: 2, cancelled: 0 }])
      yield* withTestClock(now, withDashboard({}, (base) =>
        Effect.gen(function*() {
          const reply = yield* call(`${base}/api/throughput?queue=dash-tp&minutes=5`)
          assert.strictEqual(reply.status, 200)
          const minutes: ReadonlyArray<any> = reply.body.minutes
          assert.lengthOf(minutes, 5, "zero-filled: every minute of the window")
          for (const m of minutes) {
            assert.deepStrictEqual(Object.keys(m), ["at", "queue", "completed", "retried", "dead", "cancelled"])
            assert.strictEqual(m.queue, "dash-tp")
          }
          const times = minutes.map((m) => Date.parse(m.at))
          assert.deepStrictEqual(times.slice(1).map((t, i) => t - times[i]!), [60_000, 60_000, 60_000, 60_000], "oldest first, a minute apart")
          assert.strictEqual(times[0]! % 60_000, 0, "minute starts")
          assert.deepStrictEqual(minutes[4], { at: new Date(now - (now % 60_000)).toISOString(), queue: "dash-tp", completed: 0, retried: 0, dead: 2, cancelled: 0 })
          assert.strictEqual(minutes.slice(0, 4).reduce((sum, m) => sum + m.completed + m.retried + m.dead + m.cancelled, 0), 0)

          const all = yield* call(`${base}/api/throughput`)
          assert.strictEqual(all.status, 200)
          assert.lengthOf(all.body.minutes.filter((m: any) => m.queue === "dash-tp"), 60, "the last hour by default")

          for (const bad of ["minutes=0", "minutes=361", "minutes=abc", "minutes=1.5"]) {
            const refused = yield* call(`${base}/api/throughput?${bad}`)
            assert.strictEqual(refused.status, 400, bad)
            assert.strictEqual(refused.body._tag, "BadRequest")
          }
          const openapi = yield* call(`${base}/api/openapi.json`)
          assert.containsAllKeys(openapi.body.paths, ["/api/throughput"])
        })))
    }))

  it.effect("queues, jobs (filters, search, pages), one job, and the typed errors as JSON", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const ids = yield* jobs.enqueueMany(Email, [1, 2, 3].map((n) => ({ to: `u${n}@example.com` })), { queue: "dash-q1" })
      const keyed = yield* jobs.enqueue(Other, { n: 7 }, { queue: "dash-q1", uniqueKey: "order:7" })
      yield* admin.pause("dash-q2")

      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const queues = yield* call(`${base}/api/queues`)
          assert.strictEqual(queues.status, 200)
          assert.strictEqual(queues.headers.get("cache-control"), "no-store")
          const q1 = queues.body.queues.find((q: any) => q.name === "dash-q1")
          assert.deepStrictEqual(q1, {
            name: "dash-q1",
            paused: false,
            counts: { scheduled: 0, available: 4, running: 0, completed: 0, dead: 0, cancelled: 0 }
          })
          assert.strictEqual(queues.body.queues.find((q: any) => q.name === "dash-q2")?.paused, true)

          // Filters and keyset pages.
          const page1 = yield* call(`${base}/api/jobs?queue=dash-q1&name=dash-email&limit=2`)
          assert.strictEqual(page1.status, 200)
          assert.deepStrictEqual(page1.body.jobs.map((j: any) => j.id), [ids[2], ids[1]])
          assert.isString(page1.body.next)
          const page2 = yield* call(`${base}/api/jobs?queue=dash-q1&name=dash-email&limit=2&cursor=${page1.body.next}`)
          assert.deepStrictEqual(page2.body.jobs.map((j: any) => j.id), [ids[0]])
          assert.strictEqual(page2.body.next, null)
          const several = yield* call(`${base}/api/jobs?queue=dash-q1&state=available,dead`)
          assert.strictEqual(several.body.jobs.length, 4)

          // Search: by unique key, by id.
          const byKey = yield* call(`${base}/api/jobs?q=order:7`)
          assert.deepStrictEqual(byKey.body.jobs.map((j: any) => j.id), [keyed])
          const byId = yield* call(`${base}/api/jobs?q=${ids[1]}`)
          assert.deepStrictEqual(byId.body.jobs.map((j: any) => j.id), [ids[1]])
          const byIdFiltered = yield* call(`${base}/api/jobs?q=${ids[1]}&state=dead`)
          assert.deepStrictEqual(byIdFiltered.body.jobs, [], "the id's job is not dead")

          const one = yield* call(`${base}/api/jobs/${ids[0]}`)
          assert.strictEqual(one.status, 200)
          assert.strictEqual(one.body.name, "dash-email")
          assert.strictEqual(one.body.state, "available")
          assert.deepStrictEqual(one.body.args, { to: "u1@example.com" })
          assert.strictEqual(one.body.argsHidden, false)
          assert.isString(one.body.createdAt)

          for (const id of ["999999999", "abc", "-1"]) {
            const missing = yield* call(`${base}/api/jobs/${id}`)
            assert.strictEqual(missing.status, 404, id)
            assert.strictEqual(missing.body._tag, "NotFound")
            assert.match(missing.body.message, /job/)
          }
          for (const bad of ["state=sleeping", "limit=0", "limit=x", "order=sideways", "cursor=nope"]) {
            const reply = yield* call(`${base}/api/jobs?${bad}`)
            assert.strictEqual(reply.status, 400, bad)
            assert.strictEqual(reply.body._tag, "BadRequest")
            assert.isAbove(reply.body.message.length, 10)
          }
          const conflict = yield* post(`${base}/api/jobs/${ids[0]}/retry`)
          assert.strictEqual(conflict.status, 409)
          assert.deepInclude(conflict.body, { _tag: "Conflict", reason: "JobNotRetryable" })
          assert.strictEqual((yield* admin.get(ids[0]!)).state, "available", "the refused retry changed nothing")

          const openapi = yield* call(`${base}/api/openapi.json`)
          assert.strictEqual(openapi.status, 200)
          assert.containsAllKeys(openapi.body.paths, [
            "/api/queues",
            "/api/jobs",
            "/api/jobs/{id}",
            "/api/queues/{name}/retry-dead",
            "/api/periodic",
            "/api/bundles"
          ])
        }))
    }))

  it.effect("actions: retry, cancel (waiting and running), delete, pause, resume, retry dead", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [dead1, dead2] = yield* jobs.enqueueMany(Email, [{ to: "a" }, { to: "b" }], { queue: "dash-act" })
      yield* killAll("dash-act")
      const waiting = yield* jobs.enqueue(Email, { to: "c" }, { queue: "dash-wait" })
      const running = yield* jobs.enqueue(Email, { to: "d" }, { queue: "dash-run" })
      yield* claimAll("dash-run")

      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const deadJob = yield* call(`${base}/api/jobs/${dead1}`)
          assert.strictEqual(deadJob.body.state, "dead")
          assert.deepStrictEqual(deadJob.body.errors.map((e: any) => e.message), [`boom ${dead1}`])

          const retried = yield* post(`${base}/api/jobs/${dead1}/retry`)
          assert.strictEqual(retried.status, 200)
          assert.strictEqual(retried.body.state, "available")
          assert.strictEqual((yield* admin.get(dead1!)).state, "available")

          const cancelled = yield* post(`${base}/api/jobs/${waiting}/cancel`)
          assert.strictEqual(cancelled.status, 200)
          assert.strictEqual(cancelled.body.outcome, "cancelled")
          assert.strictEqual((yield* admin.get(waiting)).state, "cancelled")
          const again = yield* post(`${base}/api/jobs/${waiting}/cancel`)
          assert.strictEqual(again.status, 409)
          assert.strictEqual(again.body.reason, "JobAlreadyFinished")

          const requested = yield* post(`${base}/api/jobs/${running}/cancel`)
          assert.strictEqual(requested.body.outcome, "cancelRequested")
          assert.isString(requested.body.job.cancelRequestedAt)
          const busy = yield* call(`${base}/api/jobs/${running}`, { method: "DELETE" })
          assert.strictEqual(busy.status, 409)
          assert.strictEqual(busy.body.reason, "JobIsRunning")

          const deleted = yield* call(`${base}/api/jobs/${waiting}`, { method: "DELETE" })
          assert.strictEqual(deleted.status, 204)
          assert.strictEqual((yield* call(`${base}/api/jobs/${waiting}`)).status, 404)

          assert.strictEqual((yield* post(`${base}/api/queues/dash-act/pause`)).status, 204)
          assert.strictEqual((yield* admin.queues).find((q) => q.name === "dash-act")?.paused, true)
          assert.strictEqual((yield* post(`${base}/api/queues/dash-act/resume`)).status, 204)
          assert.strictEqual((yield* admin.queues).find((q) => q.name === "dash-act")?.paused, false)

          const redrive = yield* post(`${base}/api/queues/dash-act/retry-dead`)
          assert.deepStrictEqual(redrive.body, { retried: 1 })
          assert.strictEqual((yield* admin.get(dead2!)).state, "available")

          const badQueue = yield* post(`${base}/api/queues/a%00b/pause`)
          assert.strictEqual(badQueue.status, 400)
          assert.strictEqual(badQueue.body._tag, "BadRequest")
        }))
    }))

  it.effect("read-only: every read works, every change is 403 and changes nothing", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [id] = yield* jobs.enqueueMany(Email, [{ to: "ro" }], { queue: "dash-ro" })
      yield* killAll("dash-ro")
      yield* withDashboard({ readOnly: true }, (base) =>
        Effect.gen(function*() {
          assert.strictEqual((yield* call(`${base}/api/queues`)).status, 200)
          assert.strictEqual((yield* call(`${base}/api/jobs/${id}`)).status, 200)
          assert.strictEqual((yield* call(`${base}/api/config`)).body.readOnly, true)
          assert.strictEqual((yield* call(`${base}/api/periodic`)).status, 200)
          assert.strictEqual((yield* call(`${base}/api/bundles`)).status, 200)
          for (
            const [method, path] of [
              ["POST", `jobs/${id}/retry`],
              ["POST", `jobs/${id}/cancel`],
              ["DELETE", `jobs/${id}`],
              ["POST", "queues/dash-ro/pause"],
              ["POST", "queues/dash-ro/retry-dead"]
            ] as const
          ) {
            const reply = yield* call(`${base}/api/${path}`, { method })
            assert.strictEqual(reply.status, 403, `${method} ${path}`)
            assert.strictEqual(reply.body._tag, "Forbidden")
            assert.match(reply.body.message, /read-only/)
          }
          assert.strictEqual((yield* admin.get(id!)).state, "dead")
          assert.strictEqual((yield* admin.queues).find((q) => q.name === "dash-ro")?.paused, false)
        }))
    }))

  it.effect("cross-site changes are refused (Sec-Fetch-Site, Origin); same-origin and non-browser clients pass", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      yield* withDashboard({}, (base) =>
        Effect.gen(function*() {
          const host = new URL(base).host
          for (
            const headers of [
              { "sec-fetch-site": "cross-site" },
              { "sec-fetch-site": "same-site" },
              { origin: "http://evil.example" },
              { origin: `http://${host}.evil.example` },
              { origin: "null" }
            ]
          ) {
            const reply = yield* post(`${base}/api/queues/dash-csrf/pause`, headers)
            assert.strictEqual(reply.status, 403, JSON.stringify(headers))
            assert.match(reply.body.message, /cross-site/)
          }
          assert.isUndefined((yield* admin.queues).find((q) => q.name === "dash-csrf"), "nothing was paused")
          // A GET is never refused for its origin (it changes nothing).
          assert.strictEqual((yield* call(`${base}/api/queues`, { headers: { "sec-fetch-site": "cross-site" } })).status, 200)

          for (const headers of [{ "sec-fetch-site": "same-origin" }, { origin: base }, {}]) {
            const id = yield* jobs.enqueue(Email, { to: "x" }, { queue: "dash-csrf" })
            const reply = yield* post(`${base}/api/jobs/${id}/cancel`, headers)
            assert.strictEqual(reply.status, 200, JSON.stringify(headers))
            assert.strictEqual((yield* admin.get(id)).state, "cancelled")
          }
        }))
    }))

  it.effect("bearer token: the API needs it (401 with a challenge), the UI's files do not", () =>
    Effect.gen(function*() {
      yield* withDashboard({ auth: { token: "s3cret-token" } }, (base) =>
        Effect.gen(function*() {
          for (const authorization of [undefined, "Bearer wrong", "Bearer s3cret-tokenX", "Basic czNjcmV0LXRva2Vu"]) {
            const reply = yield* call(`${base}/api/queues`, authorization ? { headers: { authorization } } : {})
            assert.strictEqual(reply.status, 401, String(authorization))
            assert.strictEqual(reply.body._tag, "Unauthorized")
            assert.match(reply.headers.get("www-authenticate") ?? "", /^Bearer/)
          }
          for (const path of ["periodic", "bundles", "workers", "jobs?state=running", "jobs?state=dead"]) {
            assert.strictEqual((yield* call(`${base}/api/${path}`)).status, 401, path)
            const ok = yield* call(`${base}/api/${path}`, { headers: { authorization: "Bearer s3cret-token" } })
            assert.strictEqual(ok.status, 200, path)
          }
          const refused = yield* post(`${base}/api/queues/dash-auth/pause`)
          assert.strictEqual(refused.status, 401)
          const ok = yield* call(`${base}/api/queues`, { headers: { authorization: "Bearer s3cret-token" } })
          assert.strictEqual(ok.status, 200)
          const ui = yield* call(`${base}/`)
          assert.strictEqual(ui.status, 200)
          assert.match(ui.body, /<script type="module" src="app.js">/)
          assert.notInclude(ui.body, "s3cret")
        }))
      assert.isUndefined((yield* (yield* JobsAdmin.JobsAdmin).queues).find((q) => q.name === "dash-auth"))
    }))

  it.effect("basic auth: the UI and the API need the user name and password", () =>
    withDashboard({ auth: { username: "ops", password: "pa:ss" } }, (base) =>
      Effect.gen(function*() {
        const good = `Basic ${Buffer.from("ops:pa:ss").toString("base64")}`
        const bad = `Basic ${Buffer.from("ops:nope").toString("base64")}`
        for (const path of ["/", "/app.js", "/api/queues"]) {
          const none = yield* call(`${base}${path}`)
          assert.strictEqual(none.status, 401, path)
          assert.match(none.headers.get("www-authenticate") ?? "", /^Basic realm="effect-jobs"/)
          assert.strictEqual((yield* call(`${base}${path}`, { headers: { authorization: bad } })).status, 401)
          assert.strictEqual((yield* call(`${base}${path}`, { headers: { authorization: good } })).status, 200)
        }
      })))

  it.effect("hideArgs: the arguments and results of those queues are never sent", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const secret = yield* jobs.enqueue(Email, { to: "private@example.com" }, { queue: "dash-pii" })
      const open = yield* jobs.enqueue(Email, { to: "public@example.com" }, { queue: "dash-open" })
      yield* withDashboard({ hideArgs: ["dash-pii"] }, (base) =>
        Effect.gen(function*() {
          const one = yield* call(`${base}/api/jobs/${secret}`)
          assert.strictEqual(one.body.args, null)
          assert.strictEqual(one.body.argsHidden, true)
          const list = yield* call(`${base}/api/jobs?queue=dash-pii`)
          assert.strictEqual(list.status, 200)
          const raw = JSON.stringify(one.body) + JSON.stringify(list.body)
          assert.notInclude(raw, "private@example.com")
          assert.strictEqual(list.body.jobs[0].argsHidden, true)
          const visible = yield* call(`${base}/api/jobs/${open}`)
          assert.deepStrictEqual(visible.body.args, { to: "public@example.com" })
          assert.deepStrictEqual((yield* call(`${base}/api/config`)).body.hiddenQueues, ["dash-pii"])
        }))
    }))

  it.effect("hosts: a Host header not listed is refused (DNS rebinding)", () =>
    withDashboard({ hosts: ["127.0.0.1", "localhost"] }, (base) =>
      Effect.gen(function*() {
        const port = new URL(base).port
        assert.strictEqual(yield* withHost(`${base}/api/queues`, `127.0.0.1:${port}`), 200)
        assert.strictEqual(yield* withHost(`${base}/api/queues`, `localhost:${port}`), 200)
        assert.strictEqual(yield* withHost(`${base}/api/queues`, `attacker.example:${port}`), 403)
        assert.strictEqual(yield* withHost(`${base}/`, `attacker.example:${port}`), 403)
      })))

  it.effect("mounted under a prefix beside the app's own routes", () =>
    Effect.gen(function*() {
      const app = HttpRouter.add("GET", "/hello", HttpServerResponse.text("hello from the app"))
      yield* withDashboard({ prefix: "/admin/jobs/" }, (base) =>
        Effect.gen(function*() {
          assert.strictEqual((yield* call(`${base}/hello`)).body, "hello from the app")
          const ui = yield* call(`${base}/admin/jobs/`)
          assert.strictEqual(ui.status, 200)
          assert.include(ui.body, `<base href="/admin/jobs/">`)
          assert.match(ui.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/)
          assert.strictEqual((yield* call(`${base}/admin/jobs/app.js`)).status, 200)
          assert.strictEqual((yield* call(`${base}/admin/jobs/api/queues`)).status, 200)
          assert.strictEqual((yield* call(`${base}/api/queues`)).status, 404, "not at the root")
          const openapi = yield* call(`${base}/admin/jobs/api/openapi.json`)
          assert.deepStrictEqual(openapi.body.servers, [{ url: "/admin/jobs" }])
        }), { app })
    }))
})
