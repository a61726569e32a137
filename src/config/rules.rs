//! One validator per setting. Each returns the problem as one line; the caller attaches the key.
//! Validators of secret keys never put the value (or any part of it) in the message.

use std::net::SocketAddr;

use reqwest::Url;

pub const CPU_CHOICES: [u32; 5] = [1, 2, 4, 8, 16];
/// Shared-CPU guests: 256 MB to 2 GB of memory per vCPU, in 256 MB steps (REFERENCE.md, guest).
pub const MEMORY_STEP_MB: u32 = 256;
pub const MEMORY_MIN_PER_CPU_MB: u32 = 256;
pub const MEMORY_MAX_PER_CPU_MB: u32 = 2048;
/// Fly app names are DNS labels: at most 63 characters; we append 8 hash characters.
pub const APP_NAME_MAX: usize = 63;
pub const APP_NAME_SUFFIX_LEN: usize = 8;
/// The shared Vyx backend. No managed name may ever start like it (DESIGN §5 invariant 1).
pub const SHARED_APP: &str = "vyx-app";
pub const TIERS: [&str; 3] = ["free", "pro", "elite"];
pub const STATUSES: [&str; 3] = ["active", "cancelled", "past_due"];
pub const MAX_CONCURRENCY_RANGE: std::ops::RangeInclusive<usize> = 1..=64;

/// `postgres://` or `postgresql://`, parseable, not Supabase's transaction pooler (port 6543).
/// The value is a secret (it carries the password): never echoed.
pub fn database_url(value: &str) -> Result<(), String> {
    let lower = value.get(..13).unwrap_or(value).to_ascii_lowercase();
    if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
        return Err("must be a URL starting with postgres:// or postgresql://".into());
    }
    // url's error messages are fixed phrases ("invalid port number"), never the input.
    let url = Url::parse(value).map_err(|e| format!("is not a valid URL: {e}"))?;
    let query_port = url
        .query_pairs()
        .find(|(k, _)| k == "port")
        .map(|(_, v)| v.into_owned());
    if url.port() == Some(6543) || query_port.as_deref() == Some("6543") {
        return Err(
            "port 6543 is Supabase's transaction pooler, which cannot hold LISTEN or \
                    session state; use the direct connection or the session pooler on port 5432"
                .into(),
        );
    }
    Ok(())
}

/// An absolute http(s) URL with a host and no credentials, query or fragment. Never echoed (a
/// mistyped value may hold a token).
pub fn http_url(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    if !value.contains("://") {
        return Err("must be an absolute URL starting with https:// (or http://)".into());
    }
    let url = Url::parse(value).map_err(|e| format!("is not a valid URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("must start with https:// or http://".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query string or fragment".into());
    }
    Ok(())
}

pub fn org_slug(value: &str) -> Result<(), String> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not an organization slug (lowercase letters, digits and inner '-'; see `fly orgs list`)"
        ))
    }
}

/// An image pinned by a tag other than `latest`, or by a digest (`name@sha256:...`). A moving
/// reference is refused: the rollout follows the configured string, so re-pushing `:latest` would
/// reach no machine, while a machine that restarts might pull the new image unseen (the old edge
/// functions' stale deploys).
pub fn image(value: &str) -> Result<(), String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "must be an image reference without whitespace, e.g. registry.fly.io/vyx-app:v1".into(),
        );
    }
    if let Some((name, digest)) = value.split_once('@') {
        let well_formed = digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty() && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if name.is_empty() || !well_formed {
            return Err(format!(
                "{value:?} has a malformed digest; write name@sha256:<hex>"
            ));
        }
        return Ok(());
    }
    // The tag sits after the last ':' of the last path part: `localhost:5000/app` has no tag.
    let last = value.rsplit('/').next().unwrap_or(value);
    match last.split_once(':') {
        None | Some((_, "")) => Err(format!(
            "{value:?} has no tag or digest; pin the image, e.g. {value}:v1 or {value}@sha256:<digest>"
        )),
        Some((_, tag)) if tag.eq_ignore_ascii_case("latest") => Err(format!(
            "{value:?} uses the moving tag latest; pin a fixed tag or a digest (name@sha256:<digest>) \
             so every rollout is one known image"
        )),
        Some(_) => Ok(()),
    }
}

pub fn region(value: &str) -> Result<(), String> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a Fly region code (three lowercase letters, e.g. sin, iad, ams)"
        ))
    }
}

pub fn cpus(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if CPU_CHOICES.contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not one of 1, 2, 4, 8, 16")),
    }
}

pub fn memory_mb(value: &str, cpus: u32) -> Result<u32, String> {
    let mb: u32 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of megabytes"))?;
    let min = MEMORY_MIN_PER_CPU_MB * cpus;
    let max = MEMORY_MAX_PER_CPU_MB * cpus;
    if !mb.is_multiple_of(MEMORY_STEP_MB) {
        return Err(format!("{mb} is not a multiple of {MEMORY_STEP_MB}"));
    }
    if !(min..=max).contains(&mb) {
        return Err(format!(
            "{mb} is outside the shared-CPU range for USER_APP_CPUS={cpus}: {min}..={max} (256 MB to 2 GB per CPU)"
        ));
    }
    Ok(mb)
}

pub fn app_name_prefix(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty: the prefix is what marks an app as managed".into());
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{value:?} must start with a lowercase letter"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{value:?} may contain only lowercase letters, digits and '-'"
        ));
    }
    if value.len() + APP_NAME_SUFFIX_LEN > APP_NAME_MAX {
        return Err(format!(
            "is {} characters; with the {APP_NAME_SUFFIX_LEN}-character suffix app names would exceed {APP_NAME_MAX}",
            value.len()
        ));
    }
    if SHARED_APP.starts_with(value) {
        return Err(format!(
            "{value:?} would match the shared app {SHARED_APP:?}, which must never be managed"
        ));
    }
    Ok(())
}

/// A comma list whose items come from `allowed`; empty items are ignored, duplicates dropped.
pub fn word_list(value: &str, allowed: &[&str]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !allowed.contains(&item) {
            return Err(format!(
                "{item:?} is not one of {} (comma-separated, lowercase)",
                allowed.join(", ")
            ));
        }
        if !out.iter().any(|s| s == item) {
            out.push(item.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!(
            "must list at least one of {} (comma-separated)",
            allowed.join(", ")
        ));
    }
    Ok(out)
}

pub fn max_concurrency(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if MAX_CONCURRENCY_RANGE.contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not a whole number from {} to {}",
            MAX_CONCURRENCY_RANGE.start(),
            MAX_CONCURRENCY_RANGE.end()
        )),
    }
}

/// A whole number within `range` (e.g. `REPAIR_MAX_PER_PASS`).
pub fn bounded_count(
    value: &str,
    range: &std::ops::RangeInclusive<usize>,
) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

pub fn positive_duration(value: &str) -> Result<std::time::Duration, String> {
    let d = super::duration::parse_duration(value)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

pub fn socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("{value:?} is not an IP:PORT socket address such as 0.0.0.0:9090 or [::]:9090")
    })
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name(value: &str) -> bool {
    let mut bytes = value.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Shortest `ADMIN_TOKEN` accepted: long enough that guessing it through the rate-limited sign-in
/// form is hopeless (`openssl rand -hex 32` gives 64).
pub const ADMIN_TOKEN_MIN: usize = 32;

/// `ADMIN_TOKEN`: at least [`ADMIN_TOKEN_MIN`] visible ASCII characters. A secret: never echoed.
pub fn admin_token(value: &str) -> Result<(), String> {
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "must be visible ASCII characters only (no spaces or control characters)".into(),
        );
    }
    if value.len() < ADMIN_TOKEN_MIN {
        return Err(format!(
            "is too short: at least {ADMIN_TOKEN_MIN} characters (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// `ALERT_WEBHOOK_URL`: an absolute http(s) URL with a host and no credentials. A query is allowed
/// (Discord's `?wait=true`). Never echoed: Slack and Discord put the credential in the path.
pub fn webhook_url(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    let url = Url::parse(value).map_err(|e| format!("is not a valid URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("must start with https:// (or http://)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    Ok(())
}

/// `ALERT_RETRY_THRESHOLD`: failed attempts in a row before an alert, 1 to 1000.
pub fn retry_threshold(value: &str) -> Result<i32, String> {
    match value.parse::<i32>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not a whole number from 1 to 1000")),
    }
}

/// `ADMIN_ALLOWED_HOSTS`: comma-separated host names without scheme, port or path; `*.suffix` allows
/// every name under `suffix`. Lower-cased.
pub fn host_list(value: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = value
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err("names no host (e.g. `localhost,127.0.0.1,*.internal`)".into());
    }
    for h in &hosts {
        let name = h.strip_prefix("*.").unwrap_or(h);
        let ok = !name.is_empty()
            && !name.contains('*')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
        if !ok {
            return Err(format!(
                "`{h}` is not a host name (no scheme, port or path; `*.` only as a prefix)"
            ));
        }
    }
    Ok(hosts)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_rules() {
        for ok in [
            "postgres://u:p@db.example.supabase.co:5432/postgres",
            "postgresql://u:p@aws-0-eu.pooler.supabase.com:5432/postgres?sslmode=require",
            "postgres://localhost/vyx",
            "postgresql:///postgres?host=/tmp/pg",
        ] {
            assert_eq!(database_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "mysql://u:p@h/db",
            "host=localhost port=5432",
            "postgres://u:p@h:6543/postgres",
            "postgres://u:p@h/postgres?port=6543",
            "postgres://u:p@h:notaport/db",
        ] {
            let msg = database_url(bad).unwrap_err();
            assert!(!msg.contains("u:p"), "{msg}");
        }
        assert!(
            database_url("postgres://u:p@h:6543/x")
                .unwrap_err()
                .contains("5432")
        );
    }

    #[test]
    fn prefix_never_matches_the_shared_app() {
        for bad in ["", "v", "vy", "vyx", "vyx-", "vyx-a", "vyx-ap", "vyx-app"] {
            assert!(app_name_prefix(bad).is_err(), "{bad:?}");
        }
        for ok in ["vyx-user-", "vyx-app-user-", "vyx-u", "u", "fleet1-"] {
            assert_eq!(app_name_prefix(ok), Ok(()), "{ok:?}");
        }
        assert!(app_name_prefix("1abc").is_err());
        assert!(app_name_prefix("Vyx-user-").is_err());
        assert!(app_name_prefix("vyx_user").is_err());
        assert_eq!(app_name_prefix(&"a".repeat(55)), Ok(()));
        assert!(app_name_prefix(&"a".repeat(56)).is_err());
    }

    proptest::proptest! {
        /// Whatever prefix passes validation, the shared app's name never carries it.
        #[test]
        fn accepted_prefix_excludes_vyx_app(prefix in "[a-z0-9-]{0,10}") {
            if app_name_prefix(&prefix).is_ok() {
                proptest::prop_assert!(!SHARED_APP.starts_with(prefix.as_str()));
            }
        }
    }

    #[test]
    fn memory_follows_cpus() {
        assert_eq!(memory_mb("512", 2), Ok(512));
        assert_eq!(memory_mb("256", 1), Ok(256));
        assert_eq!(memory_mb("2048", 1), Ok(2048));
        assert!(memory_mb("2304", 1).is_err());
        assert!(memory_mb("256", 2).is_err());
        assert!(memory_mb("500", 2).is_err());
        assert!(memory_mb("0", 1).is_err());
        assert!(memory_mb("-256", 1).is_err());
        assert_eq!(memory_mb("32768", 16), Ok(32768));
    }

    #[test]
    fn word_lists() {
        assert_eq!(
            word_list(" pro , elite,pro,", &TIERS),
            Ok(vec!["pro".to_string(), "elite".to_string()])
        );
        assert!(word_list("", &TIERS).is_err());
        assert!(word_list(",", &TIERS).is_err());
        assert!(word_list("Pro", &TIERS).is_err());
        assert!(word_list("premium", &TIERS).is_err());
    }

    #[test]
    fn images_must_be_pinned_by_a_tag_or_a_digest() {
        for ok in [
            "registry.fly.io/vyx-app:v1",
            "localhost:5000/vyx-app:v1",
            "vyx-app:v2",
            "vyx-app@sha256:abc123",
            "registry.fly.io/vyx-app:latest@sha256:ABCdef0",
            "registry.fly.io/vyx-app:latest-2026",
        ] {
            assert_eq!(image(ok), Ok(()), "{ok}");
        }
        for bad in [
            "vyx-app",
            "registry.fly.io/vyx-app",
            "localhost:5000/vyx-app",
            "vyx-app:",
            "vyx-app:latest",
            "registry.fly.io/vyx-app:LATEST",
            "vyx-app@",
            "vyx-app@sha256:",
            "vyx-app@sha256:xyz",
            "@sha256:abc",
        ] {
            let msg = image(bad).unwrap_err();
            assert!(!msg.contains('\n'), "{msg}");
        }
        assert!(image("vyx-app:latest").unwrap_err().contains("latest"));
        assert!(image("vyx-app").unwrap_err().contains("no tag or digest"));
    }

    #[test]
    fn env_names() {
        assert!(env_name("GEMINI_API_KEY"));
        assert!(env_name("_X1"));
        assert!(!env_name("1X"));
        assert!(!env_name("A-B"));
        assert!(!env_name(""));
    }
}
