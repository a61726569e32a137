-- vyx-fleet 1/3: the per-user app table and its audit log.
--
-- Production already has both tables (Vyx migrations 004 and 035-039); a bare Supabase database has neither.
-- Every statement is guarded so this file applies to both, and applies again as a no-op.

DO $$
BEGIN
    IF to_regclass('auth.users') IS NULL OR to_regclass('public.user_subscriptions') IS NULL THEN
        RAISE EXCEPTION 'vyx-fleet migrations need the Supabase/Vyx schema: auth.users and public.user_subscriptions are missing';
    END IF;
END
$$;

-- Created only when missing, in the shape Vyx's own migrations give it (DESIGN.md section 2). The foreign
-- keys are added only together with a table we create: an existing table is never given new constraints.
DO $$
BEGIN
    IF to_regclass('public.user_fly_apps') IS NULL THEN
        CREATE TABLE public.user_fly_apps (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            fly_app_name text NOT NULL,
            fly_org_slug text NOT NULL,
            status text NOT NULL DEFAULT 'provisioning'
                CHECK (status IN ('provisioning', 'active', 'error', 'deprovisioning', 'deleted')),
            region text,
            docker_image text,
            deployed_at timestamptz,
            last_health_check timestamptz,
            health_status text NOT NULL DEFAULT 'unknown'
                CHECK (health_status IN ('healthy', 'unhealthy', 'unknown')),
            error_message text,
            retry_count integer NOT NULL DEFAULT 0,
            monthly_cost_estimate_usd numeric(10, 2),
            cpu_count integer,
            memory_mb integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CONSTRAINT user_fly_apps_user_id_key UNIQUE (user_id),
            CONSTRAINT user_fly_apps_fly_app_name_key UNIQUE (fly_app_name)
        );
        -- Supabase grants new public tables to anon/authenticated; without RLS the public anon key could
        -- read every user's app. Only a table we create is changed: Vyx's own keeps its own policies.
        ALTER TABLE public.user_fly_apps ENABLE ROW LEVEL SECURITY;
    END IF;

    IF to_regclass('public.user_fly_app_events') IS NULL THEN
        CREATE TABLE public.user_fly_app_events (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            fly_app_id uuid REFERENCES public.user_fly_apps (id) ON DELETE CASCADE,
            user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
            event_type text NOT NULL CHECK (event_type IN (
                'provision_requested', 'provision_started', 'provision_completed', 'provision_failed',
                'health_check_passed', 'health_check_failed',
                'deprovision_requested', 'deprovision_started', 'deprovision_completed', 'deprovision_failed',
                'error_occurred', 'recovery_attempted')),
            status text,
            metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
            error_details text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX user_fly_app_events_fly_app_id_idx
            ON public.user_fly_app_events (fly_app_id, created_at DESC);
        CREATE INDEX user_fly_app_events_user_id_idx
            ON public.user_fly_app_events (user_id, created_at DESC);
        ALTER TABLE public.user_fly_app_events ENABLE ROW LEVEL SECURITY;
    END IF;
END
$$;

-- Columns DESIGN.md names that an older copy of the table might lack (nullable, so readers are unaffected).
ALTER TABLE public.user_fly_apps
    ADD COLUMN IF NOT EXISTS deployed_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_health_check timestamptz,
    ADD COLUMN IF NOT EXISTS error_message text,
    ADD COLUMN IF NOT EXISTS monthly_cost_estimate_usd numeric(10, 2),
    ADD COLUMN IF NOT EXISTS cpu_count integer,
    ADD COLUMN IF NOT EXISTS memory_mb integer,
    ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- The controller's own state: everything needed to resume any step after a crash (docs/ARCHITECTURE.md).
-- All nullable or defaulted, so the Vyx admin page and the Go backend keep reading the old shape.
ALTER TABLE public.user_fly_apps
    ADD COLUMN IF NOT EXISTS fly_app_id text,
    ADD COLUMN IF NOT EXISTS machine_id text,
    ADD COLUMN IF NOT EXISTS machine_op_id text,
    ADD COLUMN IF NOT EXISTS secrets_version bigint,
    ADD COLUMN IF NOT EXISTS secrets_digest text,
    ADD COLUMN IF NOT EXISTS ips_ready boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS config_digest text,
    ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz,
    ADD COLUMN IF NOT EXISTS unwanted_since timestamptz,
    ADD COLUMN IF NOT EXISTS last_error_kind text;

-- Live rows: what the Go backend looks up (`user_id = X AND deleted_at IS NULL`) and what every pass reads.
CREATE INDEX IF NOT EXISTS user_fly_apps_live_idx
    ON public.user_fly_apps (user_id) WHERE deleted_at IS NULL;
