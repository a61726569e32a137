-- vyx-fleet 4: the controller's own tables move out of `public` into the schema `vyx_fleet`.
--
-- Why: Supabase's API (PostgREST) serves `public`, and `service_role`, whose key every user app holds,
-- bypasses RLS and has Supabase's default grants there. A compromised user app could have held the lease
-- forever, switched the blast-radius breaker off, or marked any user `absent`. `vyx_fleet` is not in the
-- API's exposed schemas, and `anon`, `authenticated` and `service_role` get no privileges on it or in it.
-- Vyx's own tables (`user_fly_apps`, `user_fly_app_events`) stay in `public`.
--
-- Tables move with their rows, indexes, triggers and RLS (ALTER TABLE ... SET SCHEMA); nothing is copied.
-- Every statement is guarded, so the file applies to a database migrated by 1-3 and again as a no-op.

CREATE SCHEMA IF NOT EXISTS vyx_fleet;

DO $$
DECLARE
    m record;
BEGIN
    FOR m IN
        SELECT * FROM (VALUES
            ('user_fly_app_overrides', 'user_fly_app_overrides'),
            ('vyx_fleet_lease', 'lease'),
            ('vyx_fleet_orphans', 'orphans'),
            ('vyx_fleet_settings', 'settings')
        ) AS t (old_name, new_name)
    LOOP
        IF to_regclass(format('public.%I', m.old_name)) IS NULL THEN
            CONTINUE;
        END IF;
        IF to_regclass(format('vyx_fleet.%I', m.new_name)) IS NULL THEN
            EXECUTE format('ALTER TABLE public.%I SET SCHEMA vyx_fleet', m.old_name);
            IF m.old_name <> m.new_name THEN
                EXECUTE format('ALTER TABLE vyx_fleet.%I RENAME TO %I', m.old_name, m.new_name);
            END IF;
        ELSE
            -- Both exist: an earlier release's file was applied again by hand after the move. Rows
            -- already in `vyx_fleet` win; anything only in the stray copy is kept; the copy goes.
            EXECUTE format(
                'INSERT INTO vyx_fleet.%I SELECT * FROM public.%I ON CONFLICT DO NOTHING',
                m.new_name, m.old_name);
            EXECUTE format('DROP TABLE public.%I CASCADE', m.old_name);
        END IF;
    END LOOP;
END
$$;

-- A database that never ran 1-3 in this shape (or lost a table) still ends up complete.
CREATE TABLE IF NOT EXISTS vyx_fleet.user_fly_app_overrides (
    user_id uuid PRIMARY KEY,
    desired text NOT NULL CHECK (desired IN ('present', 'absent', 'paused')),
    reason text,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS vyx_fleet.lease (
    name text PRIMARY KEY,
    holder text,
    term bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
INSERT INTO vyx_fleet.lease (name, holder, term, expires_at)
VALUES ('controller', NULL, 0, NULL)
ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS vyx_fleet.orphans (
    app_name text PRIMARY KEY,
    first_seen_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    reported_at timestamptz
);
CREATE TABLE IF NOT EXISTS vyx_fleet.settings (
    key text PRIMARY KEY,
    value text,
    updated_at timestamptz DEFAULT now()
);

-- The blast-radius breaker (invariant 6), persisted so it sees deletions across passes and replicas.
-- Every deletion the controller performed (deprovisioned app or orphan), for the sliding window.
CREATE TABLE IF NOT EXISTS vyx_fleet.deletions (
    app_name text NOT NULL,
    user_id uuid,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS deletions_deleted_at_idx ON vyx_fleet.deletions (deleted_at);

-- The deletions the breaker holds back, written when it trips. `confirm-deletions` (or the dashboard)
-- stamps `confirmed_at`/`confirmed_by` on exactly these rows; a confirmation lets through these apps and
-- nothing else, until each is deleted (its row removed) or the confirmation expires.
CREATE TABLE IF NOT EXISTS vyx_fleet.held_deletions (
    app_name text PRIMARY KEY,
    user_id uuid,
    kind text NOT NULL CHECK (kind IN ('deprovision', 'orphan')),
    held_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    confirmed_by text
);

-- The fence and the notify trigger function move too: functions in `public` are callable through the
-- API's RPC endpoint. The fence's body names the lease table, so it is recreated rather than moved.
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
        FOR SHARE
    )
$$;
DROP FUNCTION IF EXISTS public.vyx_fleet_fence(bigint);

CREATE OR REPLACE FUNCTION vyx_fleet.notify()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    BEGIN
        IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id) THEN
            PERFORM pg_notify('vyx_fleet', OLD.user_id::text);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            PERFORM pg_notify('vyx_fleet', NEW.user_id::text);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'vyx_fleet.notify on %.%: % (ignored)', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

-- Re-pointing the billing table's trigger takes a SHARE ROW EXCLUSIVE lock on `user_subscriptions`; a
-- long billing transaction must not make the migration queue every billing write behind it. Fail fast
-- instead (the migrator retries).
SET LOCAL lock_timeout = '5s';
DROP TRIGGER IF EXISTS vyx_fleet_notify ON public.user_subscriptions;
CREATE TRIGGER vyx_fleet_notify
    AFTER INSERT OR UPDATE OR DELETE ON public.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION vyx_fleet.notify();
DROP TRIGGER IF EXISTS vyx_fleet_notify ON vyx_fleet.user_fly_app_overrides;
CREATE TRIGGER vyx_fleet_notify
    AFTER INSERT OR UPDATE OR DELETE ON vyx_fleet.user_fly_app_overrides
    FOR EACH ROW EXECUTE FUNCTION vyx_fleet.notify();
DROP FUNCTION IF EXISTS public.vyx_fleet_notify();

-- RLS stays on as a second wall (a role someone later grants by mistake still sees no rows).
ALTER TABLE vyx_fleet.user_fly_app_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.lease ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.orphans ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.deletions ENABLE ROW LEVEL SECURITY;
ALTER TABLE vyx_fleet.held_deletions ENABLE ROW LEVEL SECURITY;

-- No privileges for the API roles: moved tables keep the grants they had in `public` (Supabase grants
-- every public table to all three), so they are revoked explicitly, and PUBLIC loses the functions.
REVOKE ALL ON SCHEMA vyx_fleet FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA vyx_fleet FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vyx_fleet FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON SCHEMA vyx_fleet FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA vyx_fleet FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA vyx_fleet FROM %I', r);
            EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA vyx_fleet FROM %I', r);
        END IF;
    END LOOP;
END
$$;
