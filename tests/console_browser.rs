//! End to end in headless Chromium: `vyx-fleet run` against PostgreSQL and the Fly simulator, the
//! console driven over WebDriver as an admin would. Screenshots go to `target/test-artifacts/`.
//! Under CI the browser must be there; elsewhere the test skips with a notice when it is not.

mod bin_support;
mod console_support;
mod support;

use bin_support::{Daemon, World, secs, wait_until};
use console_support::webdriver::Browser;
use console_support::{ADMIN_TOKEN, encode, override_of};
use serde_json::Value;
use sqlx::PgPool;
use support::{UserFixture, set_subscription};
use uuid::Uuid;
use vyx_fleet::sim::SimConfig;

const XSS_EMAIL: &str = "<script>window.__pwned=1</script>eve@example.test";

async fn user(pool: &PgPool, tier: &str, email: &str) -> Uuid {
    let mut u = UserFixture::paid(tier);
    u.email = email.to_string();
    u.insert(pool).await
}

/// Waits until the page shows `css` with text containing `needle`.
async fn wait_text(b: &Browser, css: &str, needle: &str) {
    wait_until(&format!("{css} shows {needle:?}"), secs(30), || async {
        let found = b
            .execute(&format!(
                "const e = document.querySelector({css:?}); return e ? e.innerText : null"
            ))
            .await;
        match found.as_str() {
            Some(t) if t.contains(needle) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Two passes recorded after this call: anything the leader was going to do, it has done.
async fn two_passes_later(pool: &PgPool) {
    let read = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT value FROM vyx_fleet.settings WHERE key = 'last_pass_at'",
        )
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
    };
    let mut seen = read().await;
    for _ in 0..2 {
        let before = seen.clone();
        seen = wait_until("the leader records another pass", secs(60), || async {
            match read().await {
                now if now != before && now.is_some() => Ok(now),
                _ => Err("no new pass yet".to_string()),
            }
        })
        .await;
    }
}

/// A page on another origin (`localhost` vs the console's `127.0.0.1`) whose form posts to the
/// console as soon as it loads: the classic cross-site request forgery.
async fn attack_page(console: &str, user: Uuid) -> String {
    let html = format!(
        "<!doctype html><form id=f method=post action=\"{console}/controls/override\">\
         <input name=user_id value=\"{user}\"><input name=desired value=absent>\
         <input name=reason value=forged><input name=csrf value=guess></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://localhost:{port}/")
}

#[tokio::test]
async fn an_admin_finds_pauses_and_provisions_users_from_the_page_and_forgeries_change_nothing() {
    let Some(b) = Browser::start_or_skip("console browser test").await else {
        return;
    };
    let world = World::start(SimConfig::default()).await;
    let pool = world.pool().clone();
    let alice = user(&pool, "pro", "alice@example.test").await;
    let bob = user(&pool, "elite", "bob@example.test").await;
    let eve = user(&pool, "pro", XSS_EMAIL).await;
    let frank = user(&pool, "free", "frank@example.test").await;
    let env = world.env.clone().with("ADMIN_TOKEN", ADMIN_TOKEN);
    let d = Daemon::spawn(&env, "browser-admin");
    for u in [alice, bob, eve] {
        world.wait_provisioned(u, secs(90)).await;
    }
    let base = format!("http://{}", d.http_addr);

    // The table is the database.
    b.goto(&format!("{base}/")).await;
    let shown = b
        .execute(
            "return [...document.querySelectorAll('#apps tbody tr')].map(r =>
                [r.dataset.user, r.querySelector('td.app').innerText,
                 r.querySelector('td.status').innerText, r.querySelector('td.email').innerText])",
        )
        .await;
    let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT a.user_id, a.fly_app_name, a.status, p.email FROM public.user_fly_apps a
           JOIN public.user_profiles p ON p.id = a.user_id ORDER BY a.fly_app_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected: Vec<Value> = rows
        .iter()
        .map(|(u, app, status, email)| serde_json::json!([u.to_string(), app, status, email]))
        .collect();
    assert_eq!(shown, Value::Array(expected));
    // The email holding a script is text on the page, and the script never ran.
    assert_eq!(b.execute("return window.__pwned === undefined").await, true);
    assert_eq!(
        b.execute("return document.querySelectorAll('#apps script').length")
            .await,
        0
    );
    b.screenshot("dashboard").await;

    // Filtering.
    b.fill("#q", "alice@").await;
    b.click("#apply").await;
    wait_text(&b, "#row-count", "of 1").await;
    let only = b
        .execute("return [...document.querySelectorAll('#apps tbody tr')].map(r => r.dataset.user)")
        .await;
    assert_eq!(only, serde_json::json!([alice.to_string()]));

    // Signing in.
    b.goto(&format!("{base}/signin")).await;
    b.fill("#name", "Ada Admin").await;
    b.fill("#token", ADMIN_TOKEN).await;
    b.click("button[type=submit]").await;
    wait_text(&b, "header", "signed in as Ada Admin").await;

    // Pausing Bob: the override records the admin, and the app is then left alone even though
    // Bob cancels (with DEPROVISION_GRACE=0s the app would otherwise go at once).
    b.goto(&format!("{base}/users/{bob}")).await;
    b.click("#desired option[value=paused]").await;
    b.fill("#reason", "billing dispute").await;
    b.click("#set-override").await;
    wait_text(&b, "#override", "Ada Admin").await;
    assert_eq!(
        override_of(&pool, bob).await,
        Some((
            "paused".into(),
            "billing dispute".into(),
            "Ada Admin".into()
        ))
    );
    set_subscription(&pool, bob, "elite", "cancelled").await;
    two_passes_later(&pool).await;
    let (status, deleted): (String, bool) = sqlx::query_as(
        "SELECT status, deleted_at IS NOT NULL FROM public.user_fly_apps WHERE user_id = $1",
    )
    .bind(bob)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), deleted),
        ("active", false),
        "a paused user is left alone"
    );
    b.goto(&format!("{base}/users/{bob}")).await;
    wait_text(&b, "#override", "billing dispute").await;
    b.screenshot("user-paused").await;

    // Provisioning Frank, a free user without an app, found through the search.
    b.goto(&format!("{base}/?q=frank")).await;
    b.click("#users-without-app a").await;
    wait_text(&b, "#user-title", "frank@example.test").await;
    b.click("#desired option[value=present]").await;
    b.fill("#reason", "trial for a partner").await;
    b.click("#set-override").await;
    world.wait_provisioned(frank, secs(90)).await;
    b.goto(&format!("{base}/users/{frank}")).await;
    wait_text(&b, "#timeline", "provision_completed").await;
    b.goto(&format!("{base}/?sort=email")).await;
    wait_text(&b, "#row-count", "of 4").await;
    b.screenshot("dashboard-signed-in").await;

    // A POST with the browser's own session cookie but without the CSRF token is refused.
    let cookie = b.cookie("vyx_admin").await.expect("session cookie");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let forged = http
        .post(format!("{base}/controls/override"))
        .header("cookie", format!("vyx_admin={cookie}"))
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("user_id", &alice.to_string()),
            ("desired", "absent"),
            ("reason", "no csrf"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);

    // A cross-site page auto-submitting a form at the console changes nothing.
    b.goto(&attack_page(&base, alice).await).await;
    wait_until("the forged form lands on the console", secs(30), || async {
        let url = b.url().await;
        if url.starts_with(&base) {
            Ok(())
        } else {
            Err(url)
        }
    })
    .await;
    wait_text(&b, "body", "forbidden").await;
    assert_eq!(override_of(&pool, alice).await, None);

    // Read-only: a replica without ADMIN_TOKEN draws no controls and refuses a forged POST.
    let ro = Daemon::spawn(&world.env, "browser-readonly");
    let ro_base = format!("http://{}", ro.http_addr);
    wait_until("the read-only console answers", secs(60), || async {
        match http.get(format!("{ro_base}/")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    b.goto(&format!("{ro_base}/users/{alice}")).await;
    wait_text(&b, "header", "read-only").await;
    assert_eq!(
        b.execute("return document.querySelectorAll('form[method=post]').length")
            .await,
        0
    );
    b.screenshot("read-only").await;
    let forged = http
        .post(format!("{ro_base}/controls/override"))
        .header("cookie", format!("vyx_admin={cookie}"))
        .header("origin", &ro_base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("user_id", &alice.to_string()),
            ("desired", "absent"),
            ("reason", "x"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert_eq!(override_of(&pool, alice).await, None);
}
