//! Helpers for the admin console's tests: a plain HTTP client that behaves like a same-origin browser
//! form (cookie jar, `Origin` header, no redirect following), fixture rows, and a dead Fly API so a
//! daemon serves the console without touching the rows the test wrote.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod webdriver;

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::bin_support::{BinEnv, free_port, wait_until};

/// A valid break-glass `ADMIN_TOKEN` (at least 32 characters); no output may ever contain it.
pub const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789abcdef";

/// Adds a named admin (as `vyx-fleet admin add` does) and returns their token.
pub async fn add_admin(pool: &PgPool, name: &str) -> String {
    match vyx_fleet::db::admins::add(pool, name, "test")
        .await
        .unwrap()
    {
        vyx_fleet::db::admins::Added::Token(t) => t,
        other => panic!("admin {name}: {other:?}"),
    }
}

/// A Fly API base URL nobody listens on: every pass fails at its first Fly call and writes nothing,
/// so the rows a test inserted stay exactly as written.
pub fn dead_fly_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A Fly API that refuses every token (401), as Fly does a revoked one: every pass fails at its first
/// call, writes nothing, and records why (so the alert naming it fires for real).
pub async fn refusing_fly_url() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::UNAUTHORIZED,
            "{\"error\":\"unauthorized\"}",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A daemon environment that reconciles nothing (see [`dead_fly_url`]).
pub fn inert_env(db_url: &str) -> BinEnv {
    BinEnv::full(db_url, &dead_fly_url())
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub set_cookie: Option<String>,
    pub location: Option<String>,
}

/// An HTTP client for one console origin.
pub struct Console {
    pub base: String,
    client: reqwest::Client,
}

impl Console {
    /// `addr` is the daemon's `HTTP_ADDR`; waits until the sign-in page answers.
    pub async fn connect(addr: std::net::SocketAddr) -> Console {
        Console::connect_from(addr, None).await
    }

    /// A client whose connections leave from `local` (another loopback address is another client
    /// to the console's throttle).
    pub async fn connect_from(
        addr: std::net::SocketAddr,
        local: Option<std::net::IpAddr>,
    ) -> Console {
        let client = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local)
            .build()
            .unwrap();
        let c = Console {
            base: format!("http://{addr}"),
            client,
        };
        wait_until("the console answers", Duration::from_secs(60), || async {
            match c.client.get(format!("{}/signin", c.base)).send().await {
                Ok(r) if r.status().as_u16() == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        c
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let set_cookie = header("set-cookie");
        let location = header("location");
        let status = resp.status().as_u16();
        Reply {
            status,
            body: resp.text().await.unwrap_or_default(),
            set_cookie,
            location,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::reply(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    /// A form POST as the console's own page sends it (`Origin` = this console).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Reply {
        self.post_from(path, form, Some(&self.base.clone())).await
    }

    /// A form POST with the given `Origin` header (`None`: no Origin and no Referer).
    pub async fn post_from(
        &self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        Self::reply(req.send().await.expect("POST")).await
    }

    /// A form POST with exactly these extra headers (no `Origin` unless given).
    pub async fn post_with_headers(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(form));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send().await.expect("POST")).await
    }

    /// Signs in with a named admin's token.
    pub async fn sign_in(&self, token: &str) -> Reply {
        self.post("/signin", &[("token", token)]).await
    }

    /// Signs in with the break-glass `ADMIN_TOKEN` under a typed name.
    pub async fn sign_in_break_glass(&self, name: &str, token: &str) -> Reply {
        self.post("/signin", &[("name", name), ("token", token)])
            .await
    }

    /// A GET with extra headers (e.g. another `Host`).
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send().await.expect("GET")).await
    }

    /// A GET carrying exactly this session cookie (a copied cookie replayed from elsewhere).
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Reply {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let req = client
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("vyx_admin={cookie}"));
        Self::reply(req.send().await.expect("GET")).await
    }

    /// The CSRF token embedded in a page rendered for a signed-in admin.
    pub async fn csrf(&self) -> String {
        let page = self.get("/").await.body;
        csrf_in(&page).expect("a signed-in page carries a CSRF token")
    }
}

pub fn encode(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

/// The cookie's value in a `Set-Cookie` header.
pub fn cookie_in(set_cookie: &str) -> String {
    let v = set_cookie.strip_prefix("vyx_admin=").expect("our cookie");
    v[..v.find(';').unwrap_or(v.len())].to_string()
}

pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The rows of the dashboard's app table (`<tr data-user=...>`), in page order: the user ids.
pub fn table_users(html: &str) -> Vec<String> {
    html.match_indices("<tr data-user=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// An app row written by hand, as the controller would have left it.
pub struct RowFixture {
    pub user: Uuid,
    pub app: String,
    pub status: &'static str,
    pub health: &'static str,
    pub retry_count: i32,
    pub error_message: Option<String>,
    pub next_attempt_in_secs: Option<i64>,
}

impl RowFixture {
    pub fn active(user: Uuid, app: &str) -> RowFixture {
        RowFixture {
            user,
            app: app.to_string(),
            status: "active",
            health: "healthy",
            retry_count: 0,
            error_message: None,
            next_attempt_in_secs: None,
        }
    }

    pub fn failing(mut self, retries: i32, message: &str) -> RowFixture {
        self.status = "error";
        self.health = "unhealthy";
        self.retry_count = retries;
        self.error_message = Some(message.to_string());
        self.next_attempt_in_secs = Some(600);
        self
    }

    pub async fn insert(&self, pool: &PgPool) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO public.user_fly_apps
                (user_id, fly_app_name, fly_org_slug, status, health_status, region, docker_image,
                 cpu_count, memory_mb, monthly_cost_estimate_usd, retry_count, error_message,
                 last_error_kind, next_attempt_at)
             VALUES ($1, $2, 'vyx-test', $3, $4, 'sin', 'registry.fly.io/vyx-screener:bb-1', 2, 512,
                     5.70, $5, $6, CASE WHEN $6 IS NULL THEN NULL ELSE 'fly_server' END,
                     now() + make_interval(secs => $7))
             RETURNING id",
        )
        .bind(self.user)
        .bind(&self.app)
        .bind(self.status)
        .bind(self.health)
        .bind(self.retry_count)
        .bind(&self.error_message)
        .bind(self.next_attempt_in_secs.map(|s| s as f64))
        .fetch_one(pool)
        .await
        .expect("insert user_fly_apps row")
    }
}

/// The override row of `user`: `(desired, reason, created_by)`.
pub async fn override_of(pool: &PgPool, user: Uuid) -> Option<(String, String, String)> {
    sqlx::query_as(
        "SELECT desired, reason, created_by FROM vyx_fleet.user_fly_app_overrides WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Writes what the breaker persists when it trips: these deletions wait for an operator.
pub async fn hold_deletions(pool: &PgPool, held: &[(&str, Option<Uuid>)]) {
    for (app, user) in held {
        sqlx::query(
            "INSERT INTO vyx_fleet.held_deletions (app_name, user_id, kind) VALUES ($1, $2, $3)",
        )
        .bind(app)
        .bind(user)
        .bind(if user.is_some() {
            "deprovision"
        } else {
            "orphan"
        })
        .execute(pool)
        .await
        .unwrap();
    }
}
