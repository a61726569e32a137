//! The dashboard's on-call panels against rows written as the leader and the alert loop would have
//! left them: the banner when nothing can reconcile, active alerts, orphans and when each goes, the
//! apps failing now with a retry, the event feed, and the opt-in auto-refresh.

mod bin_support;
mod console_support;
mod support;

use bin_support::Daemon;
use bin_support::{secs, wait_until};
use console_support::{Console, RowFixture, add_admin, cookie_in, inert_env, refusing_fly_url};
use support::{UserFixture, migrated_db};

#[tokio::test]
async fn the_dashboard_shows_what_on_call_needs_and_a_banner_when_nothing_can_reconcile() {
    let db = migrated_db().await;
    let mut f = UserFixture::paid("pro");
    f.email = "sick@example.test".into();
    let u = f.insert(&db.pool).await;
    RowFixture::active(u, "vyx-user-sick0001")
        .failing(4, "machine create: 503")
        .insert(&db.pool)
        .await;
    sqlx::query(
        "INSERT INTO vyx_fleet.orphans (app_name, first_seen_at, last_seen_at)
         VALUES ('vyx-user-orphan01', '2026-12-01 10:00:00+00', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO public.user_fly_app_events (user_id, event_type, status)
         VALUES ($1, 'provision_failed', 'error')",
    )
    .bind(u)
    .execute(&db.pool)
    .await
    .unwrap();
    // Fly refuses the daemon's token: passes change nothing, and the alert naming it fires for real.
    let env = inert_env(&db.url)
        .with("ORPHAN_GRACE", "1h")
        .with("FLY_API_BASE_URL", &refusing_fly_url().await);
    let d = Daemon::spawn(&env, "oncall");
    let c = Console::connect(d.http_addr).await;
    let token = add_admin(&db.pool, "Ada").await;
    let cookie = cookie_in(&c.sign_in(&token).await.set_cookie.unwrap());

    let quiet = c.get("/").await.body;
    assert!(quiet.contains("Failing now (1)") && quiet.contains("vyx-user-sick0001"));
    assert!(
        quiet.contains("action=\"/controls/retry\""),
        "a retry on the failing row"
    );
    assert!(
        quiet.contains("vyx-user-orphan01")
            && quiet.contains("deleted after")
            && quiet.contains("2026-12-01 11:00:00 UTC"),
        "the orphan and when it goes (first seen + ORPHAN_GRACE)"
    );
    assert!(quiet.contains("id=\"event-feed\"") && quiet.contains("provision_failed"));

    let firing = wait_until("the banner", secs(60), || async {
        let page = c.get("/").await.body;
        if page.contains("id=\"cannot-reconcile\"") {
            Ok(page)
        } else {
            Err("no banner yet".to_string())
        }
    })
    .await;
    assert!(firing.contains("Fly refuses the API token"), "{firing}");
    assert!(firing.contains("<code>fly_token_refused</code> since"));

    // Auto-refresh is opt-in, bounded, and needs the same session as the page.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |q: &'static str, with_cookie: bool| {
        let mut req = http.get(format!("{}/{q}", c.base));
        if with_cookie {
            req = req.header("cookie", format!("vyx_admin={cookie}"));
        }
        req.send()
    };
    let r = get("?refresh=30", true).await.unwrap();
    assert_eq!(
        r.headers().get("refresh").map(|v| v.to_str().unwrap()),
        Some("30")
    );
    for q in ["", "?refresh=1", "?refresh=x"] {
        let r = get(q, true).await.unwrap();
        assert!(r.headers().get("refresh").is_none(), "{q}");
    }
    let anonymous = get("?refresh=30", false).await.unwrap();
    assert!(
        anonymous.url().path().starts_with("/signin"),
        "still needs a session"
    );
}
