//! App names: `APP_NAME_PREFIX` + 8 lowercase chars derived from the user id (DESIGN §3).
//!
//! The name is chosen once and stored in `fly_app_name`; it is never recomputed for an existing row,
//! because older rows were named with another hash. Candidate `n` exists for collisions: Fly app names
//! are global across all customers (REFERENCE §2.1), so a name can be held by someone else.
//!
//! Public as a module: the tests and the bench compute the names the controller gives apps, and
//! `naming::candidate` says what a bare `candidate` would not.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How many candidates to try before giving up: 16 independent 40-bit names all taken means something
/// other than chance is going on, and a human should look.
pub(crate) const MAX_CANDIDATES: u32 = 16;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The `n`th candidate name for a user.
pub fn candidate(prefix: &str, user_id: Uuid, n: u32) -> String {
    let mut hasher = Sha256::new();
    if n == 0 {
        hasher.update(user_id.to_string().as_bytes());
    } else {
        hasher.update(format!("{user_id}:{n}").as_bytes());
    }
    let digest = hasher.finalize();
    // 8 base32 chars = 40 bits = the first 5 bytes.
    let mut bits: u64 = 0;
    for b in &digest[..5] {
        bits = (bits << 8) | u64::from(*b);
    }
    let mut name = String::with_capacity(prefix.len() + 8);
    name.push_str(prefix);
    for i in (0..8).rev() {
        name.push(ALPHABET[((bits >> (i * 5)) & 31) as usize] as char);
    }
    name
}

/// Invariant 1: only names with the managed prefix are ever touched. A row naming `vyx-app` (or any
/// other app) is reported and skipped, never acted on.
pub(crate) fn is_managed(prefix: &str, name: &str) -> bool {
    name.len() > prefix.len()
        && name.starts_with(prefix)
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_prefixed_eight_lowercase_chars_and_stable() {
        let u = Uuid::parse_str("6f1c2d3e-0000-4000-8000-000000000001").unwrap();
        let a = candidate("vyx-user-", u, 0);
        assert_eq!(a.len(), "vyx-user-".len() + 8);
        assert!(a.starts_with("vyx-user-"));
        assert!(
            a["vyx-user-".len()..]
                .bytes()
                .all(|b| ALPHABET.contains(&b))
        );
        assert_eq!(a, candidate("vyx-user-", u, 0), "must be deterministic");
        assert_ne!(
            a,
            candidate("vyx-user-", u, 1),
            "collisions need a different next candidate"
        );
    }

    #[test]
    fn different_users_get_different_names() {
        let names: std::collections::HashSet<_> = (0..2000u128)
            .map(|i| candidate("vyx-user-", Uuid::from_u128(i), 0))
            .collect();
        assert_eq!(names.len(), 2000);
    }

    #[test]
    fn only_prefixed_names_are_managed() {
        assert!(is_managed("vyx-user-", "vyx-user-abcdefgh"));
        assert!(!is_managed("vyx-user-", "vyx-app"));
        assert!(!is_managed("vyx-user-", "vyx-user-"));
        assert!(!is_managed("vyx-user-", "other-vyx-user-abc"));
        assert!(!is_managed("vyx-user-", "vyx-user-ABC"));
    }
}
