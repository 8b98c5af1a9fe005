//! Kubernetes label selectors as pure values: validated once, matched many times.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/labels`: `matchLabels` and every
//! `matchExpressions` requirement must hold (AND). An empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A validated label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
}

/// Why a `LabelSelector` could not be turned into a [`Selector`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unknown operator {operator:?} for key {key:?} (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator { key: String, operator: String },
    #[error("operator {operator} for key {key:?} needs at least one value")]
    MissingValues { key: String, operator: String },
    #[error("operator {operator} for key {key:?} must not have values")]
    UnexpectedValues { key: String, operator: String },
    #[error("duplicate value {value:?} for key {key:?}")]
    DuplicateValue { key: String, value: String },
    #[error("empty label key")]
    EmptyKey,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector with only `matchLabels`.
    pub fn from_labels<I, K, V>(labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Selector {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            requirements: Vec::new(),
        }
    }

    /// Validates a Kubernetes `LabelSelector`.
    pub fn parse(sel: &LabelSelector) -> Result<Self, SelectorError> {
        let match_labels = sel.match_labels.clone().unwrap_or_default();
        if match_labels.keys().any(|k| k.is_empty()) {
            return Err(SelectorError::EmptyKey);
        }
        let mut requirements = Vec::new();
        for e in sel.match_expressions.iter().flatten() {
            if e.key.is_empty() {
                return Err(SelectorError::EmptyKey);
            }
            let values = e.values.clone().unwrap_or_default();
            let mut seen = std::collections::BTreeSet::new();
            for v in &values {
                if !seen.insert(v) {
                    return Err(SelectorError::DuplicateValue {
                        key: e.key.clone(),
                        value: v.clone(),
                    });
                }
            }
            let need_values = |op: &str| -> Result<(), SelectorError> {
                if values.is_empty() {
                    Err(SelectorError::MissingValues {
                        key: e.key.clone(),
                        operator: op.into(),
                    })
                } else {
                    Ok(())
                }
            };
            let no_values = |op: &str| -> Result<(), SelectorError> {
                if values.is_empty() {
                    Ok(())
                } else {
                    Err(SelectorError::UnexpectedValues {
                        key: e.key.clone(),
                        operator: op.into(),
                    })
                }
            };
            let req = match e.operator.as_str() {
                "In" => {
                    need_values("In")?;
                    Requirement::In(e.key.clone(), values.clone())
                }
                "NotIn" => {
                    need_values("NotIn")?;
                    Requirement::NotIn(e.key.clone(), values.clone())
                }
                "Exists" => {
                    no_values("Exists")?;
                    Requirement::Exists(e.key.clone())
                }
                "DoesNotExist" => {
                    no_values("DoesNotExist")?;
                    Requirement::DoesNotExist(e.key.clone())
                }
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key: e.key.clone(),
                        operator: other.into(),
                    })
                }
            };
            requirements.push(req);
        }
        Ok(Selector {
            match_labels,
            requirements,
        })
    }

    /// True when every label and requirement holds for `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the selector that matches everything.
    pub fn is_everything(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    /// The canonical `kubectl` form, e.g. `app=web,tier in (a,b),!legacy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.requirements {
            parts.push(match r {
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::DoesNotExist(k) => format!("!{k}"),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: if values.is_empty() {
                None
            } else {
                Some(values.iter().map(|s| s.to_string()).collect())
            },
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let s = Selector::parse(&LabelSelector::default()).unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["a", "b"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("zone", "NotIn", &["x"]),
                expr("team", "Exists", &[]),
            ]),
        };
        let s = Selector::parse(&sel).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("team", "t")])));
        assert!(s.matches(&labels(&[
            ("app", "web"),
            ("tier", "b"),
            ("team", "t"),
            ("zone", "y")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("team", "t")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "a"), ("team", "t")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "t"),
            ("legacy", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("team", "t"),
            ("zone", "x")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert_eq!(
            s.to_string(),
            "app=web,tier in (a,b),!legacy,zone notin (x),team"
        );
    }

    #[test]
    fn invalid_selectors_are_rejected_with_reason() {
        let bad = |e| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![e]),
        };
        assert!(matches!(
            Selector::parse(&bad(expr("k", "Equals", &["v"]))),
            Err(SelectorError::UnknownOperator { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "In", &[]))),
            Err(SelectorError::MissingValues { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "Exists", &["v"]))),
            Err(SelectorError::UnexpectedValues { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("k", "In", &["v", "v"]))),
            Err(SelectorError::DuplicateValue { .. })
        ));
        assert!(matches!(
            Selector::parse(&bad(expr("", "Exists", &[]))),
            Err(SelectorError::EmptyKey)
        ));
    }
}
