-- effect-jobs schema, version 12: fleet-wide flow control (docs/flow-control.md).
--
-- A job may carry a group (a tenant, an account: `EnqueueOptions.group`). A queue served
-- with a `flow` option (a global limit, a per-group limit, FIFO sequences per group) is
-- claimed through `claim_gated` below instead of the plain claim: claims of such a queue are
-- serialized fleet-wide by an advisory lock, count what runs, and go round the groups that
-- have work. Queues without `flow` keep the plain claim and pay nothing for any of this:
-- both new indexes hold only rows with a group.

-- NULL: no group. Instant (no default: no table rewrite).
ALTER TABLE effect_jobs.jobs ADD COLUMN group_key text;
-- statement-breakpoint

-- The client refuses longer groups (InvalidJobOptions); this guards rows written by hand.
-- NOT VALID: existing rows (all NULL) are not scanned; new and updated rows are checked.
ALTER TABLE effect_jobs.jobs ADD CONSTRAINT effect_jobs_group_key_check
  CHECK (char_length(group_key) BETWEEN 1 AND 255) NOT VALID;
-- statement-breakpoint

-- The groups that have runnable jobs, in order (the gated claim's loose index scan: one
-- probe per group visited, however deep a group's backlog), and each group's jobs in claim
-- order. Only rows with a group: plain queues write nothing here.
CREATE INDEX jobs_group_claim_idx ON effect_jobs.jobs (queue, group_key, priority, run_at, id)
  WHERE state = 'available' AND group_key IS NOT NULL;
-- statement-breakpoint

-- The head of each group's sequence: its lowest-id job still in a state that holds it.
CREATE INDEX jobs_group_head_idx ON effect_jobs.jobs (queue, group_key, id)
  WHERE group_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'dead');
-- statement-breakpoint

-- The fleet-wide round-robin cursor of each gated queue: the group its last claim stopped
-- at (NULL: the ungrouped jobs, which come before the first group in the round).
CREATE TABLE effect_jobs.flow_cursors (
  queue      text PRIMARY KEY,
  last_group text
);
-- statement-breakpoint

-- How long until the rate window of `p_key` (migration 0013's rate_windows) frees, in ms (at
-- least 1): the gated claim's producer waits that long before it claims again, rather than for
-- its poll. The function is resolved when it runs: rate_windows comes with migration 0013.
CREATE FUNCTION effect_jobs.flow_rate_wait(p_key text) RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  RETURN (SELECT greatest(1, ceil(extract(epoch FROM (w.expires_at - clock_timestamp())) * 1000))::integer
          FROM effect_jobs.rate_windows w WHERE w.key = p_key);
END $$;
-- statement-breakpoint

-- The gated claim: up to p_limit jobs of p_queue, within the limits given (NULL: none),
-- returned in the order they were picked. The claimed rows are written exactly as the plain
-- claim writes them (src/internal/Store.ts, jobClaim): attempt + 1, fencing token + 1, a
-- lease on the database's clock, locked_by, buffered past the first p_start_now.
--
-- Every worker of the queue must pass the same limits (docs/flow-control.md).
CREATE FUNCTION effect_jobs.claim_gated(
  p_queue text, p_limit integer, p_now timestamptz, p_lease_ms bigint, p_worker text,
  p_names text[], p_start_now integer, p_global integer, p_per_group integer,
  p_sequence boolean, p_block_dead boolean,
  p_rate_limit integer, p_rate_ms bigint, p_group_rate_limit integer, p_group_rate_ms bigint,
  -- this worker's jobs of the queue whose runs have ended, outcomes not written yet: their
  -- rows still say running, but they hold no slot (not counted against global / perGroup)
  p_done bigint[]
) RETURNS TABLE (
  id text, name text, queue text, priority smallint, attempt integer, max_attempts integer,
  claim_count integer, args jsonb, metadata jsonb, request_id text, trace jsonb, created_at timestamptz,
  -- set when a rate limit held the claim back: how long until its window frees (on every
  -- row; with nothing claimed, one row with only this column set)
  wait_ms integer
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_free integer := p_limit;
  v_running integer;
  -- jobs of each group running (or taken by this claim): { group: n }
  v_counts jsonb := '{}';
  v_picked bigint[] := '{}';
  v_start text;        -- where the cursor was
  v_pos text;          -- the group visited last (NULL: the ungrouped jobs)
  v_group text;
  v_cand bigint;
  v_ids bigint[];
  v_head record;
  v_mark text;
  v_lap boolean;
  v_any_group boolean;
  v_ungrouped_empty boolean := false;
  v_visits integer := 0;
  -- bounds the groups one claim looks at (groups blocked by their head, or at their limit,
  -- are looked at and passed over): the cursor moves on, and the next claim goes further
  v_max_visits integer := greatest(100, 10 * p_limit);
  v_wait integer;      -- ms until a rate window that held this claim back frees
  v_rate_key text := 'queue:' || p_queue;
  v_granted integer;
  v_left double precision;
BEGIN
  -- Claims of this queue are serialized fleet-wide: one claimer at a time counts and picks.
  -- The lock is the transaction's (the caller's statement runs in its own), so it is released
  -- at commit, once the rows claimed are `running` for everyone.
  --
  -- Why the counts below include every claim committed before: this function is VOLATILE and
  -- the session is in READ COMMITTED, so each statement in it takes a new snapshot. The
  -- statements after the lock therefore see every claim that committed before the lock was
  -- granted (the previous holder committed, then released it). A claim counted in the
  -- statement's own snapshot (taken before the lock) would miss the one that just finished,
  -- and two claims could each see a free slot: the limit would be exceeded.
  PERFORM pg_advisory_xact_lock(hashtextextended('effect_jobs.flow:' || p_queue, 0));

  IF p_global IS NOT NULL THEN
    -- The running rows are the slots (buffered ones too): a slot of a dead worker comes back
    -- when the rescuer returns its job, one that completed when its outcome is written.
    -- (Read from jobs_lease_idx, whose rows are exactly the running jobs of every queue: the
    -- cost is that of the jobs running fleet-wide, never of the table's history.)
    SELECT count(*) INTO v_running FROM effect_jobs.jobs j
    WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.queue = p_queue
      AND NOT (j.id = ANY (p_done) AND j.locked_by = p_worker);
    v_free := least(v_free, p_global - v_running);
  END IF;
  -- Rate limits (migration 0013's rate_windows, the keys of src/RateLimiterStore.ts): the
  -- queue's window caps what may be picked (read here, taken once the jobs are picked, below);
  -- a group's is taken as each of its jobs is picked. A job over a limit is not claimed: it
  -- stays available, no attempt spent. Handlers' RateLimiter.consume on the same key and with
  -- the same limit and window share the budget.
  IF p_rate_limit IS NOT NULL THEN
    SELECT CASE WHEN w.expires_at > clock_timestamp() THEN p_rate_limit - w.tokens ELSE p_rate_limit END
      INTO v_left FROM effect_jobs.rate_windows w WHERE w.key = v_rate_key;
    v_left := coalesce(v_left, p_rate_limit);
    IF v_left < 1 THEN
      v_wait := effect_jobs.flow_rate_wait(v_rate_key);
    END IF;
    v_free := least(v_free, greatest(0, floor(v_left))::integer);
  END IF;
  IF v_free <= 0 THEN
    IF v_wait IS NOT NULL THEN
      RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::smallint, NULL::integer, NULL::integer,
        NULL::integer, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, NULL::timestamptz, v_wait;
    END IF;
    RETURN;
  END IF;
  IF p_per_group IS NOT NULL AND NOT p_sequence THEN
    SELECT coalesce(jsonb_object_agg(c.g, c.n), '{}') INTO v_counts
    FROM (SELECT j.group_key AS g, count(*) AS n FROM effect_jobs.jobs j
          WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.queue = p_queue AND j.group_key IS NOT NULL
            AND NOT (j.id = ANY (p_done) AND j.locked_by = p_worker)
          GROUP BY j.group_key) c;
  END IF;

  SELECT c.last_group INTO v_start FROM effect_jobs.flow_cursors c WHERE c.queue = p_queue;
  v_pos := v_start;
  -- Is there any group with runnable jobs? (Without one, the ungrouped jobs take every slot.)
  -- (min(), not EXISTS: min() is always read from the start of jobs_group_claim_idx)
  v_any_group := (SELECT min(j.group_key) FROM effect_jobs.jobs j
                  WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL) IS NOT NULL;

  -- The round: the groups with runnable jobs in group order after the cursor, then the
  -- ungrouped jobs, then from the first group again. One job per group per visit (fairness);
  -- around again while slots are free, until a whole round took nothing.
  v_mark := v_start; -- where the last job was taken (at first: where the cursor was)
  WHILE v_free > 0 AND v_visits < v_max_visits LOOP
    v_visits := v_visits + 1;
    -- The next group after v_pos, read from jobs_group_claim_idx at the first entry past
    -- v_pos (a loose index scan: one probe per group, however deep its backlog). None: the
    -- ungrouped jobs' turn (NULL). Without sequences, the same probe yields the group's next
    -- job (its first runnable entry), locked: one statement per group visited.
    v_cand := NULL;
    IF p_sequence THEN
      SELECT min(j.group_key) INTO v_group FROM effect_jobs.jobs j
      WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL AND j.group_key > coalesce(v_pos, '');
    ELSE
      SELECT j.group_key, j.id INTO v_group, v_cand FROM effect_jobs.jobs j
      WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL AND j.group_key > coalesce(v_pos, '')
        AND j.run_at <= p_now AND (p_names IS NULL OR j.name = ANY (p_names)) AND j.id <> ALL (v_picked)
      ORDER BY j.group_key, j.priority, j.run_at, j.id
      LIMIT 1
      FOR UPDATE SKIP LOCKED;
      -- (a locked row left unclaimed, its group at its limit, is only locked until commit)
    END IF;
    -- Does this step (v_pos -> v_group, in the round's order, ungrouped first) reach or pass
    -- v_mark? Then a whole round has gone by since the last job was taken.
    IF v_group IS NULL THEN
      v_lap := v_mark IS NULL OR v_pos IS NULL OR v_mark > v_pos;
    ELSE
      v_lap := v_mark IS NOT NULL AND (v_pos IS NULL OR v_mark > v_pos) AND v_mark <= v_group;
    END IF;
    v_pos := v_group;
    v_ids := '{}';

    IF v_group IS NULL THEN
      IF NOT v_ungrouped_empty THEN
        -- The plain claim index, its rows with a group passed over (see docs/flow-control.md).
        -- No limit of their own; one per round while groups have work, else every free slot.
        v_ids := ARRAY(
          SELECT j.id FROM effect_jobs.jobs j
          WHERE j.state = 'available' AND j.queue = p_queue AND j.run_at <= p_now AND j.group_key IS NULL
            AND (p_names IS NULL OR j.name = ANY (p_names)) AND j.id <> ALL (v_picked)
          ORDER BY j.priority, j.run_at, j.id
          LIMIT CASE WHEN v_any_group THEN 1 ELSE v_free END
          FOR UPDATE SKIP LOCKED);
        v_ungrouped_empty := cardinality(v_ids) = 0;
      END IF;
    ELSIF p_sequence THEN
      -- One at a time, in id order: only the head (the lowest id still holding the group)
      -- may run, and only once it is available and due. Taken by this claim already: not again.
      IF NOT v_counts ? v_group THEN
        IF p_block_dead THEN
          SELECT j.id, j.state, j.run_at, j.name INTO v_head FROM effect_jobs.jobs j
          WHERE j.queue = p_queue AND j.group_key = v_group AND j.state IN ('scheduled', 'available', 'running', 'dead')
          ORDER BY j.id LIMIT 1;
        ELSE
          SELECT j.id, j.state, j.run_at, j.name INTO v_head FROM effect_jobs.jobs j
          WHERE j.queue = p_queue AND j.group_key = v_group AND j.state IN ('scheduled', 'available', 'running')
          ORDER BY j.id LIMIT 1;
        END IF;
        IF v_head.state = 'available' AND v_head.run_at <= p_now AND (p_names IS NULL OR v_head.name = ANY (p_names)) THEN
          v_ids := ARRAY(SELECT j.id FROM effect_jobs.jobs j WHERE j.id = v_head.id AND j.state = 'available'
                         FOR UPDATE SKIP LOCKED);
        END IF;
      END IF;
    ELSIF p_per_group IS NULL OR coalesce((v_counts ->> v_group)::integer, 0) < p_per_group THEN
      v_ids := ARRAY[v_cand]; -- one per group per visit: the round goes on to the next group
    END IF;

    IF cardinality(v_ids) > 0 AND v_group IS NOT NULL AND p_group_rate_limit IS NOT NULL THEN
      v_granted := effect_jobs.rate_grant(
        'queue-group:' || char_length(p_queue) || ':' || p_queue || ':' || v_group,
        cardinality(v_ids), p_group_rate_limit, p_group_rate_ms);
      IF v_granted < cardinality(v_ids) THEN
        v_wait := least(v_wait, effect_jobs.flow_rate_wait(
          'queue-group:' || char_length(p_queue) || ':' || p_queue || ':' || v_group));
        v_ids := v_ids[1:v_granted];
      END IF;
    END IF;

    IF cardinality(v_ids) > 0 THEN
      v_picked := v_picked || v_ids;
      v_free := v_free - cardinality(v_ids);
      IF v_group IS NOT NULL THEN
        v_counts := jsonb_set(v_counts, ARRAY[v_group],
                              to_jsonb(coalesce((v_counts ->> v_group)::integer, 0) + cardinality(v_ids)));
      END IF;
      v_mark := v_group;
    ELSIF v_lap THEN
      EXIT; -- a whole round without a job
    END IF;
  END LOOP;

  -- The cursor: where this claim stopped, so that the next one (of any worker) starts after it.
  IF v_pos IS DISTINCT FROM v_start THEN
    INSERT INTO effect_jobs.flow_cursors AS c (queue, last_group) VALUES (p_queue, v_pos)
    ON CONFLICT (queue) DO UPDATE SET last_group = EXCLUDED.last_group;
  END IF;
  -- The queue's window: taken for the jobs picked (at most what it had left, read above; a
  -- handler may have taken some meanwhile: the jobs past the grant are not claimed).
  IF p_rate_limit IS NOT NULL AND cardinality(v_picked) > 0 THEN
    v_granted := effect_jobs.rate_grant(v_rate_key, cardinality(v_picked), p_rate_limit, p_rate_ms);
    -- the window is used up (or a handler took what was left): wait for it, not for the poll
    IF v_granted >= v_left OR v_granted < cardinality(v_picked) THEN
      v_wait := least(v_wait, effect_jobs.flow_rate_wait(v_rate_key));
    END IF;
    IF v_granted < cardinality(v_picked) THEN
      v_picked := v_picked[1:v_granted];
    END IF;
  END IF;
  IF cardinality(v_picked) = 0 THEN
    IF v_wait IS NOT NULL THEN
      RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::smallint, NULL::integer, NULL::integer,
        NULL::integer, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, NULL::timestamptz, v_wait;
    END IF;
    RETURN;
  END IF;

  -- As the plain claim (jobClaim) writes a claim; returned in the order picked.
  RETURN QUERY
  WITH claimed AS (
    UPDATE effect_jobs.jobs j
    SET state = 'running',
        attempt = CASE WHEN j.attempt >= 2147483647 THEN j.attempt ELSE j.attempt + 1 END,
        claim_count = CASE WHEN j.claim_count >= 2147483647 THEN 1 ELSE j.claim_count + 1 END,
        attempted_at = p_now,
        lease_expires_at = now() + p_lease_ms * interval '1 millisecond',
        locked_by = p_worker,
        buffered = j.id <> ALL (v_picked[1:greatest(p_start_now, 0)])
    WHERE j.id = ANY (v_picked)
    RETURNING j.id, j.name, j.queue, j.priority, j.attempt, j.max_attempts, j.claim_count,
              j.args, j.metadata, j.request_id, j.trace, j.created_at
  )
  SELECT c.id::text, c.name, c.queue, c.priority, c.attempt, c.max_attempts, c.claim_count, c.args,
         NULLIF(c.metadata, '{}'::jsonb), c.request_id, c.trace, c.created_at, v_wait
  FROM claimed c JOIN unnest(v_picked) WITH ORDINALITY AS p(id, ord) ON p.id = c.id
  ORDER BY p.ord;
END;
$$;
