//! The held deletions, confirmed exactly as shown (invariant 6), from the console and from
//! `vyx-fleet confirm-deletions`; "keep" and "retry now"; each control's row in the admin trail.

mod bin_support;
mod console_support;
mod support;

use bin_support::{Daemon, run_to_completion, secs};
use console_support::{Console, RowFixture, add_admin, csrf_in, hold_deletions, inert_env};
use sqlx::PgPool;
use support::{UserFixture, migrated_db};
use uuid::Uuid;

/// `(app, confirmed_by)` of every held deletion, by app.
async fn held(pool: &PgPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT app_name, confirmed_by FROM vyx_fleet.held_deletions ORDER BY app_name")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The hidden fields of the page's confirm form: `(apps, version)`.
fn confirm_form(html: &str) -> (Vec<String>, String) {
    let form = &html[html.find("id=\"confirm-form\"").expect("a confirm form")..];
    let form = &form[..form.find("</form>").unwrap()];
    let values = |name: &str| -> Vec<String> {
        let key = format!("name=\"{name}\" value=\"");
        form.match_indices(&key)
            .map(|(i, m)| {
                let rest = &form[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
            .collect()
    };
    (values("app"), values("version").remove(0))
}

async fn post_confirm(c: &Console, csrf: &str, apps: &[String], version: &str) -> u16 {
    let mut form: Vec<(&str, &str)> = vec![("csrf", csrf), ("version", version)];
    form.extend(apps.iter().map(|a| ("app", a.as_str())));
    c.post("/controls/confirm-deletions", &form).await.status
}

#[tokio::test]
async fn a_confirmation_from_a_stale_page_is_refused_and_the_fresh_page_confirms_exactly_its_set() {
    let db = migrated_db().await;
    let mut users = Vec::new();
    for i in 0..4 {
        let mut u = UserFixture::paid("pro");
        u.email = format!("held{i}@example.test");
        users.push(u.insert(&db.pool).await);
    }
    let first: Vec<(String, Option<Uuid>)> = (0..3)
        .map(|i| (format!("vyx-user-held{i}"), Some(users[i])))
        .collect();
    let refs: Vec<(&str, Option<Uuid>)> = first.iter().map(|(a, u)| (a.as_str(), *u)).collect();
    hold_deletions(&db.pool, &refs).await;
    let d = Daemon::spawn(&inert_env(&db.url), "confirm-stale");
    let c = Console::connect(d.http_addr).await;
    let token = add_admin(&db.pool, "Grace").await;
    assert_eq!(c.sign_in(&token).await.status, 303);

    let page = c.get("/").await.body;
    assert!(
        page.contains("held0@example.test"),
        "the panel names the user"
    );
    assert!(page.contains("is not a paid one"), "and why the app goes");
    let csrf = csrf_in(&page).unwrap();
    let (shown, version) = confirm_form(&page);
    assert_eq!(shown.len(), 3);

    // The breaker holds more while the admin reads: the stale form confirms nothing.
    hold_deletions(
        &db.pool,
        &[
            ("vyx-user-held3", Some(users[3])),
            ("vyx-user-orphan9", None),
        ],
    )
    .await;
    let refused = c
        .post(
            "/controls/confirm-deletions",
            &[("csrf", csrf.as_str()), ("version", version.as_str())]
                .into_iter()
                .chain(shown.iter().map(|a| ("app", a.as_str())))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(refused.status, 409);
    assert!(refused.body.contains("Nothing was confirmed"));
    assert!(
        refused.body.contains("vyx-user-orphan9"),
        "the new set is shown"
    );
    assert!(held(&db.pool).await.iter().all(|(_, by)| by.is_none()));
    // A forged version for the names shown is refused too.
    assert_eq!(post_confirm(&c, &csrf, &shown, "0000").await, 409);

    // The fresh page lists five; confirming it covers exactly those five.
    let fresh = c.get("/").await.body;
    let (shown, version) = confirm_form(&fresh);
    assert_eq!(shown.len(), 5);
    // One of them is released (the user upgraded) before the click: the rest is still confirmed.
    sqlx::query("DELETE FROM vyx_fleet.held_deletions WHERE app_name = 'vyx-user-held0'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(post_confirm(&c, &csrf, &shown, &version).await, 303);
    let now = held(&db.pool).await;
    assert_eq!(now.len(), 4);
    assert!(
        now.iter().all(|(_, by)| by.as_deref() == Some("Grace")),
        "{now:?}"
    );
    let trail: Vec<(String, String)> = sqlx::query_as(
        "SELECT admin, app_name FROM vyx_fleet.admin_actions
          WHERE action = 'confirm_deletion' ORDER BY app_name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(trail.len(), 4, "{trail:?}");
    assert!(c.get("/activity").await.body.contains("vyx-user-orphan9"));
}

#[tokio::test]
async fn confirm_deletions_prints_what_it_confirms_and_refuses_a_set_that_changed() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    hold_deletions(
        &db.pool,
        &[("vyx-user-cli1", Some(u)), ("vyx-user-cli2", None)],
    )
    .await;
    let env = inert_env(&db.url);
    let listed = run_to_completion(&env, &["confirm-deletions", "--list"], secs(60))
        .await
        .ok();
    assert!(listed.stdout.contains("vyx-user-cli1") && listed.stdout.contains("vyx-user-cli2"));
    let version = listed
        .stdout
        .split("(version ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("a version")
        .to_string();
    assert!(
        held(&db.pool).await.iter().all(|(_, by)| by.is_none()),
        "--list confirms nothing"
    );

    hold_deletions(&db.pool, &[("vyx-user-cli3", None)]).await;
    let stale =
        run_to_completion(&env, &["confirm-deletions", "--expect", &version], secs(60)).await;
    assert_eq!(stale.code, Some(1));
    assert!(
        stale.stderr.contains("nothing was confirmed") && stale.stdout.contains("vyx-user-cli3")
    );
    assert!(held(&db.pool).await.iter().all(|(_, by)| by.is_none()));

    let one = run_to_completion(
        &env,
        &["confirm-deletions", "--apps", "vyx-user-cli2"],
        secs(60),
    )
    .await
    .ok();
    assert!(
        one.stdout.contains("confirmed 1 held deletion(s)"),
        "{}",
        one.stdout
    );
    let now = held(&db.pool).await;
    let confirmed: Vec<&str> = now
        .iter()
        .filter(|(_, by)| by.is_some())
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(confirmed, ["vyx-user-cli2"]);
    let missing = run_to_completion(
        &env,
        &["confirm-deletions", "--apps", "vyx-user-nope"],
        secs(60),
    )
    .await;
    assert_eq!(missing.code, Some(1));
}

#[tokio::test]
async fn keep_and_retry_act_on_one_user_and_each_leaves_its_row_in_the_timeline() {
    let db = migrated_db().await;
    let mut f = UserFixture::paid("pro");
    f.email = "keep@example.test".into();
    let u = f.insert(&db.pool).await;
    RowFixture::active(u, "vyx-user-keep1")
        .failing(3, "fly 503")
        .insert(&db.pool)
        .await;
    hold_deletions(&db.pool, &[("vyx-user-keep1", Some(u))]).await;
    let d = Daemon::spawn(&inert_env(&db.url), "confirm-keep");
    let c = Console::connect(d.http_addr).await;
    let token = add_admin(&db.pool, "Lin").await;
    assert_eq!(c.sign_in(&token).await.status, 303);
    let csrf = c.csrf().await;
    let user = u.to_string();
    let kept = c
        .post(
            "/controls/keep",
            &[
                ("csrf", &csrf),
                ("user_id", &user),
                ("app", "vyx-user-keep1"),
                ("reason", "pays by invoice"),
            ],
        )
        .await;
    assert_eq!(kept.status, 303);
    let r = c
        .post("/controls/retry", &[("user_id", &user), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let page = c.get(&format!("/users/{u}?done=retry")).await.body;
    assert!(page.contains("Backoff ended"), "a message after the action");
    assert!(
        page.contains("pays by invoice") && page.contains("Lin"),
        "{page}"
    );
    assert!(page.contains("follows tier → present"));
    assert!(page.contains("retry now"));
    let next: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT next_attempt_at FROM public.user_fly_apps WHERE user_id = $1")
            .bind(u)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(next, None);
    // The trail is append-only, even for the table's owner.
    let rewrite = sqlx::query("UPDATE vyx_fleet.admin_actions SET admin = 'someone else'")
        .execute(&db.pool)
        .await;
    assert!(rewrite.is_err());
}

#[tokio::test]
async fn an_override_absent_takes_a_confirm_page_before_it_is_written() {
    let db = migrated_db().await;
    let u = UserFixture::paid("pro").insert(&db.pool).await;
    let d = Daemon::spawn(&inert_env(&db.url), "confirm-absent");
    let c = Console::connect(d.http_addr).await;
    let token = add_admin(&db.pool, "Lin").await;
    assert_eq!(c.sign_in(&token).await.status, 303);
    let csrf = c.csrf().await;
    let user = u.to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("user_id", user.as_str()),
        ("desired", "absent"),
        ("reason", "chargeback"),
    ];
    let first = c.post("/controls/override", &form).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("Deprovision this user") && first.body.contains("chargeback"));
    assert_eq!(
        console_support::override_of(&db.pool, u).await,
        None,
        "nothing yet"
    );
    let mut confirmed = form.to_vec();
    confirmed.push(("confirmed", "yes"));
    assert_eq!(c.post("/controls/override", &confirmed).await.status, 303);
    assert_eq!(
        console_support::override_of(&db.pool, u).await,
        Some(("absent".into(), "chargeback".into(), "Lin".into()))
    );
}
