//! String forms of label and field selectors as sent in `?labelSelector=` / `?fieldSelector=`.
//!
//! Label selectors parse into the crate's pure [`Selector`]; field selectors match dotted paths of
//! the JSON object (`metadata.name`, `metadata.namespace`, `spec.nodeName`, …).

use serde_json::Value;

use ferrolb_core::selector::{Labels, Requirement, Selector};

/// Parses the string form of a label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
/// `a notin (x)`, `a` (exists), `!a` (does not exist), joined by commas (AND).
pub fn parse_label_selector(s: &str) -> Result<Selector, String> {
    let mut requirements = Vec::new();
    for term in split_top_level(s)? {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        requirements.push(parse_term(term)?);
    }
    Ok(Selector {
        match_labels: Default::default(),
        requirements,
    })
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced ')' in label selector {s:?}"));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in label selector {s:?}"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn valid_key(k: &str) -> Result<String, String> {
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!("invalid label key {k:?}"))
    }
}

fn valid_value(v: &str) -> Result<String, String> {
    let ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("invalid label value {v:?}"))
    }
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(rest) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(valid_key(rest.trim())?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotIn(
            valid_key(k.trim())?,
            vec![valid_value(v.trim())?],
        ));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::In(
            valid_key(k.trim())?,
            vec![valid_value(v.trim())?],
        ));
    }
    if term.contains('>') || term.contains('<') {
        return Err(format!(
            "unsupported operator in label selector term {term:?} (gt/lt are not supported)"
        ));
    }
    // `key in (..)`, `key notin (..)` or a bare `key`.
    let key_end = term
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(term.len());
    let key = valid_key(&term[..key_end])?;
    let rest = term[key_end..].trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(key));
    }
    let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
        ("notin", l)
    } else if let Some(l) = rest.strip_prefix("in") {
        ("in", l)
    } else {
        return Err(format!("invalid label selector term {term:?}"));
    };
    let list = list.trim();
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value list in {term:?}"))?;
    let values = inner
        .split(',')
        .map(|v| valid_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    // As in Kubernetes, `()` is the set holding the empty value.
    Ok(if op == "in" {
        Requirement::In(key, values)
    } else {
        Requirement::NotIn(key, values)
    })
}

/// The labels of a JSON object.
pub fn labels_of(obj: &Value) -> Labels {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One field selector requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted path, e.g. `metadata.name`.
    pub path: String,
    /// Expected value.
    pub value: String,
    /// `!=` instead of `=`.
    pub negated: bool,
}

/// A parsed field selector (AND of requirements).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `metadata.name=x,metadata.namespace!=y`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, value, negated) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, v, false)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let path = path.trim();
            if path.is_empty()
                || !path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                return Err(format!("invalid field selector path {path:?}"));
            }
            reqs.push(FieldRequirement {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// True when every requirement holds for `obj` (missing fields read as `""`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut cur = Some(obj);
            for part in r.path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_inequality() {
        let s = parse_label_selector("app=web,tier!=db").unwrap();
        assert!(s.matches(&l(&[("app", "web")])));
        assert!(s.matches(&l(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&l(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&l(&[("app", "api")])));
        let s = parse_label_selector("app==web").unwrap();
        assert!(s.matches(&l(&[("app", "web")])));
    }

    #[test]
    fn set_based() {
        let s = parse_label_selector("env in (prod, staging),zone notin (a),team,!legacy").unwrap();
        assert!(s.matches(&l(&[("env", "prod"), ("team", "x")])));
        assert!(s.matches(&l(&[("env", "staging"), ("team", "x"), ("zone", "b")])));
        assert!(!s.matches(&l(&[("env", "dev"), ("team", "x")])));
        assert!(!s.matches(&l(&[("env", "prod"), ("team", "x"), ("zone", "a")])));
        assert!(!s.matches(&l(&[("env", "prod")])));
        assert!(!s.matches(&l(&[("env", "prod"), ("team", "x"), ("legacy", "")])));
        let s = parse_label_selector("a in ()").unwrap();
        assert!(s.matches(&l(&[("a", "")])));
        assert!(!s.matches(&l(&[("a", "x")])));
        let s = parse_label_selector("kubernetes.io/hostname in(n1)").unwrap();
        assert!(s.matches(&l(&[("kubernetes.io/hostname", "n1")])));
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(parse_label_selector("").unwrap().matches(&l(&[])));
    }

    #[test]
    fn bad_selectors_are_errors() {
        for bad in ["a in (x", "a)", "a in x", "a>1", "=b", "a b", "a=b c", "!"] {
            assert!(parse_label_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"n": 3}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=a"));
        assert!(m("metadata.name==a,metadata.namespace=ns"));
        assert!(!m("metadata.name=b"));
        assert!(m("metadata.name!=b"));
        assert!(m("spec.n=3"));
        assert!(m("spec.missing="));
        assert!(m(""));
        assert!(FieldSelector::parse("metadata.name").is_err());
        assert!(FieldSelector::parse("meta/data=x").is_err());
    }

    #[test]
    fn labels_are_read_from_metadata() {
        let o = json!({"metadata": {"labels": {"a": "b", "n": 1}}});
        assert_eq!(labels_of(&o), l(&[("a", "b")]));
        assert!(labels_of(&json!({})).is_empty());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any string parses or fails cleanly; what parses prints back to an equal selector.
        #[test]
        fn label_selector_parse_is_total_and_round_trips(s in "[a-z!=(), ]{0,24}|[ -~]{0,24}") {
            if let Ok(sel) = parse_label_selector(&s) {
                let again = parse_label_selector(&sel.to_string());
                prop_assert_eq!(again, Ok(sel));
            }
        }

        #[test]
        fn field_selector_parse_is_total(s in "[ -~]{0,32}") {
            if let Ok(f) = FieldSelector::parse(&s) {
                let _ = f.matches(&serde_json::json!({"metadata": {"name": s}}));
            }
        }
    }
}
