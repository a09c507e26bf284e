-- A relay on PostgreSQL records every request's nonce here (relay/pg_nonces.py), not only
-- the future-dated ones a SQLite relay writes: the sweeper's DELETE of the expired ones,
-- on every replica every sweep, reads this index instead of the whole table.
CREATE INDEX nonces_expires_at ON nonces (expires_at);
