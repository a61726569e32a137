//! Process and database counters, percentiles, and the bounds Fly's limits put on the work.

use sqlx::PgPool;

/// User + system CPU time of this process (getrusage(RUSAGE_SELF)), in ms.
pub fn cpu_ms() -> f64 {
    // SAFETY: getrusage writes into the struct we hand it and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set size of this process (VmHWM), in MB.
pub fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// The process's resident set now.
pub fn rss_now_mb() -> f64 {
    status_mb("VmRSS:")
}

fn status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs), so each fleet size gets
/// its own peak. Returns false where that is not allowed.
pub fn reset_peak_rss() -> bool {
    // Give freed heap back first (the allocator keeps it for reuse otherwise), so the peak that
    // follows starts from what is live, not from what the seeding and earlier sizes left behind.
    purge_free_pages();
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Returns every arena's unused dirty pages to the kernel (jemalloc's `arena.<all>.purge`; the
/// crate's global allocator is jemalloc, src/lib.rs). Best effort: a failure leaves a higher base.
fn purge_free_pages() {
    // MALLCTL_ARENAS_ALL (jemalloc.h): the purge applies to every arena.
    const PURGE_ALL: &std::ffi::CStr = c"arena.4096.purge";
    // SAFETY: a documented mallctl name that takes no value and returns none.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        eprintln!("jemalloc purge failed ({rc}): the RSS base includes free pages");
    }
}

/// Nearest-rank percentile of `v` (sorted here); 0 for an empty set.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// How the database side of a pass is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryCounter {
    /// `sum(calls)` of `pg_stat_statements` for the database (statements that mention `pg_stat`,
    /// i.e. the bench's own probes, excluded).
    Statements,
    /// `pg_stat_database.xact_commit + xact_rollback` deltas (a transaction may hold several
    /// statements, so this undercounts).
    Transactions,
}

impl QueryCounter {
    pub fn name(self) -> &'static str {
        match self {
            QueryCounter::Statements => "pg_stat_statements calls",
            QueryCounter::Transactions => "pg_stat_database xact_commit+xact_rollback",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DbCounters {
    pub queries: i64,
    pub rows_read: i64,
}

/// Counters now. Backends flush their table statistics when they go idle (at most once a second)
/// or exit: callers close the measured pool first.
pub async fn db_counters(admin: &PgPool, how: QueryCounter) -> DbCounters {
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(admin)
        .await;
    let queries: Option<i64> = match how {
        QueryCounter::Statements => sqlx::query_scalar(
            "SELECT sum(calls)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT ILIKE '%pg_stat%'",
        )
        .fetch_one(admin)
        .await
        .ok()
        .flatten(),
        QueryCounter::Transactions => sqlx::query_scalar(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(admin)
        .await
        .ok()
        .flatten(),
    };
    let rows: Option<i64> = sqlx::query_scalar(
        "SELECT sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::bigint \
         FROM pg_stat_user_tables",
    )
    .fetch_one(admin)
    .await
    .ok()
    .flatten();
    DbCounters {
        queries: queries.unwrap_or(0),
        rows_read: rows.unwrap_or(0),
    }
}

/// A token bucket as the simulator enforces it.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub per_second: f64,
    pub burst: f64,
}

/// Least time a bucket allows for `calls` requests: the burst goes at once, the rest at the
/// sustained rate, `max(0, calls - burst) / rate`.
pub fn bucket_time(calls: f64, l: Limit) -> f64 {
    (calls - l.burst).max(0.0) / l.per_second
}

/// Migration bound, in Fly seconds. Each new app needs one `POST /v1/apps`; Fly counts creates per
/// organisation (1 req/s, burst 3), while every other call of the sequence (get app, secrets, IPs,
/// machine create/get/wait) is limited per app or per machine, so N apps do them in parallel and
/// they never bind. So `bound = (N - 3) / 1 + tail`, where `tail` is the platform's own latency for
/// the last app after its create (app propagation + machine create + start + checks settling, from
/// the simulator's timings). List calls are not counted: the least work needs none.
pub fn migration_bound(users: usize, create: Limit, tail_s: f64) -> f64 {
    bucket_time(users as f64, create) + tail_s
}

/// Deprovision bound, in Fly seconds: one `DELETE /v1/apps/{name}` per app against the org-wide
/// budget of 100 per minute (burst 100), `(N - 100) / (100/60)`, plus the last deletion's
/// asynchronous tail (machine stop + app deletion). Stops are per machine and never bind.
pub fn deprovision_bound(users: usize, delete: Limit, tail_s: f64) -> f64 {
    bucket_time(users as f64, delete) + tail_s
}

/// The waves a rollout of `apps` takes with at most `cap` apps in transition: one canary, then each
/// wave twice the previous (1, 2, 4, …) while that stays under `cap`, then waves of `cap` until every
/// app has moved (the last one may be partial). At 10,000 apps and 2 % (cap 200): 1 … 128 (8 waves,
/// 255 apps), then ⌈9,745 / 200⌉ = 49, so 57.
pub fn rollout_waves(apps: usize, cap: usize) -> usize {
    let cap = cap.max(1);
    let (mut moved, mut size, mut waves) = (0usize, 1usize, 0usize);
    while moved < apps {
        moved += size.min(cap);
        waves += 1;
        size = (size * 2).min(cap);
    }
    waves
}

/// Rollout bound, in Fly seconds: the least time the wave rule allows. A wave starts only when the
/// whole previous wave soaked, and no wave can be shorter than one app's update (the machine
/// replaced, booted on the new version, its checks passing: the simulator's `machine_update +
/// machine_start + checks_settle`) followed by `ROLLOUT_SOAK`. So
/// `bound = waves(N, cap) × (t_update + t_boot + t_checks + soak)`, `cap` = `ROLLOUT_MAX_UNAVAILABLE`
/// of the live apps (at least 1). Fly's rate limits do not bind: updates are limited per machine
/// and each machine is updated once; the pass interval, the client's concurrency and the time to
/// issue a wave's updates are the daemon's own overhead, counted against it in the ratio.
pub fn rollout_bound(apps: usize, cap: usize, per_wave_platform_s: f64, soak_s: f64) -> f64 {
    rollout_waves(apps, cap) as f64 * (per_wave_platform_s + soak_s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rollout_waves_ramp_then_cap() {
        assert_eq!(super::rollout_waves(10_000, 200), 57);
        assert_eq!(super::rollout_waves(1_000, 20), 54);
        assert_eq!(super::rollout_waves(5, 1), 5);
        assert_eq!(super::rollout_waves(1, 1), 1);
        assert_eq!(super::rollout_waves(0, 1), 0);
    }
}
