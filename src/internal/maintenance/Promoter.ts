/**
 * The promoter: moves `scheduled` jobs whose time has come to `available` and wakes the
 * workers of their queues. Every worker runs it every `maintenanceInterval` (the statement
 * skips rows another worker is promoting).
 *
 * @internal
 */
import type { JobStore } from "../Store.ts"

/** Jobs promoted per statement at most; a longer backlog is taken by the next rounds. */
const batchSize = 1000

/** One round at `now`; the number of jobs promoted. */
export const runOnce = (store: JobStore["Service"], now: number) => store.jobPromoteScheduled(now, batchSize)
