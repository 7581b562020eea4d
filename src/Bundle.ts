/**
 * Bundles: a group of jobs (of one or several kinds) enqueued atomically, that
 * finishes exactly once, when every member has reached a terminal state.
 *
 * `Jobs.enqueueBundle(bundle, entries)` inserts the bundle and its members in one
 * transaction. A trigger keeps the count of members not yet terminal under the
 * bundle row's lock, so when two members finish at the same moment on different
 * workers exactly one of them brings it to zero and marks the bundle finished.
 *
 * `Bundle.toLayer(bundle, onFinish)` runs the finish step for that kind of bundle:
 * it reads the members' outcomes, lets `onFinish` compute a follow-up job (or
 * none), enqueues it, marks the bundle done and reports `Observer.bundleFinished`,
 * in one transaction on a row locked with SKIP LOCKED: exactly once, whichever
 * process and however many run it. Woken by NOTIFY, with a poll as fallback.
 *
 * Members of a bundle are kept after completing even with `retention: 0`, so the
 * finish step can read their results; until it has run, neither retention nor
 * `JobsAdmin.delete` / `deleteFinished` removes them (`delete` fails with
 * `JobInPendingBundle`), and `delete` never removes a member that is not terminal.
 *
 * @since 0.1.0
 */
import { Cause, Duration, Effect, Layer, Option, Queue, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidWorkerConfig } from "./Errors.ts"
import * as Jobs from "./Jobs.ts"
import * as Notifier from "./internal/Notifier.ts"
import { JobStore, type OutcomeRow } from "./internal/Store.ts"
import { Observer } from "./Observer.ts"

export interface Bundle<Name extends string = string> {
  readonly _tag: "Bundle"
  readonly name: Name
}

/** Declares a kind of bundle. */
export const make = <const Name extends string>(name: Name): Bundle<Name> => {
  if (name.length === 0 || name.length > 255) throw new globalThis.Error("Bundle name must have 1 to 255 characters")
  return { _tag: "Bundle", name }
}

/** What `onFinish` sees: every member with its final state, result (JSON as stored) and errors. */
export interface Finished {
  readonly id: string
  readonly name: string
  readonly total: number
  readonly metadata: unknown
  readonly members: ReadonlyArray<OutcomeRow>
  /** Members per state. */
  readonly counts: Readonly<Record<string, number>>
}

export interface Options {
  /**
   * How often to look for finished bundles when no NOTIFY arrives (the fallback
   * for missed notifications and for setups where LISTEN cannot work). A finite,
   * positive duration; default 5 seconds.
   */
  readonly pollInterval?: Duration.Input | undefined
}

/** The poll interval in milliseconds, or `InvalidWorkerConfig` saying what is wrong with it. */
const pollMillis = (bundle: Bundle, input: Duration.Input | undefined): Effect.Effect<number, InvalidWorkerConfig> =>
  Effect.suspend(() => {
    if (input === undefined) return Effect.succeed(5000)
    // Duration reads a NaN number (or tuple part) as zero: a NaN interval is a mistake, not "now".
    const nan = typeof input === "number" ? Number.isNaN(input) : Array.isArray(input) && input.some(Number.isNaN)
    let d: Option.Option<Duration.Duration>
    try {
      d = nan ? Option.none() : Duration.fromInput(input)
    } catch {
      d = Option.none()
    }
    const ms = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
    return Number.isFinite(ms) && ms > 0
      ? Effect.succeed(ms)
      : Effect.fail(
        new InvalidWorkerConfig({
          message: `Bundle.toLayer("${bundle.name}"): pollInterval must be a finite, positive duration, got ${
            typeof input === "string" ? JSON.stringify(input) : String(input)
          }`
        })
      )
  })

/**
 * Runs the finish step of bundles of this kind. `onFinish` returns the follow-up
 * job (`Jobs.entry(...)`) or `undefined`. Needs a `PgClient`. Fails to build with
 * `InvalidWorkerConfig`, before anything runs, if `pollInterval` is not a
 * finite, positive duration.
 */
export const toLayer = <E = never, R = never>(
  bundle: Bundle,
  onFinish: (finished: Finished) => Effect.Effect<Jobs.Entry | undefined, E, R> = () => Effect.succeed(undefined),
  options: Options = {}
) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const pollInterval = yield* pollMillis(bundle, options.pollInterval)
    const store = yield* JobStore
    const jobs = yield* Jobs.Jobs
    const sql = yield* SqlClient.SqlClient
    const context = yield* Effect.context<R>()
    const observer = yield* Observer
    const notifier = yield* Notifier.Notifier

    /**
     * One pass: the next few pending bundles after `afterId` (in id order), in one transaction.
     * Returns the last id it locked (undefined: none left after `afterId`).
     */
    const finishPending = (afterId: string) => Effect.gen(function*() {
      let lastId: string | undefined
      const done = yield* sql.withTransaction(Effect.gen(function*() {
        const rows = yield* store.bundleLockFinished(20, [bundle.name], afterId)
        lastId = rows.at(-1)?.id
        const finished: Array<{ readonly row: Finished; readonly followUpId: string | undefined }> = []
        for (const b of rows) {
          // Each bundle in a savepoint of its own: one whose onFinish (or follow-up) fails is
          // rolled back alone, logged, and retried later; it does not hold back the others.
          const one = yield* Effect.exit(sql.withTransaction(Effect.gen(function*() {
            const members = yield* store.bundleMembers(b.id)
            const counts: Record<string, number> = {}
            for (const m of members) counts[m.state] = (counts[m.state] ?? 0) + 1
            const row: Finished = { id: b.id, name: b.name, total: b.total, metadata: b.metadata, members, counts }
            const entry = yield* Effect.provideContext(onFinish(row), context)
            const followUpId = entry === undefined ? undefined : (yield* jobs.enqueueAll([entry]))[0]
            yield* store.bundleMarkDone(b.id, followUpId ?? null)
            return { row, followUpId }
          })))
          if (one._tag === "Success") finished.push(one.value)
          else {
            yield* Effect.logError(`bundle ${b.id}: finish step failed; will retry: ${Cause.pretty(one.cause)}`, {
              bundle: bundle.name
            })
          }
        }
        return finished
      }))
      for (const { row, followUpId } of done) {
        yield* observer.bundleFinished?.({ id: row.id, name: row.name, total: row.total, counts: row.counts, followUpId }) ??
          Effect.void
      }
      return lastId
    })

    /**
     * Every pending bundle once, pass after pass in id order. A bundle whose finish step failed
     * is left behind (it is tried again at the next drain), so however many fail, the ones after
     * them are reached. (Stopping at a pass that finished nothing let 20 failing bundles with the
     * lowest ids hold back every later one forever.)
     */
    const drain = Effect.gen(function*() {
      let afterId: string | undefined = "0"
      while (afterId !== undefined) afterId = yield* finishPending(afterId)
    }).pipe(
      Effect.catchCause((cause) =>
        Effect.logError(`bundle finish step failed; will retry: ${Cause.pretty(cause)}`, { bundle: bundle.name }))
    )

    // On the process's LISTEN session (internal/Notifier.ts, which reports a lost one to the
    // Observer and opens it again): a drain after each (re)connect, for anything that finished
    // while we were not listening, and after each batch of notifications (many, one drain).
    const events = yield* notifier.subscribe(store.channels.bundle)
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Queue.takeAll(events), drain)))
    // Fallback for missed notifications (and poolers where LISTEN cannot work).
    yield* Effect.forkScoped(Effect.repeat(drain, Schedule.spaced(pollInterval)))
  })).pipe(Layer.provide([JobStore.layer, Layer.fresh(Jobs.layer), Notifier.layer]))
