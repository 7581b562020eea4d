/**
 * The slots of a periodic schedule: the instants a cron expression or a fixed interval
 * fires at. Shared by the schedulers (src/Periodic.ts), which sleep until the next one, and
 * by `JobsAdmin.periodic`, which computes the next ones from a schedule's stored definition
 * (migrations/0007) in a process that does not declare it.
 */
import { Cron, Duration } from "effect"

export interface Slots {
  /** `cron "0 3 * * *" Europe/Paris` or `every 2s`. */
  readonly description: string
  /** The latest slot at or before `now`. */
  readonly atOrBefore: (now: number) => number
  /** The first slot after `now`. */
  readonly after: (now: number) => number
}

/** The slots of a parsed cron; `text` and `timeZone` are what it was parsed from. */
export const cronSlots = (cron: Cron.Cron, text: string, timeZone: string): Slots => ({
  description: `cron "${text}" ${timeZone}`,
  atOrBefore: (now) => Cron.prev(cron, new Date(now + 1)).getTime(),
  after: (now) => Cron.next(cron, new Date(now)).getTime()
})

/** Multiples of `ms` (finite, >= 1) since the epoch. */
export const everySlots = (ms: number): Slots => ({
  description: `every ${Duration.format(Duration.millis(ms))}`,
  atOrBefore: (now) => Math.floor(now / ms) * ms,
  after: (now) => (Math.floor(now / ms) + 1) * ms
})

/** The `n` slots after `now`, in order. */
export const nextSlots = (slots: Slots, now: number, n: number): Array<number> => {
  const out: Array<number> = []
  let t = now
  for (let i = 0; i < n; i++) out.push(t = slots.after(t))
  return out
}
