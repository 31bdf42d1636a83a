//! The secret scan's checker: reads every file the recorder wrote
//! (`portcullis_tests::secret_scan`), loads every registered secret, and
//! fails when any recorded tracing field or auth event contains one.
//!
//! ```text
//! secret-scan <dir> [--require-every-kind] [--min-events N] [--min-tracing N] [--min-secrets N]
//! ```
//!
//! Exit status: 0 clean, 1 a secret was found or a guard failed, 2 bad
//! usage or unreadable files. The guards fail a scan that saw too little to
//! mean anything: fewer auth events, tracing lines or secrets than the
//! minimums, or (with `--require-every-kind`) an `AuthEventKind` no test
//! emitted.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aho_corasick::AhoCorasick;
use portcullis_core::events::AuthEventKind;
use serde_json::Value;

/// Hits printed in full; the rest are counted.
const MAX_PRINTED: usize = 50;

struct Options {
    dir: PathBuf,
    every_kind: bool,
    min_events: usize,
    min_tracing: usize,
    min_secrets: usize,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: secret-scan <dir> [--require-every-kind] [--min-events N] [--min-tracing N] [--min-secrets N]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Option<Options> {
    let mut dir = None;
    let mut opts = Options {
        dir: PathBuf::new(),
        every_kind: false,
        min_events: 100,
        min_tracing: 1000,
        min_secrets: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = || args.next()?.parse().ok();
        match arg.as_str() {
            "--require-every-kind" => opts.every_kind = true,
            "--min-events" => opts.min_events = number()?,
            "--min-tracing" => opts.min_tracing = number()?,
            "--min-secrets" => opts.min_secrets = number()?,
            _ if !arg.starts_with('-') && dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => return None,
        }
    }
    opts.dir = dir?;
    Some(opts)
}

/// One recorded line other than a secret, with the text fields to check.
struct Record {
    file: String,
    test: String,
    target: String,
    fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Loaded {
    secrets: BTreeSet<String>,
    records: Vec<Record>,
    events: usize,
    tracing: usize,
    kinds: BTreeSet<String>,
    bad_lines: usize,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn load(dir: &Path) -> std::io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        if !path.is_file() {
            continue;
        }
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let content = std::fs::read_to_string(&path)?;
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
                // A process killed mid-write can leave one torn line.
                loaded.bad_lines += 1;
                continue;
            };
            let get = |k: &str| map.get(k).map(text).unwrap_or_default();
            let kind = get("kind");
            let mut fields = Vec::new();
            match kind.as_str() {
                "secret" => {
                    loaded.secrets.insert(get("value"));
                    continue;
                }
                "auth_event" => {
                    loaded.events += 1;
                    loaded.kinds.insert(get("event"));
                    fields.push(("debug".to_owned(), get("debug")));
                    fields.push(("json".to_owned(), get("json")));
                }
                "event" | "span" | "record" => {
                    loaded.tracing += 1;
                    fields.push(("name".to_owned(), get("name")));
                    if let Some(Value::Object(f)) = map.get("fields") {
                        fields.extend(f.iter().map(|(k, v)| (k.clone(), text(v))));
                    }
                }
                _ => {
                    loaded.bad_lines += 1;
                    continue;
                }
            }
            let target = if kind == "auth_event" {
                format!("auth_event:{}", get("source"))
            } else {
                format!("{kind}:{}:{}", get("target"), get("name"))
            };
            loaded.records.push(Record {
                file: file.clone(),
                test: get("test"),
                target,
                fields,
            });
        }
    }
    Ok(loaded)
}

/// A secret as printed: enough to find it in the test, not all of it.
fn shown(secret: &str) -> String {
    let head: String = secret.chars().take(6).collect();
    format!("{head}... ({} chars)", secret.chars().count())
}

fn main() -> ExitCode {
    let Some(opts) = parse_args() else {
        return usage();
    };
    let loaded = match load(&opts.dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("secret-scan: cannot read {}: {e}", opts.dir.display());
            return ExitCode::from(2);
        }
    };
    let secrets: Vec<&String> = loaded.secrets.iter().collect();
    println!(
        "secret-scan: {} secrets; {} auth events and {} tracing lines checked{}",
        secrets.len(),
        loaded.events,
        loaded.tracing,
        if loaded.bad_lines > 0 {
            format!(" ({} unreadable lines skipped)", loaded.bad_lines)
        } else {
            String::new()
        }
    );

    let mut hits = 0usize;
    if !secrets.is_empty() {
        let matcher = match AhoCorasick::new(&secrets) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("secret-scan: {e}");
                return ExitCode::from(2);
            }
        };
        for record in &loaded.records {
            for (field, value) in &record.fields {
                if let Some(m) = matcher.find(value.as_str()) {
                    hits += 1;
                    if hits <= MAX_PRINTED {
                        println!(
                            "LEAK file={} test={} target={} field={} secret={}",
                            record.file,
                            record.test,
                            record.target,
                            field,
                            shown(secrets[m.pattern().as_usize()])
                        );
                    }
                }
            }
        }
    }

    let mut failed = hits > 0;
    if hits > MAX_PRINTED {
        println!("... and {} more", hits - MAX_PRINTED);
    }
    if hits > 0 {
        println!("secret-scan: {hits} recorded fields contain a secret");
    }
    for (what, seen, min) in [
        ("auth events", loaded.events, opts.min_events),
        ("tracing lines", loaded.tracing, opts.min_tracing),
        ("secrets", secrets.len(), opts.min_secrets),
    ] {
        if seen < min {
            println!(
                "secret-scan: only {seen} {what} recorded (at least {min} expected): is the recorder installed?"
            );
            failed = true;
        }
    }

    let by_seen: BTreeMap<bool, Vec<&str>> =
        AuthEventKind::NAMES
            .iter()
            .fold(BTreeMap::new(), |mut map, name| {
                map.entry(loaded.kinds.contains(*name))
                    .or_insert_with(Vec::new)
                    .push(name);
                map
            });
    let seen = by_seen.get(&true).cloned().unwrap_or_default();
    let missing = by_seen.get(&false).cloned().unwrap_or_default();
    println!(
        "secret-scan: event kinds seen {}/{}: {}",
        seen.len(),
        AuthEventKind::NAMES.len(),
        seen.join(" ")
    );
    if !missing.is_empty() {
        println!("secret-scan: event kinds never seen: {}", missing.join(" "));
        if opts.every_kind {
            failed = true;
        }
    }

    if failed {
        println!("secret-scan: FAILED");
        ExitCode::FAILURE
    } else {
        println!("secret-scan: clean");
        ExitCode::SUCCESS
    }
}
