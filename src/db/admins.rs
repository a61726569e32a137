//! The console's admins (`vyx_fleet.admins`), their server-side sessions (`vyx_fleet.admin_sessions`)
//! and the append-only trail of their actions (`vyx_fleet.admin_actions`).
//!
//! Tokens and session cookies are stored as SHA-256 digests only. Both are 256 random bits, so a plain
//! digest is as good as a slow hash here, and lets a lookup use the primary key.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Longest admin name: it goes into every action row and log line.
pub(crate) const NAME_MAX: usize = 64;

pub(crate) fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 1 to [`NAME_MAX`] characters, no control characters, not only spaces.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.chars().count() <= NAME_MAX
        && !name.chars().any(char::is_control)
}

/// One admin as `admin list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct AdminRow {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_sign_in: Option<DateTime<Utc>>,
    pub live_sessions: i64,
}

/// What [`add`] found.
#[derive(Debug)]
pub enum Added {
    /// The new admin's token: shown once, never stored.
    Token(String),
    /// An admin of that name exists (revoked or not): names are never reused, so the trail stays
    /// unambiguous.
    Exists,
}

/// Adds an admin; the token is printed by the caller and exists nowhere else afterwards.
pub async fn add(pool: &PgPool, name: &str, by: &str) -> Result<Added, sqlx::Error> {
    let token = format!("vyxa_{}", random_hex());
    let mut tx = crate::db::begin(pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO vyx_fleet.admins (name, token_sha256, created_by) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(digest(&token))
    .bind(by)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Added::Exists);
    }
    record(&mut tx, &Action::new(by, "admin_add").after(name)).await?;
    tx.commit().await?;
    Ok(Added::Token(token))
}

/// Revokes an admin and ends every session of theirs, on every replica (sessions are read from here
/// on each request). `false`: no such admin, or already revoked.
pub async fn revoke(pool: &PgPool, name: &str, by: &str) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE vyx_fleet.admins SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE vyx_fleet.admin_sessions SET revoked_at = now()
          WHERE admin_name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    record(
        &mut tx,
        &Action::new(by, "admin_revoke")
            .before(name)
            .after("revoked"),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub(crate) async fn list(pool: &PgPool) -> Result<Vec<AdminRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.name, a.created_at, a.revoked_at,
                max(s.created_at) AS last_sign_in,
                count(s.*) FILTER (WHERE s.revoked_at IS NULL AND s.expires_at > now()) AS live_sessions
           FROM vyx_fleet.admins a
           LEFT JOIN vyx_fleet.admin_sessions s ON s.admin_name = a.name
          GROUP BY a.name ORDER BY a.name",
    )
    .fetch_all(pool)
    .await
}

/// The admin a token belongs to, if it is not revoked.
pub(crate) async fn admin_for_token(
    pool: &PgPool,
    token: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM vyx_fleet.admins WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(digest(token))
    .fetch_optional(pool)
    .await
}

/// Who a new session acts as.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    Named(String),
    /// Signed in with `ADMIN_TOKEN`: `key` is the token's digest, `display` what the trail records.
    BreakGlass {
        display: String,
        key: Vec<u8>,
    },
}

/// A live session: who, and the CSRF token its forms carry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct SessionRow {
    pub display_name: String,
    pub csrf: String,
}

/// Opens a session; returns the cookie value (only its digest is stored).
pub(crate) async fn open_session(
    pool: &PgPool,
    who: &Principal,
    ttl_secs: i64,
) -> Result<String, sqlx::Error> {
    let cookie = random_hex();
    let (display, admin, key) = match who {
        Principal::Named(n) => (n.clone(), Some(n.clone()), None),
        Principal::BreakGlass { display, key } => (display.clone(), None, Some(key.clone())),
    };
    let mut tx = crate::db::begin(pool).await?;
    sqlx::query(
        "INSERT INTO vyx_fleet.admin_sessions
            (id_sha256, display_name, admin_name, break_glass_key, csrf, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
    )
    .bind(digest(&cookie))
    .bind(&display)
    .bind(admin)
    .bind(key)
    .bind(random_hex())
    .bind(ttl_secs as f64)
    .execute(&mut *tx)
    .await?;
    // Expired sessions are of no use to anyone; dropping them here keeps the table small.
    sqlx::query(
        "DELETE FROM vyx_fleet.admin_sessions WHERE expires_at < now() - interval '7 days'",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(cookie)
}

/// The session a cookie stands for: not expired, not revoked, its admin not revoked, and (for a
/// break-glass session) opened with the `ADMIN_TOKEN` this replica holds now (`break_glass_key`).
pub(crate) async fn session(
    pool: &PgPool,
    cookie: &str,
    break_glass_key: Option<&[u8]>,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT s.display_name, s.csrf
           FROM vyx_fleet.admin_sessions s
           LEFT JOIN vyx_fleet.admins a ON a.name = s.admin_name
          WHERE s.id_sha256 = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
            AND ((s.admin_name IS NOT NULL AND a.revoked_at IS NULL)
                 OR (s.break_glass_key IS NOT NULL AND s.break_glass_key = $2))",
    )
    .bind(digest(cookie))
    .bind(break_glass_key)
    .fetch_optional(pool)
    .await
}

/// Signing out: the cookie is dead on every replica from now on.
pub(crate) async fn end_session(pool: &PgPool, cookie: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE vyx_fleet.admin_sessions SET revoked_at = now()
          WHERE id_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(digest(cookie))
    .execute(pool)
    .await?;
    Ok(())
}

/// One admin action, as written to the trail.
#[derive(Debug, Clone, Default)]
pub(crate) struct Action {
    pub admin: String,
    pub action: &'static str,
    pub user_id: Option<Uuid>,
    pub app_name: Option<String>,
    pub reason: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Action {
    pub(crate) fn new(admin: &str, action: &'static str) -> Action {
        Action {
            admin: admin.to_string(),
            action,
            ..Action::default()
        }
    }
    pub(crate) fn user(mut self, u: Uuid) -> Action {
        self.user_id = Some(u);
        self
    }
    pub(crate) fn app(mut self, a: &str) -> Action {
        self.app_name = Some(a.to_string());
        self
    }
    pub(crate) fn reason(mut self, r: &str) -> Action {
        self.reason = Some(r.to_string());
        self
    }
    pub(crate) fn before(mut self, b: &str) -> Action {
        self.before = Some(b.to_string());
        self
    }
    pub(crate) fn after(mut self, a: &str) -> Action {
        self.after = Some(a.to_string());
        self
    }
}

/// Appends `a` to the trail inside the caller's transaction: the action and its effect commit
/// together or not at all.
pub(crate) async fn record(
    tx: &mut Transaction<'_, Postgres>,
    a: &Action,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO vyx_fleet.admin_actions (admin, action, user_id, app_name, reason, before, after)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&a.admin)
    .bind(a.action)
    .bind(a.user_id)
    .bind(&a.app_name)
    .bind(&a.reason)
    .bind(&a.before)
    .bind(&a.after)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One row of the trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct ActionRow {
    pub at: DateTime<Utc>,
    pub admin: String,
    pub action: String,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    pub app_name: Option<String>,
    pub reason: Option<String>,
    pub before: Option<String>,
    pub after: Option<String>,
}

const ACTION_SELECT: &str = "SELECT x.at, x.admin, x.action, x.user_id, p.email, x.app_name,
        x.reason, x.before, x.after
   FROM vyx_fleet.admin_actions x
   LEFT JOIN public.user_profiles p ON p.id = x.user_id";

/// The newest actions across the fleet (the Activity page).
pub(crate) async fn recent_actions(
    pool: &PgPool,
    limit: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    // Built from constants only.
    let sql = format!("{ACTION_SELECT} ORDER BY x.at DESC, x.id DESC LIMIT $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The newest actions about one user (their timeline).
pub(crate) async fn user_actions(
    pool: &PgPool,
    user: Uuid,
    limit: i64,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    // Built from constants only.
    let sql =
        format!("{ACTION_SELECT} WHERE x.user_id = $1 ORDER BY x.at DESC, x.id DESC LIMIT $2");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user)
        .bind(limit)
        .fetch_all(pool)
        .await
}
