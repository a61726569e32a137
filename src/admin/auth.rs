//! Sign-in, sessions and request forgery checks for the console's controls.
//!
//! # Expected flow
//! 1. The admin posts the `ADMIN_TOKEN` and their name to `/signin`. The token is compared in constant
//!    time; attempts are rate-limited per replica ([`SignInLimiter`]).
//! 2. On success the reply sets an HttpOnly, SameSite=Strict cookie holding the name, an expiry and a
//!    random nonce, signed with a key derived from the token (HMAC-SHA256).
//! 3. Every page rendered for a signed-in admin embeds the session's CSRF token (an HMAC of the cookie),
//!    and every control POST must carry it, and must come from the page's own origin.
//!
//! # Guarantees
//! - A session is valid on every replica holding the same `ADMIN_TOKEN` (no server-side store, so
//!   `fly proxy` landing on the standby does not sign anyone out), and on none once the token changes.
//! - The CSRF token differs per session, and cannot be derived without the token-derived key.
//!
//! # Caveats
//! - Signing out drops the cookie; a copied cookie stays valid until it expires ([`SESSION_TTL`]).
//!   Rotating `ADMIN_TOKEN` revokes every session.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub(crate) const COOKIE: &str = "vyx_admin";
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Sign-in attempts allowed per [`SIGN_IN_WINDOW`] on one replica, successful or not.
pub(crate) const SIGN_IN_ATTEMPTS: usize = 10;
pub(crate) const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// The admin's name goes into `created_by` and logs: short, printable, one line.
pub(crate) const NAME_MAX: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub name: String,
    pub csrf: String,
}

/// The keys derived from `ADMIN_TOKEN`.
pub(crate) struct Keys {
    /// SHA-256 of the token, compared against SHA-256 of what was typed: equal lengths, so the
    /// constant-time compare leaks neither the token's length nor a prefix.
    token_digest: [u8; 32],
    session_key: Vec<u8>,
}

impl Keys {
    pub fn new(token: &Secret) -> Keys {
        let token_digest: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let mut h = Sha256::new();
        h.update(b"vyx-fleet admin session key v1\0");
        h.update(token.expose().as_bytes());
        Keys {
            token_digest,
            session_key: h.finalize().to_vec(),
        }
    }

    pub fn token_matches(&self, typed: &str) -> bool {
        let typed: [u8; 32] = Sha256::digest(typed.as_bytes()).into();
        typed.ct_eq(&self.token_digest).into()
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = HmacSha256::new_from_slice(&self.session_key).expect("any key length");
        for p in parts {
            m.update(p);
            m.update(b"\0");
        }
        hex(&m.finalize().into_bytes())
    }

    /// A new session cookie value for `name` (already validated by [`valid_name`]).
    pub fn issue(&self, name: &str) -> String {
        let expires = unix_now() + SESSION_TTL.as_secs();
        let nonce: [u8; 16] = rand::random();
        let payload = format!("{}.{expires}.{}", hex(name.as_bytes()), hex(&nonce));
        let sig = self.mac(&[b"session", payload.as_bytes()]);
        format!("{payload}.{sig}")
    }

    /// The session a cookie value stands for, if its signature holds and it has not expired.
    pub fn verify(&self, value: &str) -> Option<Session> {
        let (payload, sig) = value.rsplit_once('.')?;
        let expected = self.mac(&[b"session", payload.as_bytes()]);
        if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
            return None;
        }
        let mut parts = payload.split('.');
        let name = String::from_utf8(unhex(parts.next()?)?).ok()?;
        let expires: u64 = parts.next()?.parse().ok()?;
        if expires <= unix_now() || !valid_name(&name) {
            return None;
        }
        Some(Session {
            name,
            csrf: self.mac(&[b"csrf", value.as_bytes()]),
        })
    }
}

/// Sliding-window limit on sign-in attempts: guessing a 32-character token is hopeless anyway; this
/// keeps a guesser from also loading the database and the logs.
#[derive(Default)]
pub(crate) struct SignInLimiter {
    attempts: Mutex<VecDeque<Instant>>,
}

impl SignInLimiter {
    /// Records an attempt; `false` when the window is full (the attempt is refused unchecked).
    pub fn allow(&self) -> bool {
        let now = Instant::now();
        let mut q = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= SIGN_IN_WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= SIGN_IN_ATTEMPTS {
            return false;
        }
        q.push_back(now);
        true
    }
}

/// 1 to [`NAME_MAX`] characters, no control characters, not only spaces.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= NAME_MAX
        && !name.chars().any(char::is_control)
}

/// The value of our cookie in the request, if any.
pub(crate) fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

pub(crate) fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The request comes from a page of this very origin: `Sec-Fetch-Site` (when sent) says
/// `same-origin`, and `Origin` (or, lacking it, `Referer`) names the `Host` the request was sent to.
/// A request with neither header is refused: every browser sends `Origin` on a form POST.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get(header::HeaderName::from_static("sec-fetch-site"))
        && site != "same-origin"
    {
        return false;
    }
    let Some(host) = get(header::HOST) else {
        return false;
    };
    let source = match get(header::ORIGIN) {
        Some(origin) => origin.to_string(),
        None => match get(header::REFERER) {
            Some(referer) => referer.to_string(),
            None => return false,
        },
    };
    let rest = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"));
    match rest {
        Some(rest) => rest.split('/').next() == Some(host),
        None => false,
    }
}

/// Constant-time comparison of the CSRF token a form carried with the session's.
pub(crate) fn csrf_matches(session: &Session, sent: &str) -> bool {
    sent.len() == session.csrf.len() && bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> Keys {
        Keys::new(&Secret::new("t".repeat(40)))
    }

    #[test]
    fn only_the_exact_token_matches() {
        let k = keys();
        assert!(k.token_matches(&"t".repeat(40)));
        assert!(!k.token_matches(&"t".repeat(39)));
        assert!(!k.token_matches(&"t".repeat(41)));
        assert!(!k.token_matches(""));
    }

    #[test]
    fn a_session_survives_a_round_trip_and_nothing_forged_verifies() {
        let k = keys();
        let cookie = k.issue("Ada <admin>");
        let s = k.verify(&cookie).expect("valid");
        assert_eq!(s.name, "Ada <admin>");
        // Another session gets another CSRF token.
        assert_ne!(k.verify(&k.issue("Ada <admin>")).unwrap().csrf, s.csrf);
        // A tampered name, a cookie signed under another token, garbage: none verify.
        let (payload, sig) = cookie.rsplit_once('.').unwrap();
        let forged = format!(
            "{}{}",
            hex(b"Mallory"),
            &payload[hex(b"Ada <admin>").len()..]
        );
        assert!(k.verify(&format!("{forged}.{sig}")).is_none());
        let other = Keys::new(&Secret::new("u".repeat(40)));
        assert!(k.verify(&other.issue("Ada")).is_none());
        assert!(k.verify("").is_none() && k.verify("a.b.c.d").is_none());
    }

    #[test]
    fn the_limiter_refuses_attempts_beyond_the_window_budget() {
        let l = SignInLimiter::default();
        for _ in 0..SIGN_IN_ATTEMPTS {
            assert!(l.allow());
        }
        assert!(!l.allow());
    }

    #[test]
    fn same_origin_needs_a_matching_origin_or_referer() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9090"));
        assert!(!same_origin(&h), "no origin at all");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9090"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://127.0.0.1:9090/users/x"),
        );
        assert!(same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn names_are_one_short_printable_line() {
        assert!(valid_name("Ada Lovelace"));
        assert!(!valid_name("   "));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(NAME_MAX + 1)));
    }
}
