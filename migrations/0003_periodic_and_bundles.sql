-- effect-jobs schema, version 3: periodic jobs and bundles.

-- Periodic jobs: one row per declared schedule, holding the last slot enqueued.
-- A scheduler enqueues a slot only if it moves `last_slot` forward (compare-and-set
-- in the same transaction as the insert), so across any number of processes each
-- slot produces exactly one job.
CREATE TABLE effect_jobs.periodic (
  name       text        PRIMARY KEY,
  last_slot  timestamptz NOT NULL,
  last_job   bigint,
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- statement-breakpoint

-- Bundles: a group of jobs enqueued together that finishes once, when its last
-- member reaches a terminal state. `remaining` counts members not yet terminal;
-- a trigger on effect_jobs.jobs keeps it, under the bundle row's lock, so of two members
-- finishing at the same time on different workers exactly one brings it to 0.
CREATE TABLE effect_jobs.bundles (
  id              bigserial   PRIMARY KEY,
  name            text        NOT NULL,
  total           integer     NOT NULL,
  remaining       integer     NOT NULL,
  metadata        jsonb       NOT NULL DEFAULT '{}',
  created_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz,
  -- The finish step (observer event, optional follow-up job) has run: exactly once.
  follow_up_done  boolean     NOT NULL DEFAULT false,
  follow_up_id    bigint,
  CONSTRAINT effect_jobs_bundles_remaining_check CHECK (remaining >= 0 AND remaining <= total)
);
-- statement-breakpoint

CREATE INDEX bundles_pending_idx ON effect_jobs.bundles (id)
  WHERE finished_at IS NOT NULL AND NOT follow_up_done;
-- statement-breakpoint

ALTER TABLE effect_jobs.jobs ADD COLUMN bundle_id bigint;
-- statement-breakpoint

CREATE INDEX jobs_bundle_idx ON effect_jobs.jobs (bundle_id) WHERE bundle_id IS NOT NULL;
-- statement-breakpoint

-- Keeps effect_jobs.bundles.remaining: -1 when a member becomes terminal (or is deleted
-- while not terminal), +1 when a terminal member is made runnable again (an operator's
-- retry). When it reaches 0 the bundle is finished and the workers are told.
CREATE FUNCTION effect_jobs.bundle_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  was_terminal boolean;
  is_terminal  boolean;
  delta        integer;
  b            record;
BEGIN
  IF TG_OP = 'DELETE' THEN
    was_terminal := OLD.state IN ('completed', 'dead', 'cancelled');
    IF was_terminal THEN RETURN NULL; END IF;
    delta := -1;
  ELSE
    was_terminal := OLD.state IN ('completed', 'dead', 'cancelled');
    is_terminal  := NEW.state IN ('completed', 'dead', 'cancelled');
    IF was_terminal = is_terminal THEN RETURN NULL; END IF;
    delta := CASE WHEN is_terminal THEN -1 ELSE 1 END;
  END IF;
  UPDATE effect_jobs.bundles
     SET remaining = remaining + delta,
         finished_at = CASE WHEN remaining + delta = 0 AND finished_at IS NULL THEN now() ELSE finished_at END
   WHERE id = COALESCE(NEW.bundle_id, OLD.bundle_id)
  RETURNING id, remaining, finished_at INTO b;
  IF FOUND AND b.remaining = 0 THEN
    PERFORM pg_notify('effect_jobs.bundle', b.id::text);
  END IF;
  RETURN NULL;
END;
$$;
-- statement-breakpoint

CREATE TRIGGER bundle_update AFTER UPDATE OF state ON effect_jobs.jobs
  FOR EACH ROW WHEN (NEW.bundle_id IS NOT NULL)
  EXECUTE FUNCTION effect_jobs.bundle_count();
-- statement-breakpoint

CREATE TRIGGER bundle_delete AFTER DELETE ON effect_jobs.jobs
  FOR EACH ROW WHEN (OLD.bundle_id IS NOT NULL)
  EXECUTE FUNCTION effect_jobs.bundle_count();
