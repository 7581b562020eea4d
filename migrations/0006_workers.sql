-- effect-jobs schema, version 6: the workers that are running, so that the jobs of a worker
-- whose process died are rescued in about a second instead of when their lease lapses.
--
-- Each worker (with `listen: true`: it needs a session of its own) registers a row here at
-- start and holds a session-level advisory lock for as long as it lives, on a connection
-- kept for it; the key is `hashtextextended(<schema> || ':' || id, 6)`. The lock belongs to
-- the session: when the process dies, Postgres ends the session and the lock is gone. The
-- rescuer reads `pg_locks`: a running job whose `locked_by` is a registered worker whose lock
-- nobody holds, not seen for 1.5 s, is orphaned and goes back at once (error kind `WorkerDied`). A worker not
-- registered here (behind a transaction-mode pooler, or an older version) is rescued by its
-- lease as before. The row is deleted at graceful shutdown; the rescuer deletes the rows of
-- dead workers a minute after they were last seen.
CREATE TABLE effect_jobs.workers (
  -- the worker's `workerId`, as stored in jobs.locked_by
  id           text        PRIMARY KEY,
  queues       text[]      NOT NULL,
  -- the sum of the queues' concurrency when the worker started
  concurrency  integer     NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  -- moved forward by the worker every 500 ms, on its locked session
  last_seen_at timestamptz NOT NULL DEFAULT now()
);
