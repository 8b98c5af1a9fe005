//! Monitoring: MetalLB's `metallb_*` series scraped from a running controller and speakers
//! in the lab (names, labels, values, next to ferrolb's own), and the alerts and dashboard
//! of `deploy/monitoring`: `promtool check rules` / `promtool test rules`, and every metric
//! name they use present in a real scrape.
//!
//! promtool comes from Debian's `prometheus` package (installed by .ci/run); without it the
//! promtool test prints why and skips, except under `CI=true` where it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolb_lab::harness::{node_name, Lab, ServiceSpec};

use crate::deploy::{root, tool_or_skip};
use crate::e2e::{apply_quickstart, arping_macs, dump, index_of, pool_status, served, write};

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of an OpenMetrics text exposition (an HTTP response's headers are
/// skipped).
fn samples(text: &str) -> Vec<Sample> {
    let body = text.split_once("\r\n\r\n").map_or(text, |(_, b)| b);
    let mut out = Vec::new();
    for line in body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}').expect("}"))),
            None => (series, BTreeMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().unwrap_or(f64::NAN),
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(match e {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of the sample `name` with exactly `pairs` as labels.
fn value(s: &[Sample], name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let want = labels(pairs);
    s.iter()
        .find(|x| x.name == name && x.labels == want)
        .map(|x| x.value)
}

/// The samples named `name` that carry label `key` = `val` (whatever their other labels).
fn with_label<'a>(s: &'a [Sample], name: &str, key: &str, val: &str) -> Vec<&'a Sample> {
    s.iter()
        .filter(|x| x.name == name && x.labels.get(key).map(String::as_str) == Some(val))
        .collect()
}

/// Polls `f` every 200 ms until it returns `Some`, at most `limit`; panics with `what`.
fn wait_for<T>(lab: &Lab, what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < limit, "timed out: {what}{}", dump(lab));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn controller(lab: &Lab) -> Vec<Sample> {
    samples(&lab.controller_metrics().expect("controller metrics"))
}

fn speaker(lab: &Lab, i: usize) -> Vec<Sample> {
    samples(&lab.speaker_metrics(i).expect("speaker metrics"))
}

/// MetalLB's series, scraped from the lab's controller and speakers: names, label sets and
/// values with MetalLB's meaning, equal to ferrolb's own series of the same facts. Then
/// every metric name the alerts and the dashboard use is found in the scrapes.
#[test]
fn metallb_series_from_a_running_controller_and_speakers() {
    let Some((_g, mut lab)) = crate::e2e::lab("metallb_series", 3) else {
        return;
    };
    apply_quickstart(&lab);
    // A huge IPv6 pool: its capacity is MetalLB's MaxInt64.
    let extra = |addresses: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
             metadata: {{name: extra, namespace: metallb-system}}\n\
             spec:\n  addresses: [{addresses}]\n  autoAssign: false\n"
        )
    };
    lab.apply_file(&write(&lab, "extra.yaml", &extra("2001:db8:1::/64")))
        .unwrap();
    lab.create_service(&ServiceSpec::new("web")).unwrap();
    let ip: IpAddr = lab
        .wait_for_ips("default", "web", 1, Duration::from_secs(20))
        .unwrap()[0];
    let owner_name = served(&lab, ip, Duration::from_secs(15));
    let owner = index_of(&owner_name);
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let ip_s = ip.to_string();

    // Controller: allocator figures per pool, as MetalLB computes them.
    let c = wait_for(
        &lab,
        "pool figures on the controller",
        Duration::from_secs(20),
        || {
            let c = controller(&lab);
            let ok = value(
                &c,
                "metallb_allocator_addresses_in_use_total",
                &[("pool", "default")],
            ) == Some(1.0)
                && value(
                    &c,
                    "metallb_allocator_addresses_total",
                    &[("pool", "extra")],
                )
                .is_some();
            ok.then_some(c)
        },
    );
    for (name, pool, want) in [
        ("metallb_allocator_addresses_total", "default", 21.0),
        ("metallb_allocator_ipv4_addresses_total", "default", 21.0),
        ("metallb_allocator_ipv6_addresses_total", "default", 0.0),
        ("metallb_allocator_addresses_in_use_total", "default", 1.0),
        (
            "metallb_allocator_ipv4_addresses_in_use_total",
            "default",
            1.0,
        ),
        (
            "metallb_allocator_ipv6_addresses_in_use_total",
            "default",
            0.0,
        ),
        (
            "metallb_allocator_addresses_total",
            "extra",
            i64::MAX as f64,
        ),
        ("metallb_allocator_ipv4_addresses_total", "extra", 0.0),
        (
            "metallb_allocator_ipv6_addresses_total",
            "extra",
            i64::MAX as f64,
        ),
        ("metallb_allocator_addresses_in_use_total", "extra", 0.0),
    ] {
        assert_eq!(
            value(&c, name, &[("pool", pool)]),
            Some(want),
            "{name}{{pool={pool}}}"
        );
    }
    // ferrolb's own series of the same facts.
    assert_eq!(
        value(
            &c,
            "ferrolb_allocator_addresses_total",
            &[("pool", "default"), ("family", "ipv4")]
        ),
        Some(21.0)
    );
    assert_eq!(
        value(
            &c,
            "ferrolb_allocator_addresses_in_use_total",
            &[("pool", "default"), ("family", "ipv4")]
        ),
        Some(1.0)
    );
    // The k8s client series: updates are reconciles, errors the failed ones.
    assert_eq!(
        value(&c, "metallb_k8s_client_updates_total", &[]),
        value(&c, "ferrolb_controller_reconciles_total", &[])
    );
    assert!(value(&c, "metallb_k8s_client_updates_total", &[]).unwrap() >= 1.0);
    assert_eq!(
        value(&c, "metallb_k8s_client_update_errors_total", &[]),
        value(&c, "ferrolb_controller_reconcile_errors_total", &[])
    );
    assert_eq!(
        value(&c, "metallb_k8s_client_config_loaded_bool", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&c, "metallb_k8s_client_config_stale_bool", &[]),
        Some(0.0)
    );

    // Speakers: announced = 1 on the owner only, with MetalLB's labels.
    for i in 0..3 {
        let s = speaker(&lab, i);
        let announced = with_label(&s, "metallb_speaker_announced", "ip", &ip_s);
        if i == owner {
            let want = labels(&[
                ("service", "default/web"),
                ("protocol", "layer2"),
                ("node", &owner_name),
                ("ip", &ip_s),
            ]);
            assert_eq!(announced.len(), 1, "{announced:?}");
            assert_eq!(announced[0].labels, want);
            assert_eq!(announced[0].value, 1.0);
            assert_eq!(
                value(
                    &s,
                    "ferrolb_speaker_announced",
                    &[
                        ("service", "default/web"),
                        ("node", &owner_name),
                        ("ip", &ip_s)
                    ]
                ),
                Some(1.0)
            );
        } else {
            assert!(
                announced.is_empty(),
                "{} announces: {announced:?}",
                node_name(i)
            );
        }
        assert!(value(&s, "metallb_k8s_client_updates_total", &[]).unwrap() >= 1.0);
        assert_eq!(
            value(&s, "metallb_k8s_client_update_errors_total", &[]),
            value(&s, "ferrolb_speaker_api_errors_total", &[])
        );
        assert_eq!(
            value(&s, "metallb_k8s_client_config_loaded_bool", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "metallb_k8s_client_config_stale_bool", &[]),
            Some(0.0)
        );
    }

    // ARP from the client: requests and responses counted on the owner, per IP, under both
    // names; nothing on the other nodes.
    let count = |s: &[Sample], name: &str| value(s, name, &[("ip", &ip_s)]).unwrap_or(0.0);
    let before = speaker(&lab, owner);
    let (req0, resp0) = (
        count(&before, "metallb_layer2_requests_received"),
        count(&before, "metallb_layer2_responses_sent"),
    );
    let macs = arping_macs(&lab, ip, 3);
    assert_eq!(macs, BTreeSet::from([lab.node_mac(owner)]));
    let s = wait_for(&lab, "arping counted", Duration::from_secs(5), || {
        let s = speaker(&lab, owner);
        (count(&s, "metallb_layer2_responses_sent") >= resp0 + 3.0).then_some(s)
    });
    assert!(count(&s, "metallb_layer2_requests_received") >= req0 + 3.0);
    for (ours, theirs) in [
        (
            "ferrolb_layer2_requests_received_total",
            "metallb_layer2_requests_received",
        ),
        (
            "ferrolb_layer2_responses_sent_total",
            "metallb_layer2_responses_sent",
        ),
        (
            "ferrolb_layer2_gratuitous_sent_total",
            "metallb_layer2_gratuitous_sent",
        ),
    ] {
        let series = with_label(&s, theirs, "ip", &ip_s);
        assert_eq!(series.len(), 1, "{theirs}: {series:?}");
        assert_eq!(series[0].labels, labels(&[("ip", &ip_s)]));
        assert_eq!(
            Some(series[0].value),
            value(&s, ours, &[("ip", &ip_s)]),
            "{theirs}"
        );
    }
    // The burst of the takeover: an ARP request and an ARP reply per burst.
    assert!(count(&s, "metallb_layer2_gratuitous_sent") >= 2.0);
    for i in &others {
        let s = speaker(&lab, *i);
        for name in [
            "metallb_layer2_requests_received",
            "metallb_layer2_responses_sent",
            "metallb_layer2_gratuitous_sent",
        ] {
            assert!(
                with_label(&s, name, "ip", &ip_s).is_empty(),
                "{name} on {}",
                node_name(*i)
            );
        }
    }

    // A pool edited into an invalid spec is frozen: stale everywhere, nothing else changes.
    wait_for(
        &lab,
        "extra's spec published as valid",
        Duration::from_secs(20),
        || pool_status(&lab, "extra").last_valid_spec.map(|_| ()),
    );
    lab.apply_file(&write(
        &lab,
        "extra-bad.yaml",
        &extra("2001:db8:1::/64, 2001:db8:2::9-2001:db8:2::1"),
    ))
    .unwrap();
    for (what, scrape) in std::iter::once(("controller".to_string(), None))
        .chain((0..3).map(|i| (node_name(i), Some(i))))
    {
        let s = wait_for(
            &lab,
            &format!("stale on {what}"),
            Duration::from_secs(20),
            || {
                let s = match scrape {
                    None => controller(&lab),
                    Some(i) => speaker(&lab, i),
                };
                (value(&s, "metallb_k8s_client_config_stale_bool", &[]) == Some(1.0)).then_some(s)
            },
        );
        assert_eq!(
            value(&s, "metallb_k8s_client_config_loaded_bool", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "ferrolb_config_frozen_pools", &[]),
            Some(1.0),
            "{what}"
        );
        assert!(
            value(&s, "ferrolb_config_errors", &[]).unwrap() >= 1.0,
            "{what}"
        );
    }
    assert_eq!(served(&lab, ip, Duration::from_secs(2)), owner_name);

    // Another station claims the VIP (the client, with the VIP on its interface, sends a
    // gratuitous ARP): a duplicate responder on the owner.
    let vip32 = format!("{ip_s}/32");
    lab.client_ns()
        .sh(&format!(
            "ip addr add {vip32} dev eth0 && arping -U -c 2 -I eth0 {ip_s}; \
             ip addr del {vip32} dev eth0"
        ))
        .unwrap();
    wait_for(
        &lab,
        "duplicate responder counted",
        Duration::from_secs(5),
        || {
            let s = speaker(&lab, owner);
            value(
                &s,
                "ferrolb_layer2_duplicate_responders_total",
                &[("ip", &ip_s)],
            )
            .filter(|v| *v >= 1.0)
        },
    );

    // Every metric name of the alerts and the dashboard is in a real scrape.
    let mut scraped: BTreeSet<String> = controller(&lab).into_iter().map(|s| s.name).collect();
    for i in 0..3 {
        scraped.extend(speaker(&lab, i).into_iter().map(|s| s.name));
    }
    let used = used_metric_names();
    assert!(used.len() >= 15, "too few names found: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the alerts / dashboard use metrics no component exports: {missing:?}"
    );
    let _ = &mut lab;
}

/// The PromQL expressions of the alerts and of the dashboard panels.
fn exprs() -> (Vec<String>, Vec<String>) {
    let rule: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    let mut alerts = Vec::new();
    for g in rule["spec"]["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            alerts.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            panels.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    (alerts, panels)
}

/// Metric names (`ferrolb_…`, `metallb_…`) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("ferrolb_") || w.starts_with("metallb_"))
        .map(str::to_string)
        .collect()
}

fn used_metric_names() -> BTreeSet<String> {
    let (alerts, panels) = exprs();
    alerts
        .iter()
        .chain(&panels)
        .flat_map(|e| metric_names(e))
        .collect()
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(r#"sum by (ip) (rate(ferrolb_layer2_x_total{result="ok"}[5m])) / metallb_y"#),
        BTreeSet::from(["ferrolb_layer2_x_total".into(), "metallb_y".into()])
    );
    let s = samples(
        "HTTP/1.1 200 OK\r\nx: y\r\n\r\n# TYPE a gauge\na{ip=\"1\",svc=\"n/a\\\"b\"} 2\nb_total 3\n# EOF\n",
    );
    assert_eq!(
        s,
        vec![
            Sample {
                name: "a".into(),
                labels: labels(&[("ip", "1"), ("svc", "n/a\"b")]),
                value: 2.0
            },
            Sample {
                name: "b_total".into(),
                labels: BTreeMap::new(),
                value: 3.0
            }
        ]
    );
}

fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check rules` on the PrometheusRule's groups and on the dashboard's queries (as
/// recording rules: PromQL syntax), and `promtool test rules` on rules-test.yaml.
#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if !tool_or_skip(
        "alert_rules_pass_promtool_check_and_unit_tests",
        "promtool",
        &["--version"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rule: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_norway::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        root().join("deploy/monitoring/rules-test.yaml"),
        dir.path().join("rules-test.yaml"),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    promtool(dir.path(), &["test", "rules", "rules-test.yaml"]);
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.path().join("rules-test.yaml")).unwrap();
    for g in rule["spec"]["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no promtool test"
            );
        }
    }
    // The dashboard's queries parse ($__rate_interval is Grafana's).
    let (_, panels) = exprs();
    let rules: Vec<serde_json::Value> = panels
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({"record": format!("dashboard:query_{i}"),
                "expr": e.replace("$__rate_interval", "5m")})
        })
        .collect();
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_norway::to_string(
            &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}),
        )
        .unwrap(),
    )
    .unwrap();
    promtool(dir.path(), &["check", "rules", "dashboard.yaml"]);
}

/// `kubectl kustomize deploy/monitoring` renders the PodMonitor, the PrometheusRule and the
/// dashboard ConfigMap (for Grafana's sidecar) carrying the JSON file unchanged.
#[test]
fn monitoring_overlay_renders_rules_and_dashboard() {
    if !tool_or_skip(
        "monitoring_overlay_renders_rules_and_dashboard",
        "kubectl",
        &["version", "--client"],
    ) {
        return;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join("deploy/monitoring"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/monitoring failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_slice(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "PodMonitor", "PrometheusRule"])
    );
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["namespace"], "metallb-system");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm["data"]["grafana-dashboard.json"].as_str().unwrap(),
        std::fs::read_to_string(root().join("deploy/monitoring/grafana-dashboard.json")).unwrap()
    );
}
