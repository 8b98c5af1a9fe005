//! Reading Kubernetes protobuf request bodies into JSON, for the few kinds whose bodies
//! kubectl's typed clients always send as protobuf (`application/vnd.kubernetes.protobuf`)
//! and that this server takes: the access reviews, SelfSubjectReview and TokenRequest.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` whose `raw` field holds the
//! object's message. Messages are decoded by a small schema per kind ([`Field`]): known
//! fields become JSON fields with the names of the JSON form, unknown ones are skipped.
//! Responses are always JSON, which every client accepts.

use serde_json::{json, Map, Value};

/// The magic prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\0";

/// The type of a field.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [Field]),
}

/// One field of a message schema.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub num: u64,
    pub name: &'static str,
    pub ty: Ty,
    pub repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];
const UNKNOWN: &[Field] = &[f(1, "typeMeta", Ty::Msg(TYPE_META))];
const OBJECT_META: &[Field] = &[f(1, "name", Ty::Str), f(3, "namespace", Ty::Str)];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];
const SELF_SAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
    f(3, "user", Ty::Str),
    rep(4, "groups", Ty::Str),
    f(6, "uid", Ty::Str),
];
const RULES_REVIEW_SPEC: &[Field] = &[f(1, "namespace", Ty::Str)];
const TOKEN_REQUEST_SPEC: &[Field] = &[
    rep(1, "audiences", Ty::Str),
    f(4, "expirationSeconds", Ty::Int),
];

/// The schema of the object message of `kind` (in a `metadata` / `spec` envelope).
fn object_schema(kind: &str) -> Option<&'static [Field]> {
    const SSAR: &[Field] = &[
        f(1, "metadata", Ty::Msg(OBJECT_META)),
        f(2, "spec", Ty::Msg(SELF_SAR_SPEC)),
    ];
    const SAR: &[Field] = &[
        f(1, "metadata", Ty::Msg(OBJECT_META)),
        f(2, "spec", Ty::Msg(SAR_SPEC)),
    ];
    const SSRR: &[Field] = &[
        f(1, "metadata", Ty::Msg(OBJECT_META)),
        f(2, "spec", Ty::Msg(RULES_REVIEW_SPEC)),
    ];
    const SSR: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];
    const TR: &[Field] = &[
        f(1, "metadata", Ty::Msg(OBJECT_META)),
        f(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC)),
    ];
    // `kubectl create namespace NAME`: the name is all it sends.
    const NS: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];
    Some(match kind {
        "SelfSubjectAccessReview" => SSAR,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => SAR,
        "SelfSubjectRulesReview" => SSRR,
        "SelfSubjectReview" => SSR,
        "TokenRequest" => TR,
        "Namespace" => NS,
        _ => return None,
    })
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Decodes one message by `schema`; `None` on malformed input.
pub fn decode_message(buf: &[u8], schema: &[Field]) -> Option<Value> {
    let mut out = Map::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        let value: Option<&[u8]>;
        let mut int = 0u64;
        match wire {
            0 => {
                int = varint(buf, &mut pos)?;
                value = None;
            }
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                continue;
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                value = Some(&buf[pos..end]);
                pos = end;
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                continue;
            }
            _ => return None,
        }
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let v = match (field.ty, value) {
            (Ty::Str, Some(b)) => Value::String(String::from_utf8(b.to_vec()).ok()?),
            (Ty::Msg(s), Some(b)) => decode_message(b, s)?,
            (Ty::Int, None) => json!(int as i64),
            (Ty::Bool, None) => json!(int != 0),
            _ => return None,
        };
        if field.repeated {
            out.entry(field.name)
                .or_insert_with(|| json!([]))
                .as_array_mut()?
                .push(v);
        } else {
            out.insert(field.name.to_string(), v);
        }
    }
    Some(Value::Object(out))
}

/// Decodes a protobuf request body (`k8s\0` + `runtime.Unknown`) of one of the kinds this
/// module knows into the JSON form of the object; `None` when it is not one.
pub fn decode_body(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(MAGIC)?;
    // runtime.Unknown: typeMeta = 1, raw = 2.
    let envelope = decode_message(rest, UNKNOWN)?;
    let kind = envelope.pointer("/typeMeta/kind")?.as_str()?.to_string();
    let api_version = envelope
        .pointer("/typeMeta/apiVersion")?
        .as_str()?
        .to_string();
    let raw = raw_field(rest)?;
    let mut obj = decode_message(raw, object_schema(&kind)?)?;
    obj["kind"] = json!(kind);
    obj["apiVersion"] = json!(api_version);
    Some(obj)
}

/// The bytes of field 2 (`raw`) of a `runtime.Unknown`.
fn raw_field(buf: &[u8]) -> Option<&[u8]> {
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        match tag & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                if tag >> 3 == 2 {
                    return Some(&buf[pos..end]);
                }
                pos = end;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(num: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_self_subject_access_review_as_kubectl_sends_it() {
        let attrs = [
            len_field(1, b"metallb-system"),
            len_field(2, b"get"),
            len_field(5, b"secrets"),
            len_field(7, b"ferrolb-heartbeat-key"),
        ]
        .concat();
        let spec = len_field(1, &attrs);
        let obj = [len_field(1, &[]), len_field(2, &spec), len_field(3, &[])].concat();
        let type_meta = [
            len_field(1, b"authorization.k8s.io/v1"),
            len_field(2, b"SelfSubjectAccessReview"),
        ]
        .concat();
        let unknown = [
            len_field(1, &type_meta),
            len_field(2, &obj),
            len_field(4, b""),
        ]
        .concat();
        let body = [MAGIC, &unknown].concat();
        assert_eq!(
            decode_body(&body).unwrap(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "metadata": {},
                   "spec": {"resourceAttributes": {"namespace": "metallb-system", "verb": "get",
                            "resource": "secrets", "name": "ferrolb-heartbeat-key"}}})
        );
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_namespace_sends_it() {
        let meta = len_field(1, b"team-a");
        let type_meta = [len_field(1, b"v1"), len_field(2, b"Namespace")].concat();
        let unknown = [len_field(1, &type_meta), len_field(2, &len_field(1, &meta))].concat();
        let body = [MAGIC, &unknown].concat();
        assert_eq!(
            decode_body(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        );
    }

    #[test]
    fn token_request_ints_and_repeated_strings() {
        // expirationSeconds = 3600 (varint), audiences = ["a", "b"].
        let spec = [
            len_field(1, b"a"),
            len_field(1, b"b"),
            vec![4 << 3, 0x90, 0x1c],
        ]
        .concat();
        let v =
            decode_message(&len_field(2, &spec), object_schema("TokenRequest").unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"spec": {"audiences": ["a", "b"], "expirationSeconds": 3600}})
        );
    }

    #[test]
    fn malformed_or_foreign_bodies_are_none() {
        assert_eq!(decode_body(b"{}"), None);
        assert_eq!(decode_body(b"k8s\0\x0a\xff"), None);
        let tm = [len_field(1, b"v1"), len_field(2, b"Pod")].concat();
        let body = [MAGIC, &len_field(1, &tm)[..], &len_field(2, &[])[..]].concat();
        assert_eq!(decode_body(&body), None, "kinds without a schema");
        // Truncated and overlong inputs never panic.
        for n in 0..8 {
            let _ = decode_message(&[0x0a, 0x80, 0x80, 0x80][..n.min(4)], SSAR_FOR_TEST);
        }
    }

    const SSAR_FOR_TEST: &[Field] = &[f(2, "spec", Ty::Msg(SELF_SAR_SPEC))];
}
