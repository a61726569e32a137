//! The cookie store behind the client: Fly's path-scoped affinity cookies (REFERENCE §1, [S10]), kept
//! only as long as they help.
//!
//! Why not reqwest's `Jar`: the API sets one cookie per created app (`Path=/v1/apps/<app>`) and the
//! jar keeps them all for the life of the process, scanning every one on every request. A daemon
//! that has created 100,000 apps over months then pays for all of them on each call (measured by the
//! fleet benchmark: 44 % of the CPU while creating 100,000 apps) and never frees the memory, not even
//! for apps long deleted. The cookie exists so that calls right after a write land on the backend
//! that did it; after the post-create window (about a minute, REFERENCE §7) it has done its job.
//!
//! So this store keeps each cookie for [`AFFINITY_TTL`] at most, holds at most [`MAX_COOKIES`]
//! (the oldest go first), and finds a request's cookies by walking the request path's ancestors
//! (RFC 6265 §5.1.4 path-match), so a lookup costs the path's depth, not the number of cookies.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

/// How long an affinity cookie is replayed after it was set.
pub const AFFINITY_TTL: Duration = Duration::from_secs(10 * 60);
/// Most cookies held at once; beyond it the oldest are dropped.
pub const MAX_COOKIES: usize = 4096;

#[derive(Debug)]
struct Entry {
    /// `name=value`, as sent back.
    pair: String,
    expires: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Store {
    /// (host, path) -> cookie name -> entry.
    by_path: HashMap<(String, String), BTreeMap<String, Entry>>,
    /// Insertion order, for eviction: seq -> (host, path, name).
    order: BTreeMap<u64, (String, String, String)>,
    next_seq: u64,
}

/// A bounded, expiring cookie store for the Fly client. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct AffinityCookies {
    store: Mutex<Store>,
}

impl AffinityCookies {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().order.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way that matters
        // (the worst is a cookie not replayed), so a poisoned lock is used as is.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_at(&self, header: &str, host: &str, request_path: &str, now: Instant) {
        let Some(c) = parse_set_cookie(header, request_path) else {
            return;
        };
        let mut s = self.lock();
        let key = (host.to_string(), c.path.clone());
        // Replace an earlier cookie of the same name and path.
        if let Some(old) = s
            .by_path
            .get_mut(&key)
            .and_then(|names| names.remove(&c.name))
        {
            s.order.remove(&old.seq);
        }
        if c.delete {
            if s.by_path.get(&key).is_some_and(|n| n.is_empty()) {
                s.by_path.remove(&key);
            }
            return;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let ttl = c.max_age.map_or(AFFINITY_TTL, |m| m.min(AFFINITY_TTL));
        s.order
            .insert(seq, (host.to_string(), c.path.clone(), c.name.clone()));
        s.by_path.entry(key).or_default().insert(
            c.name,
            Entry {
                pair: c.pair,
                expires: now + ttl,
                seq,
            },
        );
        while s.order.len() > MAX_COOKIES {
            let Some((_, (h, p, n))) = s.order.pop_first() else {
                break;
            };
            remove(&mut s, &h, &p, &n);
        }
    }

    fn cookies_at(&self, host: &str, request_path: &str, now: Instant) -> Option<String> {
        let mut s = self.lock();
        let mut pairs = Vec::new();
        let mut expired = Vec::new();
        for path in ancestors(request_path) {
            if let Some(names) = s.by_path.get(&(host.to_string(), path.to_string())) {
                for (name, e) in names {
                    if e.expires <= now {
                        expired.push((path.to_string(), name.clone()));
                    } else {
                        pairs.push(e.pair.clone());
                    }
                }
            }
        }
        for (p, n) in expired {
            remove(&mut s, host, &p, &n);
        }
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

fn remove(s: &mut Store, host: &str, path: &str, name: &str) {
    let key = (host.to_string(), path.to_string());
    if let Some(names) = s.by_path.get_mut(&key) {
        if let Some(e) = names.remove(name) {
            s.order.remove(&e.seq);
        }
        if names.is_empty() {
            s.by_path.remove(&key);
        }
    }
}

impl reqwest::cookie::CookieStore for AffinityCookies {
    fn set_cookies(&self, headers: &mut dyn Iterator<Item = &HeaderValue>, url: &reqwest::Url) {
        let Some(host) = url.host_str() else { return };
        let now = Instant::now();
        for h in headers {
            if let Ok(text) = h.to_str() {
                self.set_at(text, host, url.path(), now);
            }
        }
    }

    fn cookies(&self, url: &reqwest::Url) -> Option<HeaderValue> {
        let host = url.host_str()?;
        self.cookies_at(host, url.path(), Instant::now())
            .and_then(|v| HeaderValue::from_str(&v).ok())
    }
}

struct SetCookie {
    name: String,
    pair: String,
    path: String,
    max_age: Option<Duration>,
    delete: bool,
}

/// The parts of a `Set-Cookie` header this store honours: name, value, `Path`, `Max-Age` (RFC 6265
/// §5.2). `Domain` is ignored (host-only, the safe reading); `Expires` is ignored in favour of the
/// store's own TTL, which is shorter than any affinity cookie needs.
fn parse_set_cookie(header: &str, request_path: &str) -> Option<SetCookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let mut path = None;
    let mut max_age = None;
    let mut delete = false;
    for attr in parts {
        let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("path") && v.starts_with('/') {
            path = Some(v.trim_end_matches('/').to_string());
        } else if k.eq_ignore_ascii_case("max-age") {
            match v.parse::<i64>() {
                Ok(secs) if secs <= 0 => delete = true,
                Ok(secs) => max_age = Some(Duration::from_secs(secs as u64)),
                Err(_) => {}
            }
        }
    }
    // RFC 6265 §5.1.4: without a Path, the default is the request path up to its last '/'.
    let path = path.unwrap_or_else(|| match request_path.rfind('/') {
        Some(0) | None => String::new(),
        Some(i) => request_path[..i].to_string(),
    });
    Some(SetCookie {
        name: name.to_string(),
        pair: format!("{name}={}", value.trim()),
        path: if path.is_empty() { "/".into() } else { path },
        max_age,
        delete,
    })
}

/// `/v1/apps/x/machines` -> `/v1/apps/x/machines`, `/v1/apps/x`, `/v1/apps`, `/v1`, `/`: the cookie
/// paths that path-match it.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.trim_end_matches('/');
    let mut next = Some(trimmed);
    std::iter::from_fn(move || {
        let cur = next?;
        next = match cur.rfind('/') {
            Some(0) if cur.len() > 1 => Some(""),
            Some(i) if i > 0 => Some(&cur[..i]),
            _ => None,
        };
        Some(if cur.is_empty() { "/" } else { cur })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = "fly-affinity=abc; Path=/v1/apps/vyx-user-a; HttpOnly";

    #[test]
    fn a_cookie_is_replayed_on_its_app_and_below_it_only() {
        let jar = AffinityCookies::default();
        let t0 = Instant::now();
        jar.set_at(SET, "api.machines.dev", "/v1/apps", t0);
        let on = |p: &str| jar.cookies_at("api.machines.dev", p, t0);
        assert_eq!(
            on("/v1/apps/vyx-user-a").as_deref(),
            Some("fly-affinity=abc")
        );
        assert_eq!(
            on("/v1/apps/vyx-user-a/machines/m1/wait").as_deref(),
            Some("fly-affinity=abc")
        );
        assert_eq!(
            on("/v1/apps/vyx-user-ab"),
            None,
            "a longer name is another app"
        );
        assert_eq!(on("/v1/apps"), None);
        assert_eq!(
            jar.cookies_at("other.host", "/v1/apps/vyx-user-a", t0),
            None,
            "host-only"
        );
    }

    #[test]
    fn cookies_expire_after_the_affinity_window_and_are_then_forgotten() {
        let jar = AffinityCookies::default();
        let t0 = Instant::now();
        jar.set_at(SET, "h", "/v1/apps", t0);
        let late = t0 + AFFINITY_TTL + Duration::from_secs(1);
        assert!(jar.cookies_at("h", "/v1/apps/vyx-user-a", late).is_none());
        assert!(jar.is_empty(), "an expired cookie is dropped when seen");
        jar.set_at(
            "fly-affinity=x; Path=/v1/apps/b; Max-Age=5",
            "h",
            "/v1/apps",
            t0,
        );
        assert!(
            jar.cookies_at("h", "/v1/apps/b", t0 + Duration::from_secs(6))
                .is_none(),
            "a shorter Max-Age wins"
        );
    }

    #[test]
    fn the_store_never_holds_more_than_its_bound_dropping_the_oldest() {
        let jar = AffinityCookies::default();
        let t0 = Instant::now();
        for i in 0..MAX_COOKIES + 10 {
            jar.set_at(
                &format!("fly-affinity={i}; Path=/v1/apps/app-{i}"),
                "h",
                "/v1/apps",
                t0,
            );
        }
        assert_eq!(jar.len(), MAX_COOKIES);
        assert!(jar.cookies_at("h", "/v1/apps/app-0", t0).is_none());
        let newest = MAX_COOKIES + 9;
        assert_eq!(
            jar.cookies_at("h", &format!("/v1/apps/app-{newest}"), t0),
            Some(format!("fly-affinity={newest}"))
        );
    }

    #[test]
    fn a_cookie_set_again_replaces_the_old_one_and_max_age_zero_deletes_it() {
        let jar = AffinityCookies::default();
        let t0 = Instant::now();
        jar.set_at(SET, "h", "/v1/apps", t0);
        jar.set_at("fly-affinity=def; Path=/v1/apps/vyx-user-a", "h", "/", t0);
        assert_eq!(jar.len(), 1);
        assert_eq!(
            jar.cookies_at("h", "/v1/apps/vyx-user-a", t0).as_deref(),
            Some("fly-affinity=def")
        );
        jar.set_at(
            "fly-affinity=; Path=/v1/apps/vyx-user-a; Max-Age=0",
            "h",
            "/",
            t0,
        );
        assert!(jar.is_empty());
    }

    #[test]
    fn malformed_set_cookie_headers_are_ignored() {
        let jar = AffinityCookies::default();
        let t0 = Instant::now();
        for bad in ["", "novalue", "=x; Path=/", ";;;"] {
            jar.set_at(bad, "h", "/v1/apps", t0);
        }
        assert!(jar.is_empty());
    }

    #[test]
    fn ancestors_walk_up_to_the_root() {
        let got: Vec<&str> = ancestors("/v1/apps/a/machines").collect();
        assert_eq!(
            got,
            vec!["/v1/apps/a/machines", "/v1/apps/a", "/v1/apps", "/v1", "/"]
        );
        assert_eq!(ancestors("/").collect::<Vec<_>>(), vec!["/"]);
    }
}
