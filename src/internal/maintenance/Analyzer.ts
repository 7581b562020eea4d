/**
 * The analyzer: fresh planner statistics for the jobs table when nothing else keeps them
 * fresh. Run by the maintenance leader (Leader.ts) every round, after pruning.
 *
 * Why. A PgClient prepares its statements (its default): Postgres plans each once per
 * connection and, after a few runs, keeps one generic plan until the table's statistics change.
 * A plan made while the table was nearly empty (a new install, a queue that drains) reads the
 * table sequentially, the cheapest way through a few pages. When the table then grows (kept
 * history, or the dead rows a long transaction holds on to), every claim, heartbeat and outcome
 * reads all of it: 10-30 ms per statement after 90 s of a held transaction at 300 jobs/s on
 * PG15 (BENCHMARKS.md, "Under a long transaction"). Autovacuum's ANALYZE makes the plans again;
 * with autovacuum off, or behind, nothing does.
 *
 * What. Each round, one read of the table's counters (`pg_stat_user_tables`); an `ANALYZE` of
 * the table when more than `minChanged` rows plus `changedFraction` of the table have changed
 * since the last ANALYZE (autovacuum's or anyone's), and that one was at least
 * `minIntervalMillis` ago, or never ran. Autovacuum analyzes at 50 rows plus 10 %: when it
 * keeps up, this does nothing. ANALYZE reads a sample (30,000 rows at the default statistics
 * target) and blocks no reads or writes of the table.
 *
 * @internal
 */
import { Cause, Effect } from "effect"
import type { Events } from "../../Observer.ts"
import type { JobStore, PlannerStats } from "../Store.ts"

export interface Options {
  readonly minChanged: number
  readonly changedFraction: number
  readonly minIntervalMillis: number
}

export const defaults: Options = { minChanged: 1000, changedFraction: 0.2, minIntervalMillis: 60_000 }

/** Whether statistics like these call for an ANALYZE. */
export const isStale = (stats: PlannerStats, options: Options = defaults): boolean =>
  stats.changed > options.minChanged + options.changedFraction * stats.rows &&
  (stats.sinceMillis === null || stats.sinceMillis >= options.minIntervalMillis)

/** One round: read the counters, and analyze if they call for it. Whether it analyzed. */
export const runOnce = (store: JobStore["Service"], options: Options = defaults) =>
  Effect.gen(function*() {
    const stats = yield* store.jobsPlannerStats
    if (stats === undefined || !isStale(stats, options)) return false
    yield* store.jobsAnalyze
    yield* Effect.logDebug("analyzed the jobs table (its statistics were stale)")
    return true
  })

/** The leader's round (after pruning and the no-handler check): a failure is logged, never raised. */
export const round = (store: JobStore["Service"], observer: Events): Effect.Effect<void> =>
  runOnce(store).pipe(
    Effect.asVoid,
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.interrupt
        : observer.workerError("*", "maintenance (ANALYZE of the jobs table) failed", Cause.squash(cause), "Warn")
    )
  )
