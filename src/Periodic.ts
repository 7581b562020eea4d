/**
 * Periodic jobs: enqueue a job on a `Cron` schedule or at a fixed interval.
 *
 * Declare schedules and run them with `Periodic.layer([...])` on as many
 * processes as you like: each slot produces at most one job, and exactly one as
 * long as a scheduler can reach the database before the next slot. Every
 * scheduler sleeps (on Effect's `Clock`) until the next slot, then tries to
 * move the schedule's `last_slot` forward in the `periodic` table and
 * enqueues the job in the same transaction; only the first to move it does.
 * Registering a schedule also stores its definition (job, queue, cron or
 * interval) in its row, for processes that do not declare it: the dashboard's
 * Periodic page, `JobsAdmin.periodic`.
 *
 * Database errors never stop a scheduler: a slot whose enqueue fails is retried
 * with `retrySchedule` (backoff up to 30 s) until it goes through or the next
 * slot is due (safe: a slot whose claim committed is never claimed again), and
 * registering a schedule at start-up is retried until the database answers, in
 * the schedule's fiber, so building the layer neither waits for the database
 * nor fails when it is away. Each failure is reported to the `Observer` as a
 * `workerError`, which the default observer logs.
 *
 * Missed slots (every scheduler was down): `missed: "skip"` (default) only
 * resumes with the next slot; `missed: "enqueue-last"` enqueues the most recent
 * missed slot once at start-up.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Cron, Deferred, Duration, Effect, Layer, Option, Result, Schedule, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { InvalidJobArgs, InvalidJobOptions, InvalidSchedule } from "./Errors.ts"
import type * as Job from "./Job.ts"
import { rowOf } from "./internal/JobRow.ts"
import * as Jobs from "./Jobs.ts"
import { cronSlots, everySlots, type Slots } from "./internal/slots.ts"
import { JobStore } from "./internal/Store.ts"
import { Observer } from "./Observer.ts"


export interface Spec {
  /** Unique among schedules: it is the key of the schedule's row. Default: the job's name. */
  readonly name?: string | undefined
  /** A cron expression (5 fields, or 6 with seconds). */
  readonly cron?: string | undefined
  /** IANA time zone for `cron`, e.g. "Europe/Paris"; default UTC. */
  readonly timeZone?: string | undefined
  /** Or a fixed interval; slots are multiples of it since the epoch. */
  readonly every?: Duration.Input | undefined
  /** What to do about slots missed while no scheduler ran. Default "skip". */
  readonly missed?: "skip" | "enqueue-last" | undefined
  /** Enqueue options for each job (queue, priority, maxAttempts, metadata). */
  readonly options?: Omit<Jobs.EnqueueOptions, "delay" | "runAt" | "uniqueKey" | "unique"> | undefined
}

/** A periodic job: which job, with which args, on which schedule (`Periodic.make`). */
export interface Entry {
  readonly name: string
  readonly job: Job.Any
  readonly args: unknown
  readonly spec: Spec
}

/** Declares a periodic job. */
export const make = <J extends Job.Any>(job: J, args: Job.ArgsOf<J>, spec: Spec): Entry => ({
  name: spec.name ?? job.name,
  job,
  args,
  spec
})

/** A schedule's slots, and its definition as stored in its row (migrations/0007). */
interface Resolved extends Slots {
  readonly stored: { readonly cron: string | null; readonly timeZone: string | null; readonly everyMs: number | null }
}

const slotsOf = (s: Entry): Effect.Effect<Resolved, InvalidSchedule> =>
  Effect.suspend(() => {
    const fail = (message: string) => Effect.fail(new InvalidSchedule({ name: s.name, message }))
    if (typeof s.name !== "string" || s.name.length === 0 || s.name.length > 255 || /\u0000|\p{Surrogate}/u.test(s.name)) {
      // The name is the key of a text column: NUL is refused, an unpaired surrogate altered.
      return fail("the schedule name must have 1 to 255 characters without NUL or unpaired surrogates")
    }
    if ((s.spec.cron === undefined) === (s.spec.every === undefined)) return fail("give exactly one of `cron` and `every`")
    if (s.spec.cron !== undefined) {
      const timeZone = s.spec.timeZone ?? "UTC"
      let parsed: Result.Result<Cron.Cron, Cron.CronParseError>
      try {
        parsed = Cron.parse(s.spec.cron, timeZone)
      } catch (e) {
        return fail(`invalid time zone ${JSON.stringify(s.spec.timeZone)}: ${String(e)}`)
      }
      if (Result.isFailure(parsed)) return fail(`invalid cron ${JSON.stringify(s.spec.cron)}: ${parsed.failure.message}`)
      const cron = parsed.success
      // A cron that parses may still never fire ("0 0 31 2 *"): Cron.next/prev then throw.
      try {
        Cron.next(cron, new Date())
        Cron.prev(cron, new Date())
      } catch (e) {
        return fail(`cron ${JSON.stringify(s.spec.cron)} never fires: ${e instanceof Error ? e.message : String(e)}`)
      }
      return Effect.succeed<Resolved>({
        ...cronSlots(cron, s.spec.cron, timeZone),
        stored: { cron: s.spec.cron, timeZone, everyMs: null }
      })
    }
    const every = Duration.fromInput(s.spec.every!)
    const ms = Option.isSome(every) ? Duration.toMillis(every.value) : NaN
    if (!Number.isFinite(ms) || ms < 1) return fail(`\`every\` must be a finite, positive duration`)
    return Effect.succeed<Resolved>({ ...everySlots(ms), stored: { cron: null, timeZone: null, everyMs: ms } })
  })

export interface ScheduleInfo {
  readonly name: string
  readonly job: string
  readonly description: string
  readonly nextRunAt: Date
}

/** The schedules declared by `Periodic.layer`, with their next run times. */
export class Periodic extends Context.Service<Periodic, {
  readonly list: Effect.Effect<ReadonlyArray<ScheduleInfo>>
  /**
   * Completes once every schedule is registered in the database and its missed
   * slots are dealt with (see `missed`). The layer does not wait for it: while
   * the database is away this waits too (bound it with `Effect.timeout`).
   */
  readonly ready: Effect.Effect<void>
}>()("effect-jobs/Periodic") {}

/**
 * Between two attempts at a database step that failed: 200 ms, doubling, each
 * delay jittered, capped at 30 seconds. A slot's enqueue is retried this way
 * until it goes through or the next slot is due; registering a schedule at
 * start-up, until it goes through.
 */
export const retrySchedule: Schedule.Schedule<unknown> = Schedule.min([
  Schedule.exponential("200 millis").pipe(Schedule.jittered),
  Schedule.spaced("30 seconds")
])

/**
 * Runs the schedules in this process. Needs a `PgClient`. Fails to build with
 * `InvalidSchedule` if any schedule is invalid (its spec, or its args or enqueue
 * options), before anything is written. Building it touches no database: each
 * schedule gets a fiber, in the layer's scope, which registers it (retrying
 * with `retrySchedule` while the database is away) and then enqueues its slots.
 * Failures are reported as `Observer` `workerError`s (queue: the queue the
 * schedule enqueues into), logged by the default observer.
 */
export const layer = (schedules: ReadonlyArray<Entry>) =>
  Layer.effect(
    Periodic,
    Effect.gen(function*() {
      const store = yield* JobStore
      const jobs = yield* Jobs.Jobs
      const sql = yield* SqlClient.SqlClient
      const observer = yield* Observer
      const startedAt = yield* Clock.currentTimeMillis
      const names = new Set<string>()
      const resolved: Array<{ readonly schedule: Entry; readonly slots: Resolved }> = []
      for (const schedule of schedules) {
        if (names.has(schedule.name)) {
          return yield* new InvalidSchedule({ name: schedule.name, message: "two schedules have this name" })
        }
        names.add(schedule.name)
        const slots = yield* slotsOf(schedule)
        // Args that do not encode, or options out of range, would fail every slot: refuse them now.
        const row = rowOf(
          { job: schedule.job, args: schedule.args, options: enqueueOptions(schedule, startedAt) },
          startedAt,
          "",
          null
        )
        if (row instanceof InvalidJobArgs || row instanceof InvalidJobOptions) {
          return yield* new InvalidSchedule({ name: schedule.name, message: `cannot enqueue its job: ${row.message}` })
        }
        resolved.push({ schedule, slots })
      }

      const queueOf = (schedule: Entry) => schedule.spec.options?.queue ?? schedule.job.queue
      const slotText = (slot: number) => new Date(slot).toISOString()

      /**
       * An Observer `workerError` for a failure of `schedule`; the default observer logs it
       * (one line per failed attempt at Warning; with the whole cause at Error when a slot is lost).
       */
      const report = (schedule: Entry, level: "Warn" | "Error", message: string, cause: Cause.Cause<unknown>) =>
        Effect.suspend(() =>
          observer.workerError(queueOf(schedule), `periodic schedule "${schedule.name}": ${message}`, Cause.squash(cause), level)
        )

      /**
       * Retries `self` on a database error with `retrySchedule`, reporting each failure;
       * with a `deadline`, only while `Clock` is before it (no delay goes past it).
       */
      const persist = <A, E extends { readonly _tag: string }>(
        schedule: Entry,
        what: string,
        self: Effect.Effect<A, E>,
        deadline?: number
      ) =>
        self.pipe(
          Effect.tapError((e) => report(schedule, "Warn", `${what} failed`, Cause.fail(e))),
          Effect.retry({
            schedule: deadline === undefined ? retrySchedule : retrySchedule.pipe(
              Schedule.modifyDelay(({ duration, now }) =>
                Effect.succeed(Duration.millis(Math.max(0, Math.min(Duration.toMillis(duration), deadline - now)))))
            ),
            while: (e: E) =>
              e._tag !== "SqlError"
                ? Effect.succeed(false)
                : deadline === undefined
                ? Effect.succeed(true)
                : Effect.map(Clock.currentTimeMillis, (now) => now < deadline)
          })
        )

      /**
       * Enqueues the job of `slot` if this process is the first to claim the slot, in one
       * transaction; a failure is retried until `deadline` (when the next slot is due).
       * Retrying is safe: a slot whose claim committed is never claimed again.
       */
      const fire = (schedule: Entry, slot: number, deadline: number) =>
        persist(
          schedule,
          `enqueueing the slot of ${slotText(slot)}`,
          sql.withTransaction(Effect.gen(function*() {
            if (!(yield* store.periodicClaimSlot(schedule.name, slot))) return
            const id = yield* jobs.enqueue(schedule.job, schedule.args as never, enqueueOptions(schedule, slot))
            yield* store.periodicSetJob(schedule.name, id)
          })),
          deadline
        ).pipe(
          Effect.catchCause((cause) => {
            if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
            // a database error was retried until the deadline; anything else is not retried
            const why = (Cause.squash(cause) as { readonly _tag?: unknown })?._tag === "SqlError" ? " (the next slot is due)" : ""
            return report(schedule, "Error", `the slot of ${slotText(slot)} was not enqueued${why}`, cause)
          })
        )

      /**
       * Registers the schedule (retrying until the database answers), and deals with the
       * slots missed while no scheduler ran. Returns the slot it is at.
       *
       * Slots that came due since this scheduler started (`startedAt`: the layer's build)
       * were not missed: the database was away. The latest of them is fired, as the loop
       * below fires the latest slot due when it is behind, whatever `missed` says.
       */
      const catchUp = Effect.fnUntraced(function*(schedule: Entry, slots: Resolved) {
        const startSlot = slots.atOrBefore(startedAt)
        const { latest, last } = yield* persist(
          schedule,
          "registering the schedule",
          Effect.gen(function*() {
            const latest = slots.atOrBefore(yield* Clock.currentTimeMillis)
            // A new schedule starts at the slot this scheduler started in. Its definition is
            // stored too (for the dashboard): the last registration wins.
            const last = (yield* store.periodicEnsure(schedule.name, Math.min(startSlot, latest), {
              job: schedule.job.name,
              queue: queueOf(schedule),
              ...slots.stored
            })).getTime()
            return { latest, last }
          })
        )
        // "skip" writes nothing: `last_slot` only moves forward, so no scheduler ever goes back
        // to the missed slots. (Moving it to `latest` here would take that slot from another
        // scheduler that is firing it right now, or retrying it after an outage, and lose it.)
        if (last < latest && (latest > startSlot || schedule.spec.missed === "enqueue-last")) {
          yield* fire(schedule, latest, slots.after(latest))
        }
        return latest
      })

      /**
       * Slot after slot from the last one handled, so a slot is not skipped when a
       * fire (or a pause of the process) takes longer than the gap to the next one.
       * Behind by more than one slot, it goes straight to the latest one due.
       */
      const run = Effect.fnUntraced(function*(schedule: Entry, slots: Resolved, ready: Deferred.Deferred<void>) {
        let last = yield* catchUp(schedule, slots)
        yield* Deferred.succeed(ready, undefined)
        while (true) {
          let next = slots.after(last)
          const now = yield* Clock.currentTimeMillis
          if (next > now) yield* Effect.sleep(Duration.millis(next - now))
          else next = Math.max(next, slots.atOrBefore(now))
          yield* fire(schedule, next, slots.after(next))
          last = next
        }
      })

      const readies: Array<Deferred.Deferred<void>> = []
      for (const { schedule, slots } of resolved) {
        const ready = yield* Deferred.make<void>()
        readies.push(ready)
        yield* Effect.forkScoped(
          run(schedule, slots, ready).pipe(
            // Not expected (database errors are retried above): report it, start over after a pause.
            Effect.catchCause((cause) =>
              Cause.hasInterruptsOnly(cause)
                ? Effect.failCause(cause)
                : report(schedule, "Error", "the scheduler failed; restarting it", cause)),
            Effect.repeat(retrySchedule),
            Effect.annotateLogs({ periodic: schedule.name })
          )
        )
      }

      return Periodic.of({
        list: Effect.map(Clock.currentTimeMillis, (now) =>
          resolved.map(({ schedule, slots }) => ({
            name: schedule.name,
            job: schedule.job.name,
            description: slots.description,
            nextRunAt: new Date(slots.after(now))
          }))),
        ready: Effect.forEach(readies, Deferred.await, { discard: true })
      })
    })
  ).pipe(Layer.provide([JobStore.layer, Layer.fresh(Jobs.layer)]))

/** The enqueue options of the job of `slot`: the schedule's, plus `periodic` and `slot` metadata. */
const enqueueOptions = (schedule: Entry, slot: number): Jobs.EnqueueOptions => ({
  ...schedule.spec.options,
  metadata: { ...schedule.spec.options?.metadata, periodic: schedule.name, slot: new Date(slot).toISOString() }
})
