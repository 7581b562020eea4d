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
-- A key used with both algorithms is two budgets (one row in each table).
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
