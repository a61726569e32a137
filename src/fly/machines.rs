//! Machines: create, list (per app and org-wide), get, update, stop, start, delete, wait
//! (REFERENCE §3).

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::apps::{MAX_PAGES, pagination_loop};
use super::client::{FlyClient, Request, deadline_after, decode};
use super::error::{CallInfo, FlyError};
use super::machine::{Machine, OrgMachine, OrgMachinesPage, WaitResult};
use super::route::Route;
use super::types::{CreateMachineRequest, ListMachines, StopMachineRequest, UpdateMachineRequest};

/// Fly blocks a wait for at most 60 s (fly-go clamps to 1..=60 because of a proxy timeout).
const MAX_WAIT_POLL_SECS: u64 = 60;
/// Extra HTTP time on top of a wait long-poll, so the server's 408 arrives before our timeout.
const WAIT_HTTP_SLACK: Duration = Duration::from_secs(15);

/// Filters for `list_org_machines_with` (REFERENCE §3.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOrgMachines {
    /// RFC 3339; only machines updated after it. Overlap successive windows (eventually
    /// consistent view).
    pub updated_after: Option<String>,
    /// States to keep (sent comma-separated).
    pub state: Vec<String>,
    pub include_deleted: Option<bool>,
    pub region: Option<String>,
    pub summary: bool,
    /// Page size (≤ 1000); defaults to the client's `list_page_size`.
    pub limit: Option<u32>,
}

impl FlyClient {
    /// `POST /v1/apps/{app}/machines`. Not idempotent and never retried except on 429: after a
    /// transport error, 408 or 5xx ([`FlyError::write_outcome_unknown`]) list the app's machines
    /// by the op id you put in `config.metadata` before creating another (REFERENCE §6).
    pub async fn create_machine(
        &self,
        app: &str,
        req: &CreateMachineRequest,
    ) -> Result<Machine, FlyError> {
        let r = Request::new(
            Route::CreateMachine,
            vec!["v1", "apps", app, "machines"],
            app,
        )
        .json(req)?;
        let answer = self.execute(&r).await?;
        decode(Route::CreateMachine, &answer)
    }

    /// `GET /v1/apps/{app}/machines` with filters, following the `fly-next-cursor` header.
    /// Lists lag writes and may show destroyed machines (REFERENCE §7).
    pub async fn list_machines(
        &self,
        app: &str,
        q: &ListMachines,
    ) -> Result<Vec<Machine>, FlyError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut r = Request::new(
                Route::ListMachines,
                vec!["v1", "apps", app, "machines"],
                app,
            );
            for (k, v) in &q.metadata {
                r = r.query(format!("metadata.{k}"), v.clone());
            }
            let r = page_query(
                r,
                &q.state,
                q.include_deleted,
                &q.region,
                q.summary,
                q.limit.unwrap_or(self.inner.list_page_size),
                &cursor,
            );
            let answer = self.execute(&r).await?;
            let page: Vec<Machine> = decode(Route::ListMachines, &answer)?;
            out.extend(page);
            match answer.next_cursor.clone() {
                None => return Ok(out),
                Some(c) if !seen.insert(c.clone()) => {
                    return Err(pagination_loop(Route::ListMachines, &answer));
                }
                Some(c) => cursor = Some(c),
            }
        }
        Err(too_many_pages(Route::ListMachines))
    }

    /// Every machine of the org: `GET /v1/orgs/{org}/machines`, following `next_cursor`.
    pub async fn list_org_machines(&self, org_slug: &str) -> Result<Vec<OrgMachine>, FlyError> {
        self.list_org_machines_with(org_slug, &ListOrgMachines::default())
            .await
    }

    /// [`FlyClient::list_org_machines`] with filters. If Fly reports `error_regions` on any page
    /// the answer is incomplete and [`FlyError::Incomplete`] is returned instead of a partial
    /// list, so a missing machine is never mistaken for a deleted one.
    pub async fn list_org_machines_with(
        &self,
        org_slug: &str,
        q: &ListOrgMachines,
    ) -> Result<Vec<OrgMachine>, FlyError> {
        Ok(self.org_machines(org_slug, q, false).await?.machines)
    }

    /// Every machine of the org Fly could list, and the regions it could not (`error_regions`,
    /// the union over all pages). The machines of those regions are missing from the list: the
    /// caller must not read their absence as "no machine" (REFERENCE: the list is incomplete).
    pub async fn list_org_machines_partial(
        &self,
        org_slug: &str,
    ) -> Result<OrgMachineList, FlyError> {
        self.org_machines(org_slug, &ListOrgMachines::default(), true)
            .await
    }

    /// [`FlyClient::list_org_machines_partial`] with filters: the cache's delta
    /// (`updated_after`, `include_deleted`).
    pub async fn list_org_machines_partial_with(
        &self,
        org_slug: &str,
        q: &ListOrgMachines,
    ) -> Result<OrgMachineList, FlyError> {
        self.org_machines(org_slug, q, true).await
    }

    async fn org_machines(
        &self,
        org_slug: &str,
        q: &ListOrgMachines,
        partial_ok: bool,
    ) -> Result<OrgMachineList, FlyError> {
        let mut machines = Vec::new();
        let pages = self
            .org_machines_pages(org_slug, q, partial_ok, |page| machines.extend(page))
            .await?;
        Ok(OrgMachineList {
            machines,
            error_regions: pages.error_regions,
            served_at: pages.served_at,
        })
    }

    /// [`FlyClient::list_org_machines_partial_with`] handing each page to `each` as it arrives
    /// (the observation cache keeps a compact form and never holds the whole answer). Returns the
    /// regions Fly could not list, sorted (without `partial_ok` any is an error), and the `Date`
    /// of the first page.
    pub async fn org_machines_pages(
        &self,
        org_slug: &str,
        q: &ListOrgMachines,
        partial_ok: bool,
        mut each: impl FnMut(Vec<OrgMachine>),
    ) -> Result<OrgPages, FlyError> {
        let mut error_regions: Vec<String> = Vec::new();
        let mut served_at = None;
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut r = Request::new(
                Route::ListOrgMachines,
                vec!["v1", "orgs", org_slug, "machines"],
                org_slug,
            );
            if let Some(t) = &q.updated_after {
                r = r.query("updated_after", t.clone());
            }
            let r = page_query(
                r,
                &q.state,
                q.include_deleted,
                &q.region,
                q.summary,
                q.limit.unwrap_or(self.inner.list_page_size),
                &cursor,
            );
            let answer = self.execute(&r).await?;
            served_at = served_at.or(answer.date);
            let page: OrgMachinesPage = decode(Route::ListOrgMachines, &answer)?;
            if !page.error_regions.is_empty() && !partial_ok {
                return Err(FlyError::Incomplete {
                    call: answer.call(Route::ListOrgMachines),
                    error_regions: page.error_regions,
                });
            }
            for r in page.error_regions {
                if !error_regions.contains(&r) {
                    error_regions.push(r);
                }
            }
            each(page.machines);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                None => {
                    error_regions.sort();
                    return Ok(OrgPages {
                        error_regions,
                        served_at,
                    });
                }
                Some(c) if !seen.insert(c.clone()) => {
                    return Err(pagination_loop(Route::ListOrgMachines, &answer));
                }
                Some(c) => cursor = Some(c),
            }
        }
        Err(too_many_pages(Route::ListOrgMachines))
    }

    /// `GET /v1/apps/{app}/machines/{id}`.
    pub async fn get_machine(&self, app: &str, id: &str) -> Result<Machine, FlyError> {
        let r = Request::new(
            Route::GetMachine,
            vec!["v1", "apps", app, "machines", id],
            id,
        );
        let answer = self.execute(&r).await?;
        decode(Route::GetMachine, &answer)
    }

    /// `POST /v1/apps/{app}/machines/{id}` with the whole config. With `current_version` set, a
    /// concurrent change gives [`FlyError::Conflict`] and nothing is applied.
    pub async fn update_machine(
        &self,
        app: &str,
        id: &str,
        req: &UpdateMachineRequest,
    ) -> Result<Machine, FlyError> {
        let r = Request::new(
            Route::UpdateMachine,
            vec!["v1", "apps", app, "machines", id],
            id,
        )
        .json(req)?;
        let answer = self.execute(&r).await?;
        decode(Route::UpdateMachine, &answer)
    }

    /// `POST …/{id}/stop` with `{signal, timeout}`. Returns once Fly accepted the stop; use
    /// [`FlyClient::wait_machine`] for `stopped`.
    pub async fn stop_machine(
        &self,
        app: &str,
        id: &str,
        req: &StopMachineRequest,
    ) -> Result<(), FlyError> {
        let r = Request::new(
            Route::StopMachine,
            vec!["v1", "apps", app, "machines", id, "stop"],
            id,
        )
        .json(req)?;
        self.execute(&r).await.map(|_| ())
    }

    /// `POST …/{id}/start` (no body).
    pub async fn start_machine(&self, app: &str, id: &str) -> Result<(), FlyError> {
        let r = Request::new(
            Route::StartMachine,
            vec!["v1", "apps", app, "machines", id, "start"],
            id,
        );
        self.execute(&r).await.map(|_| ())
    }

    /// `DELETE …/{id}` (`?force=true` kills a running machine). 404 = already gone. Force can still
    /// fail in transient states: verify with get/wait.
    pub async fn delete_machine(&self, app: &str, id: &str, force: bool) -> Result<(), FlyError> {
        let mut r = Request::new(
            Route::DeleteMachine,
            vec!["v1", "apps", app, "machines", id],
            id,
        );
        if force {
            r = r.query("force", "true");
        }
        self.execute(&r).await.map(|_| ())
    }

    /// Wait until the machine reaches one of `states` (`started`, `stopped`, `suspended`,
    /// `destroyed`, `failed`, `settled`), optionally for a given `version`, for at most `timeout`.
    ///
    /// Long-polls `GET …/{id}/wait` in slices of 1..=60 s; Fly's 408 (slice over) re-polls until
    /// `timeout` has passed, then [`FlyError::Timeout`] is returned. Transport errors, 429 and
    /// 502/503 are retried like any GET.
    pub async fn wait_machine(
        &self,
        app: &str,
        id: &str,
        states: &[&str],
        version: Option<&str>,
        timeout: Duration,
    ) -> Result<WaitResult, FlyError> {
        let deadline = deadline_after(timeout);
        let state = states.join(",");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let poll = remaining.as_secs().clamp(1, MAX_WAIT_POLL_SECS);
            let attempt_timeout = Duration::from_secs(poll) + WAIT_HTTP_SLACK;
            let mut r = Request::new(
                Route::WaitMachine,
                vec!["v1", "apps", app, "machines", id, "wait"],
                id,
            )
            .query("timeout", poll.to_string());
            if !state.is_empty() {
                r = r.query("state", state.clone());
            }
            if let Some(v) = version {
                r = r.query("version", v);
            }
            r.attempt_timeout = Some(attempt_timeout);
            r.deadline = Some(deadline.checked_add(attempt_timeout).unwrap_or(deadline));
            let started = Instant::now();
            match self.execute(&r).await {
                Ok(answer) => return decode(Route::WaitMachine, &answer),
                Err(FlyError::Timeout { .. }) if Instant::now() < deadline => {
                    // A server answering 408 at once must not turn this into a busy loop.
                    let floor = started + Duration::from_secs(1);
                    tokio::time::sleep_until(floor.min(deadline)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn too_many_pages(route: Route) -> FlyError {
    FlyError::Decode {
        call: CallInfo::new(route),
        status: 200,
        detail: format!("more than {MAX_PAGES} pages"),
    }
}

/// The filters both machine lists share (REFERENCE §3.9), and the page cursor.
fn page_query<'a>(
    mut r: Request<'a>,
    state: &[String],
    include_deleted: Option<bool>,
    region: &Option<String>,
    summary: bool,
    limit: u32,
    cursor: &Option<String>,
) -> Request<'a> {
    if let Some(b) = include_deleted {
        r = r.query("include_deleted", b.to_string());
    }
    if !state.is_empty() {
        r = r.query("state", state.join(","));
    }
    if let Some(region) = region {
        r = r.query("region", region.clone());
    }
    if summary {
        r = r.query("summary", "true");
    }
    r = r.query("limit", limit.clamp(1, 1000).to_string());
    if let Some(c) = cursor {
        r = r.query("cursor", c.clone());
    }
    r
}

/// [`FlyClient::list_org_machines_partial`]'s answer.
#[derive(Debug, Clone, Default)]
pub struct OrgMachineList {
    pub machines: Vec<OrgMachine>,
    /// Regions whose machines are missing from `machines`, sorted.
    pub error_regions: Vec<String>,
    /// The API's clock (`Date`) when it answered the first page: no change it lists can have
    /// happened later, whatever a host's clock stamped on it.
    pub served_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// [`FlyClient::org_machines_pages`]'s outcome.
#[derive(Debug, Clone, Default)]
pub struct OrgPages {
    /// Regions Fly could not list, sorted.
    pub error_regions: Vec<String>,
    /// As [`OrgMachineList::served_at`].
    pub served_at: Option<chrono::DateTime<chrono::Utc>>,
}
