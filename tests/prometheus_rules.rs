//! The collection's Prometheus alerting rules (ansible/kubemend/extras/prometheus/) pass
//! `promtool check rules`, and the `promtool test rules` cases in tests/prometheus/ pass, with
//! for every alert a case where it fires and one where it must not. promtool is Debian's
//! `prometheus` package, which scripts/install-deps installs; without it these tests fail.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RULES: &str = "ansible/kubemend/extras/prometheus/kubemend-alerts.yml";
const UNIT_TESTS: &str = "tests/prometheus";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rules_file() -> PathBuf {
    root().join(RULES)
}

/// Runs promtool in the repository; a missing promtool fails with how to install it.
fn promtool<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed (Debian's prometheus package): run `sudo \
             scripts/install-deps`, or `make test`, which runs it"
        ),
        Err(err) => panic!("cannot run promtool: {err}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The alerting rules of the rules file (recording rules have no `alert`).
fn alerts() -> Vec<Value> {
    let rules = yaml(&rules_file());
    let alerts: Vec<Value> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().iter())
        .filter(|rule| rule.get("alert").is_some())
        .cloned()
        .collect();
    assert!(!alerts.is_empty(), "{RULES} has no alerts");
    alerts
}

fn alert_name(alert: &Value) -> &str {
    alert["alert"].as_str().unwrap()
}

/// The `promtool test rules` files, sorted.
fn unit_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(UNIT_TESTS))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool test files in {UNIT_TESTS}");
    files
}

/// The names of the alerts some case expects to fire, and of those some case expects silent.
fn tested_alerts() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for file in unit_test_files() {
        let cases = yaml(&file);
        for group in cases["tests"].as_array().unwrap() {
            for case in group["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap().to_owned();
                let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 {
                    silent.insert(name);
                } else {
                    firing.insert(name);
                }
            }
        }
    }
    (firing, silent)
}

#[test]
fn alert_rules_pass_promtool_check_and_every_alert_is_unit_tested() {
    assert_success(
        "promtool check rules",
        &promtool([OsStr::new("check"), OsStr::new("rules"), OsStr::new(RULES)]),
    );
    let files = unit_test_files();
    let mut args = vec![OsStr::new("test"), OsStr::new("rules")];
    args.extend(files.iter().map(|f| f.as_os_str()));
    assert_success("promtool test rules", &promtool(args));

    let (firing, silent) = tested_alerts();
    let untested: Vec<String> = alerts()
        .iter()
        .map(alert_name)
        .flat_map(|name| {
            let mut missing = Vec::new();
            if !firing.contains(name) {
                missing.push(format!("{name} (no case where it fires)"));
            }
            if !silent.contains(name) {
                missing.push(format!("{name} (no case where it stays silent)"));
            }
            missing
        })
        .collect();
    assert!(
        untested.is_empty(),
        "alerts of {RULES} without promtool test cases in {UNIT_TESTS}: {}",
        untested.join(", ")
    );
}

/// The README promises for each alert a severity, what happened, and which kubemend command
/// to run.
#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_kubemend_runbook() {
    for alert in alerts() {
        let name = alert_name(&alert);
        assert!(alert["for"].is_string(), "{name}: no `for`");
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}, expected warning or critical"
        );
        for key in ["summary", "description", "runbook"] {
            let text = alert["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no annotation {key}");
        }
        let runbook = alert["annotations"]["runbook"].as_str().unwrap();
        assert!(
            runbook.contains("kubemend "),
            "{name}: the runbook names no kubemend command: {runbook}"
        );
    }
}

/// A case file that loaded a copy of the rules would test the copy.
#[test]
fn unit_tests_load_the_rules_file_the_collection_ships() {
    let shipped = rules_file().canonicalize().unwrap();
    for file in unit_test_files() {
        let loaded: Vec<PathBuf> = yaml(&file)["rule_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|path| {
                let path = file.parent().unwrap().join(path.as_str().unwrap());
                path.canonicalize()
                    .unwrap_or_else(|err| panic!("{}: {}: {err}", file.display(), path.display()))
            })
            .collect();
        assert_eq!(loaded, std::slice::from_ref(&shipped), "{}", file.display());
    }
}

/// build.sh copies the collection tree as a whole; this holds it to carrying the rules.
#[test]
fn the_built_collection_carries_the_alert_rules() {
    let work = tempfile::tempdir().unwrap();
    // build.sh only copies the binary in as the modules: any file does here.
    let binary = work.path().join("kubemend");
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    let out = Command::new(root().join("ansible/kubemend/build.sh"))
        .arg("--binary")
        .arg(&binary)
        .arg("--into")
        .arg(work.path().join("build"))
        .output()
        .unwrap();
    assert_success("build.sh", &out);
    let built = work
        .path()
        .join("build/ansible_collections/kubemend/microk8s")
        .join(RULES.trim_start_matches("ansible/kubemend/"));
    assert_eq!(
        std::fs::read_to_string(&built).unwrap_or_default(),
        std::fs::read_to_string(rules_file()).unwrap(),
        "{} is not the rules file",
        built.display()
    );
}
