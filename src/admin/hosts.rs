//! Which `Host` names the console answers, and whether a form came from one of its own pages.
//!
//! The console is reached through `fly proxy` (`localhost`, `127.0.0.1`) or over Fly's private
//! network (`<app>.internal`, `<app>.flycast`), and, if an operator exposes it, as `<app>.fly.dev`.
//! Refusing every other name defeats DNS rebinding: a page on a name the attacker controls, pointed
//! at an admin's local `fly proxy`, sends its own name as `Host` and gets nothing.

use axum::http::{HeaderMap, header};

/// Used when `ADMIN_ALLOWED_HOSTS` is not set, plus `<FLY_APP_NAME>.fly.dev` on Fly.
pub(crate) const DEFAULT_HOSTS: [&str; 5] =
    ["localhost", "127.0.0.1", "[::1]", "*.internal", "*.flycast"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostAllowlist {
    /// Lower-case names; `*.suffix` entries match every name ending in `.suffix`.
    patterns: Vec<String>,
}

impl HostAllowlist {
    pub fn new(patterns: &[String]) -> HostAllowlist {
        HostAllowlist {
            patterns: patterns.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    }

    /// [`DEFAULT_HOSTS`], and the app's own `fly.dev` name when Fly says which app this is.
    pub fn defaults(fly_app_name: Option<&str>) -> HostAllowlist {
        let mut p: Vec<String> = DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect();
        if let Some(app) = fly_app_name.filter(|a| !a.is_empty()) {
            p.push(format!("{app}.fly.dev"));
        }
        HostAllowlist::new(&p)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether `host` (a `Host` header value, port allowed) is one of ours.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        !name.is_empty()
            && self.patterns.iter().any(|p| match p.strip_prefix("*.") {
                Some(suffix) => name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => *p == name,
            })
    }
}

/// `Host` without its port (`[::1]:9090` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn get(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The scheme the browser used: Fly's proxy sets `X-Forwarded-Proto: https` when it terminated TLS.
/// Only the cookie's `Secure` flag and the origin check depend on it, and a client lying about it
/// only hurts itself.
pub(crate) fn request_scheme(headers: &HeaderMap) -> &'static str {
    match get(headers, "x-forwarded-proto") {
        Some(p) if p.trim().eq_ignore_ascii_case("https") => "https",
        _ => "http",
    }
}

/// The request comes from a page of this very origin: `Sec-Fetch-Site` (when sent) says
/// `same-origin`, and `Origin` (or, lacking it, `Referer`) has the request's scheme and the exact
/// `Host` it was sent to, a host the allowlist accepts. A request with neither header is refused:
/// every browser sends `Origin` on a form POST.
pub(crate) fn same_origin(headers: &HeaderMap, allow: &HostAllowlist) -> bool {
    if let Some(site) = get(headers, "sec-fetch-site")
        && site != "same-origin"
    {
        return false;
    }
    let Some(host) = get(headers, header::HOST) else {
        return false;
    };
    if !allow.allows(host) {
        return false;
    }
    let Some(source) = get(headers, header::ORIGIN).or_else(|| get(headers, header::REFERER))
    else {
        return false;
    };
    let Some((scheme, rest)) = source.split_once("://") else {
        return false;
    };
    scheme.eq_ignore_ascii_case(request_scheme(headers))
        && rest
            .split(['/', '?', '#'])
            .next()
            .is_some_and(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_defaults_allow_fly_proxy_and_the_private_network_and_nothing_else() {
        let a = HostAllowlist::defaults(Some("vyx-fleet"));
        for ok in [
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "vyx-fleet.internal:9090",
            "top1.nearest.of.vyx-fleet.internal",
            "vyx-fleet.flycast",
            "VYX-FLEET.fly.dev",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for bad in [
            "evil.test:9090",
            "internal",
            ".internal",
            "evil-internal",
            "other.fly.dev",
            "127.0.0.2",
            "",
        ] {
            assert!(!a.allows(bad), "{bad}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_compares_scheme_and_host_against_the_request_and_the_allowlist() {
        let a = HostAllowlist::defaults(None);
        let host = ("host", "127.0.0.1:9090");
        assert!(!same_origin(&headers(&[host]), &a), "no origin at all");
        assert!(same_origin(
            &headers(&[host, ("origin", "http://127.0.0.1:9090")]),
            &a
        ));
        assert!(
            !same_origin(&headers(&[host, ("origin", "https://127.0.0.1:9090")]), &a),
            "wrong scheme"
        );
        assert!(same_origin(
            &headers(&[
                host,
                ("origin", "https://127.0.0.1:9090"),
                ("x-forwarded-proto", "https")
            ]),
            &a
        ));
        assert!(!same_origin(
            &headers(&[host, ("origin", "http://evil.example")]),
            &a
        ));
        assert!(!same_origin(&headers(&[host, ("origin", "null")]), &a));
        assert!(
            !same_origin(
                &headers(&[
                    ("host", "evil.test:9090"),
                    ("origin", "http://evil.test:9090")
                ]),
                &a
            ),
            "a host outside the allowlist, even when origin and host agree (DNS rebinding)"
        );
        assert!(same_origin(
            &headers(&[host, ("referer", "http://127.0.0.1:9090/users/x")]),
            &a
        ));
        assert!(!same_origin(
            &headers(&[
                host,
                ("origin", "http://127.0.0.1:9090"),
                ("sec-fetch-site", "cross-site")
            ]),
            &a
        ));
    }
}
