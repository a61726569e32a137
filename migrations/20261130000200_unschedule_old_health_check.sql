-- vyx-fleet 5: cutover leftovers.
--
-- 1. The old `check-fly-apps-health` edge function may still run from a pg_cron schedule. It writes
--    `health_status`, `error_message` and events on `user_fly_apps` next to the controller, which now
--    owns those columns. Every pg_cron job whose command calls it is unscheduled, and a NOTICE says
--    which. No pg_cron (no `cron.job`) = nothing to do. If the migrating role may not read or change
--    `cron.job`, a WARNING says so and the operator unschedules it by hand (README, "Cutover").
-- 2. The breaker's confirmation moved from the `confirm_deletions` setting to the held set
--    (`vyx_fleet.held_deletions`); the old key is removed so nothing reads it by mistake.
--
-- Idempotent: a second run finds no such job and no such key.

DO $$
DECLARE
    j record;
    n integer := 0;
BEGIN
    IF to_regclass('cron.job') IS NULL OR to_regprocedure('cron.unschedule(bigint)') IS NULL THEN
        RAISE NOTICE 'vyx-fleet: pg_cron is not installed; no old health-check schedule to remove';
        RETURN;
    END IF;
    BEGIN
        FOR j IN
            EXECUTE $q$
                SELECT jobid, jobname, schedule FROM cron.job
                 WHERE command ILIKE '%check-fly-apps-health%'
                    OR command ILIKE '%check_fly_apps_health%'
                 ORDER BY jobid
            $q$
        LOOP
            EXECUTE 'SELECT cron.unschedule($1)' USING j.jobid;
            n := n + 1;
            RAISE NOTICE 'vyx-fleet: unscheduled pg_cron job % (%, "%") that called the old check-fly-apps-health function; vyx-fleet owns app health now',
                j.jobid, coalesce(j.jobname, 'unnamed'), j.schedule;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'vyx-fleet: cannot inspect or change pg_cron jobs (%); unschedule any job calling check-fly-apps-health by hand: SELECT cron.unschedule(jobid) FROM cron.job WHERE command ILIKE ''%%check-fly-apps-health%%''',
            SQLERRM;
        RETURN;
    END;
    IF n = 0 THEN
        RAISE NOTICE 'vyx-fleet: no pg_cron job calls check-fly-apps-health';
    END IF;
END
$$;

DELETE FROM vyx_fleet.settings WHERE key = 'confirm_deletions';
