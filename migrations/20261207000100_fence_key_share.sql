-- vyx-fleet 7: the fence no longer blocks lease renewal.
--
-- What the fence must guarantee: a write fenced with term T never commits after another term has been
-- granted. The term changes only on a takeover (`try_acquire` after expiry or release, or any UPDATE that
-- sets `term`); a renewal only moves `expires_at` forward for the same holder and term, so it never
-- invalidates an in-flight fenced write and has no reason to wait for one.
--
-- Before, the fence took FOR SHARE, which conflicts with every UPDATE of the lease row, renewals
-- included. A fenced write blocked on a row of `user_fly_apps` (an admin's idle transaction) then held
-- the renewal back; both carry the same `lock_timeout`, so whether leadership survived depended on
-- which of two equal timers fired first.
--
-- Now `term` is part of a key (the unique index below), so any statement that changes the term takes
-- FOR UPDATE on the row, which conflicts with the fence's FOR KEY SHARE: a takeover still waits for every
-- in-flight write fenced with the old term (and a write that starts after the takeover sees the new term,
-- because FOR KEY SHARE waits for the uncommitted takeover and re-checks `term` on the version it
-- committed). A renewal changes no key column, takes FOR NO KEY UPDATE, and does not conflict with
-- FOR KEY SHARE: it never waits on a fenced write. PostgreSQL's foreign keys rely on the same pair of
-- lock modes.
--
-- Guarded: the file applies again as a no-op.
CREATE UNIQUE INDEX IF NOT EXISTS lease_name_term_key ON vyx_fleet.lease (name, term);

CREATE OR REPLACE FUNCTION vyx_fleet.fence(p_term bigint)
RETURNS boolean
LANGUAGE sql
VOLATILE
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM vyx_fleet.lease
        WHERE name = 'controller'
          AND term = p_term
          AND expires_at > clock_timestamp()
        FOR KEY SHARE
    )
$$;
