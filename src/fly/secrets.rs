//! App secrets through the Machines API (REFERENCE §4.1).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::client::{FlyClient, Request, decode};
use super::error::FlyError;
use super::route::Route;
use super::types::SetSecretsResponse;
use crate::secret::Secret;

impl FlyClient {
    /// `POST /v1/apps/{app}/secrets` `{"values": {"K": "v", "OLD": null}}`: `Some` sets, `None`
    /// deletes. Returns the app's new secrets `version`; pass it as `min_secrets_version` on the
    /// next machine create/update. Values never reach logs or errors (Fly's error text is
    /// scrubbed of them). Not retried on 5xx/transport errors; a repeat write is harmless, but the
    /// caller decides.
    pub async fn set_secrets(
        &self,
        app: &str,
        values: &BTreeMap<String, Option<Secret>>,
    ) -> Result<u64, FlyError> {
        let map: Map<String, Value> = values
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_ref()
                    .map_or(Value::Null, |s| Value::String(s.expose().to_owned()));
                (k.clone(), v)
            })
            .collect();
        let mut body = Map::new();
        body.insert("values".to_owned(), Value::Object(map));
        let mut r = Request::new(Route::SetSecrets, vec!["v1", "apps", app, "secrets"], app)
            .json(&Value::Object(body))?;
        r.scrub = values.values().flatten().map(Secret::expose).collect();
        let answer = self.execute(&r).await?;
        let resp: SetSecretsResponse = decode(Route::SetSecrets, &answer)?;
        // The write happened; an answer without a version only costs the read-your-writes guard
        // (`min_secrets_version`), so it is not an error. 0 means "unknown".
        Ok(resp.version.or(resp.version_deprecated).unwrap_or_else(|| {
            tracing::warn!(
                fly_request_id = answer.request_id.as_deref(),
                "secrets write answered without a version"
            );
            0
        }))
    }
}
