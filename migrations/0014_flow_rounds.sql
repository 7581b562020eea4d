-- effect-jobs schema, version 14: the gated claim of migration 0012, reworked for speed, same
-- contract (docs/flow-control.md).
--
-- Two changes:
--
-- 1. A global limit is held by workers, not by buffered jobs. Each worker of a queue with a
--    global limit holds a number of the fleet's slots (`flow_slots`, granted at its claims) and
--    runs at most that many jobs of the queue at once; the jobs it claims beyond them wait in
--    its buffer and hold nothing. So a worker may prefetch as on a plain queue, where before a
--    buffered job held a slot of the limit (with a limit equal to the fleet's concurrency,
--    nothing could be buffered, and every slot waited a claim round trip between two runs).
--
-- 2. The round over the groups is set-based: a stretch of the group index read in order (the
--    first entry of each group in it is that group's next job), then, where backlogs are deep, a
--    recursive loose index scan (one probe per group, however deep its backlog), instead of one
--    PL/pgSQL statement per group visited.

-- The fleet's slots of a global limit, by worker: `slots` is what the worker's last claim was
-- granted; the worker runs at most that many jobs of the queue at once. What a worker holds of
-- the limit is min(slots, the jobs it has claimed and not finished): a worker that died holds
-- nothing once the rescuer has returned its jobs, and an idle one holds nothing either. A row
-- is written only when a worker's grant changes; rows of workers that hold no job are removed
-- then (they count as nothing anyway).
CREATE TABLE effect_jobs.flow_slots (
  queue  text NOT NULL,
  worker text NOT NULL,
  slots  integer NOT NULL,
  PRIMARY KEY (queue, worker)
);
-- statement-breakpoint

-- The jobs of each group running (buffered too), for the per-group limit: the gated claim
-- counts those of each group it visits (one probe per group; this worker's runs that ended
-- left out, their ids the keys of a jsonb object, found by binary search). Only running rows
-- with a group: plain queues write nothing here.
CREATE INDEX jobs_group_running_idx ON effect_jobs.jobs (queue, group_key)
  WHERE state = 'running' AND group_key IS NOT NULL;
-- statement-breakpoint

DROP FUNCTION effect_jobs.claim_gated(
  text, integer, timestamptz, bigint, text, text[], integer, integer, integer, boolean, boolean,
  integer, bigint, integer, bigint, bigint[]);
-- statement-breakpoint

-- The slots of `p_queue`'s global limit granted to `p_worker` now: at most its concurrency and
-- what the others hold (each worker min(slots, its claimed jobs); a worker with no flow_slots
-- row, all its claimed jobs), and how many jobs it has claimed and not finished itself (its runs
-- that ended, the ids in `p_done` (a jsonb object, see claim_gated), not counted). Records the
-- grant. Call it under the queue's claim lock.
--
-- Why the limit holds: the sum over workers of min(slots, claimed jobs) is at most the limit
-- after every grant, and outside the lock it can only go down (jobs finish, are rescued). A
-- worker runs at most min(its grant, its claimed jobs); its new grant is at least what it held
-- before (the others held at most the limit minus that), so the jobs it runs while its claim is
-- in flight are within the grant the claim records.
CREATE FUNCTION effect_jobs.flow_grant(
  p_queue text, p_worker text, p_global integer, p_concurrency integer, p_done jsonb,
  OUT granted integer, OUT held integer
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v_others integer;
  v_had integer;
BEGIN
  -- (running rows only, from jobs_lease_idx: the cost is that of the jobs running fleet-wide)
  SELECT coalesce(sum(least(r.n, coalesce(s.slots, r.n))) FILTER (WHERE r.w IS DISTINCT FROM p_worker), 0),
         coalesce(sum(r.n) FILTER (WHERE r.w = p_worker), 0)
    INTO v_others, held
  FROM (SELECT j.locked_by AS w, count(*)::integer AS n FROM effect_jobs.jobs j
        WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.queue = p_queue
          AND NOT (j.locked_by = p_worker AND p_done ? j.id::text)
        GROUP BY j.locked_by) r
  LEFT JOIN effect_jobs.flow_slots s ON s.queue = p_queue AND s.worker = r.w;
  granted := greatest(0, least(p_concurrency, p_global - v_others));
  SELECT s.slots INTO v_had FROM effect_jobs.flow_slots s WHERE s.queue = p_queue AND s.worker = p_worker;
  IF v_had IS DISTINCT FROM granted THEN
    INSERT INTO effect_jobs.flow_slots AS s (queue, worker, slots) VALUES (p_queue, p_worker, granted)
    ON CONFLICT (queue, worker) DO UPDATE SET slots = EXCLUDED.slots;
    DELETE FROM effect_jobs.flow_slots s
    WHERE s.queue = p_queue AND s.worker <> p_worker AND NOT EXISTS (
      SELECT 1 FROM effect_jobs.jobs j
      WHERE j.lease_expires_at IS NOT NULL AND j.state = 'running' AND j.queue = p_queue AND j.locked_by = s.worker);
  END IF;
END $$;
-- statement-breakpoint

-- A part of the round, for groups without sequences: the groups with runnable jobs after
-- `p_after` in group order, read from jobs_group_claim_idx, each with its first runnable job.
-- A group may start one more job when it is below `p_per_group` (counting its jobs
-- running fleet-wide); else it is passed over (`blocked`: at its limit with a job waiting). The
-- walk stops after `p_want` groups that may start one, after `p_max` groups, or past `p_upto`
-- (NULL: the last group). Returned: the groups taken and their jobs (`gs`, `ids`), how many
-- groups were looked at (`visits`), whether one was passed over, and the last one looked at.
--
-- Two ways to read the groups, one after the other. First a stretch of the index read in order
-- (cheap per entry, and the first entry of each group in it is that group's next job), enough
-- for `p_want` groups of up to two jobs. If groups are left to find after it, a loose index scan
-- from the last group it saw (`flow_walk_skip`: one probe per group, however deep its
-- backlog). So a group with a deep backlog costs at most one stretch.
CREATE FUNCTION effect_jobs.flow_walk(
  p_queue text, p_after text, p_upto text, p_now timestamptz, p_names text[],
  p_per_group integer, p_worker text, p_done jsonb, p_want integer, p_max integer,
  OUT ids bigint[], OUT gs text[], OUT visits integer, OUT blocked boolean, OUT last_group text
) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
  v_ids bigint[];
  v_gs text[];
  v_n integer;
  v_blocked boolean;
  v_last text;
  v_step integer;
BEGIN
  ids := '{}'; gs := '{}'; visits := 0; blocked := false;
  last_group := p_after;
  LOOP
    -- A stretch: the groups after the last one seen, as many as are still wanted.
    v_step := least(p_want - cardinality(ids), p_max - visits);
    SELECT coalesce(array_agg(f.id ORDER BY f.g) FILTER (WHERE f.ok), '{}'),
           coalesce(array_agg(f.g ORDER BY f.g) FILTER (WHERE f.ok), '{}'),
           count(*)::integer, coalesce(bool_or(NOT f.ok), false), max(f.g)
      INTO v_ids, v_gs, v_n, v_blocked, v_last
    FROM (
      -- (the count of each group's running jobs taken once per group, after DISTINCT ON)
      SELECT d.g, d.id, p_per_group IS NULL OR (SELECT count(*) FROM effect_jobs.jobs r WHERE r.queue = p_queue AND r.group_key = d.g AND r.state = 'running'
                 AND NOT (r.locked_by = p_worker AND p_done ? r.id::text)) < p_per_group AS ok
      FROM (
      SELECT DISTINCT ON (s.g) s.g, s.id
      FROM (SELECT j.group_key AS g, j.id, j.priority, j.run_at FROM effect_jobs.jobs j
            WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL AND j.group_key > last_group
              AND j.run_at <= p_now AND (p_names IS NULL OR j.name = ANY (p_names))
            ORDER BY j.group_key, j.priority, j.run_at, j.id
            LIMIT least(2 * v_step, 4000)) s
      WHERE p_upto IS NULL OR s.g <= p_upto
      ORDER BY s.g, s.priority, s.run_at, s.id
      LIMIT v_step) d
    ) f;
    ids := ids || v_ids; gs := gs || v_gs; visits := visits + v_n; blocked := blocked OR v_blocked;
    last_group := coalesce(v_last, last_group);
    -- Nothing after it (the end, or past p_upto), enough found, or the bound reached: done.
    IF v_n = 0 OR cardinality(ids) >= p_want OR visits >= p_max OR (p_upto IS NOT NULL AND last_group >= p_upto) THEN
      RETURN;
    END IF;
    -- Fewer groups than asked for: the stretch reached the last group, or went through groups
    -- with deep backlogs. Go on group by group (at the end, its first probe finds nothing).
    EXIT WHEN v_n < v_step;
  END LOOP;
  SELECT coalesce(array_agg(w.id ORDER BY w.g) FILTER (WHERE w.ok), '{}'),
         coalesce(array_agg(w.g ORDER BY w.g) FILTER (WHERE w.ok), '{}'),
         count(*)::integer, coalesce(bool_or(w.blocked), false), max(w.g)
    INTO v_ids, v_gs, v_n, v_blocked, v_last
  FROM effect_jobs.flow_walk_skip(p_queue, last_group, p_upto, p_now, p_names, p_per_group, p_worker, p_done,
                                  p_want - cardinality(ids), p_max - visits) w;
  ids := ids || v_ids; gs := gs || v_gs; visits := visits + v_n; blocked := blocked OR v_blocked;
  last_group := coalesce(v_last, last_group);
END $$;
-- statement-breakpoint

-- flow_walk's loose index scan: from the first group after `p_after`, each next group read from
-- jobs_group_claim_idx at the first entry past the previous one (one probe per group). The walk
-- starts from a row for `p_after` itself (depth 0, not returned), so that the probe is written once.
CREATE FUNCTION effect_jobs.flow_walk_skip(
  p_queue text, p_after text, p_upto text, p_now timestamptz, p_names text[],
  p_per_group integer, p_worker text, p_done jsonb, p_want integer, p_max integer
) RETURNS TABLE (g text, id bigint, ok boolean, blocked boolean)
LANGUAGE sql STABLE AS $$
  WITH RECURSIVE walk(g, id, depth, taken, ok) AS (
    SELECT p_after, NULL::bigint, 0, 0, false
    UNION ALL
    SELECT n.g, n.id, w.depth + 1, w.taken + e.ok::integer, e.ok
    FROM walk w
    CROSS JOIN LATERAL (
      SELECT j.group_key AS g, j.id FROM effect_jobs.jobs j
      WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL AND j.group_key > w.g
        AND j.run_at <= p_now AND (p_names IS NULL OR j.name = ANY (p_names))
      ORDER BY j.group_key, j.priority, j.run_at, j.id
      LIMIT 1) n
    CROSS JOIN LATERAL (SELECT p_per_group IS NULL
                               OR (SELECT count(*) FROM effect_jobs.jobs r WHERE r.queue = p_queue AND r.group_key = n.g AND r.state = 'running'
                 AND NOT (r.locked_by = p_worker AND p_done ? r.id::text)) < p_per_group AS ok) e
    WHERE w.taken < p_want AND w.depth < p_max AND (p_upto IS NULL OR w.g < p_upto)
  )
  SELECT w.g, w.id, w.ok, NOT w.ok FROM walk w WHERE w.depth > 0 AND (p_upto IS NULL OR w.g <= p_upto)
$$;
-- statement-breakpoint

-- A sequence's head (see flow_walk_heads): its id, whether it may start now (`ok`), whether it
-- runs on another worker (`blocked`).
CREATE FUNCTION effect_jobs.flow_head(
  p_queue text, p_group text, p_now timestamptz, p_names text[], p_block_dead boolean, p_worker text
) RETURNS TABLE (id bigint, ok boolean, blocked boolean)
LANGUAGE sql STABLE AS $$
  SELECT h.id,
         h.state = 'available' AND h.run_at <= p_now AND (p_names IS NULL OR h.name = ANY (p_names)),
         h.state = 'running' AND h.locked_by IS DISTINCT FROM p_worker
  FROM (SELECT j.id, j.state, j.run_at, j.name, j.locked_by FROM effect_jobs.jobs j
        WHERE j.queue = p_queue AND j.group_key = p_group AND j.state IN ('scheduled', 'available', 'running', 'dead')
          AND (p_block_dead OR j.state <> 'dead')
        ORDER BY j.id LIMIT 1) h
$$;
-- statement-breakpoint

-- `flow_walk` for sequences: each group visited offers its head (the lowest id still holding
-- it: scheduled, available, running, and dead when `p_block_dead`), and only when the head is
-- available and due. `blocked`: the head runs on another worker (the group goes on when that
-- run's outcome is written there; this worker's own runs wake its producer when they end).
-- As flow_walk_skip, from a row for `p_after` itself (depth 0, not returned).
CREATE FUNCTION effect_jobs.flow_walk_heads(
  p_queue text, p_after text, p_upto text, p_now timestamptz, p_names text[],
  p_block_dead boolean, p_worker text, p_want integer, p_max integer
) RETURNS TABLE (g text, id bigint, ok boolean, blocked boolean)
LANGUAGE sql STABLE AS $$
  WITH RECURSIVE walk(g, id, depth, taken, ok, blocked) AS (
    SELECT p_after, NULL::bigint, 0, 0, false, false
    UNION ALL
    SELECT n.g, h.id, w.depth + 1, w.taken + h.ok::integer, h.ok, h.blocked
    FROM walk w
    CROSS JOIN LATERAL (
      SELECT min(j.group_key) AS g FROM effect_jobs.jobs j
      WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL AND j.group_key > w.g) n
    CROSS JOIN LATERAL effect_jobs.flow_head(p_queue, n.g, p_now, p_names, p_block_dead, p_worker) h
    WHERE n.g IS NOT NULL AND w.taken < p_want AND w.depth < p_max AND (p_upto IS NULL OR w.g < p_upto)
  )
  SELECT w.g, w.id, w.ok, w.blocked FROM walk w WHERE w.depth > 0 AND (p_upto IS NULL OR w.g <= p_upto)
$$;
-- statement-breakpoint


-- The round over the groups of `p_queue`: up to `p_free` jobs, picked (not locked) in round
-- order. The round: the groups with runnable jobs after the cursor `p_start` in group order,
-- then the ungrouped jobs, then the groups from the first up to the cursor (NULL cursor: the
-- ungrouped jobs were last, so all the groups, then the ungrouped jobs). One job per group per
-- lap (fairness); the ungrouped jobs take one per lap while groups have work, else every free
-- slot. With slots left after a lap, and groups that may start more than one, the next laps
-- take their next jobs in the same order. At most `p_max_visits` groups are looked at (groups
-- at their limit too); the next claim goes on from the cursor.
--
-- `picked` and `groups`: the jobs and their groups (NULL: ungrouped), in the order picked;
-- `cursor_at`: where the round stopped (the next claim starts after it); `limited`: a limit
-- held a runnable job back, or groups were left unvisited, so claim again soon.
CREATE FUNCTION effect_jobs.flow_round(
  p_queue text, p_free integer, p_now timestamptz, p_names text[], p_worker text,
  p_per_group integer, p_sequence boolean, p_block_dead boolean, p_done jsonb, p_start text,
  p_max_visits integer,
  OUT picked bigint[], OUT groups text[], OUT cursor_at text, OUT limited boolean
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  v_left integer := p_free;
  v_visits integer := 0;
  v_any_group boolean;
  v_n integer;
  v_blocked boolean;
  v_last text;
  v_ids bigint[];
  v_gs text[];
BEGIN
  picked := '{}';
  groups := '{}';
  cursor_at := p_start;
  limited := false;
  -- (min(), not EXISTS: min() is always read from the start of jobs_group_claim_idx)
  v_any_group := (SELECT min(j.group_key) FROM effect_jobs.jobs j
                  WHERE j.queue = p_queue AND j.state = 'available' AND j.group_key IS NOT NULL) IS NOT NULL;

  -- Lap one, first part: the groups after the cursor.
  IF v_any_group THEN
    SELECT * INTO v_ids, v_gs, v_n, v_blocked, v_last
    FROM effect_jobs.flow_round_part(p_queue, coalesce(p_start, ''), NULL, p_now, p_names, p_worker,
                                     p_per_group, p_sequence, p_block_dead, p_done, v_left, p_max_visits);
    picked := v_ids; groups := v_gs; v_visits := v_n; limited := v_blocked;
    v_left := p_free - cardinality(picked);
    IF v_n > 0 THEN cursor_at := v_last; END IF;
    IF v_left <= 0 OR v_visits >= p_max_visits THEN
      limited := limited OR v_left > 0;
      RETURN;
    END IF;
  END IF;
  -- Past the last group: the ungrouped jobs' turn (their place in the round, as the cursor says).
  v_ids := ARRAY(
    SELECT j.id FROM effect_jobs.jobs j
    WHERE j.state = 'available' AND j.queue = p_queue AND j.run_at <= p_now AND j.group_key IS NULL
      AND (p_names IS NULL OR j.name = ANY (p_names))
    ORDER BY j.priority, j.run_at, j.id
    LIMIT CASE WHEN v_any_group THEN 1 ELSE v_left END);
  IF cardinality(v_ids) > 0 OR v_any_group THEN cursor_at := NULL; END IF;
  picked := picked || v_ids;
  groups := groups || array_fill(NULL::text, ARRAY[cardinality(v_ids)]);
  v_left := p_free - cardinality(picked);
  -- Lap one, second part: the groups from the first up to the cursor.
  IF v_left > 0 AND v_any_group AND p_start IS NOT NULL THEN
    SELECT * INTO v_ids, v_gs, v_n, v_blocked, v_last
    FROM effect_jobs.flow_round_part(p_queue, '', p_start, p_now, p_names, p_worker,
                                     p_per_group, p_sequence, p_block_dead, p_done, v_left, p_max_visits - v_visits);
    picked := picked || v_ids; groups := groups || v_gs; v_visits := v_visits + v_n; limited := limited OR v_blocked;
    v_left := p_free - cardinality(picked);
    IF v_n > 0 THEN cursor_at := v_last; END IF;
    IF v_visits >= p_max_visits THEN
      limited := limited OR v_left > 0;
      RETURN;
    END IF;
  END IF;
  -- The next laps: the groups (and ungrouped jobs) that took a job in lap one, in the same
  -- order, each its next jobs within its limit; job k of every group before job k + 1 of any.
  -- (Without groups, the ungrouped jobs took every slot they could in lap one.)
  IF v_left > 0 AND v_any_group AND cardinality(picked) > 0 AND NOT p_sequence AND (p_per_group IS NULL OR p_per_group > 1) THEN
    SELECT coalesce(array_agg(x.id ORDER BY x.rn, x.pos), '{}'), coalesce(array_agg(x.g ORDER BY x.rn, x.pos), '{}')
      INTO v_ids, v_gs
    FROM (
      SELECT c.id, l.g, c.rn, l.pos FROM unnest(groups) WITH ORDINALITY AS l(g, pos)
      CROSS JOIN LATERAL (
        (SELECT j.id, row_number() OVER (ORDER BY j.priority, j.run_at, j.id) AS rn FROM effect_jobs.jobs j
         WHERE l.g IS NOT NULL AND j.queue = p_queue AND j.state = 'available' AND j.group_key = l.g
           AND j.run_at <= p_now AND (p_names IS NULL OR j.name = ANY (p_names)) AND j.id <> ALL (picked)
         ORDER BY j.priority, j.run_at, j.id
         LIMIT least(v_left, CASE WHEN p_per_group IS NULL THEN v_left
                                  ELSE greatest(0, p_per_group - 1 - (SELECT count(*) FROM effect_jobs.jobs r WHERE r.queue = p_queue AND r.group_key = l.g AND r.state = 'running'
                 AND NOT (r.locked_by = p_worker AND p_done ? r.id::text))) END))
        UNION ALL
        (SELECT j.id, row_number() OVER (ORDER BY j.priority, j.run_at, j.id) AS rn FROM effect_jobs.jobs j
         WHERE l.g IS NULL AND j.state = 'available' AND j.queue = p_queue AND j.run_at <= p_now AND j.group_key IS NULL
           AND (p_names IS NULL OR j.name = ANY (p_names)) AND j.id <> ALL (picked)
         ORDER BY j.priority, j.run_at, j.id
         LIMIT v_left)
      ) c
      ORDER BY c.rn, l.pos
      LIMIT v_left
    ) x;
    IF cardinality(v_ids) > 0 THEN
      picked := picked || v_ids;
      groups := groups || v_gs;
      cursor_at := v_gs[cardinality(v_gs)];
    END IF;
  END IF;
END $$;
-- statement-breakpoint

-- A part of lap one (see flow_round): the walk from `p_after` up to `p_upto`, the groups that
-- may start a job taken (`ids`, `gs`), with how many groups were looked at (`visits`), whether
-- one was held back (`blocked`) and the last one looked at (`last_group`).
CREATE FUNCTION effect_jobs.flow_round_part(
  p_queue text, p_after text, p_upto text, p_now timestamptz, p_names text[], p_worker text,
  p_per_group integer, p_sequence boolean, p_block_dead boolean, p_done jsonb, p_want integer, p_max integer,
  OUT ids bigint[], OUT gs text[], OUT visits integer, OUT blocked boolean, OUT last_group text
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
  IF p_sequence THEN
    SELECT coalesce(array_agg(w.id ORDER BY w.n) FILTER (WHERE w.ok), '{}'),
           coalesce(array_agg(w.g ORDER BY w.n) FILTER (WHERE w.ok), '{}'),
           count(*)::integer, coalesce(bool_or(w.blocked), false), (array_agg(w.g ORDER BY w.n DESC))[1]
      INTO ids, gs, visits, blocked, last_group
    FROM effect_jobs.flow_walk_heads(p_queue, p_after, p_upto, p_now, p_names, p_block_dead, p_worker, p_want, p_max)
         WITH ORDINALITY AS w(g, id, ok, blocked, n);
  ELSE
    SELECT * INTO ids, gs, visits, blocked, last_group
    FROM effect_jobs.flow_walk(p_queue, p_after, p_upto, p_now, p_names, p_per_group, p_worker, p_done, p_want, p_max);
  END IF;
END $$;
-- statement-breakpoint

-- The gated claim: up to p_limit jobs of p_queue, within the limits given (NULL: none),
-- returned in the order they were picked. The claimed rows are written exactly as the plain
-- claim writes them (src/internal/Store.ts, jobClaim): attempt + 1, fencing token + 1, a
-- lease on the database's clock, locked_by, buffered past the jobs that start now.
--
-- Every worker of the queue must pass the same limits (docs/flow-control.md).
CREATE FUNCTION effect_jobs.claim_gated(
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
    WHERE j.id = ANY (ARRAY(SELECT l.id FROM effect_jobs.jobs l WHERE l.id = ANY (v_picked) AND l.state = 'available'
                            FOR UPDATE SKIP LOCKED))
    RETURNING j.id, j.name, j.queue, j.priority, j.attempt, j.max_attempts, j.claim_count,
              j.args, j.metadata, j.request_id, j.trace, j.created_at
  )
  SELECT c.id::text, c.name, c.queue, c.priority, c.attempt, c.max_attempts, c.claim_count, c.args,
         NULLIF(c.metadata, '{}'::jsonb), c.request_id, c.trace, c.created_at, v_wait, v_limited, v_grant
  FROM claimed c JOIN unnest(v_picked) WITH ORDINALITY AS p(id, ord) ON p.id = c.id
  ORDER BY p.ord;
END;
$$;
-- statement-breakpoint

-- claim_gated's answer when it claims nothing: one row with only wait_ms, limited and slots set
-- when one of them says something, else no row.
CREATE FUNCTION effect_jobs.flow_nothing(p_wait integer, p_limited boolean, p_slots integer)
RETURNS TABLE (
  id text, name text, queue text, priority smallint, attempt integer, max_attempts integer,
  claim_count integer, args jsonb, metadata jsonb, request_id text, trace jsonb, created_at timestamptz,
  wait_ms integer, limited boolean, slots integer
) LANGUAGE sql IMMUTABLE AS $$
  SELECT NULL::text, NULL::text, NULL::text, NULL::smallint, NULL::integer, NULL::integer,
         NULL::integer, NULL::jsonb, NULL::jsonb, NULL::text, NULL::jsonb, NULL::timestamptz, p_wait, p_limited, p_slots
  WHERE p_wait IS NOT NULL OR p_limited OR p_slots IS NOT NULL
$$;
-- statement-breakpoint

-- The group rate windows of a claim (keys `queue-group:<characters in queue>:<queue>:<group>`,
-- src/RateLimiterStore.ts): each group's window is taken for the jobs picked of it; the jobs of
-- a group past its grant are left out, and `wait_ms` becomes the soonest such window frees.
CREATE FUNCTION effect_jobs.flow_take_group_rates(
  p_queue text, p_ids bigint[], p_groups text[], p_limit integer, p_window_ms bigint, p_wait integer,
  OUT ids bigint[], OUT gs text[], OUT wait_ms integer
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  v record;
  v_key text;
  v_granted integer;
  -- jobs kept of each group so far
  v_kept jsonb := '{}';
BEGIN
  wait_ms := p_wait;
  -- each group once, in the order its first job was picked
  FOR v IN SELECT p.g, count(*)::integer AS n FROM unnest(p_groups) WITH ORDINALITY AS p(g, ord)
           WHERE p.g IS NOT NULL GROUP BY p.g ORDER BY min(p.ord) LOOP
    v_key := 'queue-group:' || char_length(p_queue) || ':' || p_queue || ':' || v.g;
    v_granted := effect_jobs.rate_grant(v_key, v.n, p_limit, p_window_ms);
    IF v_granted < v.n THEN
      wait_ms := least(wait_ms, effect_jobs.flow_rate_wait(v_key));
    END IF;
    v_kept := jsonb_set(v_kept, ARRAY[v.g], to_jsonb(v_granted));
  END LOOP;
  SELECT coalesce(array_agg(p.id ORDER BY p.ord), '{}'), coalesce(array_agg(p.g ORDER BY p.ord), '{}')
    INTO ids, gs
  FROM (SELECT p.id, p.g, p.ord, row_number() OVER (PARTITION BY p.g ORDER BY p.ord) AS k
        FROM unnest(p_ids, p_groups) WITH ORDINALITY AS p(id, g, ord)) p
  WHERE p.g IS NULL OR p.k <= (v_kept ->> p.g)::integer;
END $$;
