//! `ferrolb explain` output: text for people, JSON for scripts (the serde form of
//! [`Explanation`]; field names are stable and documented in docs/TROUBLESHOOTING.md).

use std::fmt::Write as _;

use super::core::{Explanation, IpExplanation, Why};

/// The JSON form (pretty-printed).
pub fn json(e: &Explanation) -> String {
    serde_json::to_string_pretty(e).unwrap_or_default() + "\n"
}

fn why(w: &Why) -> String {
    format!("{}: {}", w.code, w.message)
}

/// The text form.
pub fn text(e: &Explanation) -> String {
    let mut out = String::new();
    if e.services.is_empty() {
        out.push_str("No LoadBalancer Service found.\n");
    }
    for s in &e.services {
        let _ = write!(out, "Service {}/{}: ", s.namespace, s.name);
        match s.state.as_str() {
            "announced" => out.push_str("announced\n"),
            "noIP" => out.push_str("no external IP\n"),
            "notOurs" => out.push_str("not handled by ferrolb\n"),
            _ => out.push_str("NOT ANNOUNCED\n"),
        }
        if let Some(r) = &s.reason {
            let _ = writeln!(out, "  why: {}", why(r));
        }
        for ip in &s.ips {
            render_ip(&mut out, ip);
        }
        out.push('\n');
    }
    out.push_str("Speakers:\n");
    for sp in &e.speakers {
        let state = match (sp.running, sp.may_announce) {
            (true, true) => "running",
            (true, false) => "running, FENCED",
            _ => "NOT RUNNING",
        };
        let _ = writeln!(out, "  {}: {state}", sp.node);
        for p in &sp.problems {
            let _ = writeln!(out, "    {}", why(p));
        }
    }
    if !e.config_problems.is_empty() {
        out.push_str("Configuration problems:\n");
        for p in &e.config_problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

fn render_ip(out: &mut String, ip: &IpExplanation) {
    let pool = ip
        .pool
        .as_deref()
        .map_or("in no pool".to_string(), |p| format!("pool {p}"));
    let _ = writeln!(out, "  IP {} ({pool})", ip.ip);
    match &ip.announced_by {
        Some(a) => {
            let ifs: Vec<String> = a
                .interfaces
                .iter()
                .map(|i| match &i.mac {
                    Some(m) => format!("{} ({m})", i.name),
                    None => i.name.clone(),
                })
                .collect();
            let ifs = match (&ip.reason, ifs.is_empty()) {
                (Some(r), _) => format!("NO interface ({})", r.code),
                (None, true) => "unknown interfaces".to_string(),
                (None, false) => ifs.join(", "),
            };
            let since = a
                .since
                .as_deref()
                .map(|s| format!(" since {s}"))
                .unwrap_or_default();
            let _ = writeln!(out, "    announced by {} on {ifs}{since}", a.node);
        }
        None => {
            let _ = writeln!(
                out,
                "    announced by NOBODY: {}",
                ip.reason.as_ref().map(why).unwrap_or_default()
            );
        }
    }
    let same = |r: &Why| ip.reason.as_ref().is_some_and(|i| i.code == r.code);
    if ip.announced_by.is_none() && ip.nodes.iter().all(|n| n.reason.as_ref().is_some_and(same)) {
        // a service-level reason: every node says the same
        return;
    }
    for n in &ip.nodes {
        match &n.reason {
            None => {
                let _ = writeln!(out, "    {}: announces", n.node);
            }
            Some(r) => {
                let _ = writeln!(out, "    {}: not announcing, {}", n.node, why(r));
            }
        }
        for note in &n.notes {
            let _ = writeln!(out, "      note: {}", why(note));
        }
    }
    for d in &ip.duplicates {
        let _ = writeln!(
            out,
            "    DUPLICATE RESPONDER: MAC {} answers for {} on {} (seen by {} since {})",
            d.mac, ip.ip, d.interface, d.seen_by, d.first_seen
        );
    }
}
