//! Multi-document YAML manifests → typed objects (pure: text in, values out).
//!
//! Used by `ferrolb validate` and the example tests. Documents are split on `---`;
//! empty documents are skipped; a `kind: List` (as printed by `kubectl get -o yaml`) is
//! expanded into its items. `IPAddressPool` and `L2Advertisement` must be
//! `metallb.io/v1beta1`; other kinds are returned as [`Object::Other`] so the caller
//! can skip them with a note.

use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::crd::{IPAddressPool, L2Advertisement};

/// One object found in a manifest.
#[derive(Clone, Debug)]
pub enum Object {
    /// A `metallb.io/v1beta1` IPAddressPool.
    Pool(Box<IPAddressPool>),
    /// A `metallb.io/v1beta1` L2Advertisement.
    Ad(Box<L2Advertisement>),
    /// Any other kind, with its raw value.
    Other {
        /// `apiVersion` (empty when missing).
        api_version: String,
        /// `kind` (empty when missing).
        kind: String,
        /// `metadata.name` (empty when missing).
        name: String,
        /// The whole document.
        value: Value,
    },
}

/// Where an object was found: 1-based document number, and item number inside a
/// `kind: List` document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based position of the YAML document in the stream.
    pub document: usize,
    /// 0-based item index when the document is a `List`.
    pub item: Option<usize>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        Ok(())
    }
}

/// A document (or List item) that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ManifestError {
    /// e.g. `IPAddressPool "p"` or `YAML`.
    pub what: String,
    /// What went wrong, with the field path when known.
    pub message: String,
}

/// Parses every document of `text`. A YAML syntax error ends the stream (the rest
/// cannot be located reliably) and is returned as the last entry.
pub fn parse_manifests(text: &str) -> Vec<(Location, Result<Object, ManifestError>)> {
    let mut out = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let loc = Location {
            document: i + 1,
            item: None,
        };
        let value = match <Value as serde::Deserialize>::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                out.push((
                    loc,
                    Err(ManifestError {
                        what: "YAML".into(),
                        message: e.to_string(),
                    }),
                ));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        if str_field(&value, "kind") == "List" {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for (j, item) in items.into_iter().enumerate() {
                let loc = Location {
                    document: i + 1,
                    item: Some(j),
                };
                out.push((loc, to_object(item)));
            }
        } else {
            out.push((loc, to_object(value)));
        }
    }
    out
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        ManifestError {
            what: what.to_string(),
            message: if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            },
        }
    })
}

/// Turns one document into an [`Object`].
pub fn to_object(value: Value) -> Result<Object, ManifestError> {
    if !value.is_mapping() {
        return Err(ManifestError {
            what: "document".into(),
            message: "not a Kubernetes object (expected a mapping with apiVersion and kind)".into(),
        });
    }
    let api_version = str_field(&value, "apiVersion").to_string();
    let kind = str_field(&value, "kind").to_string();
    let name = value
        .get("metadata")
        .map(|m| str_field(m, "name"))
        .unwrap_or("")
        .to_string();
    let what = format!("{kind} {name:?}");
    let metallb = matches!(kind.as_str(), "IPAddressPool" | "L2Advertisement");
    if metallb && api_version != "metallb.io/v1beta1" {
        return Err(ManifestError {
            what,
            message: format!(
                "apiVersion {api_version:?} is not supported (expected \"metallb.io/v1beta1\")"
            ),
        });
    }
    match kind.as_str() {
        "IPAddressPool" => typed(value, &what).map(|p| Object::Pool(Box::new(p))),
        "L2Advertisement" => typed(value, &what).map(|a| Object::Ad(Box::new(a))),
        _ => Ok(Object::Other {
            api_version,
            kind,
            name,
            value,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_lists() {
        let text = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec: {addresses: [10.0.0.0/24]}
---
---
apiVersion: v1
kind: List
items:
- apiVersion: metallb.io/v1beta1
  kind: L2Advertisement
  metadata: {name: ad}
- apiVersion: v1
  kind: Namespace
  metadata: {name: ns}
"#;
        let docs = parse_manifests(text);
        assert_eq!(docs.len(), 3);
        assert!(matches!(&docs[0].1, Ok(Object::Pool(p)) if p.spec.addresses == ["10.0.0.0/24"]));
        assert_eq!(
            docs[1].0,
            Location {
                document: 3,
                item: Some(0)
            }
        );
        assert!(
            matches!(&docs[1].1, Ok(Object::Ad(a)) if a.metadata.name.as_deref() == Some("ad"))
        );
        assert!(
            matches!(&docs[2].1, Ok(Object::Other { kind, name, .. }) if kind == "Namespace" && name == "ns")
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let docs = parse_manifests(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [10.0.0.0/24], autoAssign: maybe}\n",
        );
        let err = docs[0].1.as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("IPAddressPool \"p\": spec.autoAssign: invalid type"),
            "{err}"
        );

        let docs = parse_manifests(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {}\n",
        );
        let err = docs[0].1.as_ref().unwrap_err().to_string();
        assert!(err.contains("missing field `addresses`"), "{err}");
    }

    #[test]
    fn wrong_api_version_and_syntax_errors() {
        let docs = parse_manifests(
            "apiVersion: metallb.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: x}\n",
        );
        assert_eq!(
            docs[0].1.as_ref().unwrap_err().to_string(),
            r#"L2Advertisement "x": apiVersion "metallb.io/v1alpha1" is not supported (expected "metallb.io/v1beta1")"#
        );
        let docs = parse_manifests("kind: [unclosed\n");
        assert_eq!(docs.len(), 1);
        assert!(docs[0]
            .1
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("YAML: "));
        let docs = parse_manifests("just a string\n");
        assert!(docs[0].1.is_err());
    }
}
