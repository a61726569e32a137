//! The fixed set of calls the client makes: a low-cardinality label for logs, metrics and errors,
//! and the facts the retry and rate-limit policies key on.

use std::fmt;

use reqwest::Method;

/// One Fly Machines API operation ("route class"): `GET /v1/apps/{app}/machines/{id}` is
/// `GetMachine` whatever the ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    CreateApp,
    GetApp,
    ListApps,
    DeleteApp,
    CreateMachine,
    ListMachines,
    ListOrgMachines,
    GetMachine,
    UpdateMachine,
    StopMachine,
    StartMachine,
    DeleteMachine,
    WaitMachine,
    SetSecrets,
    ListIps,
    AssignIp,
}

impl Route {
    pub const ALL: [Route; 16] = [
        Route::CreateApp,
        Route::GetApp,
        Route::ListApps,
        Route::DeleteApp,
        Route::CreateMachine,
        Route::ListMachines,
        Route::ListOrgMachines,
        Route::GetMachine,
        Route::UpdateMachine,
        Route::StopMachine,
        Route::StartMachine,
        Route::DeleteMachine,
        Route::WaitMachine,
        Route::SetSecrets,
        Route::ListIps,
        Route::AssignIp,
    ];

    /// Stable snake_case label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Route::CreateApp => "create_app",
            Route::GetApp => "get_app",
            Route::ListApps => "list_apps",
            Route::DeleteApp => "delete_app",
            Route::CreateMachine => "create_machine",
            Route::ListMachines => "list_machines",
            Route::ListOrgMachines => "list_org_machines",
            Route::GetMachine => "get_machine",
            Route::UpdateMachine => "update_machine",
            Route::StopMachine => "stop_machine",
            Route::StartMachine => "start_machine",
            Route::DeleteMachine => "delete_machine",
            Route::WaitMachine => "wait_machine",
            Route::SetSecrets => "set_secrets",
            Route::ListIps => "list_ips",
            Route::AssignIp => "assign_ip",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Route::GetApp
            | Route::ListApps
            | Route::ListMachines
            | Route::ListOrgMachines
            | Route::GetMachine
            | Route::WaitMachine
            | Route::ListIps => Method::GET,
            Route::DeleteApp | Route::DeleteMachine => Method::DELETE,
            Route::CreateApp
            | Route::CreateMachine
            | Route::UpdateMachine
            | Route::StopMachine
            | Route::StartMachine
            | Route::SetSecrets
            | Route::AssignIp => Method::POST,
        }
    }

    /// The method as a static label.
    pub const fn method_str(self) -> &'static str {
        match self {
            Route::DeleteApp | Route::DeleteMachine => "DELETE",
            Route::CreateApp
            | Route::CreateMachine
            | Route::UpdateMachine
            | Route::StopMachine
            | Route::StartMachine
            | Route::SetSecrets
            | Route::AssignIp => "POST",
            _ => "GET",
        }
    }

    /// True for calls that change state on Fly: a lost answer leaves the outcome unknown.
    pub fn is_write(self) -> bool {
        self.method() != Method::GET
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method_str(), self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_str_agrees_with_method() {
        for r in Route::ALL {
            assert_eq!(r.method().as_str(), r.method_str(), "{r:?}");
        }
    }
}
