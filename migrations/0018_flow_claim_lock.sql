-- effect-jobs schema, version 18: the gated claim locks the rows it picked through the primary
-- key.
--
-- claim_gated (migration 0014) locked the picked rows with
-- `SELECT ... WHERE id = ANY (v_picked) AND state = 'available' FOR UPDATE SKIP LOCKED`. The
-- `state = 'available'` matches the predicate of jobs_claim_idx (queue, priority, run_at, id),
-- and on a table that has not been analyzed the planner took that index for the ids: a walk of
-- every entry, since id is its last column. On the machine's PG15, where autovacuum is off,
-- `npm run bench`'s gated drains (20,000 jobs enqueued, then drained at once) ran at 3,600 and
-- 4,700 jobs/s, against about 21,000 once the table was analyzed. auto_explain logged this
-- statement at 130-360 ms per claim (Index Scan using jobs_claim_idx, Index Cond: id = ANY).
-- Now the rows are locked by id alone, and their state is checked after the lock.
--
-- The rest of the function is that of migration 0014, unchanged.
CREATE OR REPLACE FUNCTION effect_jobs.claim_gated(
  p_queue text, p_limit integer, p_now timestamptz, p_lease_ms bigint, p_worker text,
  p_names text[], p_start_now integer, p_global integer, p_per_group integer,
  p_sequence boolean, p_block_dead boolean,
  p_rate_limit integer, p_rate_ms bigint, p_group_rate_limit integer, p_group_rate_ms bigint,
  -- this worker's jobs of the queue whose runs have ended, outcomes not written yet: their
  -- rows still say running, but they hold no slot (not counted against global / perGroup)
  p_done bigint[],
  -- this worker's concurrency and prefetch for the queue, and its runs going on now: with a
  -- global limit, it may hold as many slots as its concurrency, and buffer in proportion
  p_concurrency integer, p_prefetch integer, p_running integer
) RETURNS TABLE (
  id text, name text, queue text, priority smallint, attempt integer, max_attempts integer,
  claim_count integer, args jsonb, metadata jsonb, request_id text, trace jsonb, created_at timestamptz,
  -- set when a rate limit held the claim back: how long until its window frees (on every
  -- row; with nothing claimed, one row with only this column set)
  wait_ms integer,
  -- true when a limit kept runnable jobs back that a run ending on another worker frees (the
  -- global or a group's limit reached, a sequence's head running): no NOTIFY says when, so
  -- the producer claims again soon (a short backoff), not at its poll. Set as wait_ms is.
  limited boolean,
  -- with a global limit: the slots this worker holds now (it runs at most that many jobs of
  -- the queue at once); NULL without one. Set as wait_ms is.
  slots integer
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_free integer := p_limit;
  v_start_now integer := p_start_now;
  v_grant integer;
  v_held integer;
  -- p_done as a set: { id: 1 }
  v_done jsonb;
  v_round record;
  v_picked bigint[];
  v_groups text[];
  v_start text;
  v_wait integer;      -- ms until a rate window that held this claim back frees
  v_rate_key text := 'queue:' || p_queue;
  v_granted integer;
  v_left double precision;
  v_limited boolean := false;
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

  -- This worker's ended runs as a set (`?` finds a key by binary search): a filter
  -- `id = ANY (p_done)` on every running row costs their product once the plan is generic, and
  -- a join may be planned as a nested loop when the statistics are of a queue at rest.
  v_done := coalesce((SELECT jsonb_object_agg(x.id::text, 1) FROM unnest(p_done) AS x(id)), '{}');

  IF p_global IS NOT NULL THEN
    -- The slots this worker may hold (flow_grant), and the jobs it may claim: as many as its
    -- slots and its prefetch in proportion, less those it holds (running and buffered).
    SELECT * INTO v_grant, v_held FROM effect_jobs.flow_grant(p_queue, p_worker, p_global, p_concurrency, v_done);
    v_free := least(v_free, greatest(0,
      v_grant + ceil(greatest(p_prefetch, 0)::numeric * v_grant / greatest(p_concurrency, 1))::integer - v_held));
    v_start_now := least(v_start_now, greatest(0, v_grant - p_running));
    -- Held back by the others' slots, with jobs waiting: they start as runs of the fleet end.
    v_limited := v_grant < p_concurrency AND v_free < p_limit AND EXISTS (
      SELECT 1 FROM effect_jobs.jobs j WHERE j.state = 'available' AND j.queue = p_queue AND j.run_at <= p_now);
  END IF;
  -- Rate limits (migration 0013's rate_windows, the keys of src/RateLimiterStore.ts): the
  -- queue's window caps what may be picked (read here, taken once the jobs are picked, below);
  -- a group's is taken for the jobs picked of it. A job over a limit is not claimed: it stays
  -- available, no attempt spent. Handlers' RateLimiter.consume on the same key and with the
  -- same limit and window share the budget.
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
    RETURN QUERY SELECT * FROM effect_jobs.flow_nothing(v_wait, v_limited, v_grant);
    RETURN;
  END IF;

  SELECT c.last_group INTO v_start FROM effect_jobs.flow_cursors c WHERE c.queue = p_queue;
  SELECT * INTO v_round FROM effect_jobs.flow_round(p_queue, v_free, p_now, p_names, p_worker, p_per_group,
    p_sequence, p_block_dead, v_done, v_start, greatest(100, 10 * p_limit));
  v_limited := v_limited OR v_round.limited;
  v_picked := v_round.picked;
  v_groups := v_round.groups;

  -- Each group's rate window: taken for the jobs picked of it, the jobs past its grant left.
  IF p_group_rate_limit IS NOT NULL AND cardinality(v_picked) > 0 THEN
    SELECT * INTO v_picked, v_groups, v_wait
    FROM effect_jobs.flow_take_group_rates(p_queue, v_picked, v_groups, p_group_rate_limit, p_group_rate_ms, v_wait);
  END IF;
  -- The cursor: where this claim stopped, so that the next one (of any worker) starts after it.
  IF v_round.cursor_at IS DISTINCT FROM v_start THEN
    INSERT INTO effect_jobs.flow_cursors AS c (queue, last_group) VALUES (p_queue, v_round.cursor_at)
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
    RETURN QUERY SELECT * FROM effect_jobs.flow_nothing(v_wait, v_limited, v_grant);
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
        buffered = j.id <> ALL (v_picked[1:greatest(v_start_now, 0)])
    -- Locked as they are claimed, a row another session holds left out (an operator's change,
    -- a unique replace in a transaction not committed yet: the claim does not wait for it);
    -- still available (changed since the round read it: left out). A rate token taken above for
    -- a job left out here is not given back: the limit errs on the safe side.
    -- The rows are locked by id alone and their state is checked after the lock (OFFSET 0 keeps
    -- the check out of the locking scan): with `state = 'available'` in the scan, the planner
    -- may read the ids from jobs_claim_idx, whose predicate that matches, by walking the whole
    -- index (id is its last column) once per claim. A row changed since the round read it is
    -- locked for the rest of the claim's transaction and left out.
    WHERE j.id = ANY (ARRAY(SELECT l.id FROM (SELECT l.id, l.state FROM effect_jobs.jobs l WHERE l.id = ANY (v_picked)
                                              FOR UPDATE SKIP LOCKED OFFSET 0) l
                            WHERE l.state = 'available'))
    RETURNING j.id, j.name, j.queue, j.priority, j.attempt, j.max_attempts, j.claim_count,
              j.args, j.metadata, j.request_id, j.trace, j.created_at
  )
  SELECT c.id::text, c.name, c.queue, c.priority, c.attempt, c.max_attempts, c.claim_count, c.args,
         NULLIF(c.metadata, '{}'::jsonb), c.request_id, c.trace, c.created_at, v_wait, v_limited, v_grant
  FROM claimed c JOIN unnest(v_picked) WITH ORDINALITY AS p(id, ord) ON p.id = c.id
  ORDER BY p.ord;
END;
$$;

