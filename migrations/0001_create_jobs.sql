-- effect-jobs schema, version 1.
--
-- Plain SQL, forward-only. Statements are separated by `-- statement-breakpoint`
-- lines because @effect/sql-pg speaks only the extended protocol, which accepts one
-- statement per query. Any migration tool that runs the statements in order works.
--
-- Job states (see docs/state-machine.md):
--   scheduled  waiting for run_at; promoted to available when due
--   available  runnable now; claimed by a worker with FOR UPDATE SKIP LOCKED
--   running    held by a worker under a lease (lease_expires_at) and a fencing token (claim_count)
--   completed  finished successfully (terminal)
--   dead       discarded, out of attempts, undecodable, or no handler (terminal)
--   cancelled  cancelled by the handler or an operator (terminal)

CREATE TABLE effect_jobs.jobs (
  id               bigserial   PRIMARY KEY,
  name             text        NOT NULL,
  queue            text        NOT NULL DEFAULT 'default',
  state            text        NOT NULL DEFAULT 'available',
  -- Lower runs first (as in Oban, River and graphile-worker).
  priority         smallint    NOT NULL DEFAULT 0,
  run_at           timestamptz NOT NULL DEFAULT now(),
  -- Attempts started (a claim increments it; a graceful-shutdown release gives it back).
  attempt          integer     NOT NULL DEFAULT 0,
  max_attempts     integer     NOT NULL DEFAULT 25,
  -- Fencing token: incremented by every claim. Every later write about a run
  -- (heartbeat, complete, fail, release) must present it, so a worker whose lease
  -- lapsed can never overwrite the outcome of the run that replaced it.
  claim_count      integer     NOT NULL DEFAULT 0,
  lease_expires_at timestamptz,
  locked_by        text,
  args             jsonb       NOT NULL,
  result           jsonb,
  -- The last N errors, oldest first: [{ "attempt", "at", "message", "kind" }].
  errors           jsonb       NOT NULL DEFAULT '[]',
  max_errors       smallint    NOT NULL DEFAULT 5,
  unique_key       text,
  metadata         jsonb       NOT NULL DEFAULT '{}',
  request_id       text,
  -- Trace context of the span that enqueued the job ({ traceId, spanId }).
  trace            jsonb,
  -- How long a terminal job is kept before the pruner removes it; NULL = forever.
  retention_ms     bigint,
  prune_at         timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  attempted_at     timestamptz,
  finalized_at     timestamptz,
  CONSTRAINT effect_jobs_state_check
    CHECK (state IN ('scheduled', 'available', 'running', 'completed', 'dead', 'cancelled')),
  CONSTRAINT effect_jobs_name_check CHECK (char_length(name) BETWEEN 1 AND 255),
  CONSTRAINT effect_jobs_queue_check CHECK (char_length(queue) BETWEEN 1 AND 255),
  CONSTRAINT effect_jobs_max_attempts_check CHECK (max_attempts > 0),
  CONSTRAINT effect_jobs_running_has_lease CHECK (state <> 'running' OR lease_expires_at IS NOT NULL),
  CONSTRAINT effect_jobs_finalized_at_check
    CHECK ((state IN ('completed', 'dead', 'cancelled')) = (finalized_at IS NOT NULL))
) WITH (fillfactor = 80);
-- statement-breakpoint

-- The claim path: only runnable rows are in this index, ordered as they are claimed,
-- so neither finished history nor future jobs (kept in 'scheduled') are walked.
CREATE INDEX jobs_claim_idx ON effect_jobs.jobs (queue, priority, run_at, id)
  WHERE state = 'available';
-- statement-breakpoint

-- Promotion of due scheduled jobs (delays, retries with backoff, snoozes).
CREATE INDEX jobs_scheduled_idx ON effect_jobs.jobs (run_at) WHERE state = 'scheduled';
-- statement-breakpoint

-- Rescue of jobs whose lease lapsed (their worker died).
CREATE INDEX jobs_lease_idx ON effect_jobs.jobs (lease_expires_at) WHERE state = 'running';
-- statement-breakpoint

-- Retention: terminal jobs with a TTL.
CREATE INDEX jobs_prune_idx ON effect_jobs.jobs (prune_at) WHERE prune_at IS NOT NULL;
-- statement-breakpoint

-- Management listings.
CREATE INDEX jobs_state_queue_idx ON effect_jobs.jobs (state, queue, id);
-- statement-breakpoint

-- Uniqueness: one unfinished job per (name, unique_key). Once the job is finished
-- (completed, dead or cancelled) the key is free again.
CREATE UNIQUE INDEX jobs_unique_idx ON effect_jobs.jobs (name, unique_key)
  WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running');
-- statement-breakpoint

-- Wake workers when jobs become available. A statement-level trigger sends one
-- notification per queue per statement (Postgres also folds duplicates within a
-- transaction), and, being inside the transaction, only after COMMIT: a rolled-back
-- enqueue wakes no one. Rows inserted by hand with SQL wake workers too.
CREATE FUNCTION effect_jobs.notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  q text;
BEGIN
  FOR q IN SELECT DISTINCT queue FROM new_rows WHERE state = 'available' LOOP
    PERFORM pg_notify('effect_jobs.new', q);
  END LOOP;
  RETURN NULL;
END;
$$;
-- statement-breakpoint

CREATE TRIGGER notify_insert AFTER INSERT ON effect_jobs.jobs
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION effect_jobs.notify_insert();
-- statement-breakpoint

-- Queue-wide pause flags, shared by all workers.
CREATE TABLE effect_jobs.queues (
  name       text        PRIMARY KEY,
  paused     boolean     NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
