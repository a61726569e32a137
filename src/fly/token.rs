//! `Authorization` header normalisation (REFERENCE §1).
//!
//! Fly tokens come in several spellings: a bare macaroon (`fm2_…`), the `fly tokens create` output
//! (`FlyV1 fm2_…`), several macaroons joined with commas, or a legacy user/OAuth token that must be
//! sent as `Bearer`. fly-go strips any leading scheme words and re-adds the scheme from the token's
//! prefix; we do the same. The token never appears in an error or log: failures name the problem,
//! not the value.

use reqwest::header::HeaderValue;

use crate::secret::Secret;

/// Prefixes fly-go uses to recognise a macaroon.
const MACAROON_PREFIXES: [&str; 3] = ["fm1r_", "fm1a_", "fm2_"];

/// Which scheme a (normalised) token is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: FlyV1 <macaroon[,macaroon…]>`.
    FlyV1,
    /// `Authorization: Bearer <token>` (legacy user/OAuth tokens).
    Bearer,
}

/// Why a token could not become a header. Carries no part of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Empty,
    InvalidHeaderCharacters,
}

impl TokenProblem {
    pub fn describe(self) -> &'static str {
        match self {
            TokenProblem::Empty => "Fly API token is empty",
            TokenProblem::InvalidHeaderCharacters => {
                "Fly API token contains characters not allowed in an HTTP header"
            }
        }
    }
}

/// Strip any leading `Bearer`/`FlyV1` words (case-insensitive, repeated) and surrounding space.
pub(crate) fn strip_scheme(raw: &str) -> &str {
    let mut rest = raw.trim();
    loop {
        let (word, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("flyv1") {
            rest = tail.trim_start();
            if rest.is_empty() {
                return rest;
            }
        } else {
            return rest;
        }
    }
}

/// The scheme for an already-stripped token: FlyV1 if any comma-separated part is a macaroon.
pub(crate) fn scheme_for(stripped: &str) -> AuthScheme {
    let is_macaroon = stripped
        .split(',')
        .map(str::trim)
        .any(|part| MACAROON_PREFIXES.iter().any(|p| part.starts_with(p)));
    if is_macaroon {
        AuthScheme::FlyV1
    } else {
        AuthScheme::Bearer
    }
}

/// Build the sensitive `Authorization` header value for `token`.
pub(crate) fn authorization_header(token: &Secret) -> Result<HeaderValue, TokenProblem> {
    let stripped = strip_scheme(token.expose());
    if stripped.is_empty() {
        return Err(TokenProblem::Empty);
    }
    let scheme = match scheme_for(stripped) {
        AuthScheme::FlyV1 => "FlyV1",
        AuthScheme::Bearer => "Bearer",
    };
    let mut value = HeaderValue::from_str(&format!("{scheme} {stripped}"))
        .map_err(|_| TokenProblem::InvalidHeaderCharacters)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(raw: &str) -> String {
        authorization_header(&Secret::new(raw))
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn tokens_are_normalised_like_fly_go() {
        let cases = [
            ("fm2_abc", "FlyV1 fm2_abc"),
            ("FlyV1 fm2_abc", "FlyV1 fm2_abc"),
            ("  flyv1   fm2_abc  ", "FlyV1 fm2_abc"),
            ("Bearer fm2_abc", "FlyV1 fm2_abc"),
            ("Bearer FlyV1 fm1r_x,fm1a_y", "FlyV1 fm1r_x,fm1a_y"),
            ("FlyV1 fm1a_x", "FlyV1 fm1a_x"),
            ("legacy_oauth_token", "Bearer legacy_oauth_token"),
            ("Bearer legacy", "Bearer legacy"),
            ("bearer legacy", "Bearer legacy"),
            ("abc, fm2_def", "FlyV1 abc, fm2_def"),
            ("xfm2_abc", "Bearer xfm2_abc"),
        ];
        for (raw, want) in cases {
            assert_eq!(header(raw), want, "for {raw:?}");
        }
    }

    #[test]
    fn header_is_marked_sensitive() {
        let v = authorization_header(&Secret::new("fm2_topsecret")).unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("topsecret"));
    }

    #[test]
    fn bad_tokens_are_refused_without_echoing_them() {
        assert_eq!(
            authorization_header(&Secret::new("  ")),
            Err(TokenProblem::Empty)
        );
        assert_eq!(
            authorization_header(&Secret::new("Bearer FlyV1")),
            Err(TokenProblem::Empty)
        );
        let e = authorization_header(&Secret::new("fm2_bad\nsecretpart")).unwrap_err();
        assert_eq!(e, TokenProblem::InvalidHeaderCharacters);
        assert!(!e.describe().contains("secretpart"));
    }
}
