/**
 * Where a producer's plain claim starts reading its queue, so that a long transaction
 * elsewhere in the database does not make every claim wade through dead index entries.
 *
 * Why. A session idle in transaction holds back the xmin horizon. The entries that claimed
 * rows leave in `jobs_claim_idx` (queue, priority, run_at, id) can then be neither removed by
 * vacuum nor marked dead by the scans that pass them, and every claim reads them again from
 * the start of its queue, one row visit each: 30-50 ms per claim once 100,000-200,000 of them
 * have piled up (BENCHMARKS.md, "Under a long transaction").
 *
 * The floor. A claim that came back short took every runnable job it could see (rows locked
 * by someone else aside): a job that becomes runnable after it is a new one, due about now.
 * So after a short claim the producer may start its next claims at the *floor*: the best
 * priority it has claimed, and the earliest `run_at` that claim returned less a margin
 * (`marginMillis`, for enqueue transactions that commit later than their `run_at`, clocks of
 * enqueuing machines apart, due jobs promoted a little late). In SQL that is an index range
 * starting past the dead entries (Store.ts, `jobClaim`'s `floor`).
 *
 * What the floor leaves out (a job due before it, or of a better priority than any claimed
 * yet) is taken by the next full claim, a *sweep*. Nothing is lost; such a job can only wait
 * longer, and only while claims are expensive.
 *
 * When. Every claim is full while full claims are cheap, so without a long transaction
 * nothing changes. A full claim that took long for what it returned (`expensiveMillis`, plus
 * `expensiveMillisPerRow` per row) switches to floor claims, and the next sweep comes once
 * `sweepFactor` times its duration has passed: the sweeps take at most 1 / (1 + sweepFactor)
 * of the time (0.5 %), and a job below the floor waits at most that long for one (20 s after
 * a sweep of 100 ms). A sweep that is cheap again switches back to full claims.
 *
 * States: `full` (sweepDue = 0: every claim is full) and `floor` (claims from the floor until
 * sweepDue, then one sweep). Without a floor yet, claims are full in either.
 *
 * @internal
 */
import { Context } from "effect"
import type { ClaimedJobRow, ClaimFloorKey } from "../Store.ts"

export interface Settings {
  /** A full claim that took at least this long ... */
  readonly expensiveMillis: number
  /** ... plus this per row it returned is expensive: the next claims start at the floor. */
  readonly expensiveMillisPerRow: number
  /** The next sweep comes this many times the last one's duration after it. */
  readonly sweepFactor: number
  /** The floor's `run_at` is this much earlier than the earliest `run_at` of a short claim. */
  readonly marginMillis: number
}

export const defaults: Settings = {
  expensiveMillis: 2,
  expensiveMillisPerRow: 0.02,
  sweepFactor: 200,
  marginMillis: 10_000
}

/** The settings every producer uses; a test provides others to drive floor claims. */
export const ClaimFloorSettings = Context.Reference<Settings>("effect-jobs/internal/ClaimFloorSettings", {
  defaultValue: () => defaults
})

/** What one claim was, for `record`. */
export interface Claimed {
  /** Whether it read the whole queue (a sweep, or any claim in the `full` state). */
  readonly full: boolean
  /** When it started and how long it took (the producer's Clock, ms). */
  readonly startedAt: number
  readonly durationMillis: number
  /** It returned fewer rows than it asked for. */
  readonly short: boolean
  readonly rows: ReadonlyArray<ClaimedJobRow>
}

export class ClaimFloor {
  /** The floor's `run_at`; undefined until a short claim returned rows. */
  private runAtMillis: number | undefined = undefined
  /** The best (lowest) priority claimed so far: the floor's priority. */
  private best: number | undefined = undefined
  /** 0: every claim is full. Otherwise floor claims until this time, then a sweep. */
  private sweepDue = 0
  private readonly settings: Settings
  constructor(settings: Settings) {
    this.settings = settings
  }

  /** Where the claim at `now` starts: undefined for a full claim. */
  plan(now: number): ClaimFloorKey | undefined {
    if (this.runAtMillis === undefined || this.best === undefined || this.sweepDue === 0 || now >= this.sweepDue) {
      return undefined
    }
    return { priority: this.best, runAtMillis: this.runAtMillis }
  }

  record(claimed: Claimed): void {
    const { rows } = claimed
    const settings = this.settings
    let earliest = Infinity
    for (const row of rows) {
      if (this.best === undefined || row.priority < this.best) this.best = row.priority
      if (row.run_at_ms !== undefined && row.run_at_ms < earliest) earliest = row.run_at_ms
    }
    if (claimed.short && earliest !== Infinity) {
      // (monotone: a sweep that found a job due long ago does not move the floor back)
      this.runAtMillis = Math.max(this.runAtMillis ?? -Infinity, earliest - settings.marginMillis)
    }
    if (!claimed.full) return
    const expensive = claimed.durationMillis >= settings.expensiveMillis + settings.expensiveMillisPerRow * rows.length
    // (a claim measured at 0 ms, on a TestClock say, counts as 1)
    this.sweepDue = expensive
      ? claimed.startedAt + Math.max(1, claimed.durationMillis) * (1 + settings.sweepFactor)
      : 0
  }
}
