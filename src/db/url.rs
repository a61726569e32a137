//! Database URLs in logs and errors: the password never shown.

/// `url` with the password (in the userinfo or a `password=` parameter) replaced by `[redacted]`, for
/// logs and error messages. Something that does not look like a URL is redacted whole.
///
/// The userinfo is taken up to the *last* `@`, so a password holding an unescaped `/`, `?`, `#` or `@`
/// (an invalid URL, but a likely typo) is still hidden; an `@` later in the URL only hides more.
pub fn redact_url(url: &str) -> String {
    const MASK: &str = "[redacted]";
    let Some(scheme_end) = url.find("://") else {
        return MASK.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];

    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };

    let Some((before_query, query)) = after_userinfo.split_once('?') else {
        out.push_str(after_userinfo);
        return out;
    };
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    out.push_str(before_query);
    out.push('?');
    out.push_str(&params.join("&"));
    out.push_str(fragment);
    out
}

pub(super) fn url_has_param(url: &str, names: &[&str]) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    query.split('&').any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        names.iter().any(|n| key.eq_ignore_ascii_case(n))
    })
}
