/**
 * Periodic jobs: enqueue a job on a `Cron` schedule or at a fixed interval.
 *
 * Declare schedules and run them with `Periodic.layer([...])` on as many
 * processes as you like: each slot produces exactly one job. Every scheduler
 * sleeps (on Effect's `Clock`) until the next slot, then tries to move the
 * schedule's `last_slot` forward in `effect_jobs_periodic` and enqueues the job in
 * the same transaction; only the first to move it does.
 *
 * Missed slots (every scheduler was down): `missed: "skip"` (default) only
 * resumes with the next slot; `missed: "enqueue-last"` enqueues the most recent
 * missed slot once at start-up.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Cron, Duration, Effect, Layer, Option, Result, Schedule as ScheduleM, Schema } from "effect"
import { SqlClient } from "effect/sql"
import type * as Job from "./Job.ts"
import { type EnqueueOptions, Jobs } from "./Jobs.ts"
import { JobStore } from "./internal/Store.ts"

/** A schedule that cannot run: bad cron text, unknown time zone, interval not positive, duplicate name. */
export class InvalidSchedule extends Schema.TaggedError<InvalidSchedule>()("InvalidSchedule", {
  name: Schema.String,
  message: Schema.String
}) {}

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
  readonly options?: Omit<EnqueueOptions, "delay" | "runAt" | "uniqueKey"> | undefined
}

export interface Schedule {
  readonly name: string
  readonly job: Job.Any
  readonly args: unknown
  readonly spec: Spec
}

/** Declares a periodic job. */
export const make = <J extends Job.Any>(job: J, args: Job.ArgsOf<J>, spec: Spec): Schedule => ({
  name: spec.name ?? job.name,
  job,
  args,
  spec
})

interface Slots {
  readonly description: string
  /** The latest slot at or before `now`. */
  readonly atOrBefore: (now: number) => number
  /** The first slot after `now`. */
  readonly after: (now: number) => number
}

const slotsOf = (s: Schedule): Effect.Effect<Slots, InvalidSchedule> =>
  Effect.suspend(() => {
    const fail = (message: string) => Effect.fail(new InvalidSchedule({ name: s.name, message }))
    if (typeof s.name !== "string" || s.name.length === 0 || s.name.length > 255 || /\u0000|\p{Surrogate}/u.test(s.name)) {
      // The name is the key of a text column: NUL is refused, an unpaired surrogate altered.
      return fail("the schedule name must have 1 to 255 characters without NUL or unpaired surrogates")
    }
    if ((s.spec.cron === undefined) === (s.spec.every === undefined)) return fail("give exactly one of `cron` and `every`")
    if (s.spec.cron !== undefined) {
      let parsed: Result.Result<Cron.Cron, Cron.CronParseError>
      try {
        parsed = Cron.parse(s.spec.cron, s.spec.timeZone ?? "UTC")
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
      return Effect.succeed({
        description: `cron "${s.spec.cron}" ${s.spec.timeZone ?? "UTC"}`,
        atOrBefore: (now) => Cron.prev(cron, new Date(now + 1)).getTime(),
        after: (now) => Cron.next(cron, new Date(now)).getTime()
      })
    }
    const every = Duration.fromInput(s.spec.every!)
    const ms = Option.isSome(every) ? Duration.toMillis(every.value) : NaN
    if (!Number.isFinite(ms) || ms < 1) return fail(`\`every\` must be a finite, positive duration`)
    return Effect.succeed({
      description: `every ${Duration.format(Duration.millis(ms))}`,
      atOrBefore: (now) => Math.floor(now / ms) * ms,
      after: (now) => (Math.floor(now / ms) + 1) * ms
    })
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
}>()("effect-jobs/Periodic") {}

/**
 * Runs the schedules in this process. Needs a `PgClient`. Fails to build with
 * `InvalidSchedule` if any schedule is invalid, before anything is enqueued.
 */
export const layer = (schedules: ReadonlyArray<Schedule>) =>
  Layer.effect(
    Periodic,
    Effect.gen(function*() {
      const store = yield* JobStore
      const jobs = yield* Jobs
      const sql = yield* SqlClient.SqlClient
      const names = new Set<string>()
      const resolved: Array<{ readonly schedule: Schedule; readonly slots: Slots }> = []
      for (const schedule of schedules) {
        if (names.has(schedule.name)) {
          return yield* new InvalidSchedule({ name: schedule.name, message: "two schedules have this name" })
        }
        names.add(schedule.name)
        resolved.push({ schedule, slots: yield* slotsOf(schedule) })
      }

      /** Enqueues the job of `slot` if this process is the first to claim the slot. */
      const fire = (schedule: Schedule, slot: number) =>
        sql.withTransaction(Effect.gen(function*() {
          if (!(yield* store.periodicClaimSlot(schedule.name, slot))) return
          const id = yield* jobs.enqueue(schedule.job, schedule.args as never, {
            ...schedule.spec.options,
            metadata: { ...schedule.spec.options?.metadata, periodic: schedule.name, slot: new Date(slot).toISOString() }
          })
          yield* store.periodicSetJob(schedule.name, id)
        })).pipe(
          Effect.catchCause((cause) => Effect.logError(`periodic enqueue failed: ${Cause.pretty(cause)}`, { schedule: schedule.name }))
        )

      /** Registers the schedule, and deals with slots missed while no scheduler ran. */
      const catchUp = Effect.fnUntraced(function*(schedule: Schedule, slots: Slots) {
        const latest = slots.atOrBefore(yield* Clock.currentTimeMillis)
        const last = (yield* store.periodicEnsure(schedule.name, latest)).getTime()
        if (last < latest) {
          if (schedule.spec.missed === "enqueue-last") yield* fire(schedule, latest)
          else yield* store.periodicClaimSlot(schedule.name, latest) // skip the missed slots
        }
      })

      /**
       * Slot after slot from the last one handled, so a slot is not skipped when a
       * fire (or a pause of the process) takes longer than the gap to the next one.
       * Behind by more than one slot, it goes straight to the latest one due.
       */
      const run = Effect.fnUntraced(function*(schedule: Schedule, slots: Slots) {
        let last = slots.atOrBefore(yield* Clock.currentTimeMillis)
        while (true) {
          let next = slots.after(last)
          const now = yield* Clock.currentTimeMillis
          if (next > now) yield* Effect.sleep(Duration.millis(next - now))
          else next = Math.max(next, slots.atOrBefore(now))
          yield* fire(schedule, next)
          last = next
        }
      })

      for (const { schedule, slots } of resolved) yield* catchUp(schedule, slots)
      for (const { schedule, slots } of resolved) {
        yield* Effect.forkScoped(
          run(schedule, slots).pipe(
            // the database may be away at start-up: keep trying
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
          })))
      })
    })
  ).pipe(Layer.provide([JobStore.layer, Layer.fresh(Jobs.layer)]))
