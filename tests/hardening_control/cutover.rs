//! The old health check's cron schedule.

#[allow(unused_imports)]
use super::*;

/// pg_cron's shape, as far as the migration uses it: `cron.job` and `cron.unschedule(bigint)`.
const FAKE_PG_CRON: &str = "
    CREATE SCHEMA cron;
    CREATE TABLE cron.job (
        jobid bigserial PRIMARY KEY, schedule text NOT NULL, command text NOT NULL,
        jobname text, active boolean NOT NULL DEFAULT true
    );
    CREATE FUNCTION cron.unschedule(job_id bigint) RETURNS boolean LANGUAGE sql
        AS $$ DELETE FROM cron.job WHERE jobid = job_id RETURNING true $$;
    INSERT INTO cron.job (schedule, command, jobname) VALUES
        ('*/5 * * * *', $c$select net.http_post(url := 'https://abc.supabase.co/functions/v1/check-fly-apps-health', headers := '{}'::jsonb)$c$, 'fly-health'),
        ('0 3 * * *', 'select public.cleanup_old_signals()', 'signals-cleanup');
";

#[tokio::test]
async fn migrating_unschedules_the_old_health_check_cron_job_and_nothing_else() {
    let db = support::legacy_vyx_db().await;
    sqlx::raw_sql(FAKE_PG_CRON).execute(&db.pool).await.unwrap();
    vyx_fleet::db::migrate(&db.pool).await.unwrap();
    let jobs: Vec<String> = sqlx::query_scalar("SELECT jobname FROM cron.job ORDER BY jobid")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(jobs, ["signals-cleanup"]);
}
