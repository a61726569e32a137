//! Shared simulator state and the request pipeline every `/v1` call goes through:
//! request id → auth → 429 burst / rate limit → pre-handler faults → handler → lost answer → log.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::Utc;
use tokio::sync::watch;
use tokio::time::Duration;

use super::config::{RateLimitConfig, SimConfig, Timings};
use super::faults::{FaultState, PreFault};
use super::images::ImageTable;
use super::inspect::{self, CallRecord};
use super::listener::KillSwitch;
use super::ratelimit::RateLimiter;
use super::routes::{self, ApiError, Caller};
use super::state::World;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Shared {
    pub world: Mutex<World>,
    /// Bumped on every state change; long-polls (`/wait`) watch it.
    pub changed: watch::Sender<u64>,
    pub timings: Mutex<Timings>,
    /// The platform's clock (`clock.rs`).
    pub clock: Arc<super::clock::Clock>,
    /// Share of list calls served by a lagging replica (`replica.rs`).
    pub stale_list_reads: Mutex<f64>,
    /// Picks those calls: a sequence of its own, so turning stale reads on leaves the seeded
    /// fault sequence as it was.
    pub replica_rng: Mutex<rand::rngs::StdRng>,
    /// How far behind a host's copy of an app's secrets is (`SimConfig::secrets_lag`).
    pub secrets_lag: Mutex<std::time::Duration>,
    /// What each image does once booted (`images.rs`).
    pub images: Mutex<ImageTable>,
    /// Apps whose `/health` answer is forced (true = 200, false = 503), whatever their checks say.
    pub health_overrides: Mutex<HashMap<String, bool>>,
    /// Requests to the apps' own `/health` endpoints (never in the `/v1` call log).
    pub health_hits: AtomicU64,
    pub faults: Mutex<FaultState>,
    pub rate_cfg: Mutex<RateLimitConfig>,
    pub limiter: Mutex<RateLimiter>,
    pub calls: Mutex<VecDeque<CallRecord>>,
    pub max_calls: usize,
    pub tokens: HashMap<String, Vec<String>>,
    pub any_token_org: Option<String>,
    pub affinity_skips_window: bool,
    pub regions: Vec<String>,
    pub default_region: String,
    req_seq: AtomicU64,
    call_seq: AtomicU64,
    /// `/v1` calls currently inside the pipeline (long-polls included).
    pub in_flight: AtomicUsize,
    /// Mutating `/v1` calls currently inside the pipeline, and the most seen at once.
    pub in_flight_writes: AtomicUsize,
    pub peak_in_flight_writes: AtomicUsize,
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(cfg: &SimConfig) -> Arc<Shared> {
        let mut world = World::default();
        for o in &cfg.orgs {
            world.ensure_org(&o.slug, &o.name);
        }
        let mut tokens: HashMap<String, Vec<String>> = HashMap::new();
        for t in &cfg.tokens {
            for o in &t.orgs {
                world.ensure_org(o, o);
            }
            tokens.insert(t.token.clone(), t.orgs.clone());
        }
        if let Some(o) = &cfg.any_token_org {
            world.ensure_org(o, o);
        }
        Arc::new(Shared {
            world: Mutex::new(world),
            changed: watch::channel(0).0,
            timings: Mutex::new(cfg.timings.clone()),
            secrets_lag: Mutex::new(cfg.secrets_lag),
            stale_list_reads: Mutex::new(cfg.stale_list_reads),
            replica_rng: Mutex::new(rand::SeedableRng::seed_from_u64(cfg.seed)),
            clock: Arc::default(),
            images: Mutex::new(ImageTable::new(&cfg.failing_images, &cfg.image_behaviours)),
            health_overrides: Mutex::new(HashMap::new()),
            health_hits: AtomicU64::new(0),
            faults: Mutex::new(FaultState::new(cfg.faults.clone(), cfg.seed)),
            rate_cfg: Mutex::new(cfg.rate_limits.clone()),
            limiter: Mutex::new(RateLimiter::default()),
            calls: Mutex::new(VecDeque::new()),
            max_calls: cfg.max_call_log.max(1),
            tokens,
            any_token_org: cfg.any_token_org.clone(),
            affinity_skips_window: cfg.affinity_cookie_skips_window,
            regions: cfg.regions.clone(),
            default_region: cfg.default_region.clone(),
            req_seq: AtomicU64::new(0),
            call_seq: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_writes: AtomicUsize::new(0),
            peak_in_flight_writes: AtomicUsize::new(0),
            shutdown: watch::channel(false).0,
        })
    }

    pub fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn timings(&self) -> Timings {
        lock(&self.timings).clone()
    }

    pub fn secrets_lag(&self) -> std::time::Duration {
        *lock(&self.secrets_lag)
    }

    fn request_id(&self) -> String {
        let n = self.req_seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "sim-{:x}-{}",
            n,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    }

    fn log(&self, mut rec: CallRecord) {
        rec.seq = self.call_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut calls = lock(&self.calls);
        if calls.len() >= self.max_calls {
            calls.pop_front();
        }
        calls.push_back(rec);
    }

    /// `Authorization: Bearer <t>` or `FlyV1 <t>` [S2][S9][S41]. Comma-joined macaroons count as one
    /// token string here.
    fn authenticate(&self, headers: &HeaderMap) -> Option<Caller> {
        let raw = headers.get("authorization")?.to_str().ok()?.trim();
        let (scheme, token) = raw.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") && scheme != "FlyV1" {
            return None;
        }
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        let affinity = if self.affinity_skips_window {
            affinity_cookies(headers)
        } else {
            Vec::new()
        };
        // Tokens carry no user here: one owner per token, without the token in it.
        let owner = format!("token-{}@sim.fly.io", &super::state::sha256_hex(token)[..8]);
        if let Some(orgs) = self.tokens.get(token) {
            return Some(Caller {
                orgs: orgs.clone(),
                affinity,
                window_401: false,
                owner,
            });
        }
        self.any_token_org.as_ref().map(|o| Caller {
            orgs: vec![o.clone()],
            affinity,
            window_401: false,
            owner,
        })
    }
}

fn affinity_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("fly-affinity="))
        .map(str::to_string)
        .collect()
}

/// Counts a call as in flight until dropped (also when the client goes away mid-call); a mutating
/// call also counts towards the in-flight writes and their peak.
struct InFlight<'a> {
    sh: &'a Shared,
    write: bool,
}

impl<'a> InFlight<'a> {
    fn enter(sh: &'a Shared, write: bool) -> Self {
        sh.in_flight.fetch_add(1, Ordering::SeqCst);
        if write {
            let now = sh.in_flight_writes.fetch_add(1, Ordering::SeqCst) + 1;
            sh.peak_in_flight_writes.fetch_max(now, Ordering::SeqCst);
        }
        InFlight { sh, write }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.sh.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.write {
            self.sh.in_flight_writes.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Route class (fault/rate-limit key) and identifiers of a `/v1` path.
pub(crate) struct RouteInfo {
    pub class: &'static str,
    pub app: Option<String>,
    pub machine: Option<String>,
    pub write: bool,
}

pub(crate) fn classify(method: &Method, path: &str) -> RouteInfo {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let m = method.as_str();
    let (class, app, machine): (&'static str, Option<&str>, Option<&str>) = match segs.as_slice() {
        ["v1", "apps"] if m == "GET" => ("apps.list", None, None),
        ["v1", "apps"] if m == "POST" => ("apps.create", None, None),
        ["v1", "apps", a] if m == "GET" => ("apps.get", Some(a), None),
        ["v1", "apps", a] if m == "DELETE" => ("apps.delete", Some(a), None),
        ["v1", "apps", a, "machines"] if m == "GET" => ("machines.list", Some(a), None),
        ["v1", "apps", a, "machines"] if m == "POST" => ("machines.create", Some(a), None),
        ["v1", "apps", a, "machines", id] => match m {
            "GET" => ("machines.get", Some(a), Some(id)),
            "POST" => ("machines.update", Some(a), Some(id)),
            "DELETE" => ("machines.delete", Some(a), Some(id)),
            _ => ("other", Some(a), Some(id)),
        },
        ["v1", "apps", a, "machines", id, "stop"] => ("machines.stop", Some(a), Some(id)),
        ["v1", "apps", a, "machines", id, "start"] => ("machines.start", Some(a), Some(id)),
        ["v1", "apps", a, "machines", id, "wait"] => ("machines.wait", Some(a), Some(id)),
        ["v1", "apps", a, "machines", id, "lease"] => ("machines.lease", Some(a), Some(id)),
        ["v1", "apps", a, "secrets"] if m == "GET" => ("secrets.list", Some(a), None),
        ["v1", "apps", a, "secrets"] if m == "POST" => ("secrets.set", Some(a), None),
        ["v1", "apps", a, "ip_assignments"] if m == "GET" => ("ips.list", Some(a), None),
        ["v1", "apps", a, "ip_assignments"] if m == "POST" => ("ips.create", Some(a), None),
        ["v1", "apps", a, "ip_assignments", _] => ("ips.delete", Some(a), None),
        ["v1", "orgs", _, "machines"] => ("orgs.machines", None, None),
        _ => ("other", None, None),
    };
    RouteInfo {
        class,
        app: app.map(str::to_string),
        machine: machine.map(str::to_string),
        write: m != "GET" && m != "HEAD",
    }
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("fly-request-id", v);
    }
    resp
}

/// The answer's `Date`, on the platform's clock rather than the host's.
fn with_date(mut resp: Response, sh: &Shared) -> Response {
    if let Ok(v) = HeaderValue::from_str(&super::clock::http_date(sh.clock.now())) {
        resp.headers_mut().insert("date", v);
    }
    resp
}

fn too_many(retry_after: Option<u64>) -> Response {
    // 429 body/headers are undocumented [S2][S15]; the error body keeps clients' decoding uniform.
    let mut resp =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded").into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(secs.max(1)));
    }
    resp
}

async fn pipeline(State(sh): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let request_id = sh.request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim") {
        return with_request_id(next.run(req).await, &request_id);
    }
    let route = classify(&method, &path);
    let _in_flight = InFlight::enter(&sh, route.write);
    let mut rec = CallRecord {
        seq: 0,
        at: Utc::now(),
        method: method.to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or(path),
        class: route.class.to_string(),
        status: None,
        fault: None,
        write_applied: false,
        request_id: request_id.clone(),
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let kill = req
        .extensions()
        .get::<ConnectInfo<KillSwitch>>()
        .map(|c| c.0.clone());

    let resp = 'resp: {
        let Some(mut caller) = sh.authenticate(req.headers()) else {
            break 'resp ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized: missing or invalid token",
            )
            .into_response();
        };
        let decision = lock(&sh.faults).decide(route.class);
        caller.window_401 = decision.window_401;
        if !decision.latency.is_zero() {
            rec.fault = Some(format!("latency {}ms", decision.latency.as_millis()));
            // Capped so a silly rule cannot overflow the timer.
            tokio::time::sleep(decision.latency.min(Duration::from_secs(3600))).await;
        }
        if decision.pre == Some(PreFault::TooMany) {
            rec.fault = Some("burst_429".into());
            let ra = lock(&sh.rate_cfg).retry_after.then_some(1);
            break 'resp too_many(ra);
        }
        let rl = lock(&sh.rate_cfg).clone();
        if let Some(bucket) = rl.bucket_for(route.class) {
            // Per machine, else per app [S2]; app deletions are an account-wide budget
            // (100/min [S2]), so they share one bucket per org.
            let org = caller.orgs.first().cloned().unwrap_or_default();
            let ident = if route.class == "apps.delete" {
                org
            } else {
                route
                    .machine
                    .clone()
                    .or_else(|| route.app.clone())
                    .unwrap_or(org)
            };
            if let Err(wait) = lock(&sh.limiter).check(route.class, &ident, bucket) {
                let ra = rl.retry_after.then(|| wait.as_secs_f64().ceil() as u64);
                break 'resp too_many(ra);
            }
        }
        match decision.pre {
            Some(PreFault::Status(s)) => {
                rec.fault = Some(format!("server_error {s}"));
                let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                break 'resp ApiError::new(code, "internal error (simulated)").into_response();
            }
            Some(PreFault::Timeout) => {
                rec.fault = Some("timeout".into());
                break 'resp ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request timed out (simulated)",
                )
                .into_response();
            }
            Some(PreFault::NotFound) => {
                rec.fault = Some("not_found".into());
                break 'resp ApiError::not_found("Could not find App").into_response();
            }
            Some(PreFault::Drop) => {
                rec.fault = Some("drop".into());
                if let Some(k) = &kill {
                    k.kill();
                }
                break 'resp StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            _ => {}
        }
        req.extensions_mut().insert(caller);
        let resp = next.run(req).await;
        let ok = resp.status().is_success();
        rec.write_applied = route.write && ok;
        match decision.lose_answer {
            Some(status) if ok => {
                if let Some(s) = status {
                    rec.fault = Some(format!("lost_answer {s}"));
                    let code = StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY);
                    ApiError::new(code, "upstream error (simulated)").into_response()
                } else {
                    rec.fault = Some("lost_answer drop".into());
                    if let Some(k) = &kill {
                        k.kill();
                    }
                    resp
                }
            }
            _ => resp,
        }
    };
    let dropped = rec.fault.as_deref().is_some_and(|f| f.ends_with("drop"));
    rec.status = (!dropped).then_some(resp.status().as_u16());
    sh.log(rec);
    with_date(with_request_id(resp, &request_id), &sh)
}

async fn fallback() -> Response {
    ApiError::not_found("not found").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response()
}

pub(crate) fn router(sh: Arc<Shared>) -> Router {
    use routes::{apps, ips, leases, machine_actions as ma, machines, orgs, secrets};
    let v1 = Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route("/v1/apps/{app}", get(apps::show).delete(apps::destroy))
        .route(
            "/v1/apps/{app}/machines",
            get(machines::list).post(machines::create),
        )
        .route(
            "/v1/apps/{app}/machines/{id}",
            get(machines::show)
                .post(machines::update)
                .delete(ma::destroy),
        )
        .route("/v1/apps/{app}/machines/{id}/stop", post(ma::stop))
        .route("/v1/apps/{app}/machines/{id}/start", post(ma::start))
        .route("/v1/apps/{app}/machines/{id}/wait", get(ma::wait))
        .route(
            "/v1/apps/{app}/machines/{id}/lease",
            get(leases::show)
                .post(leases::create)
                .delete(leases::release),
        )
        .route(
            "/v1/apps/{app}/secrets",
            get(secrets::list).post(secrets::set),
        )
        .route(
            "/v1/apps/{app}/ip_assignments",
            get(ips::list).post(ips::create),
        )
        .route("/v1/apps/{app}/ip_assignments/{ip}", delete(ips::destroy))
        .route("/v1/orgs/{org}/machines", get(orgs::machines));
    v1.merge(inspect::router())
        .merge(super::health::router())
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(sh.clone(), pipeline))
        .with_state(sh)
}
