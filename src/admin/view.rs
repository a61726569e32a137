//! The page frame and small pieces shared by the pages. Markup comes from maud's `html!`, which
//! escapes every interpolated value: an email or an error message holding HTML is shown as text.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::auth::Session;

/// The frame of every page. `admin` is `None` only on the sign-in page; `flash` is the message left
/// by the action that led here.
pub(crate) fn page(
    title: &str,
    admin: Option<&Session>,
    flash: Option<&str>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · vyx-fleet" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a href="/" { "vyx-fleet console" }
                    @if admin.is_some() {
                        nav aria-label="Sections" {
                            a href="/" { "Fleet" }
                            a href="/activity" { "Activity" }
                            a href="/charts" { "Charts" }
                        }
                    }
                    span.who {
                        @if let Some(s) = admin {
                            "signed in as " strong #who { (s.name) } " "
                            form method="post" action="/signout" {
                                (csrf_field(s))
                                button type="submit" { "sign out" }
                            }
                        }
                    }
                }
                main #main {
                    @if let Some(f) = flash { p.flash #flash role="status" { (f) } }
                    (body)
                }
                footer.notice { "All times are UTC." }
            }
        }
    }
}

/// The message shown after an action, by the code its redirect carries (a fixed set: a link cannot
/// make the console say something of its choosing).
pub(crate) fn flash_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "override" => "Override saved; the controller acts on it now.",
        "cleared" => "Override cleared; the user follows their tier again.",
        "retry" => "Backoff ended; the controller retries now.",
        "no-backoff" => "Nothing to retry: the app was not waiting.",
        "kept" => "Kept: an override `present` replaces the deletion.",
        "confirmed" => "Confirmed: exactly the deletions shown may go ahead now.",
        "nothing-held" => "Nothing to confirm: the breaker holds no deletions any more.",
        "resumed" => "Rollout resumed; the next pass starts a new canary wave.",
        "not-halted" => "Nothing to resume: the rollout is not halted.",
        _ => return None,
    })
}

pub(crate) fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// A status or health word in its colour; unknown words get the neutral style.
pub(crate) fn badge(word: &str) -> Markup {
    let class = match word {
        "healthy" | "active" | "unhealthy" | "error" | "provisioning" | "deprovisioning"
        | "deleted" | "unknown" | "paused" | "present" | "absent" => word,
        _ => "unknown",
    };
    html! { span class={ "badge b-" (class) } { (word) } }
}

pub(crate) fn time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } },
        None => html! { "–" },
    }
}

/// "12 s ago", "3 min ago", ... relative to `now`.
pub(crate) fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        7200..=172_799 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

pub(crate) fn cost(c: Option<f64>) -> String {
    c.map_or_else(|| "–".to_string(), |c| format!("${c:.2}"))
}

/// A soft-deleted app costs nothing, whatever its row last estimated.
pub(crate) fn row_cost(r: &crate::db::console::ConsoleRow) -> String {
    if r.deleted_at.is_some() || r.status == "deleted" {
        return "$0.00".into();
    }
    cost(r.monthly_cost_usd)
}

pub(crate) fn size(cpus: Option<i32>, memory_mb: Option<i32>) -> String {
    match (cpus, memory_mb) {
        (Some(c), Some(m)) => format!("{c}×{m} MB"),
        _ => "–".to_string(),
    }
}

/// Fly's dashboard page for an app (opens in the admin's Fly session, not through this console).
pub(crate) fn fly_app_url(app: &str) -> String {
    format!("https://fly.io/apps/{app}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolated_html_is_escaped() {
        let s = Session {
            name: "<b>x</b>".into(),
            csrf: "c\"><script>".into(),
        };
        let out = page(
            "<t>",
            Some(&s),
            Some("<i>done</i>"),
            html! { p { ("<script>alert(1)</script>") } },
        )
        .into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{out}"
        );
        assert!(out.contains("&lt;b&gt;x&lt;/b&gt;"), "{out}");
        assert!(out.contains("&lt;i&gt;done&lt;/i&gt;"), "{out}");
    }

    #[test]
    fn unknown_words_get_the_neutral_badge() {
        let out = badge("x\" onclick=\"evil").into_string();
        assert!(out.contains("b-unknown"), "{out}");
        assert!(!out.contains("\" onclick"), "{out}");
    }
}
