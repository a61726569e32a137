//! Who may read and steer the console, black-box against `vyx-fleet run` and a real PostgreSQL: the
//! sign-in every page needs, the `Host` allowlist, the headers on every response, named admins and
//! their server-side sessions (sign-out and revocation end them on replay), the break-glass token,
//! and per-client sign-in throttling.

mod bin_support;
mod console_support;
mod support;

use std::net::IpAddr;

use bin_support::{Daemon, assert_no_secrets, run_to_completion, secs};
use console_support::{ADMIN_TOKEN, Console, add_admin, cookie_in, inert_env, override_of};
use support::{UserFixture, migrated_db};

#[tokio::test]
async fn every_page_with_user_data_needs_a_signed_in_admin_and_probes_stay_open() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    let d = Daemon::spawn(&inert_env(&db.url), "access-pages");
    let c = Console::connect(d.http_addr).await;
    for path in ["/", &format!("/users/{u}"), "/activity", "/?q=example"] {
        let r = c.get(path).await;
        assert_eq!(r.status, 303, "{path}");
        let to = r.location.unwrap_or_default();
        assert!(to.starts_with("/signin?next="), "{path} → {to}");
        assert!(!r.body.contains("@example"), "{path} leaks {}", r.body);
    }
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = c.get(probe).await;
        assert_ne!(r.status, 303, "{probe} stays open");
    }
    // Unsigned controls change nothing.
    let user = u.to_string();
    let form = [
        ("user_id", user.as_str()),
        ("desired", "absent"),
        ("reason", "x"),
    ];
    let r = c.post("/controls/override", &form).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Your session has ended"), "{}", r.body);
    assert!(
        r.body.contains(">x</pre>"),
        "the typed reason is given back"
    );
    assert_eq!(override_of(&db.pool, u).await, None);
}

#[tokio::test]
async fn a_host_outside_the_allowlist_is_refused_and_every_response_carries_the_security_headers() {
    let db = migrated_db().await;
    let token = add_admin(&db.pool, "Ada").await;
    let d = Daemon::spawn(&inert_env(&db.url), "access-hosts");
    let c = Console::connect(d.http_addr).await;
    assert_eq!(c.sign_in(&token).await.status, 303);
    assert_eq!(c.get("/").await.status, 200);
    let port = d.http_addr.port();
    for host in [
        format!("evil.test:{port}"),
        format!("vyx-fleet.internal.evil.test:{port}"),
    ] {
        let r = c.get_with("/", &[("host", &host)]).await;
        assert_eq!(r.status, 421, "{host}");
        assert!(!r.body.contains("Live apps"));
        let signin = c.get_with("/signin", &[("host", &host)]).await;
        assert_eq!(signin.status, 421, "{host}: not even the sign-in page");
    }
    let ok = c
        .get_with("/", &[("host", &format!("localhost:{port}"))])
        .await;
    assert_eq!(ok.status, 200, "localhost, as `fly proxy` sends it");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/healthz", "/metrics", "/signin", "/static/console.css"] {
        let r = http.get(format!("{}{path}", c.base)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
    }

    // A narrower allowlist, as a setting.
    let env = inert_env(&db.url).with("ADMIN_ALLOWED_HOSTS", "console.example");
    let narrow = Daemon::spawn(&env, "access-hosts-narrow");
    let host = format!("console.example:{}", narrow.http_addr.port());
    let base = format!("http://{}", narrow.http_addr);
    bin_support::wait_until("the narrow console answers", secs(60), || async {
        match http
            .get(format!("{base}/signin"))
            .header("host", &host)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let r = http.get(format!("{base}/signin")).send().await.unwrap();
    assert_eq!(r.status(), 421, "127.0.0.1 is not in the narrowed list");
}

#[tokio::test]
async fn signing_out_ends_the_session_and_a_replayed_cookie_is_refused() {
    let db = migrated_db().await;
    let token = add_admin(&db.pool, "Ada").await;
    let d = Daemon::spawn(&inert_env(&db.url), "access-signout");
    let c = Console::connect(d.http_addr).await;
    let r = c.sign_in(&token).await;
    let set = r.set_cookie.expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    let cookie = cookie_in(&set);
    assert_eq!(c.get_with_cookie("/", &cookie).await.status, 200);
    let csrf = c.csrf().await;
    assert_eq!(c.post("/signout", &[]).await.status, 403, "no CSRF token");
    assert_eq!(c.post("/signout", &[("csrf", &csrf)]).await.status, 303);
    let replay = c.get_with_cookie("/", &cookie).await;
    assert_eq!(replay.status, 303, "the copied cookie is dead");
    assert_no_secrets(&d.stdout(), &[token.clone(), cookie], "daemon log");

    // Behind Fly's TLS proxy, the cookie is Secure.
    let https = c
        .post_with_headers(
            "/signin",
            &[("token", &token)],
            &[
                ("x-forwarded-proto", "https"),
                ("origin", &c.base.replace("http://", "https://")),
            ],
        )
        .await;
    assert_eq!(https.status, 303, "{}", https.body);
    assert!(https.set_cookie.unwrap_or_default().contains("; Secure"));
}

#[tokio::test]
async fn a_revoked_admin_cannot_sign_in_and_their_open_session_ends_at_once() {
    let db = migrated_db().await;
    let env = inert_env(&db.url);
    let added = run_to_completion(&env, &["admin", "add", "Grace Hopper"], secs(60))
        .await
        .ok();
    let token = added
        .stdout
        .lines()
        .find(|l| l.starts_with("vyxa_"))
        .expect("the token, printed once")
        .to_string();
    let again = run_to_completion(&env, &["admin", "add", "Grace Hopper"], secs(60)).await;
    assert_eq!(again.code, Some(1), "a name is never reused");
    let d = Daemon::spawn(&env, "access-revoke");
    let c = Console::connect(d.http_addr).await;
    let cookie = cookie_in(&c.sign_in(&token).await.set_cookie.unwrap());
    assert!(c.get("/").await.body.contains("Grace Hopper"));
    let list = run_to_completion(&env, &["admin", "list"], secs(60))
        .await
        .ok();
    assert!(list.stdout.contains("Grace Hopper") && list.stdout.contains("active"));

    run_to_completion(&env, &["admin", "revoke", "Grace Hopper"], secs(60))
        .await
        .ok();
    assert_eq!(c.get_with_cookie("/", &cookie).await.status, 303);
    assert_eq!(c.get("/").await.status, 303);
    assert_eq!(c.sign_in(&token).await.status, 401);
    let list = run_to_completion(&env, &["admin", "list"], secs(60))
        .await
        .ok();
    assert!(list.stdout.contains("revoked"), "{}", list.stdout);
    let trail: Vec<String> =
        sqlx::query_scalar("SELECT action FROM vyx_fleet.admin_actions ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(trail, ["admin_add", "admin_revoke"]);
    let out = format!("{}{}", d.stdout(), list.all_output());
    assert_no_secrets(&out, &[token], "daemon log and CLI output");
}

#[tokio::test]
async fn the_break_glass_token_signs_in_under_a_typed_name_and_stops_when_rotated() {
    let db = migrated_db().await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "access-break-glass");
    let c = Console::connect(d.http_addr).await;
    let nameless = c.post("/signin", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!(nameless.status, 400, "break-glass needs a name");
    let r = c.sign_in_break_glass("Ada", ADMIN_TOKEN).await;
    assert_eq!(r.status, 303);
    let cookie = cookie_in(&r.set_cookie.unwrap());
    assert!(c.get("/").await.body.contains("Ada (break-glass)"));
    drop(d);
    let rotated = inert_env(&db.url).with("ADMIN_TOKEN", &"r".repeat(40));
    let d2 = Daemon::spawn(&rotated, "access-break-glass-rotated");
    let c2 = Console::connect(d2.http_addr).await;
    assert_eq!(
        c2.get_with_cookie("/", &cookie).await.status,
        303,
        "a session opened with the old token ends with it"
    );
    assert_eq!(c2.sign_in_break_glass("Ada", ADMIN_TOKEN).await.status, 401);
}

#[tokio::test]
async fn one_clients_wrong_token_flood_leaves_another_clients_sign_in_working() {
    let db = migrated_db().await;
    let token = add_admin(&db.pool, "Ada").await;
    let d = Daemon::spawn(&inert_env(&db.url), "access-throttle");
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let flood = Console::connect_from(d.http_addr, Some(other)).await;
    let admin = Console::connect(d.http_addr).await;
    let mut codes = Vec::new();
    for i in 0..40 {
        codes.push(flood.sign_in(&format!("vyxa_wrong{i}")).await.status);
    }
    assert_eq!(codes[0], 401);
    assert_eq!(*codes.last().unwrap(), 429, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 401 || *c == 429), "{codes:?}");
    assert_eq!(
        flood.sign_in(&token).await.status,
        429,
        "the flooding client is refused unchecked"
    );
    // The admin elsewhere signs in, and signing in costs them nothing.
    for _ in 0..15 {
        let r = admin.sign_in(&token).await;
        assert_eq!(r.status, 303, "{}", r.body);
    }
    let log = d.stdout();
    let refusals = log
        .lines()
        .filter(|l| l.contains("sign-in refused"))
        .count();
    assert!(
        (1..codes.len()).contains(&refusals),
        "refusals are logged, but not one line each: {refusals}"
    );
    assert_no_secrets(&log, &[token], "daemon log");
}
