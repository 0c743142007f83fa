//! The Grafana dashboard (`examples/grafana/poplar.json`) and the
//! Prometheus alert rules (`examples/prometheus/poplar-rules.yml`) against
//! what a real server exports: every metric, label and label value they
//! name must appear in a scrape of a server that has served logins,
//! deliveries, a plugin trap and timeout, a hot reload, a refused SIGHUP
//! reload and a PROXY rejection. promtool checks the rules and runs their
//! unit tests on synthetic series.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::delivery::lmtp_tcp;
use crate::harness::{Client, Options, PLUGIN_DIR, TestServer};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What a scrape says exists: metric names, and per metric the label
/// names and values its samples carry.
#[derive(Debug, Default)]
struct Exported {
    /// Every sample name, and every family a `# TYPE` line declares.
    names: BTreeSet<String>,
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exported {
    fn parse(text: &str) -> Exported {
        let mut e = Exported::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                e.names.insert(name.to_string());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        e.names.insert(format!("{name}{suffix}"));
                    }
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, labels) = match line.split_once('{') {
                Some((name, rest)) => (name, rest.split_once('}').unwrap().0),
                None => (line.split(' ').next().unwrap(), ""),
            };
            e.names.insert(name.to_string());
            let entry = e.labels.entry(name.to_string()).or_default();
            for (k, v) in matchers(labels) {
                entry.entry(k).or_default().insert(v.value);
            }
        }
        e
    }

    /// Every value a label has on any metric (plugin names are the
    /// configuration's, not one family's).
    fn values_anywhere(&self, label: &str) -> BTreeSet<String> {
        self.labels
            .values()
            .filter_map(|l| l.get(label))
            .flatten()
            .cloned()
            .collect()
    }
}

/// One label matcher of a selector.
#[derive(Debug)]
struct Matcher {
    op: String,
    value: String,
}

/// `a="x", b=~"y"` → (label, matcher) pairs.
fn matchers(text: &str) -> Vec<(String, Matcher)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap();
        let name = rest[..name_end].to_string();
        rest = rest[name_end..].trim_start();
        let op_len = rest.find('"').unwrap();
        let op = rest[..op_len].trim().to_string();
        rest = &rest[op_len + 1..];
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => value.push(chars.next().unwrap().1),
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {text}"),
            }
        };
        rest = rest[end + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
        out.push((name, Matcher { op, value }));
    }
    out
}

/// A metric a query selects, with its matchers.
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, Matcher)>,
}

/// What one PromQL expression names: selectors, and the label names of
/// its `by`/`without`/`on`/`ignoring`/`group_*` lists.
#[derive(Debug, Default)]
struct Names {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Binary operators, modifiers and aggregations (which may come before
/// their `by (...)` rather than right before their parenthesis).
const KEYWORDS: [&str; 18] = [
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metrics and labels a PromQL expression names (enough of PromQL for
/// our dashboard and rules: functions, aggregations, binary operators,
/// ranges, offsets, matchers and grouping lists).
fn promql_names(expr: &str) -> Names {
    let mut names = Names::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            // A range or subquery: `[5m]`, `[$__rate_interval]`.
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.5`, `10m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            skip_space(&mut j);
            if GROUPING.contains(&word.as_str()) {
                if chars.get(j) == Some(&'(') {
                    let close = j + chars[j..].iter().position(|&c| c == ')').unwrap();
                    let list: String = chars[j + 1..close].iter().collect();
                    names.grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty()),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word.as_str()) || chars.get(j) == Some(&'(') {
                // An operator, or a function or aggregation being called.
            } else {
                let mut selector = Selector {
                    metric: word,
                    matchers: Vec::new(),
                };
                if chars.get(j) == Some(&'{') {
                    let close = j + chars[j..].iter().position(|&c| c == '}').unwrap();
                    let inner: String = chars[j + 1..close].iter().collect();
                    selector.matchers = matchers(&inner);
                    i = close + 1;
                }
                names.selectors.push(selector);
            }
        } else if c == '{' {
            panic!("a selector without a metric name in {expr}: name one");
        } else {
            i += 1;
        }
    }
    names
}

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Holds one expression against a scrape; returns what is wrong.
fn check_expr(origin: &str, expr: &str, exported: &Exported) -> Vec<String> {
    let names = promql_names(expr);
    let mut problems = Vec::new();
    if names.selectors.is_empty() {
        problems.push(format!("{origin}: names no metric: {expr}"));
    }
    let mut labels_in_expr: BTreeSet<String> =
        TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for s in &names.selectors {
        // `up` is Prometheus's own series about the scrape itself.
        if s.metric == "up" {
            continue;
        }
        if !exported.names.contains(&s.metric) {
            problems.push(format!(
                "{origin}: metric {} is not exported by poplar",
                s.metric
            ));
            continue;
        }
        let mut known = exported.labels.get(&s.metric).cloned().unwrap_or_default();
        if s.metric.ends_with("_bucket") {
            known.entry("le".into()).or_default();
        }
        labels_in_expr.extend(known.keys().cloned());
        for (label, m) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some(values) = known.get(label) else {
                problems.push(format!(
                    "{origin}: {} has no label {label:?} in the scrape (labels: {:?})",
                    s.metric,
                    known.keys().collect::<Vec<_>>()
                ));
                continue;
            };
            // Exact values must be ones the server uses; a regex or a
            // dashboard variable is the operator's choice.
            if m.op == "=" && !m.value.contains('$') {
                let seen = if label == "plugin" {
                    exported.values_anywhere(label)
                } else {
                    values.clone()
                };
                if !seen.contains(&m.value) {
                    problems.push(format!(
                        "{origin}: {}{{{label}={:?}}}: the server writes {label} as one of {seen:?}",
                        s.metric, m.value
                    ));
                }
            }
        }
    }
    for label in &names.grouping {
        if label != "le" && !labels_in_expr.contains(label) {
            problems.push(format!(
                "{origin}: groups by {label:?}, which none of its metrics has"
            ));
        }
    }
    problems
}

/// Every PromQL expression of the dashboard: panel targets and the
/// templating queries (`label_values(METRIC, LABEL)`).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            out.push((format!("panel {title:?}"), expr.to_string()));
        }
        if panel["type"] != "row" {
            assert!(
                panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {title:?} has no query"
            );
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {q:?}: expected label_values(..)"));
            let (metric, label) = inner.rsplit_once(',').unwrap();
            let name = var["name"].as_str().unwrap();
            // The label it lists must exist too: select on it.
            out.push((
                format!("variable ${name}"),
                format!("{}{{{}=~\".+\"}}", metric.trim(), label.trim()).replace("}{", ","),
            ));
        }
    }
    out
}

/// Every `expr:` of the rules file (one line, or a `>-` / `|` block).
fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    let mut alert = String::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            alert = name.trim().to_string();
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let indent = line.len() - trimmed.len();
        let expr = if value.starts_with('>') || value.starts_with('|') {
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value.to_string()
        };
        out.push((format!("alert {alert}"), expr));
    }
    out
}

/// `GET /metrics`.
fn scrape(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server that has done everything the dashboard and the rules look at.
fn busy_server() -> (TestServer, Exported) {
    let proxy_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(PLUGIN_DIR).join("hostile_filter.wasm"),
        dir.path().join("hostile.wasm"),
    )
    .unwrap();
    let s = TestServer::start_in(
        dir,
        Options {
            // No proxy is trusted, so the PROXY listener refuses loopback.
            server: "proxy_trusted_networks = [\"192.0.2.1/32\"]".into(),
            extra: format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [lmtp]\nlisten = [\"127.0.0.1:0\"]\n\
                 [delivery]\nchain = [{{ filter = \"hostile\", on_failure = \"tempfail\" }}]\n\
                 watch_interval_ms = 100\n\
                 [filter.hostile]\npath = \"hostile.wasm\"\ntimeout_ms = 300\nmemory_mb = 32\n\
                 [[listener]]\naddress = \"127.0.0.1:{proxy_port}\"\nproxy_protocol = true\n"
            ),
            ..Options::default()
        },
    );
    // Logins: one good (with commands and bytes), one failed.
    let mut c = s.login("alice", "alice-pw");
    c.ok("STAT");
    c.ok("QUIT");
    let mut bad = s.connect();
    bad.ok("USER alice");
    assert!(bad.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    bad.ok("QUIT");
    // Deliveries: stored, then a trap and a timeout (tempfailed).
    let mut lmtp = lmtp_tcp(&s);
    let mut send = |subject: &str| {
        lmtp.send_mail("x@y", &["alice@x"], &format!("Subject: {subject}\n\nbody"))
            .remove(0)
    };
    assert!(send("hello").starts_with("250"));
    for subject in ["PANIC", "LOOP"] {
        assert!(send(subject).starts_with("451"), "{subject}");
    }
    // A PROXY protocol connection from an untrusted address.
    let mut refused = Client::plain(format!("127.0.0.1:{proxy_port}").parse().unwrap());
    assert_eq!(refused.rest(), "", "closed without a greeting");
    // A SIGHUP with a broken file is refused.
    let config = s.dir.path().join("poplar.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "this is not TOML").unwrap();
    s.signal("HUP");
    s.wait_for_log("reload refused");
    std::fs::write(&config, good).unwrap();
    // A new version of the filter, picked up by the watcher.
    let replacement = s.dir.path().join("hostile.wasm.new");
    std::fs::copy(
        Path::new(PLUGIN_DIR).join("filter_rules.wasm"),
        &replacement,
    )
    .unwrap();
    std::fs::rename(&replacement, s.dir.path().join("hostile.wasm")).unwrap();
    s.wait_for_log("filter reloaded");
    // The good session's line comes when it is counted.
    s.wait_for_log("user=alice");
    let text = scrape(s.admin.expect("the admin listener"));
    (s, Exported::parse(&text))
}

#[test]
fn dashboard_and_alert_rules_name_only_what_the_server_exports() {
    let (_s, exported) = busy_server();
    // The scenario produced what the checks below rely on.
    for (metric, label, value) in [
        ("poplar_logins_total", "result", "failed"),
        ("poplar_deliveries_total", "verdict", "tempfailed"),
        ("poplar_plugin_traps_total", "plugin", "hostile"),
        ("poplar_plugin_timeouts_total", "plugin", "hostile"),
        ("poplar_plugin_reloads_total", "plugin", "hostile"),
        ("poplar_config_reloads_total", "result", "failed"),
        ("poplar_proxy_rejected_total", "reason", "untrusted"),
        (
            "poplar_plugin_call_duration_seconds_bucket",
            "plugin",
            "storage",
        ),
    ] {
        assert!(
            exported
                .labels
                .get(metric)
                .and_then(|l| l.get(label))
                .is_some_and(|v| v.contains(value)),
            "{metric}{{{label}={value:?}}} not in the scrape: {exported:#?}"
        );
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/grafana/poplar.json")).unwrap(),
    )
    .expect("examples/grafana/poplar.json is JSON");
    let rules =
        std::fs::read_to_string(repo().join("examples/prometheus/poplar-rules.yml")).unwrap();
    let dashboard_exprs = dashboard_exprs(&dashboard);
    let rule_exprs = rule_exprs(&rules);
    assert!(dashboard_exprs.len() >= 20, "{dashboard_exprs:?}");
    assert_eq!(rule_exprs.len(), rules.matches("- alert: ").count());

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (origin, expr) in dashboard_exprs.iter().chain(&rule_exprs) {
        problems.extend(check_expr(origin, expr, &exported));
        used.extend(promql_names(expr).selectors.into_iter().map(|s| s.metric));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every family the server exports is on the dashboard.
    for name in exported.names.iter().filter(|n| n.starts_with("poplar_")) {
        let family = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .unwrap_or(name);
        assert!(
            used.iter().any(|u| u.starts_with(family)),
            "{name} is exported but neither the dashboard nor the rules show it"
        );
    }
}

#[test]
fn the_checker_catches_wrong_metrics_labels_and_values() {
    let exported = Exported::parse(
        "# TYPE poplar_logins_total counter\n\
         poplar_logins_total{result=\"ok\"} 1\n\
         poplar_logins_total{result=\"failed\"} 1\n\
         # TYPE poplar_plugin_call_duration_seconds histogram\n\
         poplar_plugin_call_duration_seconds_bucket{plugin=\"auth\",operation=\"verify\",le=\"+Inf\"} 1\n",
    );
    let good = [
        "sum by (result) (rate(poplar_logins_total{job=~\"$job\", result=\"failed\"}[5m]))",
        "histogram_quantile(0.99, sum by (plugin, operation, le) (rate(poplar_plugin_call_duration_seconds_bucket[5m])))",
        "up{job=\"poplar\"} == 0",
        "increase(poplar_logins_total[10m]) > 0 or (poplar_logins_total unless poplar_logins_total offset 10m) > 0 and on (instance, job) (up offset 10m)",
    ];
    for expr in good {
        assert_eq!(
            check_expr("t", expr, &exported),
            Vec::<String>::new(),
            "{expr}"
        );
    }
    let bad = [
        ("rate(poplar_login_total[5m])", "is not exported"),
        (
            "poplar_logins_total{outcome=\"ok\"}",
            "no label \"outcome\"",
        ),
        ("poplar_logins_total{result=\"fail\"}", "one of"),
        (
            "sum by (verdict) (poplar_logins_total)",
            "groups by \"verdict\"",
        ),
        ("vector(1)", "names no metric"),
    ];
    for (expr, why) in bad {
        let problems = check_expr("t", expr, &exported);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{expr}: {problems:?}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = repo().join("examples/prometheus");
    for args in [
        ["check", "rules", "poplar-rules.yml"],
        ["test", "rules", "poplar-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus; tests/run.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
