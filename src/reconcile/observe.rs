//! Observe Fly: the managed apps of our org and their machines, from two paginated list calls.
//! [`super::cache`] keeps the result between passes and follows it with deltas (invariant 9).

use std::collections::BTreeMap;
use tracing::{debug, warn};
use uuid::Uuid;

use super::naming;
use super::observed::{META_OP, META_USER_ID, Observation, ObservedApp, ObservedMachine};
use crate::fly::{FlyClient, FlyError, ListMachines, OrgMachine, OrgMachineConfig};

/// One complete read of Fly: every app of the org and every machine of the org, unfiltered.
pub(crate) struct FullList {
    pub apps: Vec<crate::fly::App>,
    pub machines: Vec<OrgMachine>,
    /// Regions whose machines are missing from `machines`.
    pub error_regions: Vec<String>,
    /// Machines were listed app by app (no org-wide list): no watermark to follow deltas from.
    pub per_app: bool,
}

/// Every page of both lists (the cache's full list and resync; [`super::cache`]).
pub(crate) async fn full_list(
    fly: &FlyClient,
    org: &str,
    prefix: &str,
) -> Result<FullList, FlyError> {
    let apps = fly.list_apps(org).await?;
    let mut error_regions = Vec::new();
    let mut per_app = false;
    let machines = match fly.list_org_machines_partial(org).await {
        Ok(list) => {
            if !list.error_regions.is_empty() {
                warn!(
                    regions = %list.error_regions.join(","),
                    "Fly could not list machines in some regions; apps there are left alone this pass"
                );
            }
            error_regions = list.error_regions;
            list.machines
        }
        // An API without the org-wide list: one list per managed app instead (costlier, correct).
        Err(FlyError::NotFound { .. } | FlyError::UnexpectedStatus { .. }) => {
            warn!("org-wide machine list unavailable; listing machines app by app");
            per_app = true;
            per_app_machines(fly, prefix, &apps).await?
        }
        Err(e) => return Err(e),
    };
    Ok(FullList {
        apps,
        machines,
        error_regions,
        per_app,
    })
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
    let mut apps = Vec::new();
    for name in names.iter().filter(|n| naming::is_managed(prefix, n)) {
        match fly.get_app(name).await {
            Ok(app) => apps.push(app),
            Err(FlyError::NotFound { .. } | FlyError::Forbidden { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let machines = per_app_machines(fly, prefix, &apps).await?;
    Ok(assemble(org, prefix, &apps, &machines))
}

async fn per_app_machines(
    fly: &FlyClient,
    prefix: &str,
    apps: &[crate::fly::App],
) -> Result<Vec<OrgMachine>, FlyError> {
    let mut out = Vec::new();
    for app in apps.iter().filter(|a| naming::is_managed(prefix, &a.name)) {
        let machines = match fly.list_machines(&app.name, &ListMachines::default()).await {
            Ok(ms) => ms,
            // Deleted between the two lists.
            Err(FlyError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        for m in machines {
            let cfg = m.config.as_ref();
            out.push(OrgMachine {
                app_name: app.name.clone(),
                id: m.id.clone(),
                name: m.name.clone(),
                state: m.state.clone(),
                region: m.region.clone(),
                version: m.version.clone(),
                private_ip: m.private_ip.clone(),
                created_at: m.created_at.clone(),
                updated_at: m.updated_at.clone(),
                config: cfg.map(|c| OrgMachineConfig {
                    image: c.image.clone(),
                    guest: c.guest.clone(),
                    metadata: c.metadata.clone(),
                }),
            });
        }
    }
    Ok(out)
}

/// Pure: filter to our org and prefix (invariant 1), attach machines to their apps. Reads by
/// reference: the cache keeps its copy, and only what the planner needs is copied out.
pub fn assemble<'a>(
    org: &str,
    prefix: &str,
    apps: impl IntoIterator<Item = &'a crate::fly::App>,
    machines: impl IntoIterator<Item = &'a OrgMachine>,
) -> Observation {
    let mut out: BTreeMap<String, ObservedApp> = BTreeMap::new();
    for app in apps {
        let in_org = app.organization.as_ref().is_none_or(|o| o.slug == org);
        if in_org && naming::is_managed(prefix, &app.name) {
            out.insert(
                app.name.clone(),
                ObservedApp {
                    name: app.name.clone(),
                    machines: vec![],
                },
            );
        }
    }
    for m in machines {
        // A machine listed before its app shows in the apps list (lists lag independently): the
        // app exists, so record it.
        if !naming::is_managed(prefix, &m.app_name) {
            continue;
        }
        let cfg = m.config.as_ref();
        let meta = cfg.map(|c| &c.metadata);
        let guest = cfg.and_then(|c| c.guest.as_ref());
        let observed = ObservedMachine {
            id: m.id.clone(),
            state: m.state.as_str().to_string(),
            region: m.region.clone(),
            image: cfg.map(|c| c.image.clone()).unwrap_or_default(),
            cpus: guest.and_then(|g| g.cpus),
            memory_mb: guest.and_then(|g| g.memory_mb),
            cpu_kind: guest.and_then(|g| g.cpu_kind.clone()),
            user_id: meta
                .and_then(|md| md.get(META_USER_ID))
                .and_then(|s| Uuid::parse_str(s).ok()),
            op: meta.and_then(|md| md.get(META_OP)).cloned(),
        };
        out.entry(m.app_name.clone())
            .or_insert_with(|| ObservedApp {
                name: m.app_name.clone(),
                machines: vec![],
            })
            .machines
            .push(observed);
    }
    debug!(apps = out.len(), "observed fly");
    Observation {
        apps: out,
        error_regions: Default::default(),
    }
}
