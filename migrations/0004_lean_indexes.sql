-- effect-jobs schema, version 4: fewer index writes per job.
--
-- A claim and a finish each write a new version of the row, and since `state` is in
-- index predicates that is never a HOT update: every index whose predicate the new
-- version matches gets an entry. `jobs_state_queue_idx` covered every state, so
-- every claim, heartbeat and finish paid for it, only to serve management listings and
-- the jobs-per-state gauge. Unfinished jobs are few and already indexed by state
-- (claim, scheduled and lease indexes); only finished history can be large, so only
-- finished jobs keep a (state, queue, id) index.
DROP INDEX IF EXISTS effect_jobs.jobs_state_queue_idx;
-- statement-breakpoint

CREATE INDEX jobs_finished_idx ON effect_jobs.jobs (state, queue, id)
  WHERE state IN ('completed', 'dead', 'cancelled');
-- statement-breakpoint

-- The lease index, keyed on the lease itself instead of on `state = 'running'`. Every
-- way out of `running` clears the lease, so it covers the same rows. The point is the
-- planner: with a `state = 'running'` predicate, a finish or heartbeat statement
-- (`... WHERE id = ANY(...) AND state = 'running'`) could match this small index, and
-- when the statistics were taken while no job ran (an idle queue), the planner prefers
-- walking every running job here and comparing each with every outcome of the batch
-- over a primary-key lookup per id. Rescue (`state = 'running' AND lease_expires_at <
-- now`) still uses it: the comparison implies `IS NOT NULL`.
DROP INDEX IF EXISTS effect_jobs.jobs_lease_idx;
-- statement-breakpoint

CREATE INDEX jobs_lease_idx ON effect_jobs.jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
