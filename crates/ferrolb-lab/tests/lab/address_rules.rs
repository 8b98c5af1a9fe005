//! The CEL rules on `IPAddressPool.spec.addresses` entries, through the embedded API server:
//! every entry the controller rejects for its syntax, family, range order or prefix length is
//! refused at write time (422 Invalid, cause `spec.addresses[i]`, the controller's own
//! message), except the documented cases the rules leave to the controller; and nothing the
//! controller accepts (every example in the docs, MetalLB's examples) is ever refused.

use ferrolb_core::config::address::parse_entry;

use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

const NS: &str = "metallb-system";

use super::support::start;

/// Creates a pool with `addresses`: the status code and the causes as field → message.
async fn create(c: &Client, name: &str, addresses: &[String]) -> (u16, BTreeMap<String, String>) {
    let body = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name}, "spec": {"addresses": addresses}});
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "/apis/metallb.io/v1beta1/namespaces/{NS}/ipaddresspools"
        ))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let resp = c.send(req).await.expect("request sent");
    let code = resp.status().as_u16();
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect_bytes().await.unwrap()).unwrap();
    let mut causes = BTreeMap::new();
    for cause in v["details"]["causes"].as_array().into_iter().flatten() {
        assert_eq!(cause["reason"], "FieldValueInvalid", "{v}");
        let field = cause["field"].as_str().unwrap().to_string();
        let msg = cause["message"].as_str().unwrap().to_string();
        assert!(
            causes.insert(field.clone(), msg).is_none(),
            "two causes for {field}: {v}"
        );
    }
    if code == 422 {
        assert_eq!(v["reason"], "Invalid", "{v}");
        assert!(!causes.is_empty(), "{v}");
    }
    (code, causes)
}

/// What the rules may let through although the controller rejects it (the controller freezes
/// the pool instead): an IPv6 range in reverse (CEL has no order on IPs) and entries holding
/// an IPv4-mapped IPv6 address (the API server's `isIP` refuses those, the controller and
/// MetalLB accept them, so the rules skip them).
fn left_to_the_controller(entry: &str) -> bool {
    let (start, end) = entry.split_once('-').unwrap_or((entry, ""));
    let mapped = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        s.find(":ffff:")
            .is_some_and(|i| s[..i].chars().all(|c| c == '0' || c == ':'))
    };
    let v6 = |s: &str| s.trim().parse::<std::net::Ipv6Addr>().is_ok();
    mapped(start) || mapped(end) || (entry.contains('-') && v6(start) && v6(end))
}

/// `text` with every quoted IP address in its canonical form: the controller names the ends
/// of a range as parsed (`fc00::1`), the rules as written (`fc00:0::1`).
fn canonical(text: &str) -> String {
    text.split('"')
        .map(|part| match part.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\"")
}

/// Checks one batch: every entry the controller accepts is accepted; every entry it rejects is
/// refused with its message, unless [`left_to_the_controller`]. Returns how many were refused.
async fn check_batch(c: &Client, name: &str, entries: &[String]) -> usize {
    let (code, causes) = create(c, name, entries).await;
    let mut refused = 0;
    for (i, e) in entries.iter().enumerate() {
        let field = format!("spec.addresses[{i}]");
        match (parse_entry(e), causes.get(&field)) {
            (Ok(_), None) => {}
            (Ok(_), Some(msg)) => panic!("{e:?} is valid but was refused: {msg}"),
            (Err(want), Some(msg)) => {
                assert!(
                    canonical(msg).ends_with(&format!(": {}", canonical(&want.to_string()))),
                    "{e:?}: the API server says {msg:?}, the controller {:?}",
                    want.to_string()
                );
                refused += 1;
            }
            (Err(want), None) => assert!(
                left_to_the_controller(e),
                "{e:?} let through although the controller rejects it: {want}"
            ),
        }
    }
    assert_eq!(causes.len(), refused, "causes for other fields: {causes:?}");
    assert_eq!(code, if refused == 0 { 201 } else { 422 });
    refused
}

/// Entry shapes from the validation cases of the controller, its address parser and the docs.
const BAD: &[&str] = &[
    "100.200.300.400/24",
    "10.0.1.0/33",
    "10.0.0.1/33",
    "fc00::/129",
    "10.0.0.1",
    "fc00::1",
    "10.0.0.0/x",
    "10.0.0.0/",
    "10.0.0.0/+24",
    "10.0.0.0/-1",
    "10.0.0.0/24/3",
    " 10.0.0.0/24",
    "10.0.0.0/24 ",
    "",
    "10.0.0.0/99999999999999",
    "010.0.0.0/8",
    "fe80::1%eth0/64",
    "1.2.3.10-1.2.3.1",
    "192.0.2.120-192.0.2.100",
    "10.0.0.1-fc00::1",
    "10.0.0.1 - fc00::1",
    "fc00::1-10.0.0.1",
    "10.0.0.1-",
    "-10.0.0.1",
    "10.0.0.0/24-10.0.1.0/24",
    "10.0.0.1-10.0.0.2-10.0.0.3",
    "10.0.0.256-10.0.0.1",
    "10.0.0.1-10.0.0.256",
    "x-y",
    "10.0.0.1..10.0.0.9",
];

/// Valid entries: the docs' examples, MetalLB's documented examples and edge shapes.
const GOOD: &[&str] = &[
    "192.168.10.0/24",
    "192.168.9.1-192.168.9.5",
    "fc00:f853:0ccd:e799::/124",
    "192.168.1.240-192.168.1.250",
    "192.168.1.240/28",
    "10.0.0.5/24",
    "1.2.3.4/32",
    "fc00::1/128",
    "0.0.0.0/0",
    "::/0",
    "10.0.0.0/024",
    "10.0.0.0/0000000024",
    "200.0.0.100 - 200.0.0.120",
    "192.168.9.1-192.168.9.1",
    "fc00::-fc00::ff",
    "0.0.0.0-255.255.255.255",
    "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "2001:db8:0:1::100-2001:db8:0:1::1ff",
    "FC00::/120",
    "::1.2.3.4/128",
    "::ffff:10.0.0.1/128",
    "0:0:0:0:0:ffff:a00:1/128",
    "::ffff:10.0.0.1-::ffff:10.0.0.9",
    "10.0.0.9-10.0.0.10",
    "10.0.0.255-10.0.1.0",
    "9.255.255.255-10.0.0.0",
];

#[tokio::test]
async fn bad_entries_are_refused_with_the_controllers_message_and_good_ones_accepted() {
    let (server, c) = start().await;
    for (i, bad) in BAD.iter().enumerate() {
        assert!(parse_entry(bad).is_err(), "{bad:?} is valid");
        let (code, causes) = create(
            &c,
            &format!("bad-{i}"),
            &["192.0.2.0/28".into(), bad.to_string()],
        )
        .await;
        assert_eq!(code, 422, "{bad:?} accepted");
        let want = parse_entry(bad).unwrap_err().to_string();
        assert_eq!(
            causes.keys().collect::<Vec<_>>(),
            ["spec.addresses[1]"],
            "{bad:?}"
        );
        assert!(
            causes["spec.addresses[1]"].ends_with(&format!(": {want}")),
            "{bad:?}: {causes:?} vs {want}"
        );
    }
    for (i, good) in GOOD.iter().enumerate() {
        parse_entry(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        let (code, causes) = create(&c, &format!("good-{i}"), &[good.to_string()]).await;
        assert_eq!((code, causes), (201, BTreeMap::new()), "{good:?}");
    }
    // The gaps, accepted here and frozen by the controller.
    for (i, gap) in [
        "fc00::9-fc00::1",
        "::ffff:10.0.0.1/200",
        "::ffff:10.0.0.9-::ffff:10.0.0.1",
    ]
    .iter()
    .enumerate()
    {
        assert!(parse_entry(gap).is_err() && left_to_the_controller(gap));
        let (code, _) = create(&c, &format!("gap-{i}"), &[gap.to_string()]).await;
        assert_eq!(code, 201, "{gap:?}");
    }
    server.shutdown().await.unwrap();
}

/// Every `addresses` entry of every IPAddressPool in the docs, README and examples.
fn documented_entries() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut texts = Vec::new();
    for dir in ["docs", "examples", "."] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("yaml") => texts.push(std::fs::read_to_string(&path).unwrap()),
                Some("md") => {
                    let md = std::fs::read_to_string(&path).unwrap();
                    // Fenced YAML blocks.
                    for block in md.split("```yaml").skip(1) {
                        texts.push(block.split("```").next().unwrap().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for text in texts {
        for doc in serde_norway::Deserializer::from_str(&text) {
            let Ok(v) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            if v["kind"] == "IPAddressPool" {
                for a in v["spec"]["addresses"].as_array().into_iter().flatten() {
                    out.push(a.as_str().unwrap().to_string());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn every_documented_entry_is_accepted() {
    let (server, c) = start().await;
    let entries = documented_entries();
    assert!(entries.len() >= 10, "only {entries:?}");
    assert_eq!(check_batch(&c, "documented", &entries).await, 0);
    server.shutdown().await.unwrap();
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
    fn v4(&mut self) -> String {
        let o = |g: &mut Gen| match g.below(20) {
            0 => "256".to_string(),
            1 => format!("0{}", g.below(10)),
            _ => g.below(256).to_string(),
        };
        let n = if self.below(30) == 0 { 3 } else { 4 };
        (0..n).map(|_| o(self)).collect::<Vec<_>>().join(".")
    }
    fn v6(&mut self) -> String {
        match self.below(6) {
            0 => format!("fc00::{:x}", self.below(0x20)),
            1 => format!("2001:db8::{:x}:{:x}", self.below(3), self.below(0x10000)),
            2 => format!("::ffff:{}", self.v4()),
            3 => format!("fc00:{:x}::", self.below(0x10000)),
            4 => format!("{:x}::{:x}", self.below(0x10000), self.below(0x10000)),
            _ => format!("fc00::{:x}:{:x}", self.below(0x10), self.below(0x10)),
        }
    }
    fn ip(&mut self) -> String {
        if self.below(3) == 0 {
            self.v6()
        } else {
            self.v4()
        }
    }
    fn prefix(&mut self) -> String {
        match self.below(12) {
            0 => "".into(),
            1 => "x".into(),
            2 => format!("0{}", self.below(40)),
            3 => format!("+{}", self.below(40)),
            4 => self.below(1000).to_string(),
            _ => self.below(140).to_string(),
        }
    }
    fn ws(&mut self) -> &'static str {
        self.pick(&["", "", "", " ", "  "])
    }
    fn entry(&mut self) -> String {
        match self.below(10) {
            0..=3 => {
                let (ip, len) = (self.ip(), self.prefix());
                let ws = if self.below(15) == 0 { " " } else { "" };
                match self.below(20) {
                    0 => ip,
                    1 => format!("{ip}/{len}/{}", self.below(40)),
                    _ => format!("{ws}{ip}/{len}"),
                }
            }
            4..=8 => {
                let a = self.ip();
                // Often the same family and close by, so both orders are frequent.
                let b = match self.below(3) {
                    0 => self.ip(),
                    _ if a.contains(':') => self.v6(),
                    _ => {
                        let mut b = a.clone();
                        if let Some(dot) = b.rfind('.') {
                            b.truncate(dot + 1);
                            b.push_str(&self.below(256).to_string());
                        }
                        b
                    }
                };
                let (w1, w2) = (self.ws(), self.ws());
                format!("{a}{w1}-{w2}{b}")
            }
            _ => {
                let alphabet = b"0123456789abcdef.:/- xX";
                let n = self.below(14);
                (0..n)
                    .map(|_| alphabet[self.below(alphabet.len() as u64) as usize] as char)
                    .collect()
            }
        }
    }
}

/// Thousands of generated entries (valid, invalid, near misses): the API server refuses
/// exactly the ones the controller rejects, with its message, but for the documented gaps.
#[tokio::test]
async fn generated_entries_the_server_refuses_are_exactly_the_controllers() {
    let (server, c) = start().await;
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let (mut total, mut refused, mut valid) = (0, 0, 0);
    for batch in 0..8 {
        let entries: Vec<String> = (0..ferrolb_core::crd::MAX_POOL_ADDRESSES)
            .map(|_| g.entry())
            .filter(|e| e.chars().count() <= ferrolb_core::crd::MAX_ADDRESS_LENGTH as usize)
            .collect();
        valid += entries.iter().filter(|e| parse_entry(e).is_ok()).count();
        total += entries.len();
        refused += check_batch(&c, &format!("gen-{batch}"), &entries).await;
    }
    eprintln!("{total} entries: {valid} valid, {refused} refused at write time");
    assert!(
        valid > total / 5 && refused > total / 3,
        "{valid} valid, {refused} refused of {total}"
    );
    server.shutdown().await.unwrap();
}
