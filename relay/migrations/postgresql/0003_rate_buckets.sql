-- The open routes' rate limits, shared by every replica (relay/pg_ratelimit.py).
-- One row per token bucket: a client address's on one route, or every client's together
-- ('*'). A bucket full again is worth no row (a missing one is a full one), so rows whose
-- full_at has passed are deleted now and then (a statement of their own, never inside a
-- check: a check locks its rows in one order, peer then total, and so never deadlocks).
CREATE TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    stamp DOUBLE PRECISION NOT NULL,
    full_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_buckets_full_at ON rate_buckets (full_at);

-- Take a token from p_key's bucket (p_burst tokens, refilled at p_rate a second, on the
-- database's clock so that replicas agree): 0 when one was taken, else the seconds
-- until there is one. The row is locked for the statement's transaction.
CREATE FUNCTION rate_take(p_key TEXT, p_rate DOUBLE PRECISION, p_burst DOUBLE PRECISION,
                          p_now DOUBLE PRECISION) RETURNS DOUBLE PRECISION
LANGUAGE plpgsql AS $$
DECLARE
    t DOUBLE PRECISION;
    wait DOUBLE PRECISION := 0;
BEGIN
    INSERT INTO rate_buckets (key, tokens, stamp, full_at)
    VALUES (p_key, p_burst, p_now, p_now) ON CONFLICT (key) DO NOTHING;
    SELECT LEAST(p_burst, tokens + GREATEST(0, p_now - stamp) * p_rate) INTO t
    FROM rate_buckets WHERE key = p_key FOR UPDATE;
    IF t >= 1 THEN
        t := t - 1;
    ELSIF p_rate > 0 THEN
        wait := (1 - t) / p_rate;
    ELSE
        wait := 'Infinity';
    END IF;
    UPDATE rate_buckets SET tokens = t, stamp = GREATEST(stamp, p_now),
        full_at = CASE WHEN p_rate > 0 THEN p_now + (p_burst - t) / p_rate
                       ELSE 'Infinity' END
    WHERE key = p_key;
    RETURN wait;
END $$;

-- A request through the per-client bucket (when p_peer_burst > 0), then the bucket of
-- every client (when p_total_burst > 0): 0 to let it through, else the seconds to wait.
-- A request the total refuses gives the client's token back (refused for everyone's
-- sake, not the client's), as relay/ratelimit.py does in memory.
CREATE FUNCTION rate_check(p_peer TEXT, p_peer_rate DOUBLE PRECISION,
                           p_peer_burst DOUBLE PRECISION, p_total TEXT,
                           p_total_rate DOUBLE PRECISION, p_total_burst DOUBLE PRECISION)
RETURNS DOUBLE PRECISION
LANGUAGE plpgsql AS $$
DECLARE
    now_s DOUBLE PRECISION := extract(epoch FROM clock_timestamp());
    wait DOUBLE PRECISION;
BEGIN
    IF p_peer_burst > 0 THEN
        wait := rate_take(p_peer, p_peer_rate, p_peer_burst, now_s);
        IF wait > 0 THEN
            RETURN wait;
        END IF;
    END IF;
    IF p_total_burst > 0 THEN
        wait := rate_take(p_total, p_total_rate, p_total_burst, now_s);
        IF wait > 0 THEN
            IF p_peer_burst > 0 THEN
                UPDATE rate_buckets SET tokens = LEAST(p_peer_burst, tokens + 1)
                WHERE key = p_peer;
            END IF;
            RETURN wait;
        END IF;
    END IF;
    RETURN 0;
END $$;
