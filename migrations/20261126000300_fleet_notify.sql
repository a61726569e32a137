-- vyx-fleet 3/3: wake the controller on relevant changes; switch off Vyx's old provisioning trigger.

-- NOTIFY 'vyx_fleet' with the user id. Notifications are hints only (a lost one costs at most one reconcile
-- interval), so this function never raises: it runs inside the billing update, which must not fail
-- because of us. Delivered at commit; duplicates within one transaction are folded by Postgres.
CREATE OR REPLACE FUNCTION public.vyx_fleet_notify()
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
        RAISE WARNING 'vyx_fleet_notify on %.%: % (ignored)', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
    END;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS vyx_fleet_notify ON public.user_subscriptions;
CREATE TRIGGER vyx_fleet_notify
    AFTER INSERT OR UPDATE OR DELETE ON public.user_subscriptions
    FOR EACH ROW EXECUTE FUNCTION public.vyx_fleet_notify();

DROP TRIGGER IF EXISTS vyx_fleet_notify ON public.user_fly_app_overrides;
CREATE TRIGGER vyx_fleet_notify
    AFTER INSERT OR UPDATE OR DELETE ON public.user_fly_app_overrides
    FOR EACH ROW EXECUTE FUNCTION public.vyx_fleet_notify();

-- Vyx's `on_user_tier_change` called the old provisioning edge functions; left on, every upgrade would be
-- provisioned twice. Disabled, not dropped, so the change is visible and reversible
-- (`ALTER TABLE public.user_subscriptions ENABLE TRIGGER on_user_tier_change`).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
        FROM pg_trigger
        WHERE tgrelid = 'public.user_subscriptions'::regclass
          AND tgname = 'on_user_tier_change'
          AND NOT tgisinternal
    ) THEN
        ALTER TABLE public.user_subscriptions DISABLE TRIGGER on_user_tier_change;
    END IF;
END
$$;
