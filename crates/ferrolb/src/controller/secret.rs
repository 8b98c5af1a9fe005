//! Creates the speakers' heartbeat key Secret when absent (like MetalLB's memberlist
//! Secret): `ferrolb-heartbeat-key` in the controller's namespace, data key `key`, 32 random
//! bytes. An existing Secret is never modified (operators may provide their own key).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

use crate::speaker::heartbeat::{KEY_FIELD, KEY_SECRET};

/// Outcome of [`ensure_heartbeat_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// The Secret was there already.
    Present,
    /// This call created it.
    Created,
}

/// The Secret holding `key`.
pub fn key_secret(key: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(KEY_SECRET.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "ferrolb-controller".to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY_FIELD.to_string(), ByteString(key))])),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

fn random_key() -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

/// Creates the heartbeat key Secret in `namespace` unless it exists. Two controllers
/// racing are fine: the loser gets 409 AlreadyExists and reports `Present`.
pub async fn ensure_heartbeat_key(
    client: kube::Client,
    namespace: &str,
) -> anyhow::Result<KeyOutcome> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if api.get_opt(KEY_SECRET).await?.is_some() {
        return Ok(KeyOutcome::Present);
    }
    let secret = key_secret(random_key()?);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(KeyOutcome::Created),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(KeyOutcome::Present),
        Err(e) => Err(e.into()),
    }
}

/// Retries [`ensure_heartbeat_key`] with backoff (1 s … 30 s) until it succeeds.
pub async fn ensure_heartbeat_key_loop(client: kube::Client, namespace: String) {
    let mut delay = Duration::from_secs(1);
    loop {
        match ensure_heartbeat_key(client.clone(), &namespace).await {
            Ok(KeyOutcome::Created) => {
                tracing::info!(secret = KEY_SECRET, %namespace, "created the speakers' heartbeat key");
                return;
            }
            Ok(KeyOutcome::Present) => return,
            Err(e) => {
                tracing::warn!(secret = KEY_SECRET, error = %format!("{e:#}"), "cannot ensure the heartbeat key; retrying");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_shape_and_random_keys() {
        let a = random_key().unwrap();
        let b = random_key().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let s = key_secret(a.clone());
        assert_eq!(s.metadata.name.as_deref(), Some("ferrolb-heartbeat-key"));
        assert_eq!(s.data.unwrap()["key"].0, a);
        let v = serde_json::to_value(key_secret(vec![1, 2, 3])).unwrap();
        assert_eq!(v["data"]["key"], "AQID");
    }
}
