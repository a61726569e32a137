//! End to end in headless Chromium: `vyx-fleet run` against PostgreSQL and the Fly simulator, the
//! console driven over WebDriver as an admin would. Screenshots go to `target/test-artifacts/` (the
//! ones in `docs/` are copies).
//! Under CI the browser must be there; elsewhere the test skips with a notice when it is not.

mod bin_support;
mod console_support;
mod support;

use bin_support::{Daemon, World, secs, wait_until};
use console_support::webdriver::Browser;
use console_support::{
    add_admin, encode, hold_deletions, inert_env, override_of, refusing_fly_url,
};
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

/// Signs the browser in with a named admin's token; waits for the page it lands on.
async fn sign_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/signin")).await;
    b.fill("#token", token).await;
    b.click("form.signin button[type=submit]").await;
    wait_text(b, "header", "signed in as").await;
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
    let token = add_admin(&pool, "Ada Admin").await;
    let d = Daemon::spawn(&world.env, "browser-admin");
    for u in [alice, bob, eve] {
        world.wait_provisioned(u, secs(90)).await;
    }
    let base = format!("http://{}", d.http_addr);

    // Nothing with user data before signing in: the dashboard and a user page both end at the
    // sign-in form, which brings the admin back where they were going.
    for path in ["/".to_string(), format!("/users/{alice}")] {
        b.goto(&format!("{base}{path}")).await;
        wait_text(&b, "h1", "Sign in").await;
        assert_eq!(
            b.execute("return document.body.innerText.includes('alice@')")
                .await,
            false
        );
    }
    b.fill("#token", &token).await;
    b.click("form.signin button[type=submit]").await;
    wait_text(&b, "#user-title", "alice@example.test").await;

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
    // The change is in the timeline beside the events, with who and why, and on the Activity page.
    wait_text(&b, "#timeline li.action", "Ada Admin override").await;
    wait_text(&b, "#timeline li.action", "follows tier → paused").await;
    wait_text(&b, "#timeline li.action", "billing dispute").await;
    b.screenshot("user-page").await;
    b.goto(&format!("{base}/activity")).await;
    wait_text(&b, "#activity", "billing dispute").await;
    wait_text(&b, "#activity", "bob@example.test").await;

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

    // Revoking the admin ends the browser's session at once (on every replica: it is a row).
    let revoked = vyx_fleet::db::admins::revoke(&pool, "Ada Admin", "test")
        .await
        .unwrap();
    assert!(revoked);
    b.goto(&format!("{base}/users/{alice}")).await;
    wait_text(&b, "h1", "Sign in").await;
    let replay = http
        .get(format!("{base}/"))
        .header("cookie", format!("vyx_admin={cookie}"))
        .send()
        .await
        .unwrap();
    assert!(
        replay.url().path().starts_with("/signin"),
        "{:?}",
        replay.url()
    );
}

/// A halted rollout and deletions the breaker holds, written as the leader would have left them (the
/// daemon's Fly API is dead, so no pass changes them under the test).
async fn halted_rollout(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO vyx_fleet.rollout (target_digest, target_image, waves_done, moved, failed,
                                        halted, halt_kind, halt_reason, halted_at)
         VALUES ('d1', 'registry.fly.io/vyx-screener:bb-2', 1, 1, 1, true, 'canary_failed',
                 'canary vyx-user-canary1 failed its health check on the new spec', now())",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stale_confirmation_is_refused_the_fresh_page_confirms_its_set_and_resume_works() {
    let Some(b) = Browser::start_or_skip("console held-deletions browser test").await else {
        return;
    };
    let db = support::migrated_db().await;
    let pool = db.pool.clone();
    let mut held = Vec::new();
    for i in 0..10 {
        let u = user(&pool, "free", &format!("lapsed{i:02}@example.test")).await;
        held.push((format!("vyx-user-lapse{i:02}"), Some(u)));
    }
    let refs: Vec<(&str, Option<Uuid>)> = held.iter().map(|(a, u)| (a.as_str(), *u)).collect();
    hold_deletions(&pool, &refs).await;
    halted_rollout(&pool).await;
    let token = add_admin(&pool, "Grace").await;
    // Fly refuses the daemon's token: no pass changes the rows, and the alert naming it fires.
    let env = inert_env(&db.url).with("FLY_API_BASE_URL", &refusing_fly_url().await);
    let d = Daemon::spawn(&env, "browser-held");
    let base = format!("http://{}", d.http_addr);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_until("the console answers", secs(60), || async {
        match http.get(format!("{base}/signin")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    sign_in(&b, &base, &token).await;

    b.goto(&format!("{base}/")).await;
    wait_text(&b, "#held-deletions h2", "(10)").await;
    wait_text(&b, "#held-table", "lapsed00@example.test").await;
    wait_text(&b, "#held-table", "free / active is not a paid one").await;
    b.screenshot("held-deletions").await;

    // While the admin reads ten, the breaker holds fifteen more: the click confirms nothing.
    let mut more = Vec::new();
    for i in 10..25 {
        more.push((format!("vyx-user-lapse{i:02}"), None));
    }
    let refs: Vec<(&str, Option<Uuid>)> = more.iter().map(|(a, u)| (a.as_str(), *u)).collect();
    hold_deletions(&pool, &refs).await;
    b.click("#confirm-deletions").await;
    wait_text(&b, "#held-changed", "changed since your page was drawn").await;
    let confirmed = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM vyx_fleet.held_deletions WHERE confirmed_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(confirmed().await, 0);
    // The refusal shows the set as it is now; confirming from it covers exactly those 25.
    wait_text(&b, "#held-deletions h2", "(25)").await;
    b.click("#confirm-deletions").await;
    wait_text(&b, "#flash", "exactly the deletions shown").await;
    assert_eq!(confirmed().await, 25);

    // Resume the halted rollout from the console, with a reason the trail keeps.
    wait_text(&b, "#halt-reason", "canary vyx-user-canary1 failed").await;
    b.screenshot("rollout-halted").await;
    b.fill("#resume-reason", "bad health endpoint fixed in bb-2.1")
        .await;
    b.click("#resume-rollout").await;
    wait_text(&b, "#flash", "Rollout resumed").await;
    let (halted, by): (bool, Option<String>) =
        sqlx::query_as("SELECT halted, resumed_by FROM vyx_fleet.rollout")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((halted, by.as_deref()), (false, Some("Grace")));
    b.goto(&format!("{base}/activity")).await;
    wait_text(&b, "#activity", "rollout resume").await;
    wait_text(&b, "#activity", "bad health endpoint fixed").await;
    b.screenshot("activity").await;

    // The failure the alert loop announced: the dashboard leads with it.
    wait_until("the banner names the refused token", secs(60), || async {
        b.goto(&format!("{base}/")).await;
        let t = b
            .execute("const e = document.querySelector('#cannot-reconcile'); return e ? e.innerText : ''")
            .await;
        match t.as_str() {
            Some(t) if t.contains("Fly refuses the API token") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    b.screenshot("dashboard-cannot-reconcile").await;

    // A day of samples, drawn without script.
    sqlx::query(
        "INSERT INTO vyx_fleet.fleet_samples (minute, live, desired, unhealthy, errors, monthly_cost_usd)
         SELECT date_trunc('minute', now()) - g * interval '5 minutes',
                400 + (g / 3), 420, (g % 17) / 4, (g % 29) / 9, 2280 + g * 2
           FROM generate_series(1, 280) g
         ON CONFLICT DO NOTHING",
    )
    .execute(&pool)
    .await
    .unwrap();
    b.goto(&format!("{base}/charts")).await;
    wait_text(&b, "#charts", "Live apps and desired users").await;
    assert_eq!(
        b.execute("return document.querySelectorAll('#charts svg polyline').length")
            .await,
        5
    );
    b.screenshot("charts").await;

    // At 400 px wide the page does not scroll sideways (wide tables scroll inside their box), and
    // the skip link leads to the content.
    b.set_window_size(400, 900).await;
    for path in ["/", &format!("/users/{}", held[0].1.unwrap())] {
        b.goto(&format!("{base}{path}")).await;
        wait_text(&b, "header", "signed in as").await;
        let overflow = b
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        // What sticks out, for the failure message.
        let wide = b
            .execute(
                "const w = document.documentElement.clientWidth;
                 return [...document.querySelectorAll('body *')]
                   .filter(e => e.getBoundingClientRect().right > w + 1)
                   .map(e => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)",
            )
            .await;
        assert_eq!(
            overflow, 0,
            "{path} scrolls sideways at 400 px by {overflow}: {wide}"
        );
    }
    assert_eq!(
        b.execute("return document.querySelector('a.skip').getAttribute('href')")
            .await,
        "#main"
    );
    b.screenshot("user-page-400px").await;
}
