//! Classification table, hostile bodies, Retry-After, redaction.

use super::*;
use crate::fly::classify::*;
use std::time::SystemTime;

fn classify_raw(route: Route, status: u16, body: &str) -> FlyError {
    let parsed = ErrorBody::parse(body.as_bytes());
    classify(CallInfo::new(route), status, &parsed, None)
}

#[test]
fn classification_table() {
    let j = |status: &str, msg: &str| format!(r#"{{"error":"{msg}","status":"{status}"}}"#);
    let cases: Vec<(Route, u16, String, &str)> = vec![
        (
            Route::GetApp,
            401,
            j("unknown", "token expired"),
            "unauthorized",
        ),
        (Route::GetApp, 403, String::new(), "forbidden"),
        (
            Route::GetMachine,
            404,
            j("unknown", "machine not found"),
            "not_found",
        ),
        (Route::CreateMachine, 408, String::new(), "timeout"),
        (
            Route::UpdateMachine,
            409,
            j("unknown", "version mismatch"),
            "conflict",
        ),
        (Route::CreateApp, 409, j("unknown", "exists"), "name_taken"),
        (
            Route::CreateApp,
            422,
            j("name_taken", "Name has already been taken"),
            "name_taken",
        ),
        (
            Route::CreateApp,
            422,
            j("unknown", "Name has already been taken"),
            "invalid",
        ),
        (Route::CreateApp, 400, j("unknown", "bad org"), "invalid"),
        (
            Route::UpdateMachine,
            412,
            String::new(),
            "precondition_failed",
        ),
        (
            Route::CreateMachine,
            412,
            j("insufficient_capacity", "no room"),
            "insufficient_capacity",
        ),
        (
            Route::CreateMachine,
            500,
            j("insufficient_capacity", "no room"),
            "insufficient_capacity",
        ),
        (
            Route::CreateMachine,
            422,
            j("volume_placement_capacity", "x"),
            "insufficient_capacity",
        ),
        (
            Route::CreateMachine,
            429,
            j("insufficient_capacity", "slow"),
            "rate_limited",
        ),
        (Route::ListApps, 429, String::new(), "rate_limited"),
        (Route::ListApps, 500, j("unknown", "boom"), "server"),
        (
            Route::ListApps,
            503,
            "<html>bad gateway</html>".into(),
            "server",
        ),
        (Route::ListApps, 418, String::new(), "invalid"),
        (Route::ListApps, 302, String::new(), "unexpected_status"),
        (Route::ListApps, 500, j("name_taken", "odd"), "server"),
    ];
    for (route, status, body, want) in cases {
        let e = classify_raw(route, status, &body);
        assert_eq!(e.kind(), want, "{route:?} {status} {body}");
        assert_eq!(e.route(), Some(route));
    }
}

#[test]
fn message_prefers_message_over_error_and_ignores_wrong_types() {
    let e = classify_raw(
        Route::CreateMachine,
        400,
        r#"{"error":"short","message":"the longer story","status":"unknown"}"#,
    );
    assert_eq!(
        e.to_string(),
        "fly POST create_machine: rejected (400): the longer story"
    );
    let e = classify_raw(
        Route::CreateMachine,
        422,
        r#"{"error":5,"status":["name_taken"],"message":null}"#,
    );
    assert_eq!(e.kind(), "invalid");
    assert!(e.to_string().ends_with("rejected (422): "));
}

#[test]
fn hostile_bodies_classify_by_status_and_never_echo_the_body() {
    let huge = "x".repeat(100_000);
    let bodies = [
        r#"{"error":"trunc"#.to_owned(),
        "<!doctype html><title>502 Bad Gateway</title>".to_owned(),
        String::new(),
        "   ".to_owned(),
        "null".to_owned(),
        "[1,2]".to_owned(),
        huge.clone(),
        format!(r#"{{"error":"{huge}"}}"#),
        "\u{0}\u{1}\u{ff}".to_owned(),
    ];
    for b in &bodies {
        let e = classify_raw(Route::GetMachine, 502, b);
        assert_eq!(e.kind(), "server");
        let shown = e.to_string();
        assert!(!shown.contains("doctype"), "{shown}");
        assert!(!shown.contains('\n'));
        assert!(
            shown.chars().count() < MAX_MESSAGE_CHARS + 80,
            "{}",
            shown.len()
        );
    }
}

#[test]
fn messages_are_one_line_and_truncated() {
    let long = format!("line one\nline\ttwo {}", "y".repeat(500));
    let m = sanitize_message(&long);
    assert!(m.starts_with("line one line two y"));
    assert_eq!(m.chars().count(), MAX_MESSAGE_CHARS + 1); // plus the ellipsis
    assert!(m.ends_with('…'));
    // Multi-byte characters are cut on a boundary.
    assert_eq!(
        sanitize_message(&"é".repeat(300)).chars().count(),
        MAX_MESSAGE_CHARS + 1
    );
}

#[test]
fn scrub_removes_secret_values() {
    let s = scrub(
        "invalid value sk_live_123 for KEY",
        &["sk_live_123", "ab", ""],
    );
    assert_eq!(s, "invalid value [redacted] for KEY");
}

#[test]
fn helper_flags() {
    let call = |route| CallInfo {
        route,
        request_id: Some("01REQ".into()),
    };
    let post_5xx = FlyError::Server {
        call: call(Route::CreateMachine),
        status: 503,
        message: String::new(),
    };
    assert!(post_5xx.is_transient() && post_5xx.write_outcome_unknown());
    assert_eq!(post_5xx.request_id(), Some("01REQ"));
    let get_5xx = FlyError::Server {
        call: call(Route::GetMachine),
        status: 503,
        message: String::new(),
    };
    assert!(!get_5xx.write_outcome_unknown());
    let transport = FlyError::Transport {
        call: call(Route::DeleteApp),
        detail: "connection reset".into(),
    };
    assert!(transport.write_outcome_unknown() && transport.is_transient());
    let limited = FlyError::RateLimited {
        call: call(Route::CreateMachine),
        retry_after: Some(Duration::from_secs(3)),
        message: String::new(),
    };
    assert!(limited.is_transient() && !limited.write_outcome_unknown());
    assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
    assert!(limited.to_string().contains("retry after 3s"));
    let decode_after_write = FlyError::Decode {
        call: call(Route::UpdateMachine),
        status: 200,
        detail: "eof".into(),
    };
    assert!(decode_after_write.write_outcome_unknown() && !decode_after_write.is_transient());
    let taken = FlyError::NameTaken {
        call: call(Route::CreateApp),
        status: 422,
        message: String::new(),
    };
    assert!(!taken.is_transient() && !taken.write_outcome_unknown());
    let cfg = FlyError::config("bad url");
    assert_eq!(
        (cfg.kind(), cfg.request_id(), cfg.status()),
        ("config", None, None)
    );
}

#[test]
fn kinds_are_distinct_snake_case_labels() {
    let c = || CallInfo::new(Route::GetApp);
    let all = [
        FlyError::Unauthorized {
            call: c(),
            message: String::new(),
        },
        FlyError::Forbidden {
            call: c(),
            message: String::new(),
        },
        FlyError::NotFound {
            call: c(),
            message: String::new(),
        },
        FlyError::Timeout {
            call: c(),
            message: String::new(),
        },
        FlyError::Conflict {
            call: c(),
            message: String::new(),
        },
        FlyError::PreconditionFailed {
            call: c(),
            message: String::new(),
        },
        FlyError::NameTaken {
            call: c(),
            status: 422,
            message: String::new(),
        },
        FlyError::InsufficientCapacity {
            call: c(),
            status: 412,
            message: String::new(),
        },
        FlyError::Invalid {
            call: c(),
            status: 400,
            message: String::new(),
        },
        FlyError::RateLimited {
            call: c(),
            retry_after: None,
            message: String::new(),
        },
        FlyError::Server {
            call: c(),
            status: 500,
            message: String::new(),
        },
        FlyError::Transport {
            call: c(),
            detail: String::new(),
        },
        FlyError::Decode {
            call: c(),
            status: 200,
            detail: String::new(),
        },
        FlyError::BodyTooLarge {
            call: c(),
            status: 200,
            limit: 1,
        },
        FlyError::Incomplete {
            call: c(),
            error_regions: vec!["sin".into()],
        },
        FlyError::UnexpectedStatus {
            call: c(),
            status: 304,
        },
        FlyError::config("x"),
    ];
    let kinds: std::collections::HashSet<_> = all.iter().map(FlyError::kind).collect();
    assert_eq!(kinds.len(), all.len());
    assert!(
        kinds
            .iter()
            .all(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
    );
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
    assert_eq!(
        parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        parse_retry_after("Wed Oct 21 07:28:10 2015", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
        Some(Duration::ZERO)
    );
    for junk in [
        "",
        "-1",
        "1.5",
        "soon",
        "99999999999999999999999",
        "Wed, 99 Oct 2015",
    ] {
        assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
    }
}
