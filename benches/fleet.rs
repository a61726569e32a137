//! Fleet benchmark: the real controller code against the Fly simulator enforcing
//! Fly's documented limits (REFERENCE §6) and a real PostgreSQL: migration, steady state (one quiet
//! pass, and the request rate over a resync cycle), reaction latency (converged, during a migration,
//! during a rollout), rollout of a new image, deprovision.
//!
//! `[BENCH_LOG=vyx_fleet=info] cargo bench --bench fleet [-- --quick] [--out PATH] [--scale S] [--max-apps N] [--min-apps N] [--only migration|steady|rollout|deprovision]`
//!
//! Time scale: the simulator's delays are divided by `S`, and every rate limit (the simulator's
//! and the daemon's own token buckets, `RateLimits::with_margin` as `run` uses) multiplied by `S`,
//! together with the daemon's interval, timeouts, backoff and probe interval. Durations are
//! reported in unscaled Fly time (measured wall time × `S`; `*_real` fields keep the wall clock).
//! Local CPU and database time are multiplied too, so at large `S` figures err on the slow side.
//! CPU ms and RSS are this process only: the simulator runs in a child process.

#[path = "fleet/env.rs"]
pub mod env;
#[path = "fleet/measure.rs"]
pub mod measure;
#[path = "fleet/reaction.rs"]
pub mod reaction;
#[path = "fleet/report.rs"]
pub mod report;
#[path = "fleet/rollout.rs"]
pub mod rollout;
#[path = "fleet/seed.rs"]
pub mod seed;
#[path = "fleet/simproc.rs"]
pub mod simproc;
#[path = "fleet/stats.rs"]
pub mod stats;

use serde_json::{Value, json};

use simproc::Launcher;

/// Fly runs 20× faster than real time unless `--scale` says otherwise.
pub const DEFAULT_SCALE: f64 = 20.0;

#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub out: String,
    pub scale: f64,
    pub max_apps: usize,
    /// Fleet sizes below this are skipped (with `--only steady`: re-measure the 100,000 fleet alone).
    pub min_apps: usize,
    /// Run one section only (`migration` or `steady`, each with its reaction runs, `rollout`,
    /// `deprovision`): re-measure it after a change without the whole run; the other sections are
    /// left empty.
    pub only: Option<String>,
}

impl Opts {
    /// Unknown arguments (cargo's `--bench`) are ignored.
    pub fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            quick: false,
            out: "bench-results.json".into(),
            scale: 0.0,
            max_apps: usize::MAX,
            min_apps: 0,
            only: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => o.quick = true,
                "--out" => o.out = val("--out")?,
                "--scale" => {
                    o.scale = val("--scale")?.parse().map_err(|_| "--scale: a number")?;
                }
                "--only" => {
                    let s = val("--only")?;
                    if !["migration", "steady", "rollout", "deprovision"].contains(&s.as_str()) {
                        return Err(
                            "--only: one of migration (with its reaction), steady (with its reaction), rollout, deprovision"
                                .into(),
                        );
                    }
                    o.only = Some(s);
                }
                "--max-apps" => {
                    o.max_apps = val("--max-apps")?
                        .parse()
                        .map_err(|_| "--max-apps: a count")?;
                }
                "--min-apps" => {
                    o.min_apps = val("--min-apps")?
                        .parse()
                        .map_err(|_| "--min-apps: a count")?;
                }
                _ => {}
            }
        }
        if o.scale <= 0.0 {
            o.scale = DEFAULT_SCALE;
        }
        Ok(o)
    }
}

struct Plan {
    migration: Vec<usize>,
    migration_flips: usize,
    steady: Vec<usize>,
    reaction: Vec<usize>,
    reaction_flips: usize,
    deprovision: usize,
    /// Apps a new image is rolled to, and upgrades of users without an app while it runs.
    rollout: usize,
    rollout_flips: usize,
}

fn plan(o: &Opts) -> Plan {
    let cap = |v: Vec<usize>| {
        v.into_iter()
            .filter(|n| *n <= o.max_apps && *n >= o.min_apps)
            .collect()
    };
    // Sizes that need a fleet (reaction, rollout) shrink to `--max-apps` instead of vanishing, so
    // a smoke run still measures them; reaction runs on the steady fleets, so those get it too.
    let clamp = |v: Vec<usize>| {
        let mut v: Vec<usize> = v
            .into_iter()
            .map(|n| n.min(o.max_apps))
            .filter(|n| *n >= o.min_apps)
            .collect();
        v.dedup();
        v
    };
    if o.quick {
        Plan {
            migration: vec![40],
            migration_flips: 5,
            steady: vec![50, 200],
            reaction: vec![200],
            reaction_flips: 10,
            deprovision: 150,
            rollout: 4,
            rollout_flips: 3,
        }
    } else {
        let reaction: Vec<usize> = clamp(vec![10_000, 100_000]);
        let mut steady: Vec<usize> = cap(vec![1_000, 10_000, 100_000]);
        for n in &reaction {
            if !steady.contains(n) {
                steady.push(*n);
            }
        }
        steady.sort_unstable();
        Plan {
            migration: cap(vec![1_000, 10_000]),
            migration_flips: 20,
            steady,
            reaction,
            reaction_flips: 100,
            deprovision: 1_000.min(o.max_apps),
            rollout: 10_000.min(o.max_apps),
            rollout_flips: 20,
        }
    }
}

pub async fn run(o: &Opts, launcher: Launcher) -> Result<Value, String> {
    let p = plan(o);
    let mut b = env::Bench::start(o.scale, launcher).await?;
    if o.quick {
        // The steady window lasts one resync cycle: a short one keeps `--quick` near a minute.
        b.resync_interval = Some("2m".into());
        b.settle_watermark = false;
    }
    let r = run_all(o, &p, &b).await;
    b.stop().await;
    let doc = r?;
    write(o, &doc)?;
    println!("{}", report::table(&doc));
    println!("written to {}", o.out);
    Ok(doc)
}

fn write(o: &Opts, doc: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| e.to_string())?;
    std::fs::write(&o.out, text + "\n").map_err(|e| format!("writing {}: {e}", o.out))
}

/// What is measured so far, written after each section so a long run that dies keeps its figures.
fn doc(o: &Opts, b: &env::Bench, parts: [&Value; 5]) -> Value {
    let [migration, steady, reaction, deprovision, rollout] = parts;
    json!({
        "machine": report::machine(),
        "scale": o.scale,
        "mode": if o.quick { "quick" } else { "full" },
        "db_queries_counted_by": b.counter.name(),
        "migration": migration,
        "steady": steady,
        "reaction": reaction,
        "deprovision": deprovision,
        "rollout": rollout,
    })
}

async fn run_all(o: &Opts, p: &Plan, b: &env::Bench) -> Result<Value, String> {
    let only = |s: &str| o.only.as_deref().is_none_or(|x| x == s);
    if o.only.as_deref() == Some("deprovision") {
        eprintln!("deprovision of {} users (alone)...", p.deprovision);
        let deprovision = measure::deprovision(b, p.deprovision).await?;
        let none = json!([]);
        return Ok(doc(o, b, [&none, &none, &none, &deprovision, &Value::Null]));
    }
    let mut migration = Vec::new();
    let mut reaction = Vec::new();
    let last = p.migration.last().copied();
    for &n in p.migration.iter().filter(|_| only("migration")) {
        let flips = if Some(n) == last {
            p.migration_flips
        } else {
            0
        };
        eprintln!("migration of {n} users ({flips} upgrades during it)...");
        let (entry, lat) = measure::migration(b, n, flips).await?;
        migration.push(entry);
        write(
            o,
            &doc(
                o,
                b,
                [
                    &json!(migration),
                    &json!([]),
                    &json!([]),
                    &Value::Null,
                    &Value::Null,
                ],
            ),
        )?;
        if flips > 0 {
            reaction.push(json!({
                "apps": n, "during": "migration", "flips": flips,
                "notify": reaction::summary(lat, flips, o.scale), "polling": null,
            }));
        }
    }
    if o.only.as_deref() == Some("migration") {
        let none = json!([]);
        return Ok(doc(
            o,
            b,
            [
                &json!(migration),
                &none,
                &json!(reaction),
                &Value::Null,
                &Value::Null,
            ],
        ));
    }
    let mut steady = Vec::new();
    for &n in p.steady.iter().filter(|_| only("steady")) {
        let with_reaction = p.reaction.contains(&n);
        let spare = if with_reaction {
            2 * p.reaction_flips
        } else {
            0
        };
        eprintln!("steady state with {n} converged apps (seeding)...");
        let mut f = measure::converged_fleet(b, n, spare).await?;
        steady.push(measure::steady(b, &mut f, n).await?);
        if with_reaction {
            eprintln!("reaction latency on {n} apps...");
            let k = p.reaction_flips;
            let notify = reaction::flips(&f, n as u64, k, 3.0, true).await?;
            let polling = reaction::flips(&f, (n + k) as u64, k, 3.0, false).await?;
            reaction.push(json!({
                "apps": n, "during": "converged", "flips": k,
                "notify": reaction::summary(notify, k, o.scale), "polling": reaction::summary(polling, k, o.scale),
            }));
        }
        f.stop().await;
        let parts = [
            &json!(migration),
            &json!(steady),
            &json!(reaction),
            &Value::Null,
            &Value::Null,
        ];
        write(o, &doc(o, b, parts))?;
    }
    if o.only.as_deref() == Some("steady") {
        return Ok(doc(
            o,
            b,
            [
                &json!(migration),
                &json!(steady),
                &json!(reaction),
                &Value::Null,
                &Value::Null,
            ],
        ));
    }
    eprintln!(
        "rollout of a new image to {} apps ({} upgrades during it)...",
        p.rollout, p.rollout_flips
    );
    let (rollout, lat) = rollout::rollout(b, p.rollout, p.rollout_flips).await?;
    reaction.push(json!({
        "apps": p.rollout, "during": "rollout", "flips": p.rollout_flips,
        "notify": reaction::summary(lat, p.rollout_flips, o.scale), "polling": null,
    }));
    let parts = [
        &json!(migration),
        &json!(steady),
        &json!(reaction),
        &Value::Null,
        &rollout,
    ];
    write(o, &doc(o, b, parts))?;
    if o.only.is_some() {
        return Ok(doc(o, b, parts));
    }
    eprintln!("deprovision of {} users...", p.deprovision);
    let deprovision = measure::deprovision(b, p.deprovision).await?;
    let parts = [
        &json!(migration),
        &json!(steady),
        &json!(reaction),
        &deprovision,
        &rollout,
    ];
    Ok(doc(o, b, parts))
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--sim-child") {
        simproc::child_main();
        return;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fleet bench: {e}");
            std::process::exit(2);
        }
    };
    // The daemon's own log lines, to see where a section's time goes: `BENCH_LOG=vyx_fleet=info`.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(&opts, Launcher::this_binary())) {
        eprintln!("fleet bench failed: {e}");
        std::process::exit(1);
    }
}
