//! Sign-in and sessions for the console.
//!
//! # Expected flow
//! 1. An admin posts their own token (`vyx-fleet admin add NAME` printed it) to `/signin`. Its
//!    SHA-256 is looked up in `vyx_fleet.admins`; a revoked admin's token matches nothing. The
//!    break-glass `ADMIN_TOKEN`, when set, also signs in, under the name typed beside it.
//!    Wrong tokens are throttled per client ([`super::throttle`]).
//! 2. On success a session row is written (`vyx_fleet.admin_sessions`, the cookie's digest, a CSRF
//!    token, an expiry) and the reply sets an HttpOnly, SameSite=Strict cookie holding 256 random
//!    bits; `Secure` when the browser came over HTTPS.
//! 3. Every page reads the session from the database; every control POST must carry the session's
//!    CSRF token and come from the console's own origin ([`super::hosts::same_origin`]).
//!
//! # Guarantees
//! - A session is valid on every replica (they share the table) until it expires, its admin signs out
//!   (the row is revoked) or is revoked (`admin revoke` revokes their rows too). A replayed cookie
//!   after any of these finds nothing.
//! - A break-glass session ends when `ADMIN_TOKEN` changes: the row keeps a digest of the token it was
//!   opened with, and a replica compares it with the token it holds.
//! - Neither a token nor a cookie is ever logged: both are compared and stored as digests.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

pub(crate) const COOKIE: &str = "vyx_admin";
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
#[cfg(test)]
use crate::db::admins::NAME_MAX;
pub(crate) use crate::db::admins::valid_name;

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub name: String,
    pub csrf: String,
}

/// The break-glass `ADMIN_TOKEN`, held as digests.
pub(crate) struct Keys {
    /// SHA-256 of the token, compared against SHA-256 of what was typed: equal lengths, so the
    /// constant-time compare leaks neither the token's length nor a prefix.
    token_digest: [u8; 32],
    /// What a break-glass session row records: derived from the token, useless to sign in with.
    session_key: Vec<u8>,
}

impl Keys {
    pub fn new(token: &Secret) -> Keys {
        let token_digest: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        let mut h = Sha256::new();
        h.update(b"vyx-fleet break-glass session key v1\0");
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

    pub fn session_key(&self) -> &[u8] {
        &self.session_key
    }
}

/// The value of our cookie in the request, if any.
pub(crate) fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE && !v.is_empty())
        .map(|(_, v)| v)
}

fn secure_flag(secure: bool) -> &'static str {
    if secure { "; Secure" } else { "" }
}

pub(crate) fn set_cookie(value: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        secure_flag(secure)
    )
}

pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_flag(secure)
    )
}

/// Constant-time comparison of the CSRF token a form carried with the session's.
pub(crate) fn csrf_matches(session: &Session, sent: &str) -> bool {
    sent.len() == session.csrf.len() && bool::from(sent.as_bytes().ct_eq(session.csrf.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_the_exact_break_glass_token_matches() {
        let k = Keys::new(&Secret::new("t".repeat(40)));
        assert!(k.token_matches(&"t".repeat(40)));
        assert!(!k.token_matches(&"t".repeat(39)));
        assert!(!k.token_matches(&"t".repeat(41)));
        assert!(!k.token_matches(""));
        assert_ne!(
            k.session_key(),
            Keys::new(&Secret::new("u".repeat(40))).session_key()
        );
    }

    #[test]
    fn the_cookie_is_secure_only_over_https_and_an_empty_one_is_no_cookie() {
        assert!(set_cookie("abc", true).contains("; Secure"));
        assert!(!set_cookie("abc", false).contains("Secure"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; vyx_admin="));
        assert_eq!(cookie_value(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; vyx_admin=xyz"),
        );
        assert_eq!(cookie_value(&h), Some("xyz"));
    }

    #[test]
    fn names_are_one_short_printable_line() {
        assert!(valid_name("Ada Lovelace"));
        assert!(!valid_name("   "));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(NAME_MAX + 1)));
    }
}
