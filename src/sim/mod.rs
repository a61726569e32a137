//! Fly Machines API simulator, written from `fly-api/REFERENCE.md` and the OpenAPI spec, not
//! from any client: apps, machines (async lifecycle, wait, checks, leases), secrets, IP
//! assignments, with the platform's rough edges on tap: global app names, post-create 404s, list
//! lag (new machines always; updates and destroys with [`SimConfig::stale_list_reads`]), boots on
//! an older secrets snapshot without `min_secrets_version` ([`SimConfig::secrets_lag`]), rate
//! limits, and injected faults (5xx, 408, spurious 404, dropped connections, lost answers, latency,
//! 429 bursts).
//!
//! For the tests of what a bad release does: [`ImageBehaviour`] (checks critical, a process that
//! exits at once under Fly's restart policy, a machine that ends `failed`; `images.rs`); another
//! holder's lease ([`Sim::take_lease`], `routes/leases.rs`); the platform's clock and one host's
//! clock ([`Sim::advance_clock`], [`Sim::set_host_clock_skew`]; `clock.rs`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use vyx_fleet::sim::{Sim, SimConfig};
//! let sim = Sim::start("127.0.0.1:0".parse().unwrap(), SimConfig::default()).await?;
//! println!("FLY_API_BASE_URL={}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Defaults ([`SimConfig::default`])
//! Org `vyx-test`; any non-empty `Bearer`/`FlyV1` token acts in it (`any_token_org`); the
//! documented rate limits (1 req/s burst 3 per route class and machine/app; `machines.get` 5/s
//! burst 10; `apps.delete` 100/min per org); small delays (create 100 ms, start 200 ms, stop and
//! destroy 150 ms, update 100 ms, checks 300 ms, app delete 300 ms); consistency windows
//! (post-create 404 150 ms, apps-list lag 100 ms, machine-list lag 100 ms); a boot without
//! `min_secrets_version` reads the app's secrets as of 1 s earlier; no faults; seed 42.
//! [`SimConfig::fast`] zeroes every delay, window and lag and turns rate limits off.
//!
//! # Route classes (fault rules and rate-limit buckets)
//! `apps.create`, `apps.get`, `apps.list`, `apps.delete`, `machines.create`, `machines.get`,
//! `machines.list`, `machines.update`, `machines.stop`, `machines.start`, `machines.delete`,
//! `machines.wait`, `machines.lease`, `secrets.list`, `secrets.set`, `ips.list`, `ips.create`,
//! `ips.delete`, `orgs.machines`, `other`; `*` in a [`FaultRule`] matches all.
//!
//! # Inspection over HTTP (no auth, not rate limited, not logged)
//! `GET /_sim/snapshot`, `GET /_sim/calls`, `DELETE /_sim/calls` (or `POST /_sim/calls/clear`),
//! `POST /_sim/apps {"org","name"}` (seed), `DELETE /_sim/apps/{name}` (out-of-band delete, at
//! once), `GET|PUT|POST /_sim/faults` ([`Faults`] JSON, e.g.
//! `{"rules":[{"class":"apps.create","probability":0.5,"kind":"lost_answer","status":502}]}`),
//! `POST|DELETE /_sim/apps/{app}/machines/{id}/lease` (`{"owner","ttl"}` → `{"nonce"}`: a lease
//! held by someone else), `PUT|POST /_sim/failing_images` (`["image:tag", ...]`),
//! `GET|PUT|POST /_sim/image_behaviours` (`{"image:tag": "exits_at_once" | "fails" |
//! "checks_critical" | "healthy"}`, replaces all).
//!
//! # Apps' own endpoints (not the Machines API: not rate limited, not in the call log)
//! `GET /_sim/apps/{app}/health`: what `https://{app}.fly.dev/health` answers (`health.rs`).

mod clock;
mod config;
mod faults;
mod health;
mod images;
mod inspect;
mod lifecycle;
mod listener;
mod ratelimit;
mod replica;
mod routes;
mod server;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

pub use config::{BucketConfig, OrgConfig, RateLimitConfig, SimConfig, Timings, TokenConfig};
pub use faults::{FaultKind, FaultRule, Faults, IpRepeat};
pub use images::ImageBehaviour;
pub use inspect::{AppSnapshot, CallRecord, IpSnapshot, MachineSnapshot, SecretSnapshot, Snapshot};
pub use state::CheckStatus;

use server::{Shared, lock};

/// A running simulator. Dropping it without [`Sim::shutdown`] leaves the server task running
/// until the runtime ends.
pub struct Sim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Sim {
    /// Binds `addr` (port 0 picks a free one) and serves in a background task.
    pub async fn start(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<Sim> {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let addr = tcp.local_addr()?;
        let shared = Shared::new(&cfg);
        let app = server::router(shared.clone())
            .into_make_service_with_connect_info::<listener::KillSwitch>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve =
                axum::serve(listener::SimListener(tcp), app).with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "fly simulator server failed");
            }
        });
        tracing::info!(%addr, "fly simulator listening");
        Ok(Sim {
            shared,
            addr,
            task,
            stop: stop_tx,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the fault setup (a `burst_429_ms` starts counting now).
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.shared.faults).set(faults);
    }

    /// Images whose checks stay `critical` (replaces the list; an image given a behaviour by
    /// [`Sim::set_image_behaviour`] keeps that behaviour).
    pub fn set_failing_images(&self, images: Vec<String>) {
        set_failing_images(&self.shared, images);
    }

    /// What machines booting `image` do from their next boot on ([`ImageBehaviour`]);
    /// `Healthy` forgets the image's entry.
    pub fn set_image_behaviour(&self, image: &str, behaviour: ImageBehaviour) {
        {
            let mut images = lock(&self.shared.images);
            if behaviour == ImageBehaviour::Healthy {
                images.behaviours.remove(image);
            } else {
                images.behaviours.insert(image.to_string(), behaviour);
            }
        }
        lifecycle::refresh_checks(&self.shared);
        self.shared.notify();
    }

    /// Replaces every image behaviour (not `failing_images`).
    pub fn set_image_behaviours(&self, behaviours: BTreeMap<String, ImageBehaviour>) {
        set_image_behaviours(&self.shared, behaviours);
    }

    /// Forces `app`'s own `/health` answer: `Some(false)` fails it while Fly's checks may pass,
    /// `Some(true)` passes it while they may fail; `None` goes back to following the machine.
    pub fn set_app_health(&self, app: &str, forced: Option<bool>) {
        let mut o = lock(&self.shared.health_overrides);
        match forced {
            Some(v) => o.insert(app.to_string(), v),
            None => o.remove(app),
        };
    }

    /// Requests served by the apps' `/health` endpoints so far.
    pub fn health_hits(&self) -> u64 {
        self.shared
            .health_hits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the rate-limit setup and forgets all bucket levels.
    pub fn set_rate_limits(&self, cfg: RateLimitConfig) {
        *lock(&self.shared.rate_cfg) = cfg;
        lock(&self.shared.limiter).reset();
    }

    /// Replaces the timings; affects transitions scheduled from now on.
    pub fn set_timings(&self, timings: Timings) {
        *lock(&self.shared.timings) = timings;
    }

    /// Takes a lease on a machine as someone else would (an operator's `fly deploy`): until it
    /// expires or [`Sim::end_lease`], changes without its nonce answer 409 (REFERENCE §3.10).
    /// The nonce, or `None` when there is no such live machine or a lease is already held.
    pub fn take_lease(
        &self,
        app: &str,
        machine_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Option<String> {
        routes::leases::take_out_of_band(&self.shared, app, machine_id, owner, ttl)
    }

    /// Ends whatever lease the machine has, as its expiry would. False if it had none.
    pub fn end_lease(&self, app: &str, machine_id: &str) -> bool {
        routes::leases::end_out_of_band(&self.shared, app, machine_id)
    }

    /// Sets [`SimConfig::stale_list_reads`]: from now on that share of list calls shows machines
    /// as they were `machine_list_lag` ago, changes made since included. Set the timings first:
    /// past copies are kept for the `machine_list_lag` in force here.
    pub fn set_stale_list_reads(&self, share: f64) {
        *lock(&self.shared.stale_list_reads) = share;
        replica::keep_past(&self.shared, share > 0.0);
    }

    /// The platform's clock: what `updated_at` stamps and the `Date` header say now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.shared.clock.now()
    }

    /// Moves the platform's clock (forward, or back with a negative delta): stamps from now on
    /// carry it, so a test can put time between two changes without waiting.
    pub fn advance_clock(&self, by: chrono::TimeDelta) {
        self.shared.clock.advance(by);
    }

    /// Puts one machine on a host whose clock is `skew` off the platform's: its changes from now
    /// on are stamped with it. False if there is no such machine.
    pub fn set_host_clock_skew(
        &self,
        app: &str,
        machine_id: &str,
        skew: chrono::TimeDelta,
    ) -> bool {
        let mut world = lock(&self.shared.world);
        let Some(m) = world
            .apps
            .get_mut(app)
            .and_then(|a| a.machines.get_mut(machine_id))
        else {
            return false;
        };
        m.host_skew = skew;
        true
    }

    /// Sets [`SimConfig::secrets_lag`] for boots from now on.
    pub fn set_secrets_lag(&self, lag: Duration) {
        *lock(&self.shared.secrets_lag) = lag;
    }

    /// Puts an app named `name` into `org` at once (no post-create window): a name squatted by
    /// another customer, for 403/422 tests. No-op if the name exists.
    pub fn seed_app(&self, org: &str, name: &str) {
        inspect::seed(&self.shared, org, name);
    }

    /// Removes the app `name` and everything in it at once: an app deleted outside the controller
    /// (by hand with flyctl, or lost on Fly's side). False if there was no such app.
    pub fn delete_app_out_of_band(&self, name: &str) -> bool {
        inspect::remove_app(&self.shared, name)
    }

    pub fn snapshot(&self) -> Snapshot {
        inspect::snapshot(&self.shared)
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.shared.calls).iter().cloned().collect()
    }

    /// `/v1` calls currently being handled (long-polls included).
    pub fn in_flight(&self) -> usize {
        self.shared
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most mutating `/v1` calls (anything but GET/HEAD) ever in flight at once since the
    /// start or the last [`Sim::reset_peak_in_flight_writes`]. Long-polls are GETs: not counted.
    pub fn peak_in_flight_writes(&self) -> usize {
        self.shared
            .peak_in_flight_writes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn reset_peak_in_flight_writes(&self) {
        let now = self
            .shared
            .in_flight_writes
            .load(std::sync::atomic::Ordering::SeqCst);
        self.shared
            .peak_in_flight_writes
            .store(now, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn clear_calls(&self) {
        lock(&self.shared.calls).clear();
    }

    /// Stops accepting, ends long-polls, and waits (briefly) for in-flight calls.
    pub async fn shutdown(self) {
        // Long-polls answer first (503), then the server closes: closing connections while a
        // handler is still running would turn its answer into a transport error.
        let _ = self.shared.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

fn set_failing_images(sh: &Shared, images: Vec<String>) {
    lock(&sh.images).failing = images.into_iter().collect();
    lifecycle::refresh_checks(sh);
    sh.notify();
}

fn set_image_behaviours(sh: &Shared, behaviours: BTreeMap<String, ImageBehaviour>) {
    lock(&sh.images).behaviours = behaviours.into_iter().collect();
    lifecycle::refresh_checks(sh);
    sh.notify();
}

/// Serves until ctrl-c (`vyx-fleet sim --listen ADDR`).
pub async fn run_cli(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<()> {
    let sim = Sim::start(addr, cfg).await?;
    println!("fly simulator listening on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
