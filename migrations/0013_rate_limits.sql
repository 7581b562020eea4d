-- effect-jobs schema, version 13: rate limits shared by every process of the database.
--
-- Two tables hold the state of Effect's `RateLimiter` algorithms (effect/persistence/RateLimiter,
-- whose memory and Redis stores are the reference for these semantics), one row per key:
--
--   rate_windows  fixed window: `tokens` taken since the window started; the window ends at
--                 `expires_at`, which every take pushes back by `refill_ms * tokens` (refill_ms
--                 = window / limit), so a window that is used up ends one window after it began;
--   rate_buckets  token bucket: `tokens` left (negative when a delayed caller reserved ahead),
--                 `refilled_at` the start of the current refill interval, `expires_at` the time
--                 the bucket is full again.
--
-- A key used with both algorithms is two budgets (one row in each table). A third table,
-- rate_adaptive (at the end of this file), holds the state of adaptive limiting.
--
-- A row whose `expires_at` has passed reads exactly as no row (an empty window; a full bucket),
-- so expired rows can be deleted at any time. Whenever a call creates a row, it first deletes up
-- to 10 expired rows of other keys of that table (oldest first, through the `expires_at` index,
-- skipping rows another session holds, so it never waits): rows are removed faster than they
-- are created, and no separate cleaner is needed. Calls on a live key touch no other row.
--
-- Times are on the database's clock (`clock_timestamp()`, read once the row is locked), never a
-- process's, so all processes agree on when a window ends. Each function is one statement for
-- its caller and takes the key's row lock: calls on one key are serialised across processes.
--
-- The store behind `RateLimiterStore.layer` calls rate_fixed_window and rate_token_bucket; the
-- worker's claim calls rate_grant on the same rate_windows keys (`queue:<name>`,
-- `queue-group:<characters in name>:<name>:<group>`: src/RateLimiterStore.ts), so a queue's rate
-- limit and a handler's `RateLimiter.consume` on that key share one budget.
-- Keys are at most 1000 characters (longer ones are refused before they get here).
CREATE TABLE effect_jobs.rate_windows (
  key text PRIMARY KEY CHECK (length(key) <= 1000),
  tokens double precision NOT NULL,
  expires_at timestamptz NOT NULL
);
-- statement-breakpoint

CREATE INDEX rate_windows_expires_idx ON effect_jobs.rate_windows (expires_at);
-- statement-breakpoint

CREATE TABLE effect_jobs.rate_buckets (
  key text PRIMARY KEY CHECK (length(key) <= 1000),
  tokens double precision NOT NULL,
  refilled_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
-- statement-breakpoint

CREATE INDEX rate_buckets_expires_idx ON effect_jobs.rate_buckets (expires_at);
-- statement-breakpoint

-- Locks the window row of `p_key` and returns its state at `locked_at`, read once the lock is
-- held: an expired window reads as empty, starting then. A missing row is created empty (after
-- pruning, see the top of this file); one deleted by a prune while this call waited for it is
-- found missing and created again (the loop). The row this call inserts is invisible to other
-- sessions until the caller commits, so no prune can take it.
CREATE FUNCTION effect_jobs.rate_window_lock(p_key text, OUT tokens double precision, OUT expires_at timestamptz,
  OUT locked_at timestamptz) LANGUAGE plpgsql AS $$
BEGIN
  LOOP
    SELECT w.tokens, w.expires_at INTO tokens, expires_at FROM effect_jobs.rate_windows w WHERE w.key = p_key FOR UPDATE;
    EXIT WHEN FOUND;
    DELETE FROM effect_jobs.rate_windows WHERE key = ANY (ARRAY(
      SELECT w.key FROM effect_jobs.rate_windows w
      WHERE w.expires_at < clock_timestamp() AND w.key <> p_key
      ORDER BY w.expires_at LIMIT 10 FOR UPDATE SKIP LOCKED));
    INSERT INTO effect_jobs.rate_windows AS w (key, tokens, expires_at) VALUES (p_key, 0, clock_timestamp())
      ON CONFLICT (key) DO NOTHING;
  END LOOP;
  locked_at := clock_timestamp();
  IF expires_at <= locked_at THEN
    tokens := 0;
    expires_at := locked_at;
  END IF;
END $$;
-- statement-breakpoint

-- `RateLimiterStore.fixedWindow`: takes `p_tokens` from the window of `p_key`, unless `p_limit`
-- is given (not NULL, not 0, as Effect's memory store reads it) and the window would then hold
-- more than `p_limit`: then nothing is taken. Returns the window's count after the take (or the
-- count it would have had, above the limit) and the milliseconds until the window ends.
CREATE FUNCTION effect_jobs.rate_fixed_window(p_key text, p_tokens double precision, p_refill_ms double precision,
  p_limit double precision, OUT count double precision, OUT ttl_ms double precision) LANGUAGE plpgsql AS $$
DECLARE
  s record;
BEGIN
  SELECT * INTO s FROM effect_jobs.rate_window_lock(p_key);
  count := s.tokens + p_tokens;
  IF p_limit IS NOT NULL AND p_limit <> 0 AND count > p_limit THEN
    ttl_ms := extract(epoch FROM s.expires_at - s.locked_at) * 1000;
    RETURN;
  END IF;
  UPDATE effect_jobs.rate_windows
    SET tokens = count, expires_at = s.expires_at + p_refill_ms * p_tokens * interval '1 millisecond'
    WHERE key = p_key
    RETURNING extract(epoch FROM rate_windows.expires_at - s.locked_at) * 1000 INTO ttl_ms;
END $$;
-- statement-breakpoint

-- For the worker's claim: takes up to `want` whole tokens from the fixed window of `key` and
-- returns how many it took: least(want, what is left), 0 when the window is used up (or when
-- `want`, `lim` or `window_ms` is not positive). The window is `RateLimiter.consume`'s with
-- `limit: lim` and `window: window_ms` (refill interval window_ms / lim): called with the same
-- limit and window, the two count against one budget. Same rows and rules as rate_fixed_window.
CREATE FUNCTION effect_jobs.rate_grant(key text, want integer, lim integer, window_ms bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  s record;
  granted integer;
BEGIN
  IF want IS NULL OR lim IS NULL OR window_ms IS NULL OR want <= 0 OR lim <= 0 OR window_ms <= 0 THEN
    RETURN 0;
  END IF;
  SELECT * INTO s FROM effect_jobs.rate_window_lock(rate_grant.key);
  granted := greatest(0, least(want, floor(lim - s.tokens)))::integer;
  IF granted > 0 THEN
    UPDATE effect_jobs.rate_windows w
      SET tokens = s.tokens + granted,
          expires_at = s.expires_at + (window_ms::double precision / lim) * granted * interval '1 millisecond'
      WHERE w.key = rate_grant.key;
  END IF;
  RETURN granted;
END $$;
-- statement-breakpoint

-- `RateLimiterStore.tokenBucket`: refills the bucket of `p_key` (`p_limit` tokens, one more every
-- `p_refill_ms`), then takes `p_tokens` if that leaves it at 0 or more, or if `p_overflow` (a
-- delayed caller reserving ahead: the count goes negative). Returns the count after the take
-- (negative when it did not fit, whether or not it was stored) and the milliseconds since the
-- current refill interval started. An absent or expired row is a full bucket; as in Effect's
-- stores, a bucket found full restarts its interval now. Rows are locked, created and pruned
-- as by rate_window_lock.
CREATE FUNCTION effect_jobs.rate_token_bucket(p_key text, p_tokens double precision, p_limit double precision,
  p_refill_ms double precision, p_overflow boolean, OUT remaining double precision, OUT elapsed_ms double precision)
LANGUAGE plpgsql AS $$
DECLARE
  v_tokens double precision;
  v_refilled timestamptz;
  v_expires timestamptz;
  v_now timestamptz;
  v_add double precision;
BEGIN
  LOOP
    SELECT b.tokens, b.refilled_at, b.expires_at INTO v_tokens, v_refilled, v_expires
      FROM effect_jobs.rate_buckets b WHERE b.key = p_key FOR UPDATE;
    EXIT WHEN FOUND;
    DELETE FROM effect_jobs.rate_buckets WHERE key = ANY (ARRAY(
      SELECT b.key FROM effect_jobs.rate_buckets b
      WHERE b.expires_at < clock_timestamp() AND b.key <> p_key
      ORDER BY b.expires_at LIMIT 10 FOR UPDATE SKIP LOCKED));
    INSERT INTO effect_jobs.rate_buckets AS b (key, tokens, refilled_at, expires_at)
      VALUES (p_key, p_limit, clock_timestamp(), clock_timestamp()) ON CONFLICT (key) DO NOTHING;
  END LOOP;
  v_now := clock_timestamp();
  IF v_expires <= v_now THEN
    v_tokens := p_limit;
    v_refilled := v_now;
  END IF;
  v_add := floor(extract(epoch FROM v_now - v_refilled) * 1000 / p_refill_ms);
  IF v_add > 0 THEN
    v_tokens := least(p_limit, v_tokens + v_add);
    v_refilled := v_refilled + v_add * p_refill_ms * interval '1 millisecond';
  END IF;
  IF v_tokens >= p_limit THEN
    v_refilled := v_now;
  END IF;
  remaining := v_tokens - p_tokens;
  IF remaining >= 0 OR p_overflow THEN
    v_tokens := remaining;
  END IF;
  -- Full again ceil(limit - tokens) refill intervals after the current one started (the TTL
  -- of the Redis store's keys).
  UPDATE effect_jobs.rate_buckets b
    SET tokens = v_tokens, refilled_at = v_refilled,
        expires_at = v_refilled + ceil(p_limit - v_tokens) * p_refill_ms * interval '1 millisecond'
    WHERE b.key = p_key;
  elapsed_ms := greatest(0, extract(epoch FROM v_now - v_refilled) * 1000);
END $$;
-- statement-breakpoint

-- Adaptive limiting (`RateLimiterStore.adaptiveConsume` / `adaptiveFeedback`): a limit learned
-- from `429` responses, one row per key, ported step by step from the Redis store's Lua scripts.
--   phase         'cooldown' (wait until `cooldown_until`), 'learning' (count the tokens used
--                 until the next 429), 'learned' (a fixed window of `learned_limit` tokens per
--                 `learned_window_ms`, counted in `observed_tokens` / `cooldown_until`);
--   epoch         bumped on each move to learning and to learned, so feedback for a request
--                 made in an earlier phase is ignored.
-- Times here are milliseconds since 1970 on the database's clock, as float8 (the scripts'
-- arithmetic, unchanged). A row past `expires_ms` is no state at all ("inactive"); it is pruned
-- as the other tables' rows are, when a call creates a row.
CREATE TABLE effect_jobs.rate_adaptive (
  key text PRIMARY KEY CHECK (length(key) <= 1000),
  phase text NOT NULL CHECK (phase IN ('cooldown', 'learning', 'learned')),
  epoch integer NOT NULL,
  cooldown_until double precision NOT NULL,
  learning_started_at double precision NOT NULL,
  observed_tokens double precision NOT NULL,
  learned_limit double precision NOT NULL,
  learned_window_ms double precision NOT NULL,
  expires_ms double precision NOT NULL
);
-- statement-breakpoint

CREATE INDEX rate_adaptive_expires_idx ON effect_jobs.rate_adaptive (expires_ms);
-- statement-breakpoint

-- `adaptiveConsume`: the delay before a request (ms), the epoch to report its response with, and
-- the phase seen. No state (or expired): 0, 0, 'inactive', and nothing is written.
CREATE FUNCTION effect_jobs.rate_adaptive_consume(p_key text, p_tokens double precision,
  p_fallback_window_ms double precision, p_grace_ms double precision,
  OUT delay_ms double precision, OUT epoch integer, OUT phase text) LANGUAGE plpgsql AS $$
DECLARE
  s effect_jobs.rate_adaptive;
  now_ms double precision;
  refill_ms double precision;
  observed double precision;
  until_ms double precision;
  waited double precision;
BEGIN
  SELECT * INTO s FROM effect_jobs.rate_adaptive a WHERE a.key = p_key FOR UPDATE;
  now_ms := extract(epoch FROM clock_timestamp()) * 1000;
  delay_ms := 0;
  IF NOT FOUND OR s.expires_ms <= now_ms THEN
    epoch := 0;
    phase := 'inactive';
    RETURN;
  END IF;
  epoch := s.epoch;
  phase := s.phase;
  IF s.phase = 'cooldown' THEN
    IF s.cooldown_until > now_ms THEN
      delay_ms := ceil(s.cooldown_until - now_ms);
      RETURN;
    END IF;
    -- The cooldown is over: learn how much the other side takes, starting with this request.
    epoch := s.epoch + 1;
    phase := 'learning';
    UPDATE effect_jobs.rate_adaptive a
      SET phase = 'learning', epoch = s.epoch + 1, cooldown_until = 0, learning_started_at = now_ms,
          observed_tokens = p_tokens, learned_limit = 0, learned_window_ms = 0,
          expires_ms = now_ms + p_fallback_window_ms + p_grace_ms
      WHERE a.key = p_key;
  ELSIF s.phase = 'learning' THEN
    UPDATE effect_jobs.rate_adaptive a SET observed_tokens = s.observed_tokens + p_tokens WHERE a.key = p_key;
  ELSIF s.phase = 'learned' THEN
    -- The fixed window of rate_fixed_window, in delay mode, with the learned limit and window.
    refill_ms := s.learned_window_ms / s.learned_limit;
    observed := s.observed_tokens;
    until_ms := s.cooldown_until;
    IF until_ms <= now_ms THEN
      observed := 0;
      until_ms := now_ms;
    END IF;
    observed := observed + p_tokens;
    until_ms := until_ms + refill_ms * p_tokens;
    waited := floor((observed - 1) / s.learned_limit) * s.learned_window_ms - (observed * refill_ms - (until_ms - now_ms));
    UPDATE effect_jobs.rate_adaptive a SET observed_tokens = observed, cooldown_until = until_ms WHERE a.key = p_key;
    IF waited > 0 THEN
      delay_ms := ceil(waited);
    END IF;
  END IF;
END $$;
-- statement-breakpoint

-- `adaptiveFeedback` for a 429 response (the caller skips any other), `p_retry_after_ms` already
-- clamped to 1 ms .. `p_max_window_ms`: starts or extends a cooldown, or, after learning, turns
-- the tokens accepted before the 429 into the learned limit. Feedback of another epoch is ignored.
CREATE FUNCTION effect_jobs.rate_adaptive_feedback(p_key text, p_epoch integer, p_tokens double precision,
  p_retry_after_ms double precision, p_grace_ms double precision, p_max_window_ms double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  s effect_jobs.rate_adaptive;
  now_ms double precision;
  cooldown_ms double precision;
  accepted double precision;
  window_ms double precision;
BEGIN
  LOOP
    SELECT * INTO s FROM effect_jobs.rate_adaptive a WHERE a.key = p_key FOR UPDATE;
    now_ms := extract(epoch FROM clock_timestamp()) * 1000;
    cooldown_ms := now_ms + p_retry_after_ms;
    EXIT WHEN FOUND AND s.expires_ms > now_ms;
    -- No state: only a response to a request made without any (epoch 0) starts a cooldown.
    IF p_epoch <> 0 THEN
      RETURN;
    END IF;
    IF FOUND THEN -- expired: the same as no row
      UPDATE effect_jobs.rate_adaptive a
        SET phase = 'cooldown', epoch = 0, cooldown_until = cooldown_ms, learning_started_at = 0,
            observed_tokens = 0, learned_limit = 0, learned_window_ms = 0, expires_ms = cooldown_ms + p_grace_ms
        WHERE a.key = p_key;
      RETURN;
    END IF;
    DELETE FROM effect_jobs.rate_adaptive WHERE key = ANY (ARRAY(
      SELECT a.key FROM effect_jobs.rate_adaptive a
      WHERE a.expires_ms < now_ms AND a.key <> p_key
      ORDER BY a.expires_ms LIMIT 10 FOR UPDATE SKIP LOCKED));
    INSERT INTO effect_jobs.rate_adaptive AS a (key, phase, epoch, cooldown_until, learning_started_at,
      observed_tokens, learned_limit, learned_window_ms, expires_ms)
      VALUES (p_key, 'cooldown', 0, cooldown_ms, 0, 0, 0, 0, cooldown_ms + p_grace_ms)
      ON CONFLICT (key) DO NOTHING;
    IF FOUND THEN
      RETURN;
    END IF;
    -- Another session created it meanwhile: judge against its row.
  END LOOP;
  IF s.epoch <> p_epoch THEN
    RETURN;
  END IF;
  IF s.phase = 'cooldown' THEN
    cooldown_ms := greatest(s.cooldown_until, cooldown_ms);
    UPDATE effect_jobs.rate_adaptive a SET cooldown_until = cooldown_ms, expires_ms = cooldown_ms + p_grace_ms
      WHERE a.key = p_key;
    RETURN;
  END IF;
  IF s.phase = 'learning' THEN
    accepted := s.observed_tokens - p_tokens;
    IF accepted > 0 THEN
      window_ms := least(greatest(now_ms - s.learning_started_at + p_retry_after_ms, 1), p_max_window_ms);
      UPDATE effect_jobs.rate_adaptive a
        SET phase = 'learned', epoch = s.epoch + 1, cooldown_until = s.learning_started_at + window_ms,
            observed_tokens = accepted, learned_limit = accepted, learned_window_ms = window_ms,
            expires_ms = now_ms + window_ms + p_grace_ms
        WHERE a.key = p_key;
      RETURN;
    END IF;
  END IF;
  -- Learned (or learning with nothing accepted): back to a cooldown; the epoch stays.
  UPDATE effect_jobs.rate_adaptive a
    SET phase = 'cooldown', cooldown_until = cooldown_ms, learning_started_at = 0, observed_tokens = 0,
        learned_limit = 0, learned_window_ms = 0, expires_ms = cooldown_ms + p_grace_ms
    WHERE a.key = p_key;
END $$;
