//! Custom-resource admission as kube-apiserver does it: structural pruning of unknown fields,
//! schema defaults, OpenAPI v3 schema validation and CEL rules (`x-kubernetes-validations`,
//! transition rules with `oldSelf` included), with validation ratcheting on updates.
//!
//! Pure: a [`StructuralSchema`] compiled from a CRD version's `openAPIV3Schema` turns a new
//! object (and the stored one, on updates) into the fields it pruned and a list of
//! [`FieldError`]s. Error texts follow Kubernetes 1.35+ (`field.Error` bodies, CEL failures show
//! simple values only); integer formats are range-checked as since Kubernetes 1.36.
//!
//! CEL rules are evaluated by `kube-cel` (the Kubernetes CEL libraries): each schema node with
//! rules is compiled on its own (its descendants' rules stripped) so this module decides which
//! old value a node correlates with, the way the real server does: object properties and map
//! values by key, `x-kubernetes-list-type: map` items by their keys, nothing else.
//!
//! Ratcheting (on by default since Kubernetes 1.30): on update, a value equal to its correlated
//! old value is not re-validated against the schema, and CEL rules that do not use `oldSelf` are
//! not enforced on it, so objects stored before a schema tightened stay writable.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use regex::Regex;
use serde_json::{Map, Value};

/// `?fieldValidation=`: what unknown (pruned) fields of a custom resource cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Dropped silently.
    Ignore,
    /// Dropped with a `Warning` header each (the server's default).
    #[default]
    Warn,
    /// The request fails with 400 BadRequest.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (`None`: absent or unknown, the default applies).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Ignore" => Some(FieldValidation::Ignore),
            "Warn" => Some(FieldValidation::Warn),
            "Strict" => Some(FieldValidation::Strict),
            _ => None,
        }
    }
}

/// `field.ErrorType` of Kubernetes' field errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// `Required value`.
    Required,
    /// `Invalid value`.
    Invalid,
    /// `Invalid value` (wrong type).
    TypeInvalid,
    /// `Unsupported value` (enum).
    NotSupported,
    /// `Too many` (maxItems, maxProperties).
    TooMany,
    /// `Too long` (maxLength).
    TooLong,
    /// `Duplicate value` (list-type set / map).
    Duplicate,
    /// `Forbidden`.
    Forbidden,
}

impl ErrorType {
    /// The `reason` of a `details.causes` entry.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Forbidden => "FieldValueForbidden",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooMany => "Too many",
            ErrorType::TooLong => "Too long",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Forbidden => "Forbidden",
        }
    }
}

/// One field error, as kube-apiserver reports it in `details.causes`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// What is wrong.
    pub kind: ErrorType,
    /// Field path, e.g. `spec.addresses` or `spec.preferredNodeSelectors[0].weight`.
    pub field: String,
    /// The offending value (`None`: not shown).
    pub value: Option<Value>,
    /// Explanation after the value.
    pub detail: String,
}

impl FieldError {
    fn new(kind: ErrorType, field: &str, value: Option<Value>, detail: impl Into<String>) -> Self {
        FieldError {
            kind,
            field: field.to_string(),
            value,
            detail: detail.into(),
        }
    }

    /// The message of the cause (the error without its field): `Invalid value: 0: …`.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong, _) | (_, None) => {
                self.kind.text().to_string()
            }
            (_, Some(v)) => format!("{}: {}", self.kind.text(), render_value(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// Most bytes the annotations of one object may hold together (keys and values), as
/// kube-apiserver's `TotalAnnotationSizeLimitB`.
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// The error kube-apiserver gives every object, built-in or custom, whose
/// `metadata.annotations` hold more than [`ANNOTATIONS_LIMIT`] bytes.
pub fn check_annotations_size(obj: &Value) -> Option<FieldError> {
    let total: usize = obj
        .pointer("/metadata/annotations")?
        .as_object()?
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    (total > ANNOTATIONS_LIMIT).then(|| {
        FieldError::new(
            ErrorType::TooLong,
            "metadata.annotations",
            None,
            format!("may not be more than {ANNOTATIONS_LIMIT} bytes"),
        )
    })
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// A value as Kubernetes prints it in a field error: strings quoted, numbers and booleans
/// bare, anything else as JSON.
fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "\"null\"".into(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => render_number(n),
        other => other.to_string(),
    }
}

fn render_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", f as i64)
        }
        _ => n.to_string(),
    }
}

fn render_bound(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The compiled CEL rules of one schema node.
struct CelRules {
    compiled: kube_cel::CompiledSchema,
    /// Rules that use `oldSelf` (never ratcheted).
    transition: HashSet<String>,
}

/// One node of a compiled structural schema.
#[derive(Default)]
struct Node {
    types: Vec<String>,
    nullable: bool,
    format: Option<String>,
    enumeration: Option<Vec<Value>>,
    required: Vec<String>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    pattern: Option<(String, Option<Regex>)>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    default: Option<Value>,
    preserve_unknown: bool,
    embedded: bool,
    list_type: Option<String>,
    map_keys: Vec<String>,
    properties: BTreeMap<String, Node>,
    items: Option<Box<Node>>,
    additional: Option<Box<Node>>,
    additional_allowed: bool,
    all_of: Vec<Node>,
    any_of: Vec<Node>,
    one_of: Vec<Node>,
    not: Option<Box<Node>>,
    cel: Option<CelRules>,
}

/// A CRD version's `openAPIV3Schema`, compiled once.
pub struct StructuralSchema {
    root: Node,
}

impl std::fmt::Debug for StructuralSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuralSchema").finish_non_exhaustive()
    }
}

/// What admitting an object produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Admission {
    /// Paths of the unknown fields that were pruned (`spec.foo`, `spec.list[0].bar`).
    pub pruned: Vec<String>,
    /// Validation failures (empty: the object is valid).
    pub errors: Vec<FieldError>,
}

impl StructuralSchema {
    /// Compiles a schema. `Err` lists the CEL rules that do not compile, with their paths
    /// relative to the schema (`properties[spec].x-kubernetes-validations[0].rule`).
    pub fn compile(schema: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errs = Vec::new();
        let root = compile_node(schema, "", &mut errs);
        if errs.is_empty() {
            Ok(StructuralSchema { root })
        } else {
            Err(errs)
        }
    }

    /// Admits `obj` (create when `old` is `None`, update otherwise): prunes unknown fields,
    /// drops non-nullable nulls, applies defaults, then validates the schema and the CEL rules.
    pub fn admit(&self, obj: &mut Value, old: Option<&Value>) -> Admission {
        let mut pruned = Vec::new();
        prune(&self.root, obj, "", true, &mut pruned);
        apply_defaults(&self.root, obj);
        let mut errors = Vec::new();
        check(&self.root, obj, old, "", true, &mut errors);
        let mut cel = Vec::new();
        cel_walk(&self.root, obj, old, "", &mut cel);
        // A value already rejected by the schema is not reported again by the rules on it.
        let bad: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
        cel.retain(|e| !bad.iter().any(|b| is_within(&e.field, b)));
        errors.extend(cel);
        Admission { pruned, errors }
    }
}

/// `path` is `base` or inside it.
fn is_within(path: &str, base: &str) -> bool {
    path == base
        || base.is_empty()
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    v.and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
}

fn compile_node(s: &Value, path: &str, errs: &mut Vec<FieldError>) -> Node {
    let Some(m) = s.as_object() else {
        return Node::default();
    };
    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut n = Node {
        nullable: flag("nullable"),
        preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
        embedded: flag("x-kubernetes-embedded-resource"),
        exclusive_minimum: flag("exclusiveMinimum"),
        exclusive_maximum: flag("exclusiveMaximum"),
        format: m.get("format").and_then(Value::as_str).map(str::to_string),
        enumeration: m.get("enum").and_then(Value::as_array).cloned(),
        required: m
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        min_items: as_u64(m.get("minItems")),
        max_items: as_u64(m.get("maxItems")),
        min_length: as_u64(m.get("minLength")),
        max_length: as_u64(m.get("maxLength")),
        min_properties: as_u64(m.get("minProperties")),
        max_properties: as_u64(m.get("maxProperties")),
        minimum: m.get("minimum").and_then(Value::as_f64),
        maximum: m.get("maximum").and_then(Value::as_f64),
        multiple_of: m.get("multipleOf").and_then(Value::as_f64),
        default: m.get("default").cloned(),
        list_type: m
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
            .map(str::to_string),
        map_keys: m
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        ..Node::default()
    };
    if flag("x-kubernetes-int-or-string") {
        n.types = vec!["integer".into(), "string".into()];
    } else if let Some(t) = m.get("type").and_then(Value::as_str) {
        n.types = vec![t.to_string()];
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        n.pattern = Some((p.to_string(), Regex::new(p).ok()));
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}properties[{k}].");
            n.properties.insert(k.clone(), compile_node(v, &p, errs));
        }
    }
    if let Some(items) = m.get("items") {
        n.items = Some(Box::new(compile_node(
            items,
            &format!("{path}items."),
            errs,
        )));
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(b)) => n.additional_allowed = *b,
        Some(v @ Value::Object(_)) => {
            n.additional_allowed = true;
            n.additional = Some(Box::new(compile_node(
                v,
                &format!("{path}additionalProperties."),
                errs,
            )));
        }
        _ => {}
    }
    let branches = |k: &str, errs: &mut Vec<FieldError>| -> Vec<Node> {
        m.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, b)| compile_node(b, &format!("{path}{k}[{i}]."), errs))
                    .collect()
            })
            .unwrap_or_default()
    };
    n.all_of = branches("allOf", errs);
    n.any_of = branches("anyOf", errs);
    n.one_of = branches("oneOf", errs);
    if let Some(not) = m.get("not") {
        n.not = Some(Box::new(compile_node(not, &format!("{path}not."), errs)));
    }
    if m.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        let compiled = kube_cel::compile_schema(&shallow(s));
        let mut transition = HashSet::new();
        for (i, r) in compiled.validations.iter().enumerate() {
            match r {
                Ok(cr) if cr.is_transition_rule => {
                    transition.insert(cr.rule.rule.clone());
                }
                Ok(_) => {}
                Err(e) => {
                    let rule = m["x-kubernetes-validations"][i]["rule"].clone();
                    errs.push(FieldError::new(
                        ErrorType::Invalid,
                        &format!("{path}x-kubernetes-validations[{i}].rule"),
                        Some(rule),
                        format!("compilation failed: {e}"),
                    ));
                }
            }
        }
        n.cel = Some(CelRules {
            compiled,
            transition,
        });
    }
    n
}

/// The schema with the CEL rules of every descendant removed (the node's own rules stay).
fn shallow(s: &Value) -> Value {
    fn strip(v: &mut Value) {
        if let Some(m) = v.as_object_mut() {
            m.remove("x-kubernetes-validations");
            children_mut(m);
        }
    }
    fn children_mut(m: &mut Map<String, Value>) {
        if let Some(Value::Object(props)) = m.get_mut("properties") {
            props.values_mut().for_each(strip);
        }
        for k in ["items", "additionalProperties", "not"] {
            if let Some(v) = m.get_mut(k) {
                strip(v);
            }
        }
        for k in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(a)) = m.get_mut(k) {
                a.iter_mut().for_each(strip);
            }
        }
    }
    let mut out = s.clone();
    if let Some(m) = out.as_object_mut() {
        children_mut(m);
    }
    out
}

/// Removes fields the schema does not declare (unless preserved), recording their paths.
fn prune(n: &Node, v: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                if (root || n.embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(c) = n.properties.get(&k) {
                    if let Some(cv) = m.get_mut(&k) {
                        prune(c, cv, &p, false, pruned);
                    }
                } else if let Some(a) = &n.additional {
                    if let Some(cv) = m.get_mut(&k) {
                        prune(a, cv, &p, false, pruned);
                    }
                } else if !(n.preserve_unknown || n.additional_allowed) {
                    m.remove(&k);
                    pruned.push(p);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = &n.items {
                for (i, item) in a.iter_mut().enumerate() {
                    prune(items, item, &index(path, i), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Drops `null` values of non-nullable properties, then fills absent (or dropped) properties
/// that have a `default`, recursively.
fn apply_defaults(n: &Node, v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, c) in &n.properties {
                if m.get(k).is_some_and(Value::is_null) && !c.nullable {
                    m.remove(k);
                }
                if !m.contains_key(k) {
                    if let Some(d) = &c.default {
                        m.insert(k.clone(), d.clone());
                    }
                }
                if let Some(cv) = m.get_mut(k) {
                    apply_defaults(c, cv);
                }
            }
            if let Some(a) = &n.additional {
                for (k, cv) in m.iter_mut() {
                    if !n.properties.contains_key(k) {
                        apply_defaults(a, cv);
                    }
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = &n.items {
                a.iter_mut().for_each(|i| apply_defaults(items, i));
            }
        }
        _ => {}
    }
}

/// The JSON type name kube-openapi infers for a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(types: &[String], v: &Value) -> bool {
    let actual = type_name(v);
    types.iter().any(|t| {
        t == actual
            || (t == "number" && actual == "integer")
            || (t == "integer"
                && actual == "number"
                && v.as_f64().is_some_and(|f| f.fract() == 0.0))
    })
}

/// The old list item correlated with `item` (`x-kubernetes-list-type: map`, by its keys).
fn correlate<'a>(n: &Node, item: &Value, old: Option<&'a Value>) -> Option<&'a Value> {
    if n.list_type.as_deref() != Some("map") || n.map_keys.is_empty() {
        return None;
    }
    old?.as_array()?
        .iter()
        .find(|o| n.map_keys.iter().all(|k| o.get(k) == item.get(k)))
}

/// Schema validation of one value (kube-openapi's validator order: type, combinators, string,
/// format, number, array, enum, object).
fn check(
    n: &Node,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
    if old == Some(v) {
        return;
    }
    let types = n.types.join(",");
    if v.is_null() {
        if !n.types.is_empty() && !n.nullable {
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path,
                Some(Value::String("null".into())),
                format!("{path} in body must be of type {types}: \"null\""),
            ));
        }
        return;
    }
    if !n.types.is_empty() && !type_ok(&n.types, v) {
        let actual = type_name(v);
        errs.push(FieldError::new(
            ErrorType::TypeInvalid,
            path,
            Some(Value::String(actual.into())),
            format!("{path} in body must be of type {types}: \"{actual}\""),
        ));
        return;
    }
    for b in &n.all_of {
        check(b, v, None, path, false, errs);
    }
    if !n.any_of.is_empty() && !n.any_of.iter().any(|b| passes(b, v, path)) {
        errs.push(FieldError::new(
            ErrorType::Invalid,
            path,
            Some(v.clone()),
            format!("{path} in body must validate at least one schema (anyOf)"),
        ));
    }
    if !n.one_of.is_empty() && n.one_of.iter().filter(|b| passes(b, v, path)).count() != 1 {
        errs.push(FieldError::new(
            ErrorType::Invalid,
            path,
            Some(v.clone()),
            format!("{path} in body must validate one and only one schema (oneOf)"),
        ));
    }
    if let Some(not) = &n.not {
        if passes(not, v, path) {
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                Some(v.clone()),
                format!("{path} in body must not validate the schema (not)"),
            ));
        }
    }
    match v {
        Value::String(s) => check_string(n, s, path, errs),
        Value::Number(num) => check_number(n, num, path, errs),
        Value::Array(a) => check_array(n, a, old, path, errs),
        _ => {}
    }
    if let Some(allowed) = &n.enumeration {
        if !allowed.iter().any(|a| a == v) {
            let supported: Vec<String> = allowed
                .iter()
                .map(|a| match a {
                    Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
                    other => serde_json::to_string(&other.to_string()).unwrap_or_default(),
                })
                .collect();
            errs.push(FieldError::new(
                ErrorType::NotSupported,
                path,
                Some(v.clone()),
                format!("supported values: {}", supported.join(", ")),
            ));
        }
    }
    if let Value::Object(m) = v {
        check_object(n, m, old, path, root, errs);
    }
}

fn passes(n: &Node, v: &Value, path: &str) -> bool {
    let mut e = Vec::new();
    check(n, v, None, path, false, &mut e);
    e.is_empty()
}

fn check_string(n: &Node, s: &str, path: &str, errs: &mut Vec<FieldError>) {
    let len = s.chars().count() as u64;
    let val = || Some(Value::String(s.to_string()));
    if let Some(max) = n.max_length.filter(|m| len > *m) {
        errs.push(FieldError::new(
            ErrorType::TooLong,
            path,
            val(),
            format!("may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = n.min_length.filter(|m| len < *m) {
        errs.push(FieldError::new(
            ErrorType::Invalid,
            path,
            val(),
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some((p, re)) = &n.pattern {
        if !re.as_ref().is_some_and(|re| re.is_match(s)) {
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                val(),
                format!("{path} in body should match '{p}'"),
            ));
        }
    }
    if let Some(f) = &n.format {
        if format_checked(f) && !format_ok(f, s) {
            errs.push(FieldError::new(
                ErrorType::TypeInvalid,
                path,
                val(),
                format!(
                    "{path} in body must be of type {f}: {}",
                    serde_json::to_string(s).unwrap_or_default()
                ),
            ));
        }
    }
}

fn check_number(n: &Node, num: &serde_json::Number, path: &str, errs: &mut Vec<FieldError>) {
    let f = num.as_f64().unwrap_or(0.0);
    let val = || Some(Value::Number(num.clone()));
    if n.types.iter().any(|t| t == "integer") {
        let in_range = match n.format.as_deref() {
            Some("int32") => num.as_i64().map_or(
                f.fract() == 0.0 && f >= i32::MIN as f64 && f <= i32::MAX as f64,
                |i| i32::try_from(i).is_ok(),
            ),
            Some("int64") => num.is_i64() || (f.fract() == 0.0 && f.abs() < 9.2e18),
            _ => true,
        };
        if !in_range {
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                val(),
                format!(
                    "Checked value must be of type integer with format {} in {path}",
                    n.format.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    if let Some(m) = n.multiple_of.filter(|m| *m > 0.0) {
        let q = f / m;
        if (q - q.round()).abs() > 1e-9 {
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                val(),
                format!("{path} in body should be a multiple of {}", render_bound(m)),
            ));
        }
    }
    if let Some(max) = n.maximum {
        let bad = if n.exclusive_maximum {
            f >= max
        } else {
            f > max
        };
        if bad {
            let rel = if n.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                val(),
                format!("{path} in body should be {rel} {}", render_bound(max)),
            ));
        }
    }
    if let Some(min) = n.minimum {
        let bad = if n.exclusive_minimum {
            f <= min
        } else {
            f < min
        };
        if bad {
            let rel = if n.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::new(
                ErrorType::Invalid,
                path,
                val(),
                format!("{path} in body should be {rel} {}", render_bound(min)),
            ));
        }
    }
}

/// `minItems`/`maxItems` (`what` = "items") or `minProperties`/`maxProperties`
/// ("properties"), with kube-apiserver's messages (its "at most" says "items" for both).
fn check_count(
    min: Option<u64>,
    max: Option<u64>,
    count: usize,
    what: &str,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let count = count as u64;
    if let Some(min) = min.filter(|m| count < *m) {
        errs.push(FieldError::new(
            ErrorType::Invalid,
            path,
            Some(Value::from(count)),
            format!("{path} in body should have at least {min} {what}"),
        ));
    }
    if let Some(max) = max.filter(|m| count > *m) {
        errs.push(FieldError::new(
            ErrorType::TooMany,
            path,
            Some(Value::from(count)),
            format!("must have at most {max} items"),
        ));
    }
}

fn check_array(n: &Node, a: &[Value], old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(items) = &n.items {
        for (i, item) in a.iter().enumerate() {
            check(
                items,
                item,
                correlate(n, item, old),
                &index(path, i),
                false,
                errs,
            );
        }
    }
    check_count(n.min_items, n.max_items, a.len(), "items", path, errs);
    match n.list_type.as_deref() {
        Some("set") => {
            for (i, item) in a.iter().enumerate() {
                if a[..i].contains(item) {
                    errs.push(FieldError::new(
                        ErrorType::Duplicate,
                        &index(path, i),
                        Some(item.clone()),
                        "",
                    ));
                }
            }
        }
        Some("map") if !n.map_keys.is_empty() => {
            let key = |v: &Value| -> Value {
                Value::Object(
                    n.map_keys
                        .iter()
                        .filter_map(|k| v.get(k).map(|x| (k.clone(), x.clone())))
                        .collect(),
                )
            };
            for (i, item) in a.iter().enumerate() {
                let k = key(item);
                if a[..i].iter().any(|o| key(o) == k) {
                    errs.push(FieldError::new(
                        ErrorType::Duplicate,
                        &index(path, i),
                        Some(k),
                        "",
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    n: &Node,
    m: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    root: bool,
    errs: &mut Vec<FieldError>,
) {
    check_count(
        n.min_properties,
        n.max_properties,
        m.len(),
        "properties",
        path,
        errs,
    );
    for (k, v) in m {
        if root && k == "metadata" {
            // ObjectMeta is validated by the server's own rules, not the CRD schema.
            continue;
        }
        let o = old.and_then(|o| o.get(k));
        if let Some(c) = n.properties.get(k) {
            check(c, v, o, &child(path, k), false, errs);
        } else if let Some(a) = &n.additional {
            check(a, v, o, &child(path, k), false, errs);
        }
    }
    for r in &n.required {
        if !m.contains_key(r) {
            errs.push(FieldError::new(
                ErrorType::Required,
                &child(path, r),
                None,
                "",
            ));
        }
    }
}

/// Evaluates the CEL rules of every node holding a value, with correlated old values.
fn cel_walk(n: &Node, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    if v.is_null() {
        return;
    }
    if let Some(cel) = &n.cel {
        let unchanged = old == Some(v);
        if let Err(failures) = kube_cel::validate_compiled(&cel.compiled, v, old) {
            for e in failures {
                if unchanged && !cel.transition.contains(&e.rule) {
                    continue;
                }
                errs.push(cel_error(&e, v, path));
            }
        }
    }
    match v {
        Value::Object(m) => {
            for (k, cv) in m {
                let c = n.properties.get(k).or(n.additional.as_deref());
                if let Some(c) = c {
                    cel_walk(c, cv, old.and_then(|o| o.get(k)), &child(path, k), errs);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = &n.items {
                for (i, item) in a.iter().enumerate() {
                    cel_walk(items, item, correlate(n, item, old), &index(path, i), errs);
                }
            }
        }
        _ => {}
    }
}

fn cel_error(e: &kube_cel::ValidationError, v: &Value, path: &str) -> FieldError {
    let field = match e.field_path.as_str() {
        "" => path.to_string(),
        rel if rel.starts_with('[') => format!("{path}{rel}"),
        rel => child(path, rel.trim_start_matches('.')),
    };
    let kind = match e.reason.as_deref() {
        Some("FieldValueForbidden") => ErrorType::Forbidden,
        Some("FieldValueRequired") => ErrorType::Required,
        Some("FieldValueDuplicate") => ErrorType::Duplicate,
        _ => ErrorType::Invalid,
    };
    // Simple values are shown; objects and lists are not.
    let value =
        matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)).then(|| v.clone());
    let mut fe = FieldError::new(kind, &field, value, e.message.clone());
    if !matches!(e.kind, kube_cel::ErrorKind::ValidationFailure) {
        fe.value = None;
    }
    fe
}

/// String formats whose values are checked (others are accepted as any string, as the real
/// server strips formats it does not know).
fn format_checked(f: &str) -> bool {
    matches!(
        f,
        "date-time"
            | "datetime"
            | "date"
            | "ipv4"
            | "ipv6"
            | "cidr"
            | "uuid"
            | "uuid3"
            | "uuid4"
            | "uuid5"
            | "byte"
            | "hostname"
            | "mac"
    )
}

fn format_ok(f: &str, s: &str) -> bool {
    match f {
        "date-time" | "datetime" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => s.len() == 10 && s.parse::<k8s_openapi::jiff::civil::Date>().is_ok(),
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, len)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            len.parse::<u8>().is_ok_and(|l| l <= max) && !len.starts_with('+')
        }),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "byte" => {
            s.len() % 4 == 0
                && s.trim_end_matches('=').len() + 2 >= s.len()
                && s.trim_end_matches('=')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        }
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            matches!(parts.len(), 6 | 8 | 20)
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        _ => true,
    }
}

/// Schemas of the custom resources the server serves, by `group/plural` and version: those of
/// CRD objects stored in the server, over built-in ones (the ferrolb CRDs, for the `metallb.io`
/// kinds the server serves without a CRD object).
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    builtin: BTreeMap<(String, String), Arc<StructuralSchema>>,
    from_crds: BTreeMap<(String, String), Arc<StructuralSchema>>,
}

/// `(group/plural, version)` and the `openAPIV3Schema` of every version of a CRD object.
fn crd_versions(crd: &Value) -> Vec<((String, String), &Value)> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?;
                    let schema = v.pointer("/schema/openAPIV3Schema")?;
                    Some(((format!("{group}/{plural}"), name.to_string()), schema))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Schemas {
    /// The built-in schemas: ferrolb's CRDs (compiled once per process).
    pub fn builtin() -> Self {
        static BUILTIN: std::sync::OnceLock<Schemas> = std::sync::OnceLock::new();
        BUILTIN.get_or_init(Self::compile_builtin).clone()
    }

    fn compile_builtin() -> Self {
        let mut s = Schemas::default();
        for crd in ferrolb_core::crd::all_crds() {
            let Ok(v) = serde_json::to_value(&crd) else {
                continue;
            };
            for (key, schema) in crd_versions(&v) {
                if let Ok(c) = StructuralSchema::compile(schema) {
                    s.builtin.insert(key, Arc::new(c));
                }
            }
        }
        s
    }

    /// The schema validating `group/plural` objects written through `version`.
    pub fn get(&self, storage_key: &str, version: &str) -> Option<Arc<StructuralSchema>> {
        let k = (storage_key.to_string(), version.to_string());
        self.from_crds
            .get(&k)
            .or_else(|| self.builtin.get(&k))
            .cloned()
    }

    /// The CEL rules of a CRD object that do not compile (the server rejects such a CRD), with
    /// field paths into the CRD.
    pub fn check_crd(crd: &Value) -> Vec<FieldError> {
        let mut out = Vec::new();
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, v) in versions.iter().enumerate() {
            if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
                if let Err(errs) = StructuralSchema::compile(schema) {
                    for mut e in errs {
                        e.field = format!("spec.versions[{i}].schema.openAPIV3Schema.{}", e.field);
                        out.push(e);
                    }
                }
            }
        }
        out
    }

    /// Takes the schemas of a stored CRD object.
    pub fn register_crd(&mut self, crd: &Value) {
        self.unregister_crd(crd);
        for (key, schema) in crd_versions(crd) {
            if let Ok(c) = StructuralSchema::compile(schema) {
                self.from_crds.insert(key, Arc::new(c));
            }
        }
    }

    /// Forgets the schemas of a deleted CRD object (built-in ones apply again).
    pub fn unregister_crd(&mut self, crd: &Value) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or("");
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = format!("{group}/{plural}");
        self.from_crds.retain(|(k, _), _| *k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(s: Value) -> StructuralSchema {
        StructuralSchema::compile(&s).expect("schema compiles")
    }

    /// A root object schema with `spec` as given.
    fn with_spec(spec: Value) -> StructuralSchema {
        schema(json!({"type": "object", "properties": {"spec": spec}}))
    }

    fn errors(s: &StructuralSchema, obj: Value, old: Option<Value>) -> Vec<String> {
        let mut obj = obj;
        s.admit(&mut obj, old.as_ref())
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn spec(s: &StructuralSchema, spec: Value) -> Vec<String> {
        errors(s, json!({"spec": spec}), None)
    }

    #[test]
    fn types_are_checked_with_kubernetes_messages() {
        let s = with_spec(json!({"type": "object", "properties": {
            "b": {"type": "boolean"}, "i": {"type": "integer"}, "n": {"type": "number"},
            "s": {"type": "string"}, "a": {"type": "array", "items": {"type": "string"}},
            "o": {"type": "object"}, "ios": {"x-kubernetes-int-or-string": true}}}));
        assert_eq!(
            spec(&s, json!({"b": "yes"})),
            ["spec.b: Invalid value: \"string\": spec.b in body must be of type boolean: \"string\""]
        );
        assert_eq!(
            spec(&s, json!({"i": 1.5})),
            ["spec.i: Invalid value: \"number\": spec.i in body must be of type integer: \"number\""]
        );
        assert!(spec(&s, json!({"i": 2.0, "n": 3, "s": "x", "a": ["x"], "o": {}})).is_empty());
        assert_eq!(
            spec(&s, json!({"a": ["x", 1]})),
            ["spec.a[1]: Invalid value: \"integer\": spec.a[1] in body must be of type string: \"integer\""]
        );
        assert!(spec(&s, json!({"ios": 3})).is_empty());
        assert!(spec(&s, json!({"ios": "50%"})).is_empty());
        assert_eq!(spec(&s, json!({"ios": true})).len(), 1);
        assert!(spec(&s, json!({"ios": true}))[0].contains("must be of type integer,string"));
    }

    #[test]
    fn nulls_of_non_nullable_fields_are_dropped_and_nullable_ones_kept() {
        let s = with_spec(json!({"type": "object", "properties": {
            "a": {"type": "string"}, "b": {"type": "string", "nullable": true},
            "l": {"type": "array", "items": {"type": "string"}}}}));
        let mut o = json!({"spec": {"a": null, "b": null}});
        assert!(s.admit(&mut o, None).errors.is_empty());
        assert_eq!(o, json!({"spec": {"b": null}}));
        assert_eq!(
            spec(&s, json!({"l": ["x", null]})),
            ["spec.l[1]: Invalid value: \"null\": spec.l[1] in body must be of type string: \"null\""]
        );
    }

    #[test]
    fn required_fields() {
        let s = schema(
            json!({"type": "object", "required": ["spec"], "properties": {
            "spec": {"type": "object", "required": ["addresses"], "properties": {
                "addresses": {"type": "array", "items": {"type": "string"}}}}}}),
        );
        assert_eq!(errors(&s, json!({}), None), ["spec: Required value"]);
        assert_eq!(
            errors(&s, json!({"spec": {}}), None),
            ["spec.addresses: Required value"]
        );
        assert!(errors(&s, json!({"spec": {"addresses": []}}), None).is_empty());
    }

    #[test]
    fn enums() {
        let s = with_spec(json!({"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["a", "b"]}}}));
        assert!(spec(&s, json!({"mode": "a"})).is_empty());
        assert_eq!(
            spec(&s, json!({"mode": "c"})),
            ["spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\""]
        );
    }

    #[test]
    fn integer_formats_are_range_checked() {
        let s = with_spec(json!({"type": "object", "properties": {
            "p": {"type": "integer", "format": "int32"},
            "q": {"type": "integer", "format": "int64"}}}));
        assert!(spec(&s, json!({"p": 2147483647, "q": 9223372036854775807i64})).is_empty());
        assert!(spec(&s, json!({"p": -2147483648})).is_empty());
        assert_eq!(
            spec(&s, json!({"p": 2147483648u64})),
            ["spec.p: Invalid value: 2147483648: Checked value must be of type integer with format int32 in spec.p"]
        );
        assert_eq!(spec(&s, json!({"p": -2147483649i64})).len(), 1);
        assert_eq!(
            spec(&s, json!({"q": 9223372036854775808u64})),
            ["spec.q: Invalid value: 9223372036854775808: Checked value must be of type integer with format int64 in spec.q"]
        );
    }

    #[test]
    fn string_formats() {
        let s = with_spec(json!({"type": "object", "properties": {
            "t": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "c": {"type": "string", "format": "cidr"},
            "u": {"type": "string", "format": "uuid"},
            "x": {"type": "string", "format": "made-up"}}}));
        assert!(spec(
            &s,
            json!({"t": "2024-05-01T10:00:00Z", "ip": "10.0.0.1", "c": "fc00::/64",
                   "u": "0b6e2bde-9e2f-4b0c-8f53-7c4a6f1d2e3a", "x": "anything"})
        )
        .is_empty());
        assert_eq!(
            spec(&s, json!({"t": "yesterday"})),
            ["spec.t: Invalid value: \"yesterday\": spec.t in body must be of type date-time: \"yesterday\""]
        );
        assert_eq!(spec(&s, json!({"ip": "10.0.0.256"})).len(), 1);
        assert_eq!(spec(&s, json!({"c": "10.0.0.0/33"})).len(), 1);
        assert_eq!(spec(&s, json!({"u": "not-a-uuid"})).len(), 1);
    }

    #[test]
    fn item_counts() {
        let s = with_spec(json!({"type": "object", "properties": {
            "l": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}}}}));
        assert_eq!(
            spec(&s, json!({"l": []})),
            ["spec.l: Invalid value: 0: spec.l in body should have at least 1 items"]
        );
        assert_eq!(
            spec(&s, json!({"l": ["a", "b", "c"]})),
            ["spec.l: Too many: 3: must have at most 2 items"]
        );
        assert!(spec(&s, json!({"l": ["a", "b"]})).is_empty());
    }

    #[test]
    fn patterns_and_lengths() {
        let s = with_spec(json!({"type": "object", "properties": {
            "n": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 4}}}));
        assert!(spec(&s, json!({"n": "abc"})).is_empty());
        assert_eq!(
            spec(&s, json!({"n": "ab1"})),
            ["spec.n: Invalid value: \"ab1\": spec.n in body should match '^[a-z]+$'"]
        );
        assert_eq!(
            spec(&s, json!({"n": "a"})),
            ["spec.n: Invalid value: \"a\": spec.n in body should be at least 2 chars long"]
        );
        assert_eq!(
            spec(&s, json!({"n": "abcde"})),
            ["spec.n: Too long: may not be more than 4 bytes"]
        );
    }

    #[test]
    fn numeric_bounds() {
        let s = with_spec(json!({"type": "object", "properties": {
            "w": {"type": "integer", "minimum": 1.0, "maximum": 100.0},
            "x": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "multipleOf": 0.5}}}));
        assert!(spec(&s, json!({"w": 1, "x": 1.5})).is_empty());
        assert_eq!(
            spec(&s, json!({"w": 0})),
            ["spec.w: Invalid value: 0: spec.w in body should be greater than or equal to 1"]
        );
        assert_eq!(
            spec(&s, json!({"w": 101})),
            ["spec.w: Invalid value: 101: spec.w in body should be less than or equal to 100"]
        );
        assert_eq!(
            spec(&s, json!({"x": 0})),
            ["spec.x: Invalid value: 0: spec.x in body should be greater than 0"]
        );
        assert_eq!(
            spec(&s, json!({"x": 0.7})),
            ["spec.x: Invalid value: 0.7: spec.x in body should be a multiple of 0.5"]
        );
    }

    #[test]
    fn unknown_fields_are_pruned_unless_preserved() {
        let s = schema(json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "a": {"type": "string"},
                "l": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "m": {"type": "object", "additionalProperties": {"type": "string"}}}}}}));
        let mut o = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
            "spec": {"a": "x", "b": 1, "l": [{"k": "v", "z": 2}], "free": {"anything": [1]},
                     "m": {"any-key": "v"}},
            "status": {"gone": true}
        });
        let a = s.admit(&mut o, None);
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        assert_eq!(a.pruned, ["spec.b", "spec.l[0].z", "status"]);
        assert_eq!(
            o,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n", "labels": {"a": "b"}},
                   "spec": {"a": "x", "l": [{"k": "v"}], "free": {"anything": [1]}, "m": {"any-key": "v"}}})
        );
    }

    #[test]
    fn defaults_fill_absent_fields_inside_present_objects() {
        let s = with_spec(json!({"type": "object", "properties": {
            "autoAssign": {"type": "boolean", "default": true},
            "n": {"type": "integer", "default": 3}}}));
        let mut o = json!({"spec": {"n": null}});
        s.admit(&mut o, None);
        assert_eq!(o, json!({"spec": {"autoAssign": true, "n": 3}}));
        let mut o = json!({"spec": {"autoAssign": false}});
        s.admit(&mut o, None);
        assert_eq!(o["spec"]["autoAssign"], false);
        let mut o = json!({});
        s.admit(&mut o, None);
        assert_eq!(o, json!({}), "no spec, nothing to default into");
    }

    #[test]
    fn list_type_set_and_map_reject_duplicates() {
        let s = with_spec(json!({"type": "object", "properties": {
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "conds": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                      "items": {"type": "object", "properties": {"type": {"type": "string"}, "s": {"type": "string"}}}}}}));
        assert_eq!(
            spec(&s, json!({"set": ["a", "b", "a"]})),
            ["spec.set[2]: Duplicate value: \"a\""]
        );
        assert_eq!(
            spec(
                &s,
                json!({"conds": [{"type": "Valid", "s": "1"}, {"type": "Valid", "s": "2"}]})
            ),
            ["spec.conds[1]: Duplicate value: {\"type\":\"Valid\"}"]
        );
    }

    #[test]
    fn cel_rules_report_their_message_at_the_node() {
        let s = with_spec(json!({"type": "object",
            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
            "properties": {"min": {"type": "integer"}, "max": {"type": "integer"},
                "name": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self.startsWith('lb-')", "message": "must start with lb-"}]}}}));
        assert!(spec(&s, json!({"min": 1, "max": 2, "name": "lb-a"})).is_empty());
        assert_eq!(
            spec(&s, json!({"min": 3, "max": 2})),
            ["spec: Invalid value: min must not exceed max"]
        );
        assert_eq!(
            spec(&s, json!({"min": 1, "max": 2, "name": "web"})),
            ["spec.name: Invalid value: \"web\": must start with lb-"]
        );
    }

    #[test]
    fn cel_rule_reason_and_field_path() {
        let s = with_spec(json!({"type": "object",
            "x-kubernetes-validations": [{"rule": "!has(self.a) || has(self.b)",
                "message": "b is required with a", "reason": "FieldValueRequired", "fieldPath": ".b"}],
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}));
        assert_eq!(
            spec(&s, json!({"a": "x"})),
            ["spec.b: Required value: b is required with a"]
        );
    }

    #[test]
    fn transition_rules_need_an_old_value_and_compare_with_it() {
        let s = schema(
            json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "node": {"type": "string", "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "Value is immutable"}]}}}}}),
        );
        let old = json!({"status": {"node": "n1"}});
        assert!(errors(&s, json!({"status": {"node": "n1"}}), None).is_empty());
        assert!(
            errors(&s, json!({"status": {"node": "n2"}}), None).is_empty(),
            "create"
        );
        assert!(errors(&s, json!({"status": {"node": "n1"}}), Some(old.clone())).is_empty());
        assert_eq!(
            errors(&s, json!({"status": {"node": "n2"}}), Some(old)),
            ["status.node: Invalid value: \"n2\": Value is immutable"]
        );
        // Setting a field the old object did not have: no oldSelf, the rule does not run.
        assert!(errors(
            &s,
            json!({"status": {"node": "n2"}}),
            Some(json!({"status": {}}))
        )
        .is_empty());
    }

    #[test]
    fn transition_rules_in_map_lists_correlate_by_key() {
        let s = with_spec(
            json!({"type": "object", "properties": {"ports": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "port is immutable"}]}}}}),
        );
        let old = json!({"spec": {"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}});
        // Reordered, same ports: fine (correlated by name, not by index).
        assert!(errors(
            &s,
            json!({"spec": {"ports": [{"name": "b", "port": 2}, {"name": "a", "port": 1}]}}),
            Some(old.clone())
        )
        .is_empty());
        assert_eq!(
            errors(
                &s,
                json!({"spec": {"ports": [{"name": "b", "port": 3}]}}),
                Some(old)
            ),
            ["spec.ports[0]: Invalid value: port is immutable"]
        );
    }

    #[test]
    fn ratcheting_keeps_unchanged_invalid_values_writable() {
        let s = with_spec(json!({"type": "object", "properties": {
            "l": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "w": {"type": "integer", "maximum": 10, "x-kubernetes-validations": [{"rule": "self % 2 == 0"}]},
            "other": {"type": "string"}}}));
        let old = json!({"spec": {"l": [], "w": 11, "other": "a"}});
        assert!(errors(
            &s,
            json!({"spec": {"l": [], "w": 11, "other": "b"}}),
            Some(old.clone())
        )
        .is_empty());
        let e = errors(
            &s,
            json!({"spec": {"l": [], "w": 13, "other": "b"}}),
            Some(old),
        );
        assert_eq!(
            e,
            ["spec.w: Invalid value: 13: spec.w in body should be less than or equal to 10"],
            "a changed value is validated; its CEL error is not repeated"
        );
        let e = errors(&s, json!({"spec": {"w": 9}}), None);
        assert_eq!(e, ["spec.w: Invalid value: 9: failed rule: self % 2 == 0"]);
    }

    #[test]
    fn bad_cel_rules_are_compile_errors() {
        let e = StructuralSchema::compile(&json!({"type": "object", "properties": {"spec": {
            "type": "object", "x-kubernetes-validations": [{"rule": "self.a ==", "message": "x"}]}}}))
            .unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].field,
            "properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(
            e[0].body()
                .starts_with("Invalid value: \"self.a ==\": compilation failed"),
            "{}",
            e[0].body()
        );
    }

    #[test]
    fn ferrolb_crds_are_served_with_their_schemas() {
        let s = Schemas::builtin();
        for key in [
            "metallb.io/ipaddresspools",
            "metallb.io/l2advertisements",
            "metallb.io/servicel2statuses",
        ] {
            assert!(s.get(key, "v1beta1").is_some(), "{key}");
        }
        assert!(s.get("metallb.io/ipaddresspools", "v1").is_none());
        let pools = s.get("metallb.io/ipaddresspools", "v1beta1").unwrap();
        let mut p = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p"}, "spec": {"addresses": ["10.0.0.0/24"]}});
        assert!(pools.admit(&mut p, None).errors.is_empty());
        assert_eq!(p["spec"]["autoAssign"], true, "schema default applied");
        for crd in ferrolb_core::crd::all_crds() {
            assert!(Schemas::check_crd(&serde_json::to_value(&crd).unwrap()).is_empty());
        }
    }

    #[test]
    fn stored_crds_override_and_restore_builtin_schemas() {
        let mut s = Schemas::builtin();
        let crd = json!({"spec": {"group": "metallb.io", "names": {"plural": "ipaddresspools"},
            "versions": [{"name": "v1beta1", "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
        s.register_crd(&crd);
        let mut o = json!({"spec": {}});
        assert!(s
            .get("metallb.io/ipaddresspools", "v1beta1")
            .unwrap()
            .admit(&mut o, None)
            .errors
            .is_empty());
        s.unregister_crd(&crd);
        let mut o = json!({"spec": {}});
        assert_eq!(
            s.get("metallb.io/ipaddresspools", "v1beta1")
                .unwrap()
                .admit(&mut o, None)
                .errors
                .len(),
            1
        );
    }

    #[test]
    fn field_error_bodies() {
        let e = FieldError::new(ErrorType::Required, "spec.a", None, "");
        assert_eq!(e.to_string(), "spec.a: Required value");
        let e = FieldError::new(ErrorType::Forbidden, "spec.a", Some(json!("x")), "no");
        assert_eq!(e.body(), "Forbidden: no");
        let e = FieldError::new(ErrorType::Invalid, "spec.a", Some(json!(true)), "bad");
        assert_eq!(e.body(), "Invalid value: true: bad");
        assert_eq!(e.kind.reason(), "FieldValueInvalid");
    }
}
