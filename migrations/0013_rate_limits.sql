-- effect-jobs schema, version 13: rate limits shared by every process on the database.
--
-- The state of Effect's `RateLimiter` (effect/persistence) kept in Postgres, for the store of
-- src/RateLimiterStore.ts, and `rate_grant`, the same fixed window for the worker's claim: a
-- queue's rate limit and a handler's `RateLimiter.consume` on the same key count against one
-- budget. The functions reproduce Effect's memory store (and its Redis store's Lua scripts)
-- step by step; test/rate-limiter.test.ts compares them call by call.
--
-- Times are milliseconds since 1970 as float8, read from the database's clock
-- (`clock_timestamp()`, after the key's row is locked): every process judges a window on one
-- clock, and a caller that waited for the lock sees the time at which it got it. float8, not
-- timestamptz, because the refill interval is `window / limit` and need not be a whole number
-- of microseconds (1 second / 3); the arithmetic is the JavaScript stores' own (IEEE doubles).
-- Each function takes an optional last argument `now_ms` that replaces the clock: for tests
-- only (the store never passes it).
--
-- Each function is one statement for its caller, atomic: the key's row is locked (created
-- first if missing) for the rest of the caller's transaction, so callers of one key queue up
-- and none sees a half-done update. Keys of different algorithms are kept apart (two tables):
-- a key used with both is two budgets.
--
-- Expired rows: a row that has expired says nothing an absent row would not (a fixed window
-- that is over, a token bucket that has refilled to full), so it may be deleted at any time.
-- Whenever a call creates a row, it deletes up to two expired rows of other keys (SKIP LOCKED,
-- through the `*_expires_idx` index): the tables hold at most a couple of rows more than the
-- most keys ever live at once. The indexes also serve any other pruner
-- (`DELETE ... WHERE ends_ms < <now>`).
CREATE TABLE effect_jobs.rate_windows (
  key      text PRIMARY KEY,
  -- Tokens taken in the current window (more than the limit after delay-mode reservations).
  count    float8 NOT NULL,
  -- When the window ends: its start plus `count` refill intervals; '-Infinity' for a new row.
  ends_ms  float8 NOT NULL
);
-- statement-breakpoint

CREATE INDEX rate_windows_expires_idx ON effect_jobs.rate_windows (ends_ms);
-- statement-breakpoint

CREATE TABLE effect_jobs.rate_buckets (
  key          text PRIMARY KEY,
  -- Tokens left (negative after delay-mode overdrafts).
  tokens       float8 NOT NULL,
  -- The start of the current refill interval.
  refilled_ms  float8 NOT NULL,
  -- When the bucket is full again: from then on the row is the same as no row.
  expires_ms   float8 NOT NULL
);
-- statement-breakpoint

CREATE INDEX rate_buckets_expires_idx ON effect_jobs.rate_buckets (expires_ms);
-- statement-breakpoint

-- The database's clock, in milliseconds since 1970.
CREATE FUNCTION effect_jobs.rate_clock_ms() RETURNS float8 LANGUAGE sql VOLATILE AS $$
  SELECT extract(epoch FROM clock_timestamp())::float8 * 1000
$$;
-- statement-breakpoint

-- The fixed window of `p_key`, locked; inserted as a new (already ended) window if missing.
-- `created` says whether this call inserted it. The loop: a row deleted by a pruner between the
-- two statements is inserted again.
CREATE FUNCTION effect_jobs.rate_window_lock(p_key text, OUT w effect_jobs.rate_windows, OUT created boolean)
LANGUAGE plpgsql AS $$
BEGIN
  created := false;
  LOOP
    SELECT * INTO w FROM effect_jobs.rate_windows t WHERE t.key = p_key FOR UPDATE;
    IF FOUND THEN RETURN; END IF;
    INSERT INTO effect_jobs.rate_windows (key, count, ends_ms) VALUES (p_key, 0, '-Infinity')
      ON CONFLICT (key) DO NOTHING;
    created := FOUND;
  END LOOP;
END;
$$;
-- statement-breakpoint

CREATE FUNCTION effect_jobs.rate_bucket_lock(p_key text, OUT b effect_jobs.rate_buckets, OUT created boolean)
LANGUAGE plpgsql AS $$
BEGIN
  created := false;
  LOOP
    SELECT * INTO b FROM effect_jobs.rate_buckets t WHERE t.key = p_key FOR UPDATE;
    IF FOUND THEN RETURN; END IF;
    INSERT INTO effect_jobs.rate_buckets (key, tokens, refilled_ms, expires_ms) VALUES (p_key, 0, '-Infinity', '-Infinity')
      ON CONFLICT (key) DO NOTHING;
    created := FOUND;
  END LOOP;
END;
$$;
-- statement-breakpoint

-- Deletes up to two expired rows of keys other than `p_key` (see the top of this file).
CREATE FUNCTION effect_jobs.rate_prune(p_key text, p_now_ms float8) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM effect_jobs.rate_windows WHERE key IN (
    SELECT t.key FROM effect_jobs.rate_windows t WHERE t.ends_ms <= p_now_ms AND t.key <> p_key
    ORDER BY t.ends_ms LIMIT 2 FOR UPDATE SKIP LOCKED);
  DELETE FROM effect_jobs.rate_buckets WHERE key IN (
    SELECT t.key FROM effect_jobs.rate_buckets t WHERE t.expires_ms <= p_now_ms AND t.key <> p_key
    ORDER BY t.expires_ms LIMIT 2 FOR UPDATE SKIP LOCKED);
END;
$$;
-- statement-breakpoint

-- `RateLimiterStore.fixedWindow` (Effect's memory store, step by step): takes `p_tokens` from the
-- window of `p_key` and returns the count after taking them and the time left in the window
-- (ms). With a limit (not NULL nor 0, as the memory store reads it), a take that would pass it
-- takes nothing and returns what the count would have been. Each token taken pushes the end of
-- the window out by `p_refill_ms` (window / limit), so a full window lasts `window`, and
-- delay-mode reservations past the limit (no limit given) keep the window going.
CREATE FUNCTION effect_jobs.rate_fixed_window(
  p_key text, p_tokens float8, p_refill_ms float8, p_limit float8, p_now_ms float8 DEFAULT NULL,
  OUT count float8, OUT ttl_ms float8
) LANGUAGE plpgsql AS $$
DECLARE
  locked record;
  w effect_jobs.rate_windows;
  now_ms float8;
BEGIN
  locked := effect_jobs.rate_window_lock(p_key);
  w := locked.w;
  now_ms := coalesce(p_now_ms, effect_jobs.rate_clock_ms());
  IF locked.created THEN PERFORM effect_jobs.rate_prune(p_key, now_ms); END IF;
  IF w.ends_ms <= now_ms THEN -- the window is over (or new): one starts now
    w.count := 0;
    w.ends_ms := now_ms;
  END IF;
  IF p_limit IS NOT NULL AND p_limit <> 0 AND w.count + p_tokens > p_limit THEN
    count := w.count + p_tokens;
    ttl_ms := w.ends_ms - now_ms;
    RETURN;
  END IF;
  UPDATE effect_jobs.rate_windows t SET count = w.count + p_tokens, ends_ms = w.ends_ms + p_refill_ms * p_tokens
    WHERE t.key = p_key
    RETURNING t.count, t.ends_ms - now_ms INTO count, ttl_ms;
END;
$$;
-- statement-breakpoint

-- `RateLimiterStore.tokenBucket` (Effect's memory store, step by step): refills the bucket of
-- `p_key` (one token per `p_refill_ms`, up to `p_limit`; a missing or expired bucket is full),
-- takes `p_tokens`, and returns the tokens left after taking them (negative: not enough; the
-- take is kept only with `p_allow_overflow`) and the time since the current refill interval
-- began (ms; 0 when the bucket was full).
CREATE FUNCTION effect_jobs.rate_token_bucket(
  p_key text, p_tokens float8, p_limit float8, p_refill_ms float8, p_allow_overflow boolean,
  p_now_ms float8 DEFAULT NULL,
  OUT remaining float8, OUT elapsed_ms float8
) LANGUAGE plpgsql AS $$
DECLARE
  locked record;
  b effect_jobs.rate_buckets;
  now_ms float8;
  refills float8;
BEGIN
  locked := effect_jobs.rate_bucket_lock(p_key);
  b := locked.b;
  now_ms := coalesce(p_now_ms, effect_jobs.rate_clock_ms());
  IF locked.created THEN PERFORM effect_jobs.rate_prune(p_key, now_ms); END IF;
  IF b.expires_ms <= now_ms THEN -- full again (or new)
    b.tokens := p_limit;
    b.refilled_ms := now_ms;
  END IF;
  refills := floor((now_ms - b.refilled_ms) / p_refill_ms);
  IF refills > 0 THEN
    b.tokens := least(p_limit, b.tokens + refills);
    b.refilled_ms := b.refilled_ms + refills * p_refill_ms;
  END IF;
  IF b.tokens >= p_limit THEN
    b.refilled_ms := now_ms;
  END IF;
  remaining := b.tokens - p_tokens;
  IF p_allow_overflow OR remaining >= 0 THEN
    b.tokens := remaining;
  END IF;
  elapsed_ms := greatest(0, now_ms - b.refilled_ms);
  -- Full again after ceil(limit - tokens) refills from the current interval's start (the TTL of
  -- the Redis store's keys).
  UPDATE effect_jobs.rate_buckets t
    SET tokens = b.tokens, refilled_ms = b.refilled_ms, expires_ms = b.refilled_ms + ceil(p_limit - b.tokens) * p_refill_ms
    WHERE t.key = p_key;
END;
$$;
-- statement-breakpoint

-- For the worker's claim: takes as many of `want` tokens as the fixed window of `key` has left
-- (`least(want, remaining)`) and returns how many it took: 0 when the window is exhausted (or
-- `want` or `lim` is not positive; nothing is written then). The window is the one of
-- `rate_fixed_window`, with the refill interval `RateLimiter.consume` uses (greatest(window, 1 ms)
-- / limit): `rate_grant(k, n, 100, 1000)` and `consume({ key: k, limit: 100, window: "1 second" })`
-- share one budget (call them with the same limit and window). Queue keys: `queue:<name>` and
-- `queue-group:<length of name>:<name>:<group>` (src/RateLimiterStore.ts).
CREATE FUNCTION effect_jobs.rate_grant(key text, want integer, lim integer, window_ms bigint, now_ms float8 DEFAULT NULL)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  locked record;
  w effect_jobs.rate_windows;
  at_ms float8;
  granted integer;
BEGIN
  IF want IS NULL OR lim IS NULL OR window_ms IS NULL OR want <= 0 OR lim <= 0 THEN RETURN 0; END IF;
  locked := effect_jobs.rate_window_lock(rate_grant.key);
  w := locked.w;
  at_ms := coalesce(rate_grant.now_ms, effect_jobs.rate_clock_ms());
  IF locked.created THEN PERFORM effect_jobs.rate_prune(rate_grant.key, at_ms); END IF;
  IF w.ends_ms <= at_ms THEN
    w.count := 0;
    w.ends_ms := at_ms;
  END IF;
  granted := greatest(0, least(want::float8, floor(lim - w.count)))::integer;
  IF granted > 0 THEN
    UPDATE effect_jobs.rate_windows t
      SET count = w.count + granted, ends_ms = w.ends_ms + (greatest(window_ms, 1)::float8 / lim) * granted
      WHERE t.key = rate_grant.key;
  END IF;
  RETURN granted;
END;
$$;
