/**
 * The dashboard's UI in a real browser (Debian's /usr/bin/chromium, driven by
 * playwright-core; no browser is ever downloaded), with a real worker running the jobs:
 * the overview's counts and charts; a dead job opened from the Dead page and retried until
 * the worker completes it; a queue paused and resumed (the database's flag checked each
 * time); a running job cancelled from the Running page until its worker ends it
 * `cancelled`; the Workers, Periodic and Bundles pages; a token given as #token=, the API
 * refused without it, and read-only's disabled buttons; the charts' zero-filled minutes.
 *
 * With SCREENSHOTS=1 the first test writes docs/screenshots/*.png (linked from
 * docs/dashboard.md). Skipped, with a message, where /usr/bin/chromium is missing
 * (`apt-get install chromium`).
 */
import { assert, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Option, Schedule, Schema } from "effect"
import { existsSync, mkdirSync } from "node:fs"
// Imported once, when the file loads: importing playwright-core takes about a second of
// synchronous work, which in the middle of a test would stall the worker's registration
// heartbeat long enough for it to fence (stop) the jobs it runs.
import { type Browser, chromium as launcher, type Page } from "playwright-core"
import { Job, Jobs, JobsAdmin, Periodic } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import { call, killAll, withDashboard } from "./support/dashboard.ts"
import * as TestDb from "./support/db.ts"
import { startWorker } from "./support/harness.ts"
import { waitFor } from "./support/probes.ts"

const chromium = "/usr/bin/chromium"
const haveChromium = existsSync(chromium)
if (!haveChromium) {
  console.warn(`dashboard-browser.test.ts: skipped, ${chromium} is missing (apt-get install -y chromium)`)
}

const screenshots = process.env.SCREENSHOTS === "1"
const screenshotDir = new URL("../docs/screenshots/", import.meta.url)

const Email = Job.make("ui-email", { args: Schema.Struct({ to: Schema.String }), queue: "ui-mail" })
const Ok = Job.make("ui-ok", { args: Schema.Struct({ n: Schema.Number }), queue: "ui-live" })
/** Fails its first attempt (and has no other): dead, until an operator retries it. */
const Flaky = Job.make("ui-flaky", { args: Schema.Struct({ order: Schema.String }), queue: "ui-live", maxAttempts: 1 })
/** Runs until cancelled. */
const Hold = Job.make("ui-hold", { args: Schema.Struct({}), queue: "ui-live" })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

/** A fresh headless Chromium page (1280×800, light) for `f`; the browser is closed after. */
const withPage = <A, E, R>(f: (page: Page) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.promise((): Promise<Browser> =>
      launcher.launch({
        executablePath: chromium,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
      })
    ),
    (browser) =>
      Effect.flatMap(
        Effect.promise(() => browser.newPage({ viewport: { width: 1280, height: 800 }, colorScheme: "light" })),
        (page) => {
          const errors: Array<string> = []
          page.on("pageerror", (e) => errors.push(e.message))
          return Effect.tap(f(page), () => Effect.sync(() => assert.deepStrictEqual(errors, [], "no error in the page")))
        }
      ),
    (browser) => Effect.promise(() => browser.close())
  )

const ui = <A>(f: () => Promise<A>) => Effect.promise(f)

/** docs/screenshots/<name>.png of the whole page, with SCREENSHOTS=1 only. */
const shot = (page: Page, name: string) =>
  screenshots
    ? ui(async () => {
      mkdirSync(screenshotDir, { recursive: true })
      await page.locator("#status").evaluate((el) => (el.textContent = "")) // no toast in the pictures
      await page.screenshot({ path: new URL(`${name}.png`, screenshotDir).pathname, fullPage: true })
    })
    : Effect.void

const nav = (page: Page, label: string) => ui(() => page.locator("header nav a", { hasText: label }).click())

/** Waits until the job is in `state` in the database (the worker finishes in the background). */
const untilState = (id: string, state: JobsAdmin.JobState) =>
  Effect.flatMap(JobsAdmin.JobsAdmin, (admin) =>
    waitFor(`job ${id} ${state}`, Effect.map(admin.get(id), (j) => (j.state === state ? Option.some(j) : Option.none()))))

layer(TestLayer, { excludeTestServices: true })("Dashboard UI in Chromium", (it) => {
  it.effect.skipIf(!haveChromium)(
    "with a worker: counts and charts, retry a dead job until it completes, pause and resume, cancel a running job, workers, periodic, bundles",
    () =>
      Effect.gen(function*() {
        const jobs = yield* Jobs.Jobs
        const admin = yield* JobsAdmin.JobsAdmin
        const holding = yield* Deferred.make<void>()
        const handlers = Layer.mergeAll(
          Job.toLayer(Ok, () => Effect.void),
          Job.toLayer(Flaky, (_args, ctx) =>
            ctx.attempt === 1 ? Effect.fail(new Error("the payment service is down")) : Effect.succeed(undefined)),
          Job.toLayer(Hold, () => Effect.andThen(Deferred.succeed(holding, undefined), Effect.never)),
          // the worker's own pool, as a worker process has
          Layer.fresh(TestDb.pool({ maxConnections: 6 }))
        )
        yield* startWorker({ queues: { "ui-live": { concurrency: 4, pollInterval: "100 millis" } }, workerId: "ui-worker-1" }, handlers)
        yield* Effect.flatMap(
          Layer.build(Periodic.layer([Periodic.make(Ok, { n: 0 }, { name: "ui-yearly", cron: "0 3 1 1 *" })])),
          (ctx) => Effect.provideContext(Effect.flatMap(Periodic.Periodic, (p) => p.ready), ctx)
        )

        const oks = yield* jobs.enqueueMany(Ok, [1, 2, 3].map((n) => ({ n })))
        const flaky = yield* jobs.enqueue(Flaky, { order: "A-1042" })
        const hold = yield* jobs.enqueue(Hold, {})
        // two members the worker runs, one in a queue nobody serves: 2 of 3 done
        const bundle = yield* jobs.enqueueBundle({ name: "ui-album" }, [
          Jobs.entry(Ok, { n: 10 }),
          Jobs.entry(Ok, { n: 11 }),
          Jobs.entry(Ok, { n: 12 }, { queue: "ui-idle" })
        ])
        for (const id of [...oks, ...bundle.ids.slice(0, 2)]) yield* untilState(id, "completed")
        yield* untilState(flaky, "dead")
        yield* Deferred.await(holding)

        yield* withDashboard({}, (base) =>
          withPage((page) =>
            Effect.gen(function*() {
              // -- overview: the counts, and the charts drawn from what api/throughput answers
              yield* ui(() => page.goto(`${base}/`))
              const row = page.locator(`tr[data-queue="ui-live"]`)
              yield* ui(() => row.locator(`td[data-state="completed"]`).filter({ hasText: /^5$/ }).waitFor())
              assert.strictEqual(yield* ui(() => row.locator(`td[data-state="dead"]`).innerText()), "1")
              assert.strictEqual(yield* ui(() => row.locator(`td[data-state="running"]`).innerText()), "1")
              // Workers write their outcome tallies once a second (internal/Throughput.ts): wait
              // until this test's five completions are in, then draw the page again.
              const completedIn = (reply: any) =>
                reply.status === 200 ? reply.body.minutes.reduce((n: number, m: any) => n + m.completed, 0) : Infinity
              const throughput = yield* call(`${base}/api/throughput?minutes=60`).pipe(
                Effect.repeat({ until: (reply) => completedIn(reply) >= 5, schedule: Schedule.spaced("100 millis") }),
                Effect.timeoutOrElse({ duration: "10 seconds", orElse: () => Effect.die(new Error("throughput never counted the 5 completed jobs")) })
              )
              yield* ui(() => page.reload())
              if (throughput.status === 404) {
                // a server without the endpoint: the page says so, and works on
                yield* ui(() => page.locator(".charts .no-data").filter({ hasText: "no data" }).waitFor())
              } else {
                assert.strictEqual(throughput.status, 200)
                const sum = (key: string) => throughput.body.minutes.reduce((n: number, m: any) => n + m[key], 0)
                const chart = page.locator(`figure[data-chart="throughput"] svg`)
                yield* ui(() => chart.waitFor())
                assert.strictEqual(yield* ui(() => chart.getAttribute("data-buckets")), "60")
                assert.strictEqual(Number(yield* ui(() => chart.getAttribute("data-total"))), sum("completed"))
                assert.isAtLeast(sum("completed"), 5, "this test's jobs completed in the last hour")
                const failures = page.locator(`figure[data-chart="failures"] svg`)
                assert.strictEqual(Number(yield* ui(() => failures.getAttribute("data-total"))), sum("retried") + sum("dead"))
              }
              yield* shot(page, "overview")

              // -- the job list
              yield* nav(page, "Jobs")
              yield* ui(() => page.locator(`table.jobs tr[data-id="${hold}"]`).waitFor())
              yield* shot(page, "jobs")

              // -- a dead job: from the Dead page to its page; Retry, and the worker completes it
              yield* nav(page, "Dead")
              const deadRow = page.locator(`table.dead tr[data-id="${flaky}"]`)
              yield* ui(() => deadRow.filter({ hasText: "the payment service is down" }).waitFor())
              yield* ui(() => page.locator(`.redrive-queue[data-queue="ui-live"] button`, { hasText: "Retry 1 dead" }).waitFor())
              yield* shot(page, "dead")
              yield* ui(() => deadRow.locator("a").first().click())
              yield* ui(() => page.getByRole("heading", { name: `Job ${flaky}` }).waitFor())
              const text = yield* ui(() => page.locator("main").innerText())
              assert.include(text, "A-1042", "the arguments")
              assert.include(text, "the payment service is down", "the error of the attempt")
              yield* shot(page, "job")
              yield* ui(() => page.locator("#retry").click())
              yield* ui(() => page.locator("#status").filter({ hasText: "is available again" }).waitFor())
              // the page refreshes until the job is finished: the worker ran it again
              yield* ui(() => page.locator("h1 .state").filter({ hasText: "completed" }).waitFor())
              const retried = yield* admin.get(flaky)
              assert.strictEqual(retried.state, "completed")
              assert.strictEqual(retried.attempt, 2)

              // -- pause and resume the queue from the overview
              yield* nav(page, "Overview")
              yield* ui(() => page.locator(`tr[data-queue="ui-live"] button`, { hasText: "Pause" }).click())
              yield* ui(() => page.locator(`tr[data-queue="ui-live"] .paused`).waitFor())
              assert.strictEqual((yield* admin.queues).find((q) => q.name === "ui-live")?.paused, true)
              yield* ui(() => page.locator(`tr[data-queue="ui-live"] button`, { hasText: "Resume" }).click())
              yield* ui(() => page.locator(`tr[data-queue="ui-live"] .paused`).waitFor({ state: "detached" }))
              assert.strictEqual((yield* admin.queues).find((q) => q.name === "ui-live")?.paused, false)

              // -- cancel the running job from the Running page: its worker stops it
              yield* nav(page, "Running")
              const runningRow = page.locator(`table.running tr[data-id="${hold}"]`)
              yield* ui(() => runningRow.filter({ hasText: "ui-worker-1" }).waitFor())
              yield* shot(page, "running")
              yield* ui(() => runningRow.locator("button.cancel").click())
              yield* ui(() => page.locator("#status").filter({ hasText: "its worker is asked to stop it" }).waitFor())
              const cancelled = yield* untilState(hold, "cancelled")
              assert.strictEqual(cancelled.errors.at(-1)?.message, "cancelled from the dashboard")
              yield* ui(() => runningRow.waitFor({ state: "detached" })) // gone at the next refresh

              // -- workers, periodic schedules, bundles
              yield* nav(page, "Workers")
              yield* ui(() => page.locator(`tr[data-worker="ui-worker-1"]`).filter({ hasText: "ui-live" }).waitFor())
              yield* shot(page, "workers")

              yield* nav(page, "Periodic")
              const schedule = page.locator(`tr[data-schedule="ui-yearly"]`)
              yield* ui(() => schedule.filter({ hasText: `cron "0 3 1 1 *" UTC` }).waitFor())
              const next = (yield* admin.periodic).find((s) => s.name === "ui-yearly")!.nextSlots[0]!
              assert.strictEqual(next.toISOString().slice(4), "-01-01T03:00:00.000Z")
              const shown = schedule.locator("td.next div").first()
              assert.strictEqual(yield* ui(() => shown.getAttribute("data-at")), next.toISOString())
              assert.match(yield* ui(() => shown.innerText()), /\(in \d+ \w+( \d+ \w+)?\)$/)
              yield* shot(page, "periodic")

              yield* nav(page, "Bundles")
              const bundleRow = page.locator(`tr[data-bundle="${bundle.bundleId}"]`)
              yield* ui(() => bundleRow.filter({ hasText: "2 / 3" }).waitFor())
              assert.strictEqual(yield* ui(() => bundleRow.locator("progress").getAttribute("value")), "2")
              yield* shot(page, "bundles")
            })
          ))
      }),
    60_000
  )

  it.effect.skipIf(!haveChromium)("bulk actions on the job list: the selected jobs are cancelled, the others left alone", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const ids = yield* jobs.enqueueMany(Email, [{ to: "b1" }, { to: "b2" }, { to: "b3" }], { queue: "ui-bulk" })
      yield* withDashboard({}, (base) =>
        withPage((page) =>
          Effect.gen(function*() {
            yield* ui(() => page.goto(`${base}/#/jobs?queue=ui-bulk`))
            for (const id of [ids[0]!, ids[2]!]) yield* ui(() => page.locator(`tr[data-id="${id}"] input.select`).check())
            yield* ui(() => page.locator("button.bulk.cancel").click())
            yield* untilState(ids[0]!, "cancelled")
            yield* untilState(ids[2]!, "cancelled")
            yield* ui(() => page.locator(`tr[data-id="${ids[0]}"] .state`, { hasText: "cancelled" }).waitFor())
          })
        ))
      const admin = yield* JobsAdmin.JobsAdmin
      assert.strictEqual((yield* admin.get(ids[1]!)).state, "available", "not selected: untouched")
    }))

  it.effect.skipIf(!haveChromium)("a token in #token= opens a dashboard that needs one, the API refuses a request without it; read-only disables the buttons", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [deadId] = yield* jobs.enqueueMany(Email, [{ to: "ro@example.com" }], { queue: "ui-ro" })
      yield* killAll("ui-ro")

      yield* withDashboard({ auth: { token: "t0ken-ui" }, readOnly: true }, (base) =>
        withPage((page) =>
          Effect.gen(function*() {
            // Without the token: the sign-in form, and the API answers 401.
            yield* ui(() => page.goto(`${base}/`))
            yield* ui(() => page.getByRole("heading", { name: "Sign in" }).waitFor())
            const refused = yield* ui(() =>
              page.evaluate(async () => {
                const statuses: Array<number> = []
                for (const path of ["queues", "jobs?state=dead", "periodic", "bundles", "workers"]) {
                  statuses.push((await fetch(`api/${path}`)).status)
                }
                return statuses
              })
            )
            assert.deepStrictEqual(refused, [401, 401, 401, 401, 401])
            // With it: the overview; the token leaves the address bar.
            yield* ui(() => page.goto(`${base}/#token=t0ken-ui`))
            yield* ui(() => page.locator(`tr[data-queue="ui-ro"] td[data-state="dead"]`).filter({ hasText: "1" }).waitFor())
            assert.notInclude(page.url(), "t0ken-ui")
            assert.strictEqual(yield* ui(() => page.locator("#mode").innerText()), "read-only")
            yield* ui(() => page.goto(`${base}/#/jobs/${deadId}`))
            const retry = page.locator("#retry")
            yield* ui(() => retry.waitFor())
            assert.isTrue(yield* ui(() => retry.isDisabled()))
            yield* nav(page, "Dead")
            const rowRetry = page.locator(`table.dead tr[data-id="${deadId}"] button.retry`)
            yield* ui(() => rowRetry.waitFor())
            assert.isTrue(yield* ui(() => rowRetry.isDisabled()))
            assert.strictEqual((yield* admin.get(deadId!)).state, "dead")
          })
        ))
    }))

  it.effect.skipIf(!haveChromium)("charts: sparse minutes are zero-filled, queues of one minute added up, older rows left out", () =>
    withDashboard({}, (base) =>
      withPage((page) =>
        Effect.gen(function*() {
          // The answer of api/throughput is given here (the page's request is answered by the
          // browser): what is checked is how the UI draws it, not the endpoint.
          const minute = Math.floor(Date.now() / 60_000) * 60_000
          const at = (ago: number) => new Date(minute - ago * 60_000).toISOString()
          const rows = [
            { at: at(0), queue: "a", completed: 4, retried: 1, dead: 0, cancelled: 0 },
            { at: at(0), queue: "b", completed: 3, retried: 0, dead: 2, cancelled: 1 },
            { at: at(30), queue: "a", completed: 5, retried: 0, dead: 0, cancelled: 0 },
            { at: at(59), queue: "a", completed: 1, retried: 2, dead: 1, cancelled: 0 },
            { at: at(60), queue: "a", completed: 100, retried: 100, dead: 100, cancelled: 0 } // 61 minutes ago
          ]
          yield* ui(() =>
            page.route("**/api/throughput**", (route) =>
              route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify({ minutes: rows }) }))
          )
          yield* ui(() => page.goto(`${base}/`))
          const chart = page.locator(`figure[data-chart="throughput"] svg`)
          yield* ui(() => chart.waitFor())
          assert.strictEqual(yield* ui(() => chart.getAttribute("data-total")), "13")
          const values = yield* ui(() => chart.locator("g.bucket").evaluateAll((gs) => gs.map((g) => Number(g.getAttribute("data-value")))))
          assert.strictEqual(values.length, 60)
          assert.strictEqual(values[59], 7, "the current minute: two queues added up")
          assert.strictEqual(values[29], 5)
          assert.strictEqual(values[0], 1)
          assert.strictEqual(values.filter((v) => v === 0).length, 57, "every other minute is a zero")
          assert.strictEqual(yield* ui(() => chart.locator("rect.bar.completed").count()), 3)
          const failures = page.locator(`figure[data-chart="failures"] svg`)
          assert.strictEqual(yield* ui(() => failures.getAttribute("data-total")), "6")
          assert.strictEqual(yield* ui(() => failures.locator("rect.bar.dead").count()), 2)
          assert.include(yield* ui(() => page.locator(".charts").innerText()), "1 cancelled in the last hour")
        })
      )))
})
