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
    ADMIN_TOKEN, Console, RowFixture, add_admin, inert_env, override_of, table_users,
};
use support::{UserFixture, migrated_db};
use uuid::Uuid;

fn user_with_email(email: &str) -> UserFixture {
    let mut u = UserFixture::paid("pro");
    u.email = email.to_string();
    u
}

/// Adds the admin `name`, signs `console` in as them; returns the session's CSRF token.
async fn signed_in(pool: &sqlx::PgPool, console: &Console, name: &str) -> String {
    let token = add_admin(pool, name).await;
    let r = console.sign_in(&token).await;
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
    signed_in(&db.pool, &c, "Ada").await;

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
    // A page past the end shows the last page, not "rows 0–49999950 of 120".
    let far = c.get("/?page=999999").await;
    assert!(far.body.contains("rows 101–120 of 120"), "{}", far.body);
    let none = c.get("/?q=nobody-matches-this").await;
    assert!(none.body.contains("id=\"no-rows\""), "an empty state");

    assert!(first.body.contains("Live apps"), "summary present");
    assert!(first.body.contains(" UTC</time>"), "times say their zone");
    assert!(first.body.contains("aria-sort=\"ascending\""));
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
    signed_in(&db.pool, &c, "Ada").await;
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
async fn controls_refuse_a_missing_or_wrong_csrf_token_and_cross_origin_posts() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    let env = inert_env(&db.url).with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "console-csrf");
    let c = Console::connect(d.http_addr).await;
    let csrf = signed_in(&db.pool, &c, "Ada Admin").await;
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
    let trail: (String, String, String, String, String) = sqlx::query_as(
        "SELECT admin, action, reason, before, after FROM vyx_fleet.admin_actions WHERE user_id = $1",
    )
    .bind(u)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        trail,
        (
            "Ada Admin".into(),
            "override".into(),
            "why".into(),
            "follows tier".into(),
            "paused".into()
        ),
        "the override left its trail row, and refused requests left none"
    );
    let log = d.stdout();
    assert!(
        log.lines()
            .any(|l| l.contains("console: override set") && l.contains("Ada Admin")),
        "{log}"
    );
    assert_no_secrets(&log, &[ADMIN_TOKEN.to_string()], "daemon log");
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
        for object in [
            "vyx_fleet.app_console",
            "vyx_fleet.alerts",
            "vyx_fleet.admins",
            "vyx_fleet.admin_sessions",
            "vyx_fleet.admin_actions",
        ] {
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
    signed_in(&db.pool, &c, "Ada").await;
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
