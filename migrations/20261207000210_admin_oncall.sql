-- vyx-fleet: the console's feed of recent events across users reads the newest events first; without
-- this index that is a scan and sort of the whole event log on every dashboard load.
CREATE INDEX IF NOT EXISTS user_fly_app_events_created_idx
    ON public.user_fly_app_events (created_at DESC);

-- The console's charts: one sample of the fleet a minute (whichever replica's alert loop gets there
-- first; the minute is the key, so two replicas write one row), kept for 30 days.
CREATE TABLE IF NOT EXISTS vyx_fleet.fleet_samples (
    minute timestamptz PRIMARY KEY,
    live integer NOT NULL,
    desired integer NOT NULL,
    unhealthy integer NOT NULL,
    errors integer NOT NULL,
    monthly_cost_usd numeric(12, 2) NOT NULL
);
ALTER TABLE vyx_fleet.fleet_samples ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON vyx_fleet.fleet_samples FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON vyx_fleet.fleet_samples FROM %I', r);
        END IF;
    END LOOP;
END
$$;
