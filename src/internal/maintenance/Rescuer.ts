/**
 * The rescuer: a job whose lease lapsed (its worker died, or lost the database) goes back
 * to `available` to run again, or to `dead` if that was its last attempt (`cancelled` if an
 * operator asked). Every worker runs it every `maintenanceInterval`, after the promoter.
 *
 * @internal
 */
import type { JobStore } from "../Store.ts"

/** Jobs rescued per statement at most; a longer backlog is taken by the next rounds. */
const batchSize = 1000

/** One round at `now`; the number of jobs rescued. */
export const runOnce = (store: JobStore["Service"], now: number) => store.jobRescueExpired(now, batchSize)
