//! The Grafana dashboard `docs/grafana/portcullis.json` against the real
//! `/metrics` of the `metrics-prometheus` example: its structure (Classic
//! model, a datasource variable, `$__rate_interval`), its queries' syntax,
//! and every metric and label its queries name, which must appear in the
//! example's Prometheus output once events of every family happened.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use http::StatusCode;
use portcullis::events::{AuthEvent, AuthEventKind};
use portcullis::otel::Gauge;
use portcullis::refresh::MemoryRefreshStore;
use portcullis_tests::{TestServer, client, cookie_value};
use serde_json::Value;

const DASHBOARD: &str = include_str!("../../docs/grafana/portcullis.json");

/// Labels Prometheus adds when it scrapes, or that histograms carry.
const SCRAPE_LABELS: &[&str] = &["job", "instance", "le"];

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("the dashboard is JSON")
}

/// Every PromQL query of the dashboard: panel targets and variable queries.
fn queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in d["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            out.push(var["query"]["query"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// `expr` without what names labels or values: quoted strings, matcher
/// lists `{...}` and `by (...)` / `without (...)` groupings.
fn without_labels(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    loop {
        let next = [
            rest.find('"').map(|i| (i, "\"")),
            rest.find('{').map(|i| (i, "}")),
            rest.find("by (").map(|i| (i, ")")),
            rest.find("without (").map(|i| (i, ")")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(i, _)| *i);
        let Some((at, close)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let from = at + 1 + rest[at..].find(['"', '{', '(']).unwrap_or(0);
        let end = rest[from..].find(close).expect("balanced") + from;
        out.push(' ');
        rest = &rest[end + 1..];
    }
}

/// The `portcullis_*` / `target_info` metric names in `expr`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    without_labels(expr)
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("portcullis_") || *w == "target_info")
        .map(str::to_owned)
        .collect()
}

/// The label names `expr` uses: matcher keys `{k="v"}`, `by (...)`
/// groupings, and `label_values(metric, label)`.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    let words = |s: &str| {
        s.split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
    };
    // Matchers: inside {...}, keys before =, !=, =~ or !~.
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').expect("balanced braces") + open;
        for matcher in rest[open + 1..close].split(',') {
            let key: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !key.is_empty() {
                labels.insert(key);
            }
        }
        rest = &rest[close + 1..];
    }
    // Groupings: by (...).
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        let open = at + 3;
        let close = rest[open..].find(')').expect("balanced parentheses") + open;
        labels.extend(words(&rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    if let Some((_, label)) = expr
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|inner| inner.rsplit_once(','))
    {
        labels.insert(label.trim().to_owned());
    }
    labels
}

/// Brackets, braces and parentheses nest and close; quotes pair up.
fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_string = false;
    for c in expr.chars() {
        if in_string {
            in_string = c != '"';
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_string
}

#[test]
fn the_dashboard_is_a_classic_model_on_a_datasource_variable() {
    let d = dashboard();
    assert_eq!(d["uid"], "portcullis-auth");
    assert!(d["uid"].as_str().unwrap().len() <= 40);
    assert!(d["title"].is_string());
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert!(d.get("id").is_none_or(Value::is_null));

    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = HashSet::new();
    let mut cells = HashSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap()),
            "{title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        // No two panels overlap.
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps at {cx},{cy}");
            }
        }
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{title}");
        if p["type"] == "stat" {
            assert_eq!(p["options"]["reduceOptions"]["calcs"][0], "lastNotNull");
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let mut refs = HashSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(balanced(expr), "{title}: {expr}");
            assert!(expr.contains("job=~\"$job\""), "{title}: {expr}");
            // Graphs follow Grafana's scrape-aware window; stats cover 1h.
            for window in expr.match_indices('[').map(|(i, _)| &expr[i..]) {
                let window = &window[..=window.find(']').unwrap()];
                let expected = if p["type"] == "stat" {
                    "[1h]"
                } else {
                    "[$__rate_interval]"
                };
                assert_eq!(window, expected, "{title}: {expr}");
            }
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
        }
    }
}

#[test]
fn the_extraction_sees_names_and_labels_and_refuses_broken_queries() {
    let expr = r#"histogram_quantile(0.99, sum by (le, portcullis_layer) (rate(portcullis_authentication_authenticate_duration_seconds_bucket{job=~"$job", error_type!="x"}[$__rate_interval])))"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        ["portcullis_authentication_authenticate_duration_seconds_bucket"]
    );
    assert_eq!(
        label_names(expr).into_iter().collect::<Vec<_>>(),
        ["error_type", "job", "le", "portcullis_layer"]
    );
    assert!(balanced(expr));
    assert!(!balanced("sum(rate(portcullis_x_total[5m])"));
    assert!(!balanced(r#"portcullis_x_total{job="a}"#));
    assert!(!balanced("sum(rate(portcullis_x_total[5m)))"));
    assert_eq!(
        label_names("label_values(target_info, job)")
            .into_iter()
            .collect::<Vec<_>>(),
        ["job"]
    );
}

/// The example on a real socket; events of every family: the example's
/// own routes for what its layers and store do, and its `Events` handle for
/// the layers it does not mount (CSRF, refresh, login throttle, revocation
/// feeds, key rotation), exactly as those layers emit them.
async fn exposition() -> String {
    let app = metrics_prometheus::app().unwrap();
    // An app with a refresh store watches its families the same way.
    let families = MemoryRefreshStore::new();
    app.recorder
        .watch_gauge(Gauge::RefreshFamilies, "memory", move || {
            families.len() as u64
        });
    let events = app.events.clone();
    let _stuck = events.subscribe("stuck", 1);
    let server = TestServer::start(app.router).await;
    let http = client();

    let resp = http.post(server.url("/login/alice")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&resp, "__Host-session")
        .or_else(|| cookie_value(&resp, "session"))
        .expect("a session cookie");
    let cookie_name = if cookie_value(&resp, "__Host-session").is_some() {
        "__Host-session"
    } else {
        "session"
    };
    let token = resp.text().await.unwrap();
    // Decisions are timed one in 16 (the default): enough requests through
    // each layer for samples of both.
    for _ in 0..40 {
        let me = http
            .get(server.url("/me"))
            .header("cookie", format!("{cookie_name}={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        let api = http
            .get(server.url("/api/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), StatusCode::OK);
    }
    let revoke = http
        .post(server.url("/api/revoke"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::NO_CONTENT);
    let refused = http
        .get(server.url("/api/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let logout = http
        .post(server.url("/logout"))
        .header("cookie", format!("{cookie_name}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);

    let kid: Arc<str> = "k2".into();
    for (source, kind) in [
        (
            "csrf",
            AuthEventKind::CsrfRefused {
                reason: "csrf-cross-origin",
            },
        ),
        (
            "throttle",
            AuthEventKind::LoginFailed {
                reason: "invalid_credentials",
            },
        ),
        (
            "throttle",
            AuthEventKind::Throttled {
                retry_after: std::time::Duration::from_secs(60),
            },
        ),
        (
            "jwt",
            AuthEventKind::ReauthRequired {
                reason: "login-not-fresh",
            },
        ),
        ("session", AuthEventKind::LogoutEverywhere),
        ("session", AuthEventKind::SessionRenewed),
        ("session", AuthEventKind::SessionEvicted),
        ("session", AuthEventKind::SessionExpired),
        ("session", AuthEventKind::DeviceRevoked),
        ("refresh", AuthEventKind::PasswordChanged),
        ("refresh", AuthEventKind::RefreshRotated),
        ("refresh", AuthEventKind::RefreshReuseDetected),
        ("refresh", AuthEventKind::FamilyExpired),
        (
            "session",
            AuthEventKind::StoreUnavailable {
                store: "session",
                operation: "load",
            },
        ),
        ("redis", AuthEventKind::RevocationViewStale),
        ("redis", AuthEventKind::RevocationViewRecovered),
        ("jwt", AuthEventKind::KeyRotated { kid: kid.clone() }),
        ("jwt", AuthEventKind::KeyRetired { kid }),
    ] {
        events.emit(|| AuthEvent::new(source, kind));
    }
    assert!(events.dropped() > 0);

    let resp = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    resp.text().await.unwrap()
}

/// The metric names and label names of a Prometheus text exposition.
fn exposed(text: &str) -> (HashSet<String>, HashSet<String>) {
    let (mut names, mut labels) = (HashSet::new(), HashSet::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap();
        names.insert(line[..end].to_owned());
        if line.as_bytes()[end] == b'{' {
            let close = line.rfind('}').unwrap();
            for pair in line[end + 1..close].split("\",") {
                let key = pair.split('=').next().unwrap().trim();
                labels.insert(key.to_owned());
            }
        }
    }
    (names, labels)
}

#[tokio::test]
async fn every_metric_and_label_the_dashboard_queries_is_exported_by_the_example() {
    let text = exposition().await;
    let (names, labels) = exposed(&text);
    assert!(
        text.contains("service_name=\"metrics-prometheus\""),
        "target_info names the service"
    );
    let d = dashboard();
    let mut used = BTreeSet::new();
    for expr in queries(&d) {
        for name in metric_names(&expr) {
            assert!(
                names.contains(&name),
                "{name} (in {expr}) is not in the example's /metrics:\n{text}"
            );
            used.insert(name);
        }
        for label in label_names(&expr) {
            assert!(
                SCRAPE_LABELS.contains(&label.as_str()) || labels.contains(&label),
                "label {label} (in {expr}) is on no exported metric"
            );
        }
    }
    // The dashboard shows every portcullis metric the example exports.
    let shown: BTreeSet<&str> = used
        .iter()
        .map(|n| {
            ["_bucket", "_count", "_sum"]
                .iter()
                .fold(n.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n))
        })
        .collect();
    for name in names.iter().filter(|n| n.starts_with("portcullis_")) {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(shown.contains(base), "{name} is on no panel");
    }
}
