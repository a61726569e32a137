-- vyx-fleet: what changed since the sweep last looked, so a quiet tick reads the changes and the
-- timers that fell due instead of comparing every paid user with every row.
--
-- Changes are keyed by the writing transaction's id (xid8), not a sequence: a sequence number is
-- taken before commit, so a reader could pass a number whose transaction commits later and never
-- see it. The reader keeps the oldest transaction still running when it looked
-- (`pg_snapshot_xmin`) and next reads every change at or above it: whatever was running then is
-- read again once committed. Guarded: applies again as a no-op.

-- Facts (billing rows, admin overrides) by user. Hints, pruned by the leader's sweep once read.
CREATE TABLE IF NOT EXISTS vyx_fleet.changes (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    user_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_xid_idx ON vyx_fleet.changes (xid);
ALTER TABLE vyx_fleet.changes ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON vyx_fleet.changes FROM PUBLIC;

-- The trigger now also logs the change. It runs inside the billing write, as whatever role makes
-- it (Supabase's API roles have no rights in `vyx_fleet`), so it runs as its owner; the search
-- path is pinned because a definer's function must not resolve names through the caller's. Each
-- part has its own guard: a failure of either costs a hint (the resync still finds the change),
-- never the billing write.
CREATE OR REPLACE FUNCTION vyx_fleet.notify()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
    BEGIN
        IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.user_id IS DISTINCT FROM NEW.user_id) THEN
            INSERT INTO vyx_fleet.changes (user_id) VALUES (OLD.user_id);
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO vyx_fleet.changes (user_id) VALUES (NEW.user_id);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'vyx_fleet.notify (change log) on %.%: % (ignored)', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION vyx_fleet.notify() FROM PUBLIC;

-- Rows: every write stamps its transaction, so the rows changed since a look are one index range.
ALTER TABLE public.user_fly_apps ADD COLUMN IF NOT EXISTS changed_xid xid8;
CREATE OR REPLACE FUNCTION vyx_fleet.stamp_changed()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION vyx_fleet.stamp_changed() FROM PUBLIC;
DROP TRIGGER IF EXISTS vyx_fleet_stamp_changed ON public.user_fly_apps;
CREATE TRIGGER vyx_fleet_stamp_changed
    BEFORE INSERT OR UPDATE ON public.user_fly_apps
    FOR EACH ROW EXECUTE FUNCTION vyx_fleet.stamp_changed();
CREATE INDEX IF NOT EXISTS user_fly_apps_changed_xid_idx
    ON public.user_fly_apps (changed_xid);

-- Rows whose work comes due with time and no write: a backoff that ends, a grace that ends, a
-- repair step that falls due, a deletion under way. Each set is small in a settled fleet; the
-- sweep's predicates repeat these exactly so the planner uses them.
CREATE INDEX IF NOT EXISTS user_fly_apps_unsettled_idx
    ON public.user_fly_apps (user_id)
    WHERE deleted_at IS NULL AND status IN ('provisioning', 'error', 'deprovisioning');
CREATE INDEX IF NOT EXISTS user_fly_apps_unwanted_idx
    ON public.user_fly_apps (user_id)
    WHERE deleted_at IS NULL AND unwanted_since IS NOT NULL;
CREATE INDEX IF NOT EXISTS user_fly_apps_unhealthy_idx
    ON public.user_fly_apps (user_id)
    WHERE deleted_at IS NULL AND health_status = 'unhealthy';
