/**
 * Metrics: the Effect `Metric`s that `Observer.metrics` keeps up to date.
 *
 * | metric | type | attributes | what |
 * | --- | --- | --- | --- |
 * | `effect_jobs_started_total` | counter | `queue`, `job_name` | runs started |
 * | `effect_jobs_completed_total` | counter | `queue`, `job_name` | runs that completed |
 * | `effect_jobs_retried_total` | counter | `queue`, `job_name` | failed runs with a retry scheduled |
 * | `effect_jobs_rescheduled_total` | counter | `queue`, `job_name` | snoozed runs, and runs returned at shutdown (no attempt spent) |
 * | `effect_jobs_dead_total` | counter | `queue`, `job_name` | jobs moved to the dead-letter state |
 * | `effect_jobs_cancelled_total` | counter | `queue`, `job_name` | jobs cancelled (by their handler, or by an operator while running) |
 * | `effect_jobs_bundles_finished_total` | counter | `bundle` | bundles finished (their last member reached a terminal state) |
 * | `effect_jobs_worker_errors_total` | counter | `queue` (`*` = not one queue's) | errors of the worker itself (claim, heartbeat, LISTEN, maintenance) |
 * | `effect_jobs_run_duration_seconds` | histogram | `queue`, `job_name`, `outcome` | from the run's start until its outcome is written |
 * | `effect_jobs_jobs` | gauge | `queue`, `state` | jobs in the table, sampled every `sampleInterval` |
 *
 * The job's name is the `job_name` attribute, not `job`: Prometheus sets `job`
 * on every scraped series itself (the scrape job), and a clash renames ours.
 * `outcome` is one of `completed`, `retried`, `rescheduled`, `dead`, `cancelled`.
 *
 * Export them with Effect's own exporters (`effect/observability`):
 * `PrometheusMetrics.format()` / `layerHttp()` for a scrape endpoint, or
 * `OtlpMetrics` / `Otlp.layer` to push them to a collector.
 *
 * @since 0.1.0
 */
import { Metric } from "effect"
import { runDurationBoundaries } from "./internal/metricOptions.ts"

export const started = Metric.counter("effect_jobs_started_total", {
  description: "Job runs started",
  incremental: true
})

export const completed = Metric.counter("effect_jobs_completed_total", {
  description: "Job runs that completed successfully",
  incremental: true
})

export const retried = Metric.counter("effect_jobs_retried_total", {
  description: "Job runs that failed and have a retry scheduled",
  incremental: true
})

export const rescheduled = Metric.counter("effect_jobs_rescheduled_total", {
  description: "Job runs snoozed or returned to the queue at shutdown (no attempt spent)",
  incremental: true
})

export const dead = Metric.counter("effect_jobs_dead_total", {
  description: "Jobs moved to the dead-letter state",
  incremental: true
})

export const cancelled = Metric.counter("effect_jobs_cancelled_total", {
  description: "Jobs cancelled",
  incremental: true
})

export const bundlesFinished = Metric.counter("effect_jobs_bundles_finished_total", {
  description: "Bundles whose last member reached a terminal state",
  incremental: true
})

export const workerErrors = Metric.counter("effect_jobs_worker_errors_total", {
  description: "Errors of the worker itself (claim, heartbeat, LISTEN, maintenance)",
  incremental: true
})

/** Seconds: 20 doubling bounds from 5 ms to about 44 minutes (2621.44 s), then +Inf. */
export const runDuration = Metric.histogram("effect_jobs_run_duration_seconds", {
  description: "Time from a run's start until its outcome is written, in seconds",
  boundaries: runDurationBoundaries
})

export const jobs = Metric.gauge("effect_jobs_jobs", {
  description: "Jobs in the table per queue and state, sampled"
})

/** The `outcome` attribute of `runDuration`. */
export type Outcome = "completed" | "retried" | "rescheduled" | "dead" | "cancelled"
