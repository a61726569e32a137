//! `vyx-fleet admin add|revoke|list` and `vyx-fleet confirm-deletions`: the operator's commands that
//! act as a person, each leaving its row in the admin trail.

use std::fmt::Write;
use std::path::Path;

use crate::config;
use crate::db::{self, admins, breaker};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Who the trail records for a command typed in a shell.
fn operator() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map_or_else(|_| "cli".to_string(), |u| format!("cli:{u}"))
}

async fn pool(cfg: Option<&Path>) -> Result<sqlx::PgPool, u8> {
    let database = config::load_database(cfg).map_err(|e| {
        eprintln!("{e}");
        EXIT_CONFIG
    })?;
    let pool = db::connect_db(&database, 2).await.map_err(|e| {
        eprintln!("cannot connect to the database: {e}");
        EXIT_FAILURE
    })?;
    // The tables this command writes may be newer than the running daemons.
    db::migrate(&pool).await.map_err(|e| {
        eprintln!("migrations failed: {e}");
        EXIT_FAILURE
    })?;
    Ok(pool)
}

/// `admin add NAME`: prints the new admin's token once. Exit 1 if the name is taken.
pub async fn add(cfg: Option<&Path>, name: &str) -> u8 {
    let name = name.trim();
    if !admins::valid_name(name) {
        eprintln!(
            "NAME: one line of 1 to {} characters, not only spaces",
            admins::NAME_MAX
        );
        return EXIT_CONFIG;
    }
    let pool = match pool(cfg).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    match admins::add(&pool, name, &operator()).await {
        Ok(admins::Added::Token(token)) => {
            println!(
                "admin {name} added. Their console token (shown only now; only its hash is kept):"
            );
            println!("{token}");
            0
        }
        Ok(admins::Added::Exists) => {
            eprintln!(
                "an admin named {name} exists already (names are never reused; pick another)"
            );
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("cannot add the admin: {e}");
            EXIT_FAILURE
        }
    }
}

/// `admin revoke NAME`: the token stops working and every session of theirs ends, on every replica.
pub async fn revoke(cfg: Option<&Path>, name: &str) -> u8 {
    let pool = match pool(cfg).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    match admins::revoke(&pool, name.trim(), &operator()).await {
        Ok(true) => {
            println!("admin {} revoked; their sessions have ended", name.trim());
            0
        }
        Ok(false) => {
            eprintln!("no active admin named {}", name.trim());
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("cannot revoke the admin: {e}");
            EXIT_FAILURE
        }
    }
}

pub async fn list(cfg: Option<&Path>) -> u8 {
    let pool = match pool(cfg).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    match admins::list(&pool).await {
        Ok(rows) if rows.is_empty() => {
            println!("no admins yet: `vyx-fleet admin add NAME`");
            0
        }
        Ok(rows) => {
            let mut out = format!(
                "{:<24} {:<10} {:<22} {:<22} {}\n",
                "NAME", "STATE", "ADDED (UTC)", "LAST SIGN-IN (UTC)", "SESSIONS"
            );
            let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_string(), |t| {
                    t.format("%Y-%m-%d %H:%M:%S").to_string()
                })
            };
            for r in rows {
                let state = if r.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                let _ = writeln!(
                    out,
                    "{:<24} {:<10} {:<22} {:<22} {}",
                    r.name,
                    state,
                    t(Some(r.created_at)),
                    t(r.last_sign_in),
                    r.live_sessions
                );
            }
            print!("{out}");
            0
        }
        Err(e) => {
            eprintln!("cannot list the admins: {e}");
            EXIT_FAILURE
        }
    }
}

/// What `confirm-deletions` was asked to do.
#[derive(Debug, Default)]
pub struct ConfirmArgs {
    /// Only print the held set and its version.
    pub list: bool,
    /// Confirm only these apps (each must be held now).
    pub apps: Vec<String>,
    /// The version (`--list` printed it) the caller read: refused if the set is another now.
    pub expect: Option<String>,
}

fn print_held(held: &[breaker::HeldDeletion]) {
    let version = breaker::held_version(held.iter().map(|h| h.app_name.as_str()));
    println!("held deletions: {} (version {version})", held.len());
    for h in held {
        let user = h.user_id.map_or("orphan".to_string(), |u| u.to_string());
        let confirmed = h
            .confirmed_by
            .as_deref()
            .map_or(String::new(), |b| format!("  confirmed by {b}"));
        println!("  {:<28} {:<12} {user}{confirmed}", h.app_name, h.kind);
    }
}

/// `confirm-deletions [--list] [--apps A,B] [--expect VERSION]`: prints exactly what it confirms and
/// confirms only that. Without `--apps`, the set it prints is the set it confirms (read and confirmed
/// under one lock). Exit 1 when the set changed under `--expect`, or an app named is not held.
pub async fn confirm(cfg: Option<&Path>, args: ConfirmArgs) -> u8 {
    let pool = match pool(cfg).await {
        Ok(p) => p,
        Err(c) => return c,
    };
    let held = match breaker::load_held(&pool).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot read the held deletions: {e}");
            return EXIT_FAILURE;
        }
    };
    if args.list || held.is_empty() {
        if held.is_empty() {
            println!("nothing to confirm: the blast-radius breaker holds no deletions");
        } else {
            print_held(&held);
        }
        return 0;
    }
    let names: Vec<String> = held.iter().map(|h| h.app_name.clone()).collect();
    let missing: Vec<&String> = args.apps.iter().filter(|a| !names.contains(a)).collect();
    if !missing.is_empty() {
        eprintln!("not held now: {missing:?}; nothing was confirmed. Held:");
        print_held(&held);
        return EXIT_FAILURE;
    }
    let version = breaker::held_version(names.iter().map(String::as_str));
    if let Some(v) = args.expect.as_deref().filter(|v| *v != version) {
        eprintln!("the held set is not version {v} any more; nothing was confirmed. Held now:");
        print_held(&held);
        return EXIT_FAILURE;
    }
    // Without --apps, what was just printed (the whole set) is what gets confirmed, or nothing.
    let scope = if args.apps.is_empty() {
        print_held(&held);
        breaker::Scope::Whole {
            shown: &names,
            version: Some(&version),
        }
    } else {
        breaker::Scope::Only(&args.apps)
    };
    match breaker::confirm_exact(&pool, scope, &operator()).await {
        Ok(breaker::Confirmation::Confirmed(done)) => {
            println!(
                "confirmed {} held deletion(s) for {} minutes; these apps, and no others, may now be deleted:",
                done.len(),
                breaker::CONFIRMATION_TTL_MINUTES
            );
            for h in &done {
                println!("  {}", h.app_name);
            }
            0
        }
        Ok(breaker::Confirmation::NothingHeld) => {
            println!("nothing to confirm: the blast-radius breaker holds no deletions any more");
            0
        }
        Ok(breaker::Confirmation::Changed { held, .. }) => {
            eprintln!("the held set changed while confirming; nothing was confirmed. Held now:");
            print_held(&held);
            EXIT_FAILURE
        }
        Err(e) => {
            eprintln!("cannot record the confirmation: {e}");
            EXIT_FAILURE
        }
    }
}
