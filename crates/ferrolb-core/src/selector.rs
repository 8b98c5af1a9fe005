//! Kubernetes label selectors as pure values: validated once, matched many times.
//!
//! Semantics follow `k8s.io/apimachinery/pkg/labels`: `matchLabels` and every
//! `matchExpressions` requirement must hold (AND). An empty selector matches everything.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::packed::{self, Unpack};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// What a selector reads of an object's labels: the value of a key.
pub trait LabelLookup {
    /// The value of `key`, if the object has that label.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Labels kept compactly, for objects held by the thousand: every pair in one shared
/// allocation (none when empty), sorted by key, so a clone is a reference count and a
/// `BTreeMap` leaf (544 bytes) and two strings per label are not. A lookup walks the pairs,
/// which is what selectors do on a handful of labels.
///
/// Encoding: key and value of each pair, by key, [`crate::packed`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(Option<Arc<str>>);

impl LabelSet {
    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pairs, by key.
    pub fn iter(&self) -> LabelIter<'_> {
        LabelIter(Unpack::new(self.0.as_deref().unwrap_or("")))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether the label `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The number of labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// No labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Sets `key` to `value` (a new allocation: clones made before keep their labels).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let mut all = self.to_map();
        all.insert(key.into(), value.into());
        *self = Self::from(&all);
    }

    /// The labels as a map.
    pub fn to_map(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The one allocation holding every pair (`None`: no labels).
    pub fn shared(&self) -> Option<&Arc<str>> {
        self.0.as_ref()
    }
}

impl From<&Labels> for LabelSet {
    fn from(labels: &Labels) -> Self {
        if labels.is_empty() {
            return LabelSet(None);
        }
        let mut text = String::new();
        for (k, v) in labels {
            packed::push(&mut text, k);
            packed::push(&mut text, v);
        }
        LabelSet(Some(text.into()))
    }
}

impl From<Labels> for LabelSet {
    fn from(labels: Labels) -> Self {
        Self::from(&labels)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for LabelSet {
    /// A later pair with a key seen before wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let map: Labels = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from(&map)
    }
}

impl fmt::Debug for LabelSet {
    /// As the map it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl LabelLookup for LabelSet {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

/// The pairs of a [`LabelSet`], by key.
pub struct LabelIter<'a>(Unpack<'a>);

impl<'a> Iterator for LabelIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        Some((self.0.next()?, self.0.next()?))
    }
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Requirement::In(k, vs) => labels.label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => labels.label(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            Requirement::Exists(k) => labels.label(k).is_some(),
            Requirement::DoesNotExist(k) => labels.label(k).is_none(),
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
    pub fn matches<L: LabelLookup + ?Sized>(&self, labels: &L) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.label(k) == Some(v.as_str()))
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

    /// Keys and values that could confuse the encoding: digits, its separator, empty
    /// strings, characters of several bytes.
    fn tricky() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex("[a1:0é/.-]{0,4}").unwrap()
    }

    proptest::proptest! {
        /// A label set holds what its map held, and every selector reads the same on both.
        #[test]
        fn a_label_set_reads_as_its_map(
            map in proptest::collection::btree_map(tricky(), tricky(), 0..5),
            probes in proptest::collection::vec(tricky(), 1..4),
            values in proptest::collection::vec(tricky(), 1..3),
        ) {
            let set = LabelSet::from(&map);
            proptest::prop_assert_eq!(set.to_map(), map.clone());
            proptest::prop_assert_eq!(set.len(), map.len());
            proptest::prop_assert_eq!(set.is_empty(), map.is_empty());
            proptest::prop_assert_eq!(set.iter().map(|(k, _)| k).collect::<Vec<_>>(), map.keys().map(String::as_str).collect::<Vec<_>>());
            for k in probes.iter().chain(map.keys()) {
                proptest::prop_assert_eq!(set.get(k), map.get(k).map(String::as_str));
                proptest::prop_assert_eq!(set.contains_key(k), map.contains_key(k));
            }
            let mut sels: Vec<Selector> = probes
                .iter()
                .flat_map(|k| {
                    let vs = || values.clone();
                    [
                        Requirement::In(k.clone(), vs()),
                        Requirement::NotIn(k.clone(), vs()),
                        Requirement::Exists(k.clone()),
                        Requirement::DoesNotExist(k.clone()),
                    ]
                })
                .map(|r| Selector { match_labels: BTreeMap::new(), requirements: vec![r] })
                .collect();
            sels.extend(map.iter().chain(probes.iter().zip(values.iter())).map(|(k, v)| Selector::from_labels([(k.clone(), v.clone())])));
            for sel in &sels {
                proptest::prop_assert_eq!(sel.matches(&set), sel.matches(&map), "{}", sel);
            }
        }
    }

    #[test]
    fn a_label_set_is_one_shared_allocation() {
        let empty = LabelSet::from(&Labels::new());
        assert!(empty.shared().is_none() && empty.is_empty() && empty == LabelSet::new());
        let set: LabelSet = [("team", "t1"), ("app", "web"), ("app", "db")]
            .into_iter()
            .collect();
        assert_eq!(format!("{set:?}"), r#"{"app": "db", "team": "t1"}"#);
        let copy = set.clone();
        assert!(Arc::ptr_eq(set.shared().unwrap(), copy.shared().unwrap()));
        let mut changed = copy.clone();
        changed.insert("tier", "front");
        assert_eq!(changed.get("tier"), Some("front"));
        assert_eq!(copy.get("tier"), None);
        assert_eq!(copy, set);
        assert_ne!(changed, set);
        assert!(Selector::from_labels([("app", "db")]).matches(&set));
        assert!(!Selector::from_labels([("app", "web")]).matches(&set));
    }
}
