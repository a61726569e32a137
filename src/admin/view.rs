//! The page frame and small pieces shared by the pages. Markup comes from maud's `html!`, which
//! escapes every interpolated value: an email or an error message holding HTML is shown as text.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::auth::Session;

/// Who is looking: shapes the header and whether controls are drawn.
pub(crate) enum Viewer<'a> {
    /// `ADMIN_TOKEN` is not set: no controls anywhere.
    ReadOnly,
    /// Controls exist but this browser has not signed in.
    Anonymous,
    Admin(&'a Session),
}

impl Viewer<'_> {
    pub fn session(&self) -> Option<&Session> {
        match self {
            Viewer::Admin(s) => Some(s),
            _ => None,
        }
    }
}

pub(crate) fn page(title: &str, viewer: &Viewer<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · vyx-fleet" }
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    a href="/" { "vyx-fleet console" }
                    span.who {
                        @match viewer {
                            Viewer::ReadOnly => "read-only (ADMIN_TOKEN not set)",
                            Viewer::Anonymous => a href="/signin" { "sign in for controls" },
                            Viewer::Admin(s) => {
                                "signed in as " (s.name) " "
                                form method="post" action="/signout" {
                                    (csrf_field(s))
                                    button type="submit" { "sign out" }
                                }
                            },
                        }
                    }
                }
                main { (body) }
            }
        }
    }
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
        Some(t) => html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } },
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
            &Viewer::Admin(&s),
            html! { p { ("<script>alert(1)</script>") } },
        )
        .into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{out}"
        );
        assert!(out.contains("&lt;b&gt;x&lt;/b&gt;"), "{out}");
    }

    #[test]
    fn unknown_words_get_the_neutral_badge() {
        let out = badge("x\" onclick=\"evil").into_string();
        assert!(out.contains("b-unknown"), "{out}");
        assert!(!out.contains("\" onclick"), "{out}");
    }
}
