//! Observe Fly: the managed apps of our org and their machines, from two paginated list calls.
//! [`super::cache`] keeps the result between passes and follows it with deltas (invariant 9).
//!
//! Pages are folded into the compact [`Observation`] as they arrive ([`ListSink`]): at 100,000
//! apps the raw answer (every `App` and `OrgMachine` with its metadata) would be several times the
//! size of what the planner reads, and holding it next to the previous state doubled the peak.

use chrono::{DateTime, Utc};
use std::cmp::Ordering;
use tracing::warn;
use uuid::Uuid;

use super::naming;
use super::observed::{
    META_OP, META_USER_ID, Observation, ObservedApp, ObservedMachine, SharedStr,
};
use crate::fly::{App, FlyClient, FlyError, ListMachines, ListOrgMachines, OrgMachine};
use crate::model::shared_str::Interner;

/// Where a full list's pages go, one page at a time.
pub(crate) trait ListSink {
    fn apps(&mut self, page: Vec<App>);
    fn machines(&mut self, page: Vec<OrgMachine>);
}

/// How a full list went, beyond what it handed to the sink.
pub(crate) struct ListOutcome {
    /// Regions whose machines are missing from what the sink received.
    pub error_regions: Vec<String>,
    /// Machines were listed app by app (no org-wide list): no watermark to follow deltas from.
    pub per_app: bool,
    /// The API's clock when the org list began (its first page's `Date`).
    pub served_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every page of both lists (the cache's full list and resync; [`super::cache`]). On error the
/// sink holds part of the fleet: the caller must discard it.
pub(crate) async fn full_list(
    fly: &FlyClient,
    org: &str,
    prefix: &str,
    sink: &mut impl ListSink,
) -> Result<ListOutcome, FlyError> {
    let mut managed = Vec::new();
    fly.list_apps_pages(org, |page| {
        let names = page.iter().map(|a| &a.name);
        managed.extend(names.filter(|n| naming::is_managed(prefix, n)).cloned());
        sink.apps(page);
    })
    .await?;
    let all = ListOrgMachines::default();
    let listed = fly
        .org_machines_pages(org, &all, true, |page| sink.machines(page))
        .await;
    match listed {
        Ok(crate::fly::OrgPages {
            error_regions,
            served_at,
        }) => {
            if !error_regions.is_empty() {
                warn!(
                    regions = %error_regions.join(","),
                    "Fly could not list machines in some regions; apps there are left alone this pass"
                );
            }
            Ok(ListOutcome {
                error_regions,
                per_app: false,
                served_at,
            })
        }
        // An API without the org-wide list: one list per managed app instead (costlier, correct).
        Err(FlyError::NotFound { .. } | FlyError::UnexpectedStatus { .. }) => {
            warn!("org-wide machine list unavailable; listing machines app by app");
            sink.machines(per_app_machines(fly, &managed).await?);
            Ok(ListOutcome {
                error_regions: vec![],
                per_app: true,
                served_at: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// Only the apps named `names` and their machines, app by app (a `GET` and a machine list each):
/// what a targeted run observes when no complete cache exists yet (a new leader's first full list
/// takes minutes at 100,000 apps). A name Fly answers 404 or 403 for is absent here; the converge
/// executor asks Fly itself before creating anything.
pub(crate) async fn observe_names(
    fly: &FlyClient,
    org: &str,
    prefix: &str,
    names: &[String],
) -> Result<Observation, FlyError> {
    let mut obs = Observation::default();
    let mut found = Vec::new();
    for name in names.iter().filter(|n| naming::is_managed(prefix, n)) {
        match fly.get_app(name).await {
            Ok(app) => {
                if add_app(&mut obs, org, prefix, &app) {
                    found.push(app.name);
                }
            }
            Err(FlyError::NotFound { .. } | FlyError::Forbidden { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for m in per_app_machines(fly, &found).await? {
        merge_machine(&mut obs, prefix, m);
    }
    Ok(obs)
}

async fn per_app_machines(fly: &FlyClient, apps: &[String]) -> Result<Vec<OrgMachine>, FlyError> {
    let mut out = Vec::new();
    for app in apps {
        let machines = match fly.list_machines(app, &ListMachines::default()).await {
            Ok(ms) => ms,
            // Deleted between the two lists.
            Err(FlyError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        for m in machines {
            out.push(OrgMachine {
                app_name: app.clone(),
                id: m.id,
                name: m.name,
                state: m.state,
                region: m.region,
                version: m.version,
                private_ip: m.private_ip,
                created_at: m.created_at,
                updated_at: m.updated_at,
                config: m.config.map(|c| crate::fly::OrgMachineConfig {
                    image: c.image,
                    guest: c.guest,
                    metadata: c.metadata,
                }),
            });
        }
    }
    Ok(out)
}

/// Pure: a listed app of our org with the managed prefix (invariant 1) gets an entry; true if so.
pub(crate) fn add_app(obs: &mut Observation, org: &str, prefix: &str, app: &App) -> bool {
    let in_org = app.organization.as_ref().is_none_or(|o| o.slug == org);
    if !(in_org && naming::is_managed(prefix, &app.name)) {
        return false;
    }
    obs.apps
        .entry(app.name.clone())
        .or_insert_with(|| ObservedApp {
            name: app.name.clone(),
            machines: vec![],
        });
    true
}

/// What [`merge_machine`] did with one listed machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Not ours (unmanaged app), or nothing new: the same copy, or an older one.
    Unchanged,
    /// Added, replaced or (gone) removed.
    Changed,
}

/// Pure: fold one listed machine into `obs`. A machine listed before its app shows in the apps
/// list (the lists lag independently) records its app. Lists are eventually consistent: an older
/// copy (a lagging replica) never replaces a newer one. A gone machine (`destroyed`, ...) leaves.
pub(crate) fn merge_machine(obs: &mut Observation, prefix: &str, m: OrgMachine) -> Merge {
    if !naming::is_managed(prefix, &m.app_name) {
        return Merge::Unchanged;
    }
    let gone = m.state.is_gone();
    let (app, new) = observed_machine(m);
    let Some(entry) = obs.apps.get_mut(&app) else {
        if gone {
            return Merge::Unchanged;
        }
        obs.apps.insert(
            app.clone(),
            ObservedApp {
                name: app,
                machines: vec![new],
            },
        );
        return Merge::Changed;
    };
    let Some(i) = entry.machines.iter().position(|o| o.id == new.id) else {
        if gone {
            return Merge::Unchanged;
        }
        // An app has one machine (two during a replacement): a plain push would reserve four,
        // 700 bytes of nothing per app (70 MB at 100,000 apps, measured with heaptrack).
        entry.machines.reserve_exact(1);
        entry.machines.push(new);
        return Merge::Changed;
    };
    let old = &entry.machines[i];
    if older(new.updated_at, old.updated_at) || *old == new {
        return Merge::Unchanged;
    }
    if gone {
        entry.machines.remove(i);
    } else {
        entry.machines[i] = new;
    }
    Merge::Changed
}

fn older(new: Option<DateTime<Utc>>, old: Option<DateTime<Utc>>) -> bool {
    matches!((new, old), (Some(n), Some(o)) if n.cmp(&o) == Ordering::Less)
}

/// Pure: the planner's view of one listed machine (the strings moved, not copied), by app name.
pub(crate) fn observed_machine(m: OrgMachine) -> (String, ObservedMachine) {
    let (image, guest, mut meta) = match m.config {
        Some(c) => (c.image, c.guest, c.metadata),
        None => Default::default(),
    };
    let machine = ObservedMachine {
        id: m.id,
        state: shared(m.state.as_str()),
        region: shared(&m.region),
        image: shared(&image),
        cpus: guest.as_ref().and_then(|g| g.cpus),
        memory_mb: guest.as_ref().and_then(|g| g.memory_mb),
        cpu_kind: guest.and_then(|g| g.cpu_kind).map(|k| shared(&k)),
        user_id: meta.get(META_USER_ID).and_then(|s| Uuid::parse_str(s).ok()),
        op: meta.remove(META_OP),
        version: m.version,
        updated_at: parse_time(m.updated_at.as_deref()),
    };
    (m.app_name, machine)
}

/// The one copy of a machine field's value (a state, region, image or guest kind) that every
/// observed machine holding it shares. Process-wide, so a resync's fresh copies share with the
/// ones the cache already holds; it grows only by a value never seen before (a new image per
/// rollout, a new region), a handful over months.
fn shared(s: &str) -> SharedStr {
    static SEEN: std::sync::Mutex<Option<Interner>> = std::sync::Mutex::new(None);
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.get_or_insert_with(Interner::default).share(s)
}

pub(crate) fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
