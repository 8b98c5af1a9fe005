//! Paged lists as a real API server serves them: `limit` cuts a list into pages, each page's
//! `continue` token carries the resourceVersion of the first page and the key of the last
//! object returned, and later pages are read from that same snapshot (the store rebuilds it from
//! its event history). A token whose snapshot is no longer retained gets 410 Gone (`Expired`).
//!
//! Pure: token encoding and page cutting.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;

/// `(namespace or "", name)`, the order objects are listed in.
pub type Key = (String, String);

/// What a `continue` token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continue {
    /// resourceVersion of the snapshot the list is read from.
    pub rv: u64,
    /// The last key returned so far; the next page starts after it.
    pub after: Key,
}

/// The token's JSON, as kube-apiserver's (`{"v":"meta.k8s.io/v1","rv":…,"start":…}`).
#[derive(Serialize, Deserialize)]
struct Token {
    v: String,
    rv: u64,
    start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Encodes a token (base64 of its JSON; `start` is the last key followed by a NUL, so listing
/// from `start` continues right after it).
pub fn encode(c: &Continue) -> String {
    let (ns, name) = &c.after;
    let key = if ns.is_empty() {
        name.clone()
    } else {
        format!("{ns}/{name}")
    };
    let t = Token {
        v: TOKEN_VERSION.into(),
        rv: c.rv,
        start: format!("{key}\u{0}"),
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&t).unwrap_or_default())
}

/// Decodes a token; a malformed one is a 400 as on the real server.
pub fn decode(s: &str, namespaced: bool) -> Result<Continue, ApiError> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .map_err(|_| bad())?;
    let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if t.v != TOKEN_VERSION || t.rv == 0 {
        return Err(bad());
    }
    let key = t.start.strip_suffix('\u{0}').unwrap_or(&t.start);
    let after = if namespaced {
        let (ns, name) = key.split_once('/').ok_or_else(bad)?;
        (ns.to_string(), name.to_string())
    } else {
        (String::new(), key.to_string())
    };
    Ok(Continue { rv: t.rv, after })
}

/// One page of a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The objects of this page, in key order.
    pub items: Vec<Arc<Value>>,
    /// Token for the next page (`None`: this is the last one).
    pub next: Option<String>,
    /// How many matching objects follow this page.
    pub remaining: usize,
}

/// Cuts the page after `after` (exclusive) of at most `limit` objects passing `keep` from the
/// snapshot `objects` taken at resourceVersion `rv`.
pub fn page(
    objects: &BTreeMap<Key, Arc<Value>>,
    rv: u64,
    after: Option<&Key>,
    limit: Option<usize>,
    keep: impl Fn(&Value) -> bool,
) -> Page {
    let from = match after {
        Some(k) => std::ops::Bound::Excluded(k.clone()),
        None => std::ops::Bound::Unbounded,
    };
    let mut matching = objects
        .range((from, std::ops::Bound::Unbounded))
        .filter(|(_, o)| keep(o));
    let limit = limit.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last = None;
    for (k, o) in matching.by_ref() {
        if items.len() == limit {
            // One more exists: this page is full and a next one follows.
            let remaining = 1 + matching.count();
            return Page {
                items,
                next: last.map(|after: &Key| {
                    encode(&Continue {
                        rv,
                        after: after.clone(),
                    })
                }),
                remaining,
            };
        }
        items.push(o.clone());
        last = Some(k);
    }
    Page {
        items,
        next: None,
        remaining: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects(n: usize) -> BTreeMap<Key, Arc<Value>> {
        (0..n)
            .map(|i| {
                let name = format!("o{i:02}");
                (
                    ("ns".to_string(), name.clone()),
                    Arc::new(json!({"metadata": {"name": name}, "odd": i % 2 == 1})),
                )
            })
            .collect()
    }

    fn names(p: &Page) -> Vec<String> {
        p.items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn tokens_round_trip_and_look_like_the_real_ones() {
        let c = Continue {
            rv: 42,
            after: ("default".into(), "web".into()),
        };
        let t = encode(&c);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&t)
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&raw).unwrap(),
            json!({"v": "meta.k8s.io/v1", "rv": 42, "start": "default/web\u{0}"})
        );
        assert_eq!(decode(&t, true).unwrap(), c);
        let cluster = Continue {
            rv: 7,
            after: (String::new(), "node-1".into()),
        };
        assert_eq!(decode(&encode(&cluster), false).unwrap(), cluster);
        for bad in [
            "",
            "!!!",
            "e30=",
            &base64::engine::general_purpose::STANDARD
                .encode(b"{\"v\":\"x\",\"rv\":1,\"start\":\"a/b\"}"),
        ] {
            assert_eq!(decode(bad, true).unwrap_err().code, 400, "{bad}");
        }
    }

    #[test]
    fn pages_cover_the_list_once_in_order() {
        let objs = objects(7);
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let p = page(&objs, 9, after.as_ref(), Some(3), |_| true);
            pages += 1;
            seen.extend(names(&p));
            match p.next {
                Some(t) => {
                    let c = decode(&t, true).unwrap();
                    assert_eq!(c.rv, 9, "every token carries the first page's version");
                    assert_eq!(p.remaining, 7 - seen.len());
                    after = Some(c.after);
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let all: Vec<String> = (0..7).map(|i| format!("o{i:02}")).collect();
        assert_eq!(seen, all);
    }

    #[test]
    fn filters_apply_before_counting() {
        let objs = objects(7);
        let p = page(&objs, 1, None, Some(2), |o| o["odd"] == true);
        assert_eq!(names(&p), ["o01", "o03"]);
        assert_eq!(p.remaining, 1);
        let c = decode(p.next.as_ref().unwrap(), true).unwrap();
        let p = page(&objs, 1, Some(&c.after), Some(2), |o| o["odd"] == true);
        assert_eq!(names(&p), ["o05"]);
        assert!(p.next.is_none());
    }

    #[test]
    fn a_full_last_page_has_no_token() {
        let objs = objects(4);
        let p = page(&objs, 1, None, Some(4), |_| true);
        assert_eq!(p.items.len(), 4);
        assert!(p.next.is_none());
        let p = page(&objs, 1, None, None, |_| true);
        assert_eq!((p.items.len(), p.next), (4, None));
    }
}
