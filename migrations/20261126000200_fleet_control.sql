-- vyx-fleet 2/3: admin overrides, the leader lease with its fencing function, orphan and operator tables.
-- All new tables have RLS enabled and no policies: PostgREST's anon/authenticated roles see nothing; the
-- daemon connects as the owner (or a BYPASSRLS role) and is unaffected. Nothing is granted.

-- How an admin steers one user. No row = follow the subscription tier.
CREATE TABLE IF NOT EXISTS public.user_fly_app_overrides (
    user_id uuid PRIMARY KEY,
    desired text NOT NULL CHECK (desired IN ('present', 'absent', 'paused')),
    reason text,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.user_fly_app_overrides ENABLE ROW LEVEL SECURITY;

-- Leader lease. One row per lease name; `term` increases on every change of holder and fences writes.
CREATE TABLE IF NOT EXISTS public.vyx_fleet_lease (
    name text PRIMARY KEY,
    holder text,
    term bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
ALTER TABLE public.vyx_fleet_lease ENABLE ROW LEVEL SECURITY;
INSERT INTO public.vyx_fleet_lease (name, holder, term, expires_at)
VALUES ('controller', NULL, 0, NULL)
ON CONFLICT (name) DO NOTHING;

-- True iff `p_term` is the controller lease's current, unexpired term. Every controller write is guarded
-- with it (`... WHERE ... AND vyx_fleet_fence($term)`), so a deposed leader's late write changes nothing.
--
-- FOR SHARE makes the check hold until the writing transaction ends: a takeover (an UPDATE of this row)
-- waits for in-flight fenced writes to commit, and a write that starts after a takeover sees the new term.
-- Expiry is judged on the database clock, like every lease operation.
CREATE OR REPLACE FUNCTION public.vyx_fleet_fence(p_term bigint)
RETURNS boolean
LANGUAGE sql
VOLATILE
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM public.vyx_fleet_lease
        WHERE name = 'controller'
          AND term = p_term
          AND expires_at > clock_timestamp()
        FOR SHARE
    )
$$;

-- Apps seen in Fly under the managed prefix that no wanted row owns (reported, then deleted after grace).
CREATE TABLE IF NOT EXISTS public.vyx_fleet_orphans (
    app_name text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    reported_at timestamptz
);
ALTER TABLE public.vyx_fleet_orphans ENABLE ROW LEVEL SECURITY;

-- Operator flags (e.g. confirming a mass deletion the blast-radius guard held back).
CREATE TABLE IF NOT EXISTS public.vyx_fleet_settings (
    key text PRIMARY KEY,
    value text,
    updated_at timestamptz DEFAULT now()
);
ALTER TABLE public.vyx_fleet_settings ENABLE ROW LEVEL SECURITY;

-- sqlx's own bookkeeping table lands in the first schema of the search path (public on Supabase), where
-- Supabase's default privileges would let the public anon key read and write it through PostgREST.
-- The migrator runs as the table's owner, which RLS does not restrict.
DO $$
BEGIN
    IF to_regclass('_sqlx_migrations') IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', to_regclass('_sqlx_migrations'));
    END IF;
END
$$;
