-- effect-jobs schema, version 5: the reason an operator gave when cancelling a running job.
--
-- A queued job is cancelled at once and the reason goes into its errors. A running one
-- only gets `cancel_requested_at` (migration 0002) until its worker stops the run; the
-- reason is kept here until then, so the job's last error and the Observer's `cancelled`
-- event carry the operator's words rather than a generic "cancelled while running".
ALTER TABLE effect_jobs.jobs ADD COLUMN cancel_reason text;
