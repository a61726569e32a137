//! Apps: create, get, list, delete (REFERENCE §2).

use std::collections::HashSet;

use super::client::{FlyClient, Request, decode};
use super::error::FlyError;
use super::route::Route;
use super::types::{App, CreateAppRequest, CreatedApp, ListAppsPage};

/// Fly's largest `limit` for `GET /v1/apps` (REFERENCE §2.4).
const MAX_APPS_PAGE: u32 = 5000;
/// Stop following cursors after this many pages (a misbehaving server must not loop us forever).
pub(crate) const MAX_PAGES: usize = 10_000;

impl FlyClient {
    /// `POST /v1/apps?wait=true` (returns once the app has propagated inside Fly, §2.2).
    ///
    /// A taken name (422 `name_taken`, or 409) is [`FlyError::NameTaken`] whoever owns it; ask
    /// [`FlyClient::get_app`]. Not retried on 5xx/transport errors: the app may exist.
    pub async fn create_app(&self, req: &CreateAppRequest) -> Result<CreatedApp, FlyError> {
        // Fly counts app creation per organisation (a new name has no bucket of its own).
        let r = Request::new(Route::CreateApp, vec!["v1", "apps"], &req.org_slug)
            .query("wait", "true")
            .json(req)?;
        let answer = self.execute(&r).await?;
        decode(Route::CreateApp, &answer)
    }

    /// `GET /v1/apps/{name}`: 200 = visible to us, 403 ([`FlyError::Forbidden`]) = someone
    /// else's, 404 ([`FlyError::NotFound`]) = free (or not yet propagated, or deleted).
    pub async fn get_app(&self, name: &str) -> Result<App, FlyError> {
        let r = Request::new(Route::GetApp, vec!["v1", "apps", name], name);
        let answer = self.execute(&r).await?;
        decode(Route::GetApp, &answer)
    }

    /// Every app of the org: `GET /v1/apps?org_slug=…&limit=<page size>`, following `next_cursor`.
    pub async fn list_apps(&self, org_slug: &str) -> Result<Vec<App>, FlyError> {
        let mut apps = Vec::new();
        self.list_apps_pages(org_slug, |page| apps.extend(page))
            .await?;
        Ok(apps)
    }

    /// [`FlyClient::list_apps`] handing each page to `each` as it arrives, so a caller that keeps
    /// a compact form (the observation cache at 100,000 apps) never holds the whole answer.
    pub async fn list_apps_pages(
        &self,
        org_slug: &str,
        mut each: impl FnMut(Vec<App>),
    ) -> Result<(), FlyError> {
        let mut cursor: Option<String> = None;
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut r = Request::new(Route::ListApps, vec!["v1", "apps"], org_slug)
                .query("org_slug", org_slug)
                .query(
                    "limit",
                    self.inner.list_page_size.min(MAX_APPS_PAGE).to_string(),
                );
            if let Some(c) = &cursor {
                r = r.query("cursor", c.clone());
            }
            let answer = self.execute(&r).await?;
            let page: ListAppsPage = decode(Route::ListApps, &answer)?;
            each(page.apps);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                None => return Ok(()),
                Some(c) if !seen.insert(c.clone()) => {
                    return Err(pagination_loop(Route::ListApps, &answer));
                }
                Some(c) => cursor = Some(c),
            }
        }
        Err(FlyError::Decode {
            call: super::error::CallInfo::new(Route::ListApps),
            status: 200,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// `DELETE /v1/apps/{name}`: 202 = accepted (deletion is asynchronous; poll `get_app` until
    /// 404). A 404 is returned as [`FlyError::NotFound`]: already gone.
    pub async fn delete_app(&self, name: &str) -> Result<(), FlyError> {
        let r = Request::new(Route::DeleteApp, vec!["v1", "apps", name], name);
        self.execute(&r).await.map(|_| ())
    }
}

pub(crate) fn pagination_loop(route: Route, answer: &super::client::Answer) -> FlyError {
    FlyError::Decode {
        call: answer.call(route),
        status: answer.status,
        detail: "pagination cursor repeated".to_owned(),
    }
}
