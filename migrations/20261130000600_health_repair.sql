-- vyx-fleet 6: health probing and repair (issue 7 item 6). Nullable per-app columns on
-- `public.user_fly_apps` (Vyx's readers see the table they always did):
--   unhealthy_since  when the current unhealthy spell began (probe transition healthy -> unhealthy)
--   last_probed_at   when a probe last read the app; schedules probes without rewriting
--                    `last_health_check`, which changes only on a health transition
--   repair_step      the last repair step taken in this spell: restart | replace
--   repair_step_at   when it was taken; the next step waits REPAIR_AFTER from here
-- Guarded: the file applies again as a no-op.
ALTER TABLE public.user_fly_apps
    ADD COLUMN IF NOT EXISTS unhealthy_since timestamptz,
    ADD COLUMN IF NOT EXISTS last_probed_at timestamptz,
    ADD COLUMN IF NOT EXISTS repair_step text,
    ADD COLUMN IF NOT EXISTS repair_step_at timestamptz;
