//! The admin console over HTTP, black-box: `vyx-fleet run` against a real PostgreSQL, with a dead Fly
//! API so the rows each test writes stay as written. The browser drives the same pages in
//! `console_browser.rs`; these tests cover what a plain HTTP client shows better: exact status codes,
//! forged requests, headers, and the 10,000-row measurement.

mod bin_support;
mod console_support;
mod support;

use std::time::Instant;

use bin_support::{Daemon, assert_no_secrets};
use console_support::{
    ADMIN_TOKEN, Console, RowFixture, hold_deletions, inert_env, override_of, table_users,
};
use support::{UserFixture, migrated_db};
use uuid::Uuid;

fn user_with_email(email: &str) -> UserFixture {
    let mut u = UserFixture::paid("pro");
    u.email = email.to_string();
    u
}

async fn signed_in(console: &Console, name: &str) -> String {
    let r = console.sign_in(name, ADMIN_TOKEN).await;
    assert_eq!(r.status, 303, "sign-in: {}", r.body);
    console.csrf().await
}

#[tokio::test]
async fn the_table_shows_the_rows_and_filters_sorts_and_pages_them_in_the_database() {
    let db = migrated_db().await;
    let mut users = Vec::new();
    for i in 0..120 {
        let u = user_with_email(&format!("user{i:03}@example.test"))
            .insert(&db.pool)
            .await;
        let row = RowFixture::active(u, &format!("vyx-user-t{i:03}"));
        let row = if i % 10 == 0 {
            row.failing(i / 10, "machine create: 503")
        } else {
            row
        };
        row.insert(&db.pool).await;
        users.push(u);
    }
    let d = Daemon::spawn(&inert_env(&db.url), "console-table");
    let c = Console::connect(d.http_addr).await;

    let first = c.get("/").await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("rows 1–50 of 120"), "{}", first.body);
    let shown = table_users(&first.body);
    let expected: Vec<String> = users[..50].iter().map(Uuid::to_string).collect();
    assert_eq!(shown, expected, "sorted by app name, first page");

    let third = c.get("/?sort=app&page=2").await;
    assert!(third.body.contains("rows 101–120 of 120"));
    assert_eq!(table_users(&third.body).len(), 20);

    let failing = c.get("/?status=error&sort=retries&dir=desc").await;
    let ids = table_users(&failing.body);
    assert_eq!(ids.len(), 12);
    assert_eq!(ids[0], users[110].to_string(), "most retries first");

    let one = c.get("/?q=USER042%40example").await;
    assert_eq!(table_users(&one.body), vec![users[42].to_string()]);
    let by_app = c.get("/?q=vyx-user-t007").await;
    assert_eq!(table_users(&by_app.body), vec![users[7].to_string()]);
    // LIKE wildcards typed by the admin are literal text.
    assert!(table_users(&c.get("/?q=%25").await.body).is_empty());
    // Unknown sort keys and filter values fall back to the defaults instead of reaching SQL.
    let odd = c.get("/?sort=app_name%3BDROP&status=nope&page=-3").await;
    assert_eq!(odd.status, 200);
    assert_eq!(table_users(&odd.body), expected);

    assert!(first.body.contains("Live apps"), "summary present");
    assert!(
        !first.body.contains("method=\"post\""),
        "signed out: no controls"
    );
    assert_no_secrets(&d.stdout(), &[ADMIN_TOKEN.to_string()], "daemon log");
}

#[tokio::test]
async fn html_in_an_email_or_an_error_message_is_shown_as_text() {
    let db = migrated_db().await;
    let email = "<script>alert(1)</script>@example.test";
    let u = user_with_email(email).insert(&db.pool).await;
    RowFixture::active(u, "vyx-user-xss")
        .failing(1, "<img src=x onerror=alert(2)>")
        .insert(&db.pool)
        .await;
    let d = Daemon::spawn(&inert_env(&db.url), "console-xss");
    let c = Console::connect(d.http_addr).await;
    for path in [
        "/".to_string(),
        format!("/users/{u}"),
        "/?q=%3Cscript".to_string(),
    ] {
        let page = c.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body.contains("<script>alert(1)"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img src=x"), "{path}");
        assert!(
            page.body
                .contains("&lt;script&gt;alert(1)&lt;/script&gt;@example.test"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn without_admin_token_the_console_is_read_only_and_every_control_answers_403() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    hold_deletions(&db.pool, &[("vyx-user-held1", Some(u))]).await;
    let d = Daemon::spawn(&inert_env(&db.url), "console-readonly");
    let c = Console::connect(d.http_addr).await;

    let page = c.get(&format!("/users/{u}")).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("read-only"));
    assert!(
        !page.body.contains("<form method=\"post\""),
        "{}",
        page.body
    );
    assert!(!c.get("/").await.body.contains("confirm-deletions\""));

    let user = u.to_string();
    let forged: [(&str, Vec<(&str, &str)>); 5] = [
        ("/signin", vec![("name", "x"), ("token", ADMIN_TOKEN)]),
        (
            "/controls/override",
            vec![("user_id", &user), ("desired", "absent"), ("reason", "x")],
        ),
        ("/controls/override/clear", vec![("user_id", &user)]),
        ("/controls/retry", vec![("user_id", &user)]),
        ("/controls/confirm-deletions", vec![]),
    ];
    for (path, form) in &forged {
        assert_eq!(c.post(path, form).await.status, 403, "{path}");
    }
    assert_eq!(override_of(&db.pool, u).await, None);
    let confirmed: Option<String> =
        sqlx::query_scalar("SELECT confirmed_by FROM vyx_fleet.held_deletions")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(confirmed, None);
}

#[tokio::test]
async fn a_wrong_token_never_signs_in_and_sign_in_attempts_are_rate_limited() {
    let db = migrated_db().await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "console-signin");
    let c = Console::connect(d.http_addr).await;

    let almost = &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1];
    for wrong in ["", "nope", almost, &format!("{ADMIN_TOKEN}x")] {
        let r = c.sign_in("Mallory", wrong).await;
        assert_eq!(r.status, 401, "{wrong:?}");
        assert!(r.set_cookie.is_none());
    }
    // A cross-site sign-in form (login CSRF) is refused before the token is even looked at.
    let r = c
        .post_from(
            "/signin",
            &[("name", "x"), ("token", ADMIN_TOKEN)],
            Some("http://evil.test"),
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(c.get("/").await.body.contains("sign in for controls"));

    let ok = c.sign_in("Ada", ADMIN_TOKEN).await;
    assert_eq!(ok.status, 303);
    let cookie = ok.set_cookie.expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(c.get("/").await.body.contains("signed in as Ada"));

    // Ten attempts a minute per replica, right or wrong: the eleventh is refused unchecked.
    for _ in 0..5 {
        c.sign_in("Mallory", "nope").await;
    }
    let limited = c.sign_in("Ada", ADMIN_TOKEN).await;
    assert_eq!(limited.status, 429);
    assert!(limited.set_cookie.is_none());
    assert_no_secrets(&d.stdout(), &[ADMIN_TOKEN.to_string()], "daemon log");
    assert!(d.stdout().contains("sign-in refused: wrong token"));
}

#[tokio::test]
async fn signing_out_drops_the_session_and_needs_the_csrf_token_too() {
    let db = migrated_db().await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "console-signout");
    let c = Console::connect(d.http_addr).await;
    let csrf = signed_in(&c, "Ada").await;
    assert_eq!(c.post("/signout", &[]).await.status, 403, "no CSRF token");
    assert!(c.get("/").await.body.contains("signed in as Ada"));
    let out = c.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(out.set_cookie.unwrap_or_default().contains("Max-Age=0"));
    assert!(c.get("/").await.body.contains("sign in for controls"));
}

#[tokio::test]
async fn controls_refuse_a_missing_or_wrong_csrf_token_and_cross_origin_posts() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "console-csrf");
    let c = Console::connect(d.http_addr).await;
    let csrf = signed_in(&c, "Ada Admin").await;
    let user = u.to_string();
    let base = c.base.clone();
    let send = |csrf: Option<&str>, origin: Option<&str>| {
        let csrf = csrf.map(str::to_string);
        let origin = origin.map(str::to_string);
        let (c, user) = (&c, user.clone());
        async move {
            let mut form = vec![
                ("user_id", user.as_str()),
                ("desired", "paused"),
                ("reason", "why"),
            ];
            if let Some(t) = &csrf {
                form.push(("csrf", t));
            }
            c.post_from("/controls/override", &form, origin.as_deref())
                .await
                .status
        }
    };
    assert_eq!(send(None, Some(&base)).await, 403, "no CSRF token");
    assert_eq!(
        send(Some("0000"), Some(&base)).await,
        403,
        "wrong CSRF token"
    );
    assert_eq!(
        send(Some(&csrf), Some("http://evil.test")).await,
        403,
        "cross-origin"
    );
    assert_eq!(send(Some(&csrf), None).await, 403, "no Origin, no Referer");
    assert_eq!(override_of(&db.pool, u).await, None, "nothing changed");
    for reason in ["", "two\nlines"] {
        let form = [
            ("user_id", user.as_str()),
            ("desired", "paused"),
            ("reason", reason),
            ("csrf", &csrf),
        ];
        assert_eq!(
            c.post("/controls/override", &form).await.status,
            400,
            "reason {reason:?}"
        );
    }
    assert_eq!(
        override_of(&db.pool, u).await,
        None,
        "a refused reason changes nothing"
    );

    assert_eq!(send(Some(&csrf), Some(&base)).await, 303);
    assert_eq!(
        override_of(&db.pool, u).await,
        Some(("paused".into(), "why".into(), "Ada Admin".into()))
    );
    let log = d.stdout();
    assert!(
        log.lines()
            .any(|l| l.contains("console: override set") && l.contains("Ada Admin")),
        "{log}"
    );
}

#[tokio::test]
async fn retry_now_ends_the_backoff_and_confirm_covers_the_held_deletions() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    RowFixture::active(u, "vyx-user-retry1")
        .failing(3, "fly 503")
        .insert(&db.pool)
        .await;
    hold_deletions(
        &db.pool,
        &[("vyx-user-held1", Some(u)), ("vyx-user-orphan1", None)],
    )
    .await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "console-retry");
    let c = Console::connect(d.http_addr).await;
    let csrf = signed_in(&c, "Grace").await;

    let dash = c.get("/").await.body;
    assert!(dash.contains("id=\"held-deletions\""));
    assert!(dash.contains("vyx-user-held1") && dash.contains("vyx-user-orphan1"));
    assert!(dash.contains("holding 2 deletion(s)"));
    let user_page = c.get(&format!("/users/{u}")).await.body;
    assert!(
        user_page.contains("id=\"retry-now\""),
        "a row in backoff offers a retry"
    );

    let user = u.to_string();
    let r = c
        .post("/controls/retry", &[("user_id", &user), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let next: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT next_attempt_at FROM public.user_fly_apps WHERE user_id = $1")
            .bind(u)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(next, None);

    let r = c
        .post("/controls/confirm-deletions", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let held = vyx_fleet::db::breaker::load_held(&db.pool).await.unwrap();
    assert_eq!(held.len(), 2);
    assert!(
        held.iter()
            .all(|h| h.confirmed_by.as_deref() == Some("Grace"))
    );
    assert!(c.get("/").await.body.contains("confirmed, deleting"));
}

#[tokio::test]
async fn the_studio_view_has_the_table_columns_and_is_hidden_from_the_api_roles() {
    let db = migrated_db().await;
    let u = user_with_email("studio@example.test")
        .insert(&db.pool)
        .await;
    RowFixture::active(u, "vyx-user-studio")
        .insert(&db.pool)
        .await;
    let (email, tier, tag): (String, String, String) =
        sqlx::query_as("SELECT email, tier, image_tag FROM vyx_fleet.app_console")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (email.as_str(), tier.as_str(), tag.as_str()),
        ("studio@example.test", "pro", "bb-1")
    );
    let invoker: bool = sqlx::query_scalar(
        "SELECT 'security_invoker=true' = ANY(reloptions) FROM pg_class
          WHERE oid = 'vyx_fleet.app_console'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(invoker);
    for role in ["anon", "authenticated", "service_role"] {
        for object in ["vyx_fleet.app_console", "vyx_fleet.alerts"] {
            let can: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'SELECT')")
                .bind(role)
                .bind(object)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert!(!can, "{role} can read {object}");
        }
    }
}

/// A measurement, not an assertion: the README quotes the figures this prints.
#[tokio::test]
async fn the_dashboard_renders_ten_thousand_apps_in_pages() {
    let db = migrated_db().await;
    sqlx::query(
        "WITH u AS (
            INSERT INTO auth.users (id, email)
            SELECT gen_random_uuid(), 'user' || g || '@example.test' FROM generate_series(1, 10000) g
            RETURNING id, email)
         , p AS (INSERT INTO public.user_profiles (id, email) SELECT id, email FROM u)
         , s AS (INSERT INTO public.user_subscriptions (user_id, tier, status)
                 SELECT id, 'pro', 'active' FROM u)
         INSERT INTO public.user_fly_apps
             (user_id, fly_app_name, fly_org_slug, status, health_status, region, docker_image,
              cpu_count, memory_mb, monthly_cost_estimate_usd, retry_count, updated_at)
         SELECT id, 'vyx-user-' || lpad(to_hex(row_number() OVER ()), 8, '0'), 'vyx-test',
                (ARRAY['active','active','active','error','provisioning'])[1 + (random() * 4)::int],
                (ARRAY['healthy','healthy','unhealthy','unknown'])[1 + (random() * 3)::int],
                'sin', 'registry.fly.io/vyx-screener:bb-1', 2, 512, 5.70, (random() * 6)::int,
                now() - random() * interval '30 days'
           FROM u",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    let d = Daemon::spawn(&inert_env(&db.url), "console-10k");
    let c = Console::connect(d.http_addr).await;
    let mut report = Vec::new();
    for path in [
        "/",
        "/?sort=email&dir=desc",
        "/?sort=changed&page=199",
        "/?status=error&health=unhealthy&sort=retries&dir=desc",
        "/?q=user4242",
    ] {
        c.get(path).await; // warm the connection pool and caches
        let runs = 5;
        let t = Instant::now();
        for _ in 0..runs {
            let r = c.get(path).await;
            assert_eq!(r.status, 200, "{path}");
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
        report.push(format!("{path:<55} {ms:>7.1} ms"));
    }
    let body = c.get("/").await.body;
    assert!(body.contains("of 10000"), "{body}");
    println!("dashboard render with 10,000 apps (debug build, mean of 5, GET over loopback):");
    for line in report {
        println!("  {line}");
    }
}
