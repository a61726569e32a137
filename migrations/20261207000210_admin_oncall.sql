-- vyx-fleet: the console's feed of recent events across users reads the newest events first; without
-- this index that is a scan and sort of the whole event log on every dashboard load.
CREATE INDEX IF NOT EXISTS user_fly_app_events_created_idx
    ON public.user_fly_app_events (created_at DESC);
