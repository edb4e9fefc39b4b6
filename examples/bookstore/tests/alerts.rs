//! Issue 15: `monitoring/alerts.yaml` (Prometheus alerting rules) names only metrics, labels
//! and label values the crates really have: the file is parsed as YAML, each rule's PromQL
//! expression is tokenized, and every metric name must be one the crates describe (captured
//! from `bookstore::metrics::describe()` by a recorder that keeps the descriptions), in its
//! Prometheus form (dots as underscores); `rate`/`increase` only over counters; every label
//! in a matcher or a `by (...)` one the crates record; every matched value (handshake
//! result, certificate and rotation kind, fetch result, key state) one they record.

// Helpers outside #[test] fns: a panic there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use mtls_core::metrics::HandshakeResult;
use serde_yaml_ng::Value;

/// Keeps what the crates describe: Prometheus name -> kind.
#[derive(Default)]
struct Descriptions(Mutex<BTreeMap<String, &'static str>>);

impl Descriptions {
    fn add(&self, name: &KeyName, kind: &'static str) {
        self.0
            .lock()
            .unwrap()
            .insert(prometheus(name.as_str()), kind);
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(&key, "counter");
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(&key, "gauge");
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(&key, "histogram");
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The name as metrics-exporter-prometheus writes it.
fn prometheus(name: &str) -> String {
    name.replace('.', "_")
}

/// Every label name the crates record, in Prometheus form.
fn known_labels() -> BTreeSet<String> {
    use mtls_core::metrics as core;
    use mtls_jwt::metrics as jwt;
    use mtls_tonic::metrics as tonic;
    [
        core::HANDSHAKE_RESULT,
        core::CERT_KIND,
        core::CERT_NAME,
        core::TRUST_DOMAIN,
        core::ROTATION_KIND,
        jwt::REASON,
        jwt::RESULT,
        jwt::STATE,
        jwt::JWKS,
        tonic::METHOD,
        tonic::TARGET,
        tonic::DISCONNECT_ERROR,
        tonic::RESULT,
    ]
    .iter()
    .map(|l| prometheus(l))
    .collect()
}

const FUNCTIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "time",
    "abs",
    "absent",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
];
const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase"];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];

/// What an expression names.
#[derive(Debug, Default)]
struct Names {
    /// Metric names, with whether a counter function was applied to each.
    metrics: Vec<(String, bool)>,
    labels: BTreeSet<String>,
    /// (label, value) of every matcher.
    matchers: Vec<(String, String)>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL tokenizer: enough for rule expressions (selectors, matchers, ranges,
/// aggregations with grouping, binary operators, numbers).
fn names(expr: &str) -> Names {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Names::default();
    let mut counter_fn = false;
    let mut i = 0;
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && is_ident(chars[*i]) {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '[' {
            while chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            i += 1;
            loop {
                while chars[i].is_whitespace() || chars[i] == ',' {
                    i += 1;
                }
                if chars[i] == '}' {
                    i += 1;
                    break;
                }
                let label = ident(&mut i);
                while "=!~ ".contains(chars[i]) {
                    i += 1;
                }
                assert_eq!(chars[i], '"', "a matcher's value is a string: {expr}");
                i += 1;
                let start = i;
                while chars[i] != '"' {
                    i += 1;
                }
                let value: String = chars[start..i].iter().collect();
                i += 1;
                out.labels.insert(label.clone());
                out.matchers.push((label, value));
            }
        } else if is_ident_start(c) {
            let word = ident(&mut i);
            let mut j = i;
            skip_ws(&mut j);
            let call = j < chars.len() && chars[j] == '(';
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = j + 1;
                    while chars[i] != ')' {
                        if is_ident_start(chars[i]) {
                            out.labels.insert(ident(&mut i));
                        } else {
                            i += 1;
                        }
                    }
                    i += 1;
                }
            } else if call || FUNCTIONS.contains(&word.as_str()) {
                // An aggregation may put its grouping first: `sum by (x) (...)`.
                assert!(
                    FUNCTIONS.contains(&word.as_str()),
                    "unknown function {word}: {expr}"
                );
                if COUNTER_FUNCTIONS.contains(&word.as_str()) {
                    counter_fn = true;
                }
            } else if !KEYWORDS.contains(&word.as_str()) {
                out.metrics.push((word, counter_fn));
                counter_fn = false;
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn rules() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring/alerts.yaml");
    let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let groups = doc["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].as_str().is_some(), "a group has a name");
            g["rules"].as_sequence().expect("rules").clone()
        })
        .collect()
}

#[test]
fn every_alert_names_only_metrics_labels_and_values_the_crates_have() {
    let described = Descriptions::default();
    metrics::with_local_recorder(&described, bookstore::metrics::describe);
    let described = described.0.into_inner().unwrap();
    assert!(
        described.contains_key("grpc_server_tls_handshakes"),
        "{described:?}"
    );
    let labels = known_labels();
    let results: BTreeSet<&str> = HandshakeResult::ALL.iter().map(|r| r.as_str()).collect();

    let rules = rules();
    let mut used = BTreeSet::new();
    for rule in &rules {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        let expr = rule["expr"].as_str().expect("expr");
        assert!(rule["for"].as_str().is_some(), "{alert}: for");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "{alert}: severity"
        );
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{alert}: summary"
        );
        let found = names(expr);
        assert!(!found.metrics.is_empty(), "{alert} names no metric: {expr}");
        for (metric, under_counter_fn) in &found.metrics {
            let kind = described
                .get(metric)
                .unwrap_or_else(|| panic!("{alert}: {metric} is not a metric of the crates"));
            if *under_counter_fn {
                assert_eq!(*kind, "counter", "{alert}: rate/increase over {metric}");
            }
            used.insert(metric.clone());
        }
        for label in &found.labels {
            assert!(
                labels.contains(label),
                "{alert}: no metric has label {label}"
            );
        }
        for (label, value) in &found.matchers {
            let allowed: Vec<&str> = match label.as_str() {
                l if l == prometheus(mtls_core::metrics::HANDSHAKE_RESULT) => {
                    results.iter().copied().collect()
                }
                l if l == prometheus(mtls_core::metrics::CERT_KIND) => {
                    vec!["identity", "trust_anchor"]
                }
                l if l == prometheus(mtls_core::metrics::ROTATION_KIND) => {
                    vec!["identity", "trust_bundle"]
                }
                l if l == mtls_jwt::metrics::RESULT => {
                    vec![
                        "hit",
                        "miss",
                        "success",
                        "failure",
                        "found",
                        "no_records",
                        "failed",
                    ]
                }
                l if l == mtls_jwt::metrics::STATE => vec!["loaded", "skipped"],
                _ => continue,
            };
            for v in value.split('|') {
                assert!(allowed.contains(&v), "{alert}: {label} is never {v:?}");
            }
        }
    }
    // The three things the rules are for: handshake failures, expiry, JWT denials.
    for needed in [
        "grpc_server_tls_handshakes",
        "mtls_certificate_expiration_timestamp_seconds",
        "mtls_jwt_denied",
    ] {
        assert!(used.contains(needed), "no alert on {needed}");
    }
}

#[test]
fn the_tokenizer_finds_metrics_labels_and_refuses_what_is_not_ours() {
    let found = names(
        r#"sum by (reason) (rate(mtls_jwt_denied{result="x"}[5m])) / ignoring (reason) group_left sum(mtls_jwt_allowed) > 0.1"#,
    );
    assert_eq!(
        found.metrics,
        [
            ("mtls_jwt_denied".to_owned(), true),
            ("mtls_jwt_allowed".to_owned(), false)
        ]
    );
    assert_eq!(
        found.labels,
        ["reason", "result"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    );
    assert_eq!(found.matchers, [("result".to_owned(), "x".to_owned())]);
    let described = Descriptions::default();
    metrics::with_local_recorder(&described, bookstore::metrics::describe);
    let described = described.0.into_inner().unwrap();
    assert!(!described.contains_key("envoy_cluster_upstream_rq"));
    assert!(
        !described.contains_key("mtls_jwt_denied_total"),
        "no _total suffix"
    );
}
