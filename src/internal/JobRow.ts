/**
 * JobRow: an enqueue's entry checked and encoded into the row the store inserts.
 *
 * The hot path of `Jobs.enqueue*` (and of `Periodic` and `Testing.layerInline`, which
 * check entries the same way): options validated, args encoded with the job's Schema,
 * text Postgres cannot store refused; a typed error, never a write.
 */
import { Cause, Duration, Effect, Exit, Option, Tracer } from "effect"
import { InvalidJobArgs, InvalidJobOptions } from "../Errors.ts"
import type { EnqueueOptions, Entry, UniqueOptions } from "../Jobs.ts"
import type { JobState, NewJobRow } from "./Store.ts"

/**
 * Text PostgreSQL cannot store: a NUL, or an unpaired UTF-16 surrogate (jsonb rejects
 * both; a text column would get U+FFFD instead of the character given).
 */
const badText = /\u0000|\p{Surrogate}/u

/** A string (value or key) anywhere in a JSON value that PostgreSQL cannot store. */
const hasBadText = (u: unknown): boolean => {
  if (typeof u === "string") return badText.test(u)
  if (typeof u !== "object" || u === null) return false
  if (Array.isArray(u)) {
    for (let i = 0; i < u.length; i++) if (hasBadText(u[i])) return true
    return false
  }
  // (a plain loop: this runs for every enqueued job, and most args are small objects)
  for (const k in u) {
    if (Object.hasOwn(u, k) && (badText.test(k) || hasBadText((u as Record<string, unknown>)[k]))) return true
  }
  return false
}

/**
 * The last values checked by `rowOf`, so that the jobs of one `enqueueMany` (same
 * queue, same run time) pay for those checks and conversions once, not once per job.
 */
let lastQueueOk: string | undefined
let lastRunAt = NaN
let lastRunAtIso: string | undefined
/** The ISO text of a run time, or undefined if it is out of the range PostgreSQL and Date share. */
const runAtIso = (runAt: number): string | undefined => {
  if (runAt === lastRunAt) return lastRunAtIso
  let iso: string | undefined
  if (runAt >= -8.64e15 && runAt <= 8.64e15) {
    const date = new Date(runAt)
    const year = date.getUTCFullYear()
    if (year >= 1 && year <= 9999) iso = date.toISOString()
  }
  lastRunAt = runAt
  lastRunAtIso = iso
  return iso
}

/** Ids are positive bigints: anything else names no job (and must not reach SQL as a failing cast). */
export const isJobId = (id: unknown): id is string =>
  typeof id === "string" && /^[1-9][0-9]{0,18}$/.test(id) && BigInt(id) <= 9223372036854775807n

/** Validates options and encodes args into a row; fails with a typed error, never writes. */
/**
 * The hot path of enqueue: synchronous, no Effect per row (a 20,000-job
 * `enqueueMany` calls it 20,000 times). Returns the row, or the typed error.
 */
export const rowOf = (
  entry: Entry,
  now: number,
  requestId: string,
  trace: unknown
): NewJobRow | InvalidJobArgs | InvalidJobOptions => {
  const { job, options: o = noOptions } = entry
  const invalid = (message: string) => new InvalidJobOptions({ job: job.name, message })
  const encoded = job.encodeArgsExit(entry.args)
  if (Exit.isFailure(encoded)) {
    const error = Cause.findErrorOption(encoded.cause)
    return new InvalidJobArgs({
      job: job.name,
      message: Option.isSome(error) ? error.value.message : Cause.pretty(encoded.cause)
    })
  }
  const args = encoded.value
  if (args === undefined) return new InvalidJobArgs({ job: job.name, message: "arguments encode to nothing" })
  if (hasBadText(args)) {
    return new InvalidJobArgs({
      job: job.name,
      message: "arguments contain a NUL character or an unpaired surrogate (invalid Unicode), which PostgreSQL cannot store"
    })
  }
  const queue = o.queue ?? job.queue
  if (queue !== lastQueueOk) {
    if (typeof queue !== "string" || queue.length === 0 || queue.length > 255 || badText.test(queue)) {
      return invalid("queue must be a string of 1 to 255 characters without NUL or unpaired surrogates")
    }
    lastQueueOk = queue
  }
  const priority = o.priority ?? job.priority
  if (!Number.isInteger(priority) || priority < -32768 || priority > 32767) {
    return invalid(`priority must be an integer in [-32768, 32767], got ${String(priority)}`)
  }
  const maxAttempts = o.maxAttempts ?? job.maxAttempts
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1_000_000) {
    return invalid(`maxAttempts must be an integer in [1, 1000000], got ${String(maxAttempts)}`)
  }
  let runAt = now
  if (o.runAt !== undefined) {
    if (!(o.runAt instanceof Date) || Number.isNaN(o.runAt.getTime())) return invalid("runAt must be a valid Date")
    runAt = o.runAt.getTime()
  } else if (o.delay !== undefined) {
    // Duration reads a NaN number (or tuple part) as zero; a NaN delay is a mistake, not "now".
    const nan = typeof o.delay === "number" ? Number.isNaN(o.delay) : Array.isArray(o.delay) && o.delay.some(Number.isNaN)
    const delay = nan ? Option.none() : Duration.fromInput(o.delay)
    const ms = Option.isSome(delay) ? Duration.toMillis(delay.value) : NaN
    if (!(ms >= 0) || !Number.isFinite(ms)) return invalid(`delay must be a finite, non-negative duration`)
    runAt = now + ms
  }
  const runAtText = runAtIso(runAt)
  if (runAtText === undefined) return invalid("run time out of range")
  const uniqueKey = o.uniqueKey ?? null
  if (uniqueKey !== null && (typeof uniqueKey !== "string" || uniqueKey.length > 1000 || badText.test(uniqueKey))) {
    return invalid("uniqueKey must be a string of at most 1000 characters without NUL or unpaired surrogates")
  }
  let unique = noUnique
  if (o.unique !== undefined) {
    if (uniqueKey === null) return invalid("unique options need a uniqueKey")
    const checked = uniqueOf(o.unique, now)
    if (typeof checked === "string") return invalid(checked)
    unique = checked
  }
  const group = o.group ?? null
  if (group !== null && (typeof group !== "string" || group.length === 0 || group.length > 255 || badText.test(group))) {
    return invalid("group must be a string of 1 to 255 characters without NUL or unpaired surrogates")
  }
  let metadata: unknown = noMetadata
  if (o.metadata !== undefined) {
    if (typeof o.metadata !== "object" || o.metadata === null || Array.isArray(o.metadata)) {
      return invalid("metadata must be a plain object")
    }
    try {
      metadata = JSON.parse(JSON.stringify(o.metadata)) // only JSON survives, as stored
    } catch (e) {
      return invalid(`metadata must be JSON-serializable: ${String(e)}`)
    }
    if (hasBadText(metadata)) return invalid("metadata contains a NUL character or an unpaired surrogate")
  }
  const retentionMs = Duration.toMillis(job.retention)
  const row: NewJobRow = {
    name: job.name,
    queue,
    state: runAt > now ? "scheduled" : "available",
    priority,
    run_at: runAtText,
    max_attempts: maxAttempts,
    args,
    unique_key: uniqueKey,
    group_key: group,
    metadata: metadata as Readonly<Record<string, unknown>>,
    request_id: requestId,
    trace,
    retention_ms: Number.isFinite(retentionMs) ? retentionMs : (null as unknown as number),
    max_errors: job.maxErrors,
    unique_states: unique.states,
    unique_window: unique.window,
    replace: unique.replace
  }
  return row
}

/** What `unique` options become in the row (`NewJobRow`'s unique_states, unique_window, replace). */
interface UniqueColumns {
  readonly states: ReadonlyArray<JobState> | null
  readonly window: string | null
  readonly replace: "all" | "keepRunAt" | null
}

const noUnique: UniqueColumns = { states: null, window: null, replace: null }

/** The states in the order they are stored; the unfinished ones always hold a key. */
const allStates: ReadonlyArray<JobState> = ["scheduled", "available", "running", "completed", "dead", "cancelled"]
const unfinished: ReadonlyArray<JobState> = ["scheduled", "available", "running"]
const yearOne = Date.parse("0001-01-01T00:00:00Z")

/**
 * The last `unique` options checked and the time they were checked at, so that the jobs of one
 * `enqueueMany` (one options object, one `now`) pay for the checks once.
 */
let lastUnique: UniqueOptions | undefined
let lastUniqueNow = NaN
let lastUniqueColumns: UniqueColumns = noUnique

/** Checks `unique` options; the columns they give, or what is wrong with them. */
const uniqueOf = (u: UniqueOptions, now: number): UniqueColumns | string => {
  if (u === lastUnique && now === lastUniqueNow) return lastUniqueColumns
  if (typeof u !== "object" || u === null) return "unique must be an object"
  let replace: UniqueColumns["replace"] = null
  if (u.replace === true) replace = "all"
  else if (u.replace === "keepRunAt") replace = "keepRunAt"
  else if (u.replace !== undefined && u.replace !== false) return `unique.replace must be true, false or "keepRunAt"`
  let period: number | undefined
  if (u.period !== undefined) {
    const nan = typeof u.period === "number" ? Number.isNaN(u.period) : Array.isArray(u.period) && u.period.some(Number.isNaN)
    const d = nan ? Option.none() : Duration.fromInput(u.period)
    period = Option.isSome(d) ? Duration.toMillis(d.value) : NaN
    if (!(period >= 1) || !Number.isFinite(period)) {
      return "unique.period must be a finite duration of at least 1 millisecond " +
        "(for a window that never ends, give finished states and no period)"
    }
  }
  let states: ReadonlyArray<JobState>
  if (u.states === undefined) {
    // A window is about finished jobs: by default a completed job holds the key until it ends.
    states = period === undefined ? unfinished : [...unfinished, "completed"]
  } else {
    if (!Array.isArray(u.states) || u.states.length === 0) return "unique.states must be a non-empty array of job states"
    for (const s of u.states) {
      if (!allStates.includes(s)) return `unique.states: ${JSON.stringify(s)} is not a job state (${allStates.join(", ")})`
    }
    for (const s of unfinished) {
      if (!u.states.includes(s)) {
        return `unique.states must include scheduled, available and running (an unfinished job always holds its key); ${s} is missing`
      }
    }
    states = allStates.filter((s) => u.states!.includes(s))
  }
  let columns: UniqueColumns
  if (states.length === unfinished.length) {
    // Only unfinished jobs hold the key: the index of every unique job (migration 0001) is enough.
    if (period !== undefined) {
      return "unique.period needs a finished state in unique.states (completed, dead or cancelled): " +
        "an unfinished job holds its key in every window"
    }
    columns = replace === null ? noUnique : { states: null, window: null, replace }
  } else {
    const start = period === undefined ? 0 : Math.floor(now / period) * period
    // (now is in range; only a period longer than the time since year 1 can take the start out of it)
    if (!(start >= yearOne)) return "unique.period is too long: its window would start before year 1"
    const window = period === undefined ? "-infinity" : new Date(start).toISOString()
    columns = { states, window, replace }
  }
  lastUnique = u
  lastUniqueNow = now
  lastUniqueColumns = columns
  return columns
}

const noOptions: EnqueueOptions = {}
const noMetadata: Readonly<Record<string, unknown>> = Object.freeze({})

const isRow = (r: NewJobRow | InvalidJobArgs | InvalidJobOptions): r is NewJobRow =>
  !(r instanceof InvalidJobArgs) && !(r instanceof InvalidJobOptions)

/** `rowOf` as an Effect. */
export const toRow = (entry: Entry, now: number, requestId: string, trace: unknown) =>
  Effect.suspend(() => {
    const r = rowOf(entry, now, requestId, trace)
    return isRow(r) ? Effect.succeed(r) : Effect.fail(r)
  })

/** All rows, or the first error. */
export const rowsOf = (entries: ReadonlyArray<Entry>, now: number, requestId: string, trace: unknown) =>
  Effect.suspend(() => {
    const rows: Array<NewJobRow> = new Array(entries.length)
    for (let i = 0; i < entries.length; i++) {
      const r = rowOf(entries[i]!, now, requestId, trace)
      if (!isRow(r)) return Effect.fail(r)
      rows[i] = r
    }
    return Effect.succeed(rows)
  })

/**
 * The trace context of the current span, stored with the job so its run can link to it.
 * None under effect's `nativeTracer` (no tracer installed): its spans are exported nowhere, so
 * nothing could join the run to them, and the context would cost every job about 80 bytes in
 * the row, written twice to the WAL (the insert, then the claim's new row version).
 */
export const currentTrace = Effect.gen(function*() {
  if ((yield* Tracer.Tracer) === Tracer.nativeTracer) return null
  const span = yield* Effect.option(Effect.currentSpan)
  return Option.isSome(span) ? { traceId: span.value.traceId, spanId: span.value.spanId } : null
})
