/**
 * The dashboard's UI in a real browser (Debian's /usr/bin/chromium, driven by
 * playwright-core; no browser is ever downloaded): the overview shows a queue's counts,
 * a click opens the dead jobs and one job (its arguments and errors), Retry makes it
 * available in the database; pause from the overview sets the queue's flag; a token
 * given as #token= opens a dashboard that needs one; read-only disables the buttons.
 * Skipped, with a message, where /usr/bin/chromium is missing (`apt-get install chromium`).
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { existsSync } from "node:fs"
import type { Browser, Page } from "playwright-core"
import { Job, Jobs, JobsAdmin } from "../src/index.ts"
import { JobStore } from "../src/internal/Store.ts"
import { killAll, withDashboard } from "./support/dashboard.ts"
import * as TestDb from "./support/db.ts"

const chromium = "/usr/bin/chromium"
const haveChromium = existsSync(chromium)
if (!haveChromium) {
  console.warn(`dashboard-browser.test.ts: skipped, ${chromium} is missing (apt-get install -y chromium)`)
}

const Email = Job.make("ui-email", { args: Schema.Struct({ to: Schema.String }), queue: "ui-mail" })

const TestLayer = Layer.mergeAll(Jobs.layer, JobsAdmin.layer, JobStore.layer).pipe(Layer.provideMerge(TestDb.layer()))

/** A fresh headless Chromium page for `f`; the browser is closed after. */
const withPage = <A, E, R>(f: (page: Page) => Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.promise(async (): Promise<Browser> => {
      const { chromium: launcher } = await import("playwright-core")
      return launcher.launch({
        executablePath: chromium,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
      })
    }),
    (browser) =>
      Effect.flatMap(Effect.promise(() => browser.newPage()), (page) => {
        const errors: Array<string> = []
        page.on("pageerror", (e) => errors.push(e.message))
        return Effect.tap(f(page), () => Effect.sync(() => assert.deepStrictEqual(errors, [], "no error in the page")))
      }),
    (browser) => Effect.promise(() => browser.close())
  )

const ui = <A>(f: () => Promise<A>) => Effect.promise(f)

layer(TestLayer)("Dashboard UI in Chromium", (it) => {
  it.effect.skipIf(!haveChromium)("overview counts, a dead job's page, Retry changes the database, Pause sets the flag", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [deadId] = yield* jobs.enqueueMany(Email, [{ to: "dead@example.com" }], { queue: "ui-mail" })
      yield* killAll("ui-mail")
      yield* jobs.enqueueMany(Email, [{ to: "a@example.com" }, { to: "b@example.com" }], { queue: "ui-mail" })

      yield* withDashboard({ prefix: "/jobs" }, (base) =>
        withPage((page) =>
          Effect.gen(function*() {
            yield* ui(() => page.goto(`${base}/jobs/`))
            const row = page.locator(`tr[data-queue="ui-mail"]`)
            yield* ui(() => row.locator(`td[data-state="available"]`).filter({ hasText: "2" }).waitFor())
            assert.strictEqual(yield* ui(() => row.locator(`td[data-state="dead"]`).innerText()), "1")
            assert.strictEqual(yield* ui(() => row.locator(`td[data-state="completed"]`).innerText()), "0")

            // The dead count links to the dead jobs; the id links to the job's page.
            yield* ui(() => row.locator(`td[data-state="dead"] a`).click())
            yield* ui(() => page.locator(`tr[data-id="${deadId}"] a`).click())
            yield* ui(() => page.getByRole("heading", { name: `Job ${deadId}` }).waitFor())
            const text = yield* ui(() => page.locator("main").innerText())
            assert.include(text, "dead@example.com", "the arguments")
            assert.include(text, `boom ${deadId}`, "the error of the attempt")
            assert.include(text, "ui-email")

            yield* ui(() => page.locator("#retry").click())
            yield* ui(() => page.locator("#status").filter({ hasText: "is available again" }).waitFor())
            assert.strictEqual((yield* admin.get(deadId!)).state, "available", "the click changed the database")
            yield* ui(() => page.locator("h1 .state").filter({ hasText: "available" }).waitFor())

            // Back to the overview: pause the queue.
            yield* ui(() => page.locator("header nav a", { hasText: "Queues" }).click())
            yield* ui(() => page.locator(`tr[data-queue="ui-mail"] button`, { hasText: "Pause" }).click())
            yield* ui(() => page.locator(`tr[data-queue="ui-mail"] .paused`).waitFor())
            assert.strictEqual((yield* admin.queues).find((q) => q.name === "ui-mail")?.paused, true)
          })
        ))
    }))

  it.effect.skipIf(!haveChromium)("a token in #token= opens a dashboard that needs one; read-only disables the buttons", () =>
    Effect.gen(function*() {
      const jobs = yield* Jobs.Jobs
      const admin = yield* JobsAdmin.JobsAdmin
      const [deadId] = yield* jobs.enqueueMany(Email, [{ to: "ro@example.com" }], { queue: "ui-ro" })
      yield* killAll("ui-ro")

      yield* withDashboard({ auth: { token: "t0ken" }, readOnly: true }, (base) =>
        withPage((page) =>
          Effect.gen(function*() {
            // Without the token: the sign-in form.
            yield* ui(() => page.goto(`${base}/`))
            yield* ui(() => page.getByRole("heading", { name: "Sign in" }).waitFor())
            // With it: the overview; the token leaves the address bar.
            yield* ui(() => page.goto(`${base}/#token=t0ken`))
            yield* ui(() => page.locator(`tr[data-queue="ui-ro"] td[data-state="dead"]`).filter({ hasText: "1" }).waitFor())
            assert.notInclude(page.url(), "t0ken")
            assert.strictEqual(yield* ui(() => page.locator("#mode").innerText()), "read-only")
            yield* ui(() => page.goto(`${base}/#/jobs/${deadId}`))
            const retry = page.locator("#retry")
            yield* ui(() => retry.waitFor())
            assert.isTrue(yield* ui(() => retry.isDisabled()))
            assert.strictEqual((yield* admin.get(deadId!)).state, "dead")
          })
        ))
    }))
})
