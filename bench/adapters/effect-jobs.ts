/**
 * effect-jobs (this library). Not wired yet: every method throws NotImplementedError and
 * the runner skips the adapter (it reports "skipped: ... not yet implemented").
 *
 * To fill in (see bench/adapter.ts for the contract and helpers):
 * - setup(url): run the library's migrations against `url`.
 * - enqueueMany(count): the library's bulk insert, as few calls as possible.
 * - drain(count, concurrency): start a worker with `concurrency`, wrap the no-op handler with
 *   a `CompletionMeter` (`meter.start()` before starting, `meter.complete()` in the handler,
 *   `await meter.done`), then stop the worker and return `{ ...measured, stopMs }`.
 * - wakeLatency(options): keep a worker idle, enqueue through a *separate* client, and use
 *   `measureWake({ ...options, probe, jitterMs: 0, enqueue })` with `probe.hit()` in the handler.
 */
import type { Adapter } from "../adapter.ts"
import { NotImplementedError } from "../adapter.ts"

export const make = (): Adapter => ({
  name: "effect-jobs",
  async setup() {
    throw new NotImplementedError("effect-jobs adapter")
  },
  async enqueueMany() {
    throw new NotImplementedError("effect-jobs adapter")
  },
  async drain() {
    throw new NotImplementedError("effect-jobs adapter")
  },
  async wakeLatency() {
    throw new NotImplementedError("effect-jobs adapter")
  },
  async teardown() {}
})
