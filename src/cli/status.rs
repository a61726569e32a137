//! `vyx-fleet status` and the printed plan. Reads the database only; no secret is ever in a row.

use std::fmt::Write;
use std::path::Path;

use super::orgs;
use crate::config;
use crate::db;
use crate::fleet_status::{load, render_table};
use crate::reconcile::plan::{Action, Finding, Plan};

pub async fn status(cfg: Option<&Path>, json: bool) -> u8 {
    let database = match config::load_database(cfg) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let pool = match db::connect_db(&database, 2).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot connect to the database: {e}");
            return 1;
        }
    };
    // Optional here: `status` needs only DATABASE_URL; with FLY_ORG_SLUG it can say more.
    let org = config::load_org_slug(cfg).ok().flatten();
    let (apps, totals) = match load(&pool).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cannot read user_fly_apps: {e}");
            return 1;
        }
    };
    let held = match db::breaker::load_held(&pool).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot read the held deletions: {e}");
            return 1;
        }
    };
    let rollout = match super::rollout::load(&pool).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot read vyx_fleet.rollout: {e}");
            return 1;
        }
    };
    let by_org = orgs::count_by_org(apps.iter().map(|a| a.fly_org.as_deref()), org.as_deref());
    if json {
        let doc = serde_json::json!({
            "apps": apps,
            "totals": totals,
            "rows_by_fly_org": by_org,
            "fly_org_slug": org,
            "rollout": rollout,
            "held_deletions": held.iter().map(|h| serde_json::json!({
                "app": h.app_name,
                "user_id": h.user_id,
                "kind": h.kind,
                "held_at": h.held_at,
                "confirmed_at": h.confirmed_at,
                "confirmed_by": h.confirmed_by,
            })).collect::<Vec<_>>(),
        });
        println!("{doc}");
    } else {
        print!("{}", render_table(&apps, &totals));
        print!("{}", orgs::advice(&by_org, org.as_deref()));
        print!("{}", render_held(&held));
        print!("{}", super::rollout::render(rollout.as_ref()));
    }
    0
}

/// The blast-radius breaker's held set, for the operator deciding whether to confirm it.
pub fn render_held(held: &[db::breaker::HeldDeletion]) -> String {
    let mut out = String::new();
    if held.is_empty() {
        return out;
    }
    let unconfirmed = held.iter().filter(|h| h.confirmed_at.is_none()).count();
    let _ = writeln!(
        out,
        "HELD {} deletion(s) by the blast-radius breaker ({unconfirmed} not confirmed{}):",
        held.len(),
        if unconfirmed > 0 {
            "; `vyx-fleet confirm-deletions` lets exactly these go"
        } else {
            ""
        }
    );
    for h in held {
        let _ = writeln!(
            out,
            "  {:<20} {:<11} held {}{}",
            h.app_name,
            h.kind,
            h.held_at.format("%Y-%m-%d %H:%M:%SZ"),
            match (&h.confirmed_at, &h.confirmed_by) {
                (Some(at), by) => format!(
                    ", confirmed {} by {}",
                    at.format("%H:%M:%SZ"),
                    by.as_deref().unwrap_or("?")
                ),
                (None, _) => String::new(),
            }
        );
    }
    out
}

/// The plan as an operator reads it; `org` is `FLY_ORG_SLUG`.
pub fn render_plan(plan: &Plan, org: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan: {} action(s)", plan.actions.len());
    for a in &plan.actions {
        let line = match a {
            Action::Converge {
                user_id,
                row_id,
                reason,
                to,
            } => format!(
                "converge     user={user_id} reason={} to={}{}",
                reason.as_str(),
                to.as_str(),
                row_id.map_or(String::new(), |r| format!(" row={r}"))
            ),
            Action::MarkUnwanted { user_id, .. } => {
                format!("schedule-deprovision user={user_id} (grace starts)")
            }
            Action::CancelDeprovision { user_id, .. } => {
                format!("cancel-deprovision   user={user_id}")
            }
            Action::Deprovision { user_id, app, .. } => {
                format!("deprovision  user={user_id} app={app}")
            }
            Action::Rollout {
                user_id,
                wave,
                step,
                ..
            } => format!("{:<12} user={user_id} wave={wave}", step.kind()),
            Action::Repair { user_id, step, .. } => {
                format!("repair       user={user_id} step={}", step.as_str())
            }
            Action::SyncOrphans { names } => format!("track-orphans {names:?}"),
            Action::DeleteOrphan { app } => format!("delete-orphan app={app}"),
        };
        let _ = writeln!(out, "  {line}");
    }
    for f in &plan.findings {
        let line = match f {
            Finding::Paused { user_id, drift } => format!("paused user={user_id} drift={drift}"),
            Finding::UnmanagedRowName { row_id, name } => {
                format!("skipped row={row_id}: app {name} lacks the managed prefix")
            }
            Finding::ForeignOrgRow { row_id, org } => {
                format!("skipped row={row_id}: recorded in org {org}")
            }
            Finding::UnknownStatus { row_id, status } => {
                format!("skipped row={row_id}: unknown status {status:?}")
            }
            Finding::UserMissing { row_id, user_id } => {
                format!("skipped row={row_id}: user {user_id} missing from auth.users")
            }
            Finding::Orphan { app, since } => format!("orphan {app} since {since}"),
            Finding::RolloutHalted { image, reason, .. } => {
                format!("ALERT rollout of {image} halted: {reason}")
            }
            Finding::RegionsUnavailable { regions, held_back } => format!(
                "Fly could not list machines in {}: {held_back} action(s) there wait for a later pass",
                regions.join(",")
            ),
            Finding::DeletionsBlocked { would_delete, live } => format!(
                "ALERT deletions blocked: would delete {would_delete} of {live} live apps; \
                 run `vyx-fleet confirm-deletions`"
            ),
        };
        let _ = writeln!(out, "  ! {line}");
    }
    let foreign = plan.findings.iter().filter_map(|f| match f {
        Finding::ForeignOrgRow { org, .. } => Some(Some(org.as_str())),
        _ => None,
    });
    out.push_str(&orgs::advice(
        &orgs::count_by_org(foreign, Some(org)),
        Some(org),
    ));
    out
}
