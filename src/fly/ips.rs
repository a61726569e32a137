//! Public IP assignments (REFERENCE §5).

use super::client::{FlyClient, Request, decode};
use super::error::FlyError;
use super::route::Route;
use super::types::{AssignIpRequest, IpAssignment, IpType, ListIpsResponse};

impl FlyClient {
    /// `GET /v1/apps/{app}/ip_assignments`.
    pub async fn list_ips(&self, app: &str) -> Result<Vec<IpAssignment>, FlyError> {
        let r = Request::new(
            Route::ListIps,
            vec!["v1", "apps", app, "ip_assignments"],
            app,
        );
        let answer = self.execute(&r).await?;
        let list: ListIpsResponse = decode(Route::ListIps, &answer)?;
        Ok(list.ips)
    }

    /// `POST /v1/apps/{app}/ip_assignments` `{"type": …}`. Check [`FlyClient::list_ips`] first:
    /// a repeat allocation of a dedicated type allocates (and bills) another address. Some
    /// clients see 409/422 when the address exists; that comes back as `Conflict`/`Invalid`.
    pub async fn assign_ip(&self, app: &str, ip_type: IpType) -> Result<IpAssignment, FlyError> {
        let r = Request::new(
            Route::AssignIp,
            vec!["v1", "apps", app, "ip_assignments"],
            app,
        )
        .json(&AssignIpRequest { ip_type })?;
        let answer = self.execute(&r).await?;
        decode(Route::AssignIp, &answer)
    }
}
