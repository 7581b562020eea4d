-- effect-jobs schema, version 10: unique keys that finished jobs hold too, for a window of time.
--
-- Until now a unique key was held only by an unfinished job (jobs_unique_idx, migration 0001:
-- one scheduled, available or running job per (name, unique_key)). That index stays as it is,
-- and so does that rule: every unique job still holds its key while it is unfinished. (Keeping it
-- also keeps the enqueue statement of earlier versions valid during a rolling deploy: its
-- ON CONFLICT names that index.)
--
-- An enqueue may now also ask that finished jobs hold the key (`unique: { states, period }`).
-- Such a job is written with:
--   unique_states  the states in which it holds its key: scheduled, available and running
--                  always, plus those of completed, dead and cancelled it was given;
--   unique_window  the start of the window it was enqueued in (its enqueue time rounded down to
--                  a multiple of the period, from the Unix epoch), or '-infinity' without a period
--                  (the window that never ends: "once, ever, while the row is kept").
-- Both are NULL for every other job, unique or not: nothing changes for them.
--
-- One index enforces every combination of states and windows: a row is in it while its current
-- state is one of its own `unique_states`, so no index per state set is needed, and no statement
-- has to clear anything when a job finishes: the finish already writes a new row version, and
-- whether that version is in the index follows from its state. Of the jobs with one name and key
-- in one window, at most one is in a state that counts for it, across processes and concurrent
-- transactions (the enqueue's INSERT ... ON CONFLICT DO NOTHING waits on, then skips, a conflicting
-- row of another transaction, as for jobs_unique_idx).
--
-- Adding the nullable columns rewrites nothing. Building the index reads the table once (while
-- writes wait), and finds no row to put in it.
ALTER TABLE effect_jobs.jobs ADD COLUMN unique_states text[];
-- statement-breakpoint

ALTER TABLE effect_jobs.jobs ADD COLUMN unique_window timestamptz;
-- statement-breakpoint

CREATE UNIQUE INDEX jobs_unique_window_idx ON effect_jobs.jobs (name, unique_key, unique_window)
  WHERE unique_window IS NOT NULL AND state = ANY (unique_states);
