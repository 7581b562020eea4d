/**
 * What src/Metrics.ts and the metrics observer (src/Observer.ts) must agree on to address the
 * same series: the run-duration histogram's bounds.
 *
 * @internal
 */
import { Metric } from "effect"

/** Seconds: 20 doubling bounds from 5 ms to about 44 minutes (2621.44 s), then +Inf. */
export const runDurationBoundaries = Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 21 })
