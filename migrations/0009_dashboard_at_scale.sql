-- effect-jobs schema, version 9: the dashboard on a table of millions of rows.
--
-- Throughput per minute. A worker tallies the outcomes it writes in memory and adds them to
-- its rows here once a second (src/internal/Throughput.ts): no write per job, and nothing
-- added to the finish statement. One row per (minute, queue, worker), so two workers never
-- update the same row and never wait for each other. Only the counters change, and they are
-- in no index: the update is HOT (no index entry), and `fillfactor` leaves room on the page
-- for it. The rescuer and an operator's cancel of a waiting job add theirs under their own
-- `worker` names. The maintenance leader deletes rows older than 6 hours.
-- `JobsAdmin.throughput` sums the workers' rows.
CREATE TABLE effect_jobs.throughput (
  -- the start of the minute (UTC) the outcomes were written in
  minute    timestamptz NOT NULL,
  queue     text        NOT NULL,
  -- the worker's `workerId`; `(rescuer)` and `(operator)` for the other writers
  worker    text        NOT NULL,
  completed integer     NOT NULL DEFAULT 0,
  -- failed runs that will run again (retry scheduled); snoozes and shutdown releases are not counted
  retried   integer     NOT NULL DEFAULT 0,
  dead      integer     NOT NULL DEFAULT 0,
  cancelled integer     NOT NULL DEFAULT 0,
  PRIMARY KEY (minute, queue, worker)
) WITH (fillfactor = 50);
-- statement-breakpoint

-- The last full count of finished jobs (completed, dead, cancelled) per queue, one row.
-- Counting a million finished rows takes a quarter of a second or more; the overview and the
-- jobs-per-state gauge read this instead once the count is large (`exactBelow` in
-- src/internal/Counts.ts), and whoever finds it stale recounts it (one process at a time).
-- Unfinished jobs are always counted exactly, through their partial indexes.
CREATE TABLE effect_jobs.finished_counts (
  only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
  -- [{ "queue": ..., "state": ..., "count": ... }]
  counts     jsonb       NOT NULL,
  total      bigint      NOT NULL,
  counted_at timestamptz NOT NULL,
  -- how long the count took: the count is reused for longer when it is expensive
  took_ms    integer     NOT NULL
);
-- statement-breakpoint

-- Management listings filtered by job name, and searches by unique key, over finished history.
-- Unfinished jobs are few and found through their own partial indexes (claim, scheduled, lease
-- and unique indexes); these two cover only finished rows, so a claim, a heartbeat or a retry
-- never writes an entry in them: the finish of a retained job writes one in the first, and in
-- the second only if the job has a unique key. (A finish that deletes the job writes none.)
--
-- On a large existing table, building them blocks writes to the table while it runs (seconds
-- per million rows). To avoid that, build them beforehand with CREATE INDEX CONCURRENTLY and
-- these names and definitions; this migration then leaves them as they are.
CREATE INDEX IF NOT EXISTS jobs_finished_name_idx ON effect_jobs.jobs (state, name, id)
  WHERE state IN ('completed', 'dead', 'cancelled');
-- statement-breakpoint

CREATE INDEX IF NOT EXISTS jobs_finished_key_idx ON effect_jobs.jobs (unique_key)
  WHERE unique_key IS NOT NULL AND state IN ('completed', 'dead', 'cancelled');
