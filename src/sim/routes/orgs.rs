//! `GET /v1/orgs/{org}/machines` (§3.9): the org-wide, point-in-time listing a quiet
//! reconcile pass is built on [S1].

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiError, ApiResult, Caller, parse_query, query_bool, query_get, query_limit};
use crate::sim::server::{Shared, lock};
use crate::sim::state::{Machine, World, rfc3339};

/// Cursor = position in (updated_at, id) order, so a machine updated mid-pagination moves
/// behind the cursor: the listing is explicitly eventually consistent; overlap windows [S1].
fn encode_key(micros: i64, id: &str) -> String {
    format!("o1.{micros:x}.{id}")
}

fn decode(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("invalid cursor");
    let rest = c.strip_prefix("o1.").ok_or_else(bad)?;
    let (t, id) = rest.split_once('.').ok_or_else(bad)?;
    Ok((
        i64::from_str_radix(t, 16).map_err(|_| bad())?,
        id.to_string(),
    ))
}

fn org_machine_json(app: &str, m: &Machine, summary: bool) -> Value {
    let mut v = json!({
        "app_name": app,
        "id": m.id,
        "name": m.name,
        "state": m.state,
        "region": m.region,
        "version": m.version,
        "private_ip": m.private_ip,
        "created_at": rfc3339(m.created_at),
        "updated_at": rfc3339(m.updated_at),
    });
    if !summary {
        v["config"] = json!({
            "image": m.config.get("image"),
            "guest": m.config.get("guest"),
            "metadata": m.config.get("metadata"),
        });
    }
    v
}

pub(crate) async fn machines(
    State(sh): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(org): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let org = if org == "personal" {
        caller.orgs.first().cloned().unwrap_or_default()
    } else {
        org
    };
    if !caller.can_access(&org) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("unauthorized: token has no access to organization {org}"),
        ));
    }
    let q = parse_query(raw.as_deref());
    let include_deleted = query_bool(&q, "include_deleted")?;
    let summary = query_bool(&q, "summary")?;
    let limit = query_limit(&q, 1000)?;
    let after = match query_get(&q, "cursor").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode(c)?),
        None => None,
    };
    let updated_after = match query_get(&q, "updated_after").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::bad_request("updated_after must be RFC 3339"))?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let states: Vec<&str> = query_get(&q, "state")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let region = query_get(&q, "region").filter(|r| !r.is_empty());
    // Regions that did not answer: reported, and their machines missing (REFERENCE §3.9).
    let error_regions = lock(&sh.faults).faults.error_regions.clone();
    let lag = crate::sim::replica::read_lag(&sh);
    let filter = Filter {
        now: Instant::now(),
        lag,
        include_deleted,
        states,
        region,
        error_regions: &error_regions,
        updated_after,
        after: after.as_ref().map(|(t, id)| (*t, id.as_str())),
    };
    let want = limit.map(|l| l.saturating_add(1));
    let mut page = Page::new(want);
    // The fleet is scanned a slice of apps per hold of the world lock, so other requests (a
    // user's GET, a health probe) wait for a slice, not for the page (~60 ms at 100,000 machines).
    // Between slices the world may move on: a machine changed after its slice was scanned shows
    // its new state at its old place in this page and again later, as Fly's own eventually
    // consistent listing does ("moves behind the cursor", REFERENCE §3.9).
    let mut resume: Option<String> = None;
    loop {
        resume = page.scan(&sh.world, &org, &filter, resume.as_deref());
        if resume.is_none() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut rows = page.into_sorted();
    let mut next = None;
    if let Some(l) = limit
        && rows.len() > l
    {
        rows.truncate(l);
        next = rows.last().map(|(t, id, _)| encode_key(*t, id));
    }
    let world = lock(&sh.world);
    let listed: Vec<(&str, &Machine)> = rows
        .iter()
        .filter_map(|(_, id, app)| {
            let a = world.apps.get(app)?;
            Some((a.name.as_str(), a.machines.get(id)?.as_of(lag)))
        })
        .collect();
    let last = listed.last().map(|(_, m)| *m);
    let machines: Vec<Value> = listed
        .iter()
        .map(|(a, m)| org_machine_json(a, m, summary))
        .collect();
    let mut body = json!({
        "machines": machines,
        "error_regions": error_regions,
        "last_updated_at": last.map(|m| rfc3339(m.updated_at)),
        "last_machine_id": last.map(|m| m.id.clone()),
    });
    if let Some(n) = next {
        body["next_cursor"] = Value::from(n);
    }
    Ok(Json(body).into_response())
}

/// Apps scanned per hold of the world lock.
const APPS_PER_HOLD: usize = 2_000;

/// Which machines the query lists.
struct Filter<'a> {
    now: Instant,
    /// This call's replica is this far behind (`replica.rs`).
    lag: std::time::Duration,
    include_deleted: bool,
    states: Vec<&'a str>,
    region: Option<&'a str>,
    error_regions: &'a [String],
    updated_after: Option<DateTime<Utc>>,
    after: Option<(i64, &'a str)>,
}

impl Filter<'_> {
    fn lists(&self, m: &Machine) -> bool {
        self.now >= m.listed_at
            && (self.include_deleted || m.state != "destroyed")
            && (self.states.is_empty() || self.states.contains(&m.state.as_str()))
            && self.region.is_none_or(|r| r == m.region)
            && !self.error_regions.contains(&m.region)
            && self.updated_after.is_none_or(|t| m.updated_at > t)
            && self
                .after
                .is_none_or(|(t, id)| (m.updated_at.timestamp_micros(), m.id.as_str()) > (t, id))
    }
}

/// The page being gathered: the `want` first listed machines in `(updated_at µs, id)` order, as
/// owned keys (a bounded max-heap: a String pair is cloned only for a machine that enters it).
struct Page {
    want: Option<usize>,
    heap: std::collections::BinaryHeap<(i64, String, String)>,
}

impl Page {
    fn new(want: Option<usize>) -> Page {
        Page {
            want,
            heap: Default::default(),
        }
    }

    /// Scan up to [`APPS_PER_HOLD`] apps after `resume` (by name) under one hold of the lock;
    /// the last app scanned if more remain.
    fn scan(
        &mut self,
        world: &std::sync::Mutex<World>,
        org: &str,
        filter: &Filter<'_>,
        resume: Option<&str>,
    ) -> Option<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        let world = lock(world);
        let from = resume.map_or(Unbounded, Excluded);
        let mut last: Option<&String> = None;
        for (scanned, (name, app)) in world.apps.range::<str, _>((from, Unbounded)).enumerate() {
            if scanned == APPS_PER_HOLD {
                return last.cloned();
            }
            last = Some(name);
            if app.org != org {
                continue;
            }
            let seen = app.machines.values().filter(|m| filter.now >= m.listed_at);
            for m in seen
                .map(|m| m.as_of(filter.lag))
                .filter(|m| filter.lists(m))
            {
                self.offer(m.updated_at.timestamp_micros(), &m.id, name);
            }
        }
        None
    }

    fn offer(&mut self, micros: i64, id: &str, app: &str) {
        let full = self.want.is_some_and(|w| self.heap.len() >= w);
        if full {
            let Some(top) = self.heap.peek() else { return };
            if (micros, id) >= (top.0, top.1.as_str()) {
                return;
            }
            self.heap.pop();
        }
        if self.want != Some(0) {
            self.heap.push((micros, id.to_string(), app.to_string()));
        }
    }

    fn into_sorted(self) -> Vec<(i64, String, String)> {
        self.heap.into_sorted_vec()
    }
}
