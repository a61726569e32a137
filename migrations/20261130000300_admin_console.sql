-- vyx-fleet 5: the admin console (issue 8): the app table as a view for Supabase Studio, and the alert
-- state both replicas share.
--
-- The view is the dashboard's own source (src/db/console.rs reads it), so the page and Studio show the
-- same columns by construction. `security_invoker = true`: whoever queries it needs privileges on the
-- tables under it (PostgreSQL 15+), so it can never widen what a role sees. It lives in `vyx_fleet`,
-- which PostgREST does not serve, and the API roles get nothing on it.

CREATE OR REPLACE VIEW vyx_fleet.app_console
WITH (security_invoker = true) AS
SELECT
    a.id AS row_id,
    a.user_id,
    a.fly_app_name AS app_name,
    coalesce(p.email, u.email) AS email,
    coalesce(s.tier, 'free') AS tier,
    s.status AS subscription_status,
    o.desired AS override,
    o.created_by AS override_by,
    a.status,
    coalesce(a.health_status, 'unknown') AS health,
    a.docker_image AS image,
    -- The tag (or digest) alone: what an admin compares across rows.
    CASE
        WHEN a.docker_image LIKE '%@%' THEN split_part(a.docker_image, '@', 2)
        WHEN regexp_replace(a.docker_image, '^.*/', '') LIKE '%:%'
            THEN regexp_replace(regexp_replace(a.docker_image, '^.*/', ''), '^[^:]*:', '')
        ELSE NULL
    END AS image_tag,
    a.region,
    a.cpu_count,
    a.memory_mb,
    a.monthly_cost_estimate_usd::float8 AS monthly_cost_usd,
    a.last_error_kind,
    a.error_message,
    coalesce(a.retry_count, 0) AS retry_count,
    a.next_attempt_at,
    a.updated_at AS last_change,
    a.deleted_at
FROM public.user_fly_apps a
LEFT JOIN public.user_profiles p ON p.id = a.user_id
LEFT JOIN auth.users u ON u.id = a.user_id
LEFT JOIN public.user_subscriptions s ON s.user_id = a.user_id
LEFT JOIN vyx_fleet.user_fly_app_overrides o ON o.user_id = a.user_id;

COMMENT ON VIEW vyx_fleet.app_console IS
    'vyx-fleet admin console: one row per user app, the same columns as the dashboard table';

-- Alerts (src/alerts.rs): one row per alert kind. Both replicas evaluate the conditions; the conditional
-- upserts on this table decide which replica sends each start/clear message, so none is sent twice.
CREATE TABLE IF NOT EXISTS vyx_fleet.alerts (
    kind text PRIMARY KEY,
    active boolean NOT NULL DEFAULT false,
    -- What the last message named (apps, users); an update is sent when it changes, at most once per
    -- repeat interval.
    subject text NOT NULL DEFAULT '',
    started_at timestamptz,
    cleared_at timestamptz,
    -- When a message for this kind last went out (start, update or clear): the repeat limit.
    notified_at timestamptz,
    -- Whether this episode's start was announced; a clear is sent only for an announced start.
    start_notified boolean NOT NULL DEFAULT false
);
ALTER TABLE vyx_fleet.alerts ENABLE ROW LEVEL SECURITY;

-- The user page's timeline reads a user's newest events first.
CREATE INDEX IF NOT EXISTS user_fly_app_events_user_created_idx
    ON public.user_fly_app_events (user_id, created_at DESC);

REVOKE ALL ON vyx_fleet.app_console FROM PUBLIC;
REVOKE ALL ON vyx_fleet.alerts FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON vyx_fleet.app_console FROM %I', r);
            EXECUTE format('REVOKE ALL ON vyx_fleet.alerts FROM %I', r);
        END IF;
    END LOOP;
END
$$;
