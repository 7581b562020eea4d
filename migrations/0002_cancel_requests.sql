-- effect-jobs schema, version 2: cancelling running jobs.
--
-- An operator's `JobsAdmin.cancel` on a job that is `running` cannot change its
-- state directly: the worker holding it must stop the handler first. So the
-- request is recorded here and sent with `pg_notify('effect_jobs.cancel', id)`;
-- the worker interrupts the run and records it as `cancelled`.
--
-- The column also closes the races a NOTIFY alone leaves open:
--   * the run ends with a retry, a snooze or a shutdown release before the worker
--     heard the request (or the worker does not LISTEN): the finish statement
--     turns that non-terminal outcome into `cancelled`, so the job never runs again;
--   * the worker died: the rescue of its lapsed lease ends the job `cancelled`
--     instead of making it runnable.
-- A run that completes (or dies) before the request reaches it keeps that outcome.
--
-- Adding a nullable column without a default rewrites nothing: instant on any table size.

ALTER TABLE effect_jobs.jobs ADD COLUMN cancel_requested_at timestamptz;
