//! The CLI's views of a diagnose result: the text table, Prometheus text for node_exporter's
//! textfile collector (with the raw numbers the collection's alert rules take rates of), and
//! the exit status.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::report::{EXIT_FINDINGS, Finding, Report, Severity};

fn report_of(keys: &Map<String, Value>) -> Option<Report> {
    serde_json::from_value(Value::Object(keys.clone())).ok()
}

/// Width of the evidence and fix columns of the text table; longer cells wrap.
const WRAP: usize = 72;

/// Splits `text` into lines of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// The CLI's text: a table of the findings (severity, check, object, evidence, fix; the two
/// last wrapped), the skipped checks, and the summary line.
#[must_use]
pub fn text(keys: &Map<String, Value>) -> Option<String> {
    let report = report_of(keys).filter(|r| !r.checks.is_empty())?;
    let rows: Vec<[String; 5]> = report
        .findings
        .iter()
        .map(|f| {
            [
                f.severity.name().to_uppercase(),
                f.check.clone(),
                f.object.clone(),
                f.evidence.clone(),
                f.fix.as_ref().map_or_else(
                    || f.hint.clone(),
                    |fix| format!("{}: {}", fix.command, f.hint),
                ),
            ]
        })
        .collect();
    let header = ["SEVERITY", "CHECK", "OBJECT", "EVIDENCE", "FIX"].map(str::to_owned);
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let evidence = wrap(&row[3], WRAP);
        let fix = wrap(&row[4], WRAP);
        for i in 0..evidence.len().max(fix.len()) {
            let first = i == 0;
            let cell = |c: &String| if first { c.clone() } else { String::new() };
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                cell(&row[0]),
                cell(&row[1]),
                cell(&row[2]),
                evidence.get(i).map_or("", String::as_str),
                fix.get(i).map_or("", String::as_str),
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = WRAP,
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    certificate_table(&report, &mut out);
    for check in report.checks.iter().filter(|c| c.status == "skipped") {
        let _ = writeln!(
            out,
            "skipped: {}: {}",
            check.check,
            check.reason.as_deref().unwrap_or_default()
        );
    }
    Some(out)
}

/// Every certificate the certs check listed, with its node: the `certs` of each node's summary
/// finding.
fn node_certs(report: &Report) -> Vec<(&str, &Map<String, Value>)> {
    findings_of(report, "certs", "certs:node/")
        .into_iter()
        .flat_map(|f| {
            let node = node_of(f);
            f.data
                .get("certs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(move |c| Some((node, c.as_object()?)))
        })
        .collect()
}

/// The certificates the certs check read, one line each: node, certificate, days left, notAfter,
/// subject and issuer; nothing when it listed none.
fn certificate_table(report: &Report, out: &mut String) {
    let rows: Vec<[String; 6]> = node_certs(report)
        .into_iter()
        .map(|(node, cert)| {
            let text = |key: &str| match cert.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            [
                node.to_owned(),
                text("cert"),
                text("days_left"),
                text("not_after"),
                text("subject"),
                text("issuer"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let header = [
        "NODE",
        "CERTIFICATE",
        "DAYS LEFT",
        "NOT AFTER",
        "SUBJECT",
        "ISSUER",
    ]
    .map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    out.push('\n');
    for row in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:>w2$}  {:w3$}  {:w4$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    }
    out.push('\n');
}

/// The result in Prometheus text format, for node_exporter's textfile collector: a gauge per
/// check and severity (`kubemend_diagnose_findings`), whether each check was skipped, and
/// whether the run succeeded.
#[must_use]
pub fn prometheus(keys: &Map<String, Value>, failed: bool) -> String {
    let report = report_of(keys).unwrap_or_default();
    let mut out = String::new();
    out.push_str(
        "# HELP kubemend_diagnose_findings Findings of kubemend diagnose by check and severity.\n\
         # TYPE kubemend_diagnose_findings gauge\n",
    );
    for check in &report.checks {
        for severity in Severity::ALL {
            let n = report
                .findings
                .iter()
                .filter(|f| f.check == check.check && f.severity == severity)
                .count();
            let _ = writeln!(
                out,
                "kubemend_diagnose_findings{{check=\"{}\",severity=\"{}\"}} {n}",
                check.check,
                severity.name()
            );
        }
    }
    out.push_str(
        "# HELP kubemend_diagnose_check_skipped Whether a check of kubemend diagnose could not run.\n\
         # TYPE kubemend_diagnose_check_skipped gauge\n",
    );
    for check in &report.checks {
        let _ = writeln!(
            out,
            "kubemend_diagnose_check_skipped{{check=\"{}\"}} {}",
            check.check,
            u8::from(check.status == "skipped")
        );
    }
    raw_gauges(&report, &mut out);
    ipam_gauges(&report, &mut out);
    write_gauge(
        &mut out,
        "kubemend_cert_days_left",
        "Whole days until each node certificate's notAfter (negative once expired); cert \
         \"served\" is the one the node's apiserver serves when no file read over SSH is it.",
        node_certs(&report)
            .into_iter()
            .filter_map(|(node, cert)| {
                Some((
                    format!(
                        "{{node=\"{}\",cert=\"{}\"}}",
                        label(node),
                        label(cert.get("cert")?.as_str()?)
                    ),
                    cert.get("days_left")?.as_f64()?,
                ))
            })
            .collect(),
    );
    let _ = write!(
        out,
        "# HELP kubemend_diagnose_success Whether kubemend diagnose reached the cluster and ran.\n\
         # TYPE kubemend_diagnose_success gauge\n\
         kubemend_diagnose_success {}\n",
        u8::from(!failed)
    );
    out
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The numbers behind the findings, for rules that take rates and thresholds of their own
/// (the collection's alert rules): each gauge only when its check ran and read it.
fn raw_gauges(report: &Report, out: &mut String) {
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        write_gauge(out, name, help, samples);
    };
    let of = |check: &str, id_part: &str| findings_of(report, check, id_part);
    gauge(
        "kubemend_leader_lease_transitions",
        "leaseTransitions of the kube-scheduler and kube-controller-manager Leases (only grows).",
        of("leader_leases", "lease/")
            .into_iter()
            .filter_map(|f| {
                let lease = f.object.rsplit('/').next()?;
                Some((
                    format!("{{lease=\"{}\"}}", label(lease)),
                    number(f, "lease_transitions")?,
                ))
            })
            .collect(),
    );
    let forbidden = of("apiserver_403", "apiserver/");
    gauge(
        "kubemend_apiserver_forbidden_total",
        "403 answers of the API server diagnose asked, since it started.",
        forbidden
            .iter()
            .filter_map(|f| Some((String::new(), number(f, "forbidden_total")?)))
            .collect(),
    );
    gauge(
        "kubemend_apiserver_forbidden_per_minute",
        "403 answers per minute of that API server, measured during the run.",
        forbidden
            .iter()
            .filter_map(|f| Some((String::new(), number(f, "forbidden_per_minute")?)))
            .collect(),
    );
    let locked = of("kubelite", "kubelite:database_locked:");
    gauge(
        "kubemend_dqlite_locked_errors",
        "`database is locked` lines in each unit's journal over the window.",
        locked
            .iter()
            .flat_map(|f| {
                let node = node_of(f);
                f.data
                    .get("per_unit")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(move |(unit, n)| {
                        Some((
                            format!("{{node=\"{}\",unit=\"{}\"}}", label(node), label(unit)),
                            n.as_f64()?,
                        ))
                    })
            })
            .collect(),
    );
    let watch = of("kubelite", "kubelite:watch_errors:");
    gauge(
        "kubemend_watch_errors",
        "Watch-stream errors in each node's kubelite journal over the window.",
        watch
            .iter()
            .filter_map(|f| {
                let node = f.data.get("node").and_then(Value::as_str)?;
                Some((format!("{{node=\"{}\"}}", label(node)), number(f, "count")?))
            })
            .collect(),
    );
    gauge(
        "kubemend_journal_window_seconds",
        "How far back the journal counts reach, in seconds.",
        locked
            .iter()
            .chain(&watch)
            .find_map(|f| number(f, "window_seconds"))
            .map(|w| (String::new(), w))
            .into_iter()
            .collect(),
    );
}

/// Calico IPAM's gauges: leaked addresses, orphaned handles, each pool's use.
fn ipam_gauges(report: &Report, out: &mut String) {
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        write_gauge(out, name, help, samples);
    };
    let of = |check: &str, id_part: &str| findings_of(report, check, id_part);
    let ipam = of("calico_ipam", "calico_ipam:ipam");
    for (name, key, help) in [
        (
            "kubemend_calico_ipam_leaked_addresses",
            "leaked",
            "Calico addresses nothing uses whose pod is gone or finished (one scan).",
        ),
        (
            "kubemend_calico_ipam_orphaned_handles",
            "orphaned_handles",
            "Calico IPAM handles older than 15m that no allocation references (one scan).",
        ),
    ] {
        gauge(
            name,
            help,
            ipam.iter()
                .filter_map(|f| Some((String::new(), number(f, key)?)))
                .collect(),
        );
    }
    gauge(
        "kubemend_calico_ipam_pool_utilisation_percent",
        "Allocated addresses of each Calico IPPool, in percent of its size.",
        of("calico_ipam", "calico_ipam:ippool/")
            .into_iter()
            .filter_map(|f| {
                let pool = f.object.strip_prefix("ippool/")?;
                Some((
                    format!("{{pool=\"{}\"}}", label(pool)),
                    number(f, "utilisation_percent")?,
                ))
            })
            .collect(),
    );
}

/// The node a finding's data names (empty when none).
fn node_of(f: &Finding) -> &str {
    f.data
        .get("node")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A number in a finding's data.
fn number(f: &Finding, key: &str) -> Option<f64> {
    f.data.get(key).and_then(Value::as_f64)
}

/// The findings of `check` whose id contains `id_part`.
fn findings_of<'a>(report: &'a Report, check: &str, id_part: &str) -> Vec<&'a Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.check == check && f.id.contains(id_part))
        .collect()
}

/// One gauge with its samples, nothing when it has none.
fn write_gauge(out: &mut String, name: &str, help: &str, samples: Vec<(String, f64)>) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The CLI's exit status for a run that did not fail: [`EXIT_FINDINGS`] when a finding
/// reached `fail_on`.
#[must_use]
pub fn exit_code(keys: &Map<String, Value>) -> Option<i32> {
    (keys.get("fail_on_reached") == Some(&Value::Bool(true))).then_some(EXIT_FINDINGS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::Timestamp;

    use crate::actions::calico_ipam::scan::{Findings, PoolUse};
    use crate::actions::diagnose::checks::apiserver_403::{Forbidden, forbidden_finding};
    use crate::actions::diagnose::checks::calico_ipam::ipam_findings;
    use crate::actions::diagnose::checks::kubelite::{incident_node, kubelite_findings, limits};
    use crate::actions::diagnose::checks::leader_leases::{LeaderChanges, lease_finding};
    use crate::actions::diagnose::report::FailOn;
    use crate::actions::diagnose::{Check, finish, record};
    use crate::outcome::Outcome;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn prometheus_output_carries_the_raw_numbers_for_alert_rules() {
        let mut out: Outcome<Report> = Outcome::default();
        record(
            &mut out,
            Check::Kubelite,
            Ok(kubelite_findings(&incident_node(), &limits())),
        );
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("k8s03_0c1d".into()),
                renew_time: Some(MicroTime(ts("2026-05-15T07:39:55Z"))),
                lease_duration_seconds: Some(60),
                lease_transitions: Some(4499),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        record(
            &mut out,
            Check::LeaderLeases,
            Ok(vec![lease_finding(
                "kube-scheduler",
                Some(&lease),
                ts("2026-05-15T07:40:00Z"),
                &LeaderChanges::default(),
                1,
            )]),
        );
        let forbidden = Forbidden {
            total: 721.0,
            top: Vec::new(),
            started: Some(1.7787e9),
        };
        record(
            &mut out,
            Check::Apiserver403,
            Ok(vec![forbidden_finding(
                &forbidden,
                Some((12.0, 10)),
                1_778_703_600,
                10,
                "https://vip",
            )]),
        );
        let ipam = Findings {
            leaked: Vec::new(),
            pools: vec![PoolUse {
                name: "default-ipv4-ippool".into(),
                cidr: "10.1.0.0/16".into(),
                disabled: false,
                size: 65_536,
                blocks: 4,
                allocated: 6_554,
                leaked: 0,
                utilisation_percent: 10.0,
            }],
            ..Findings::default()
        };
        record(
            &mut out,
            Check::CalicoIpam,
            Ok(ipam_findings(
                "crd.projectcalico.org/v1",
                &ipam,
                &crate::k8s::duration::Duration::from_secs(900),
            )),
        );
        finish(&mut out.report, FailOn::Never);
        let Value::Object(keys) = serde_json::to_value(&out.report).unwrap() else {
            unreachable!()
        };
        let metrics = prometheus(&keys, false);
        for line in [
            "kubemend_calico_ipam_leaked_addresses 0",
            "kubemend_calico_ipam_orphaned_handles 0",
            "kubemend_calico_ipam_pool_utilisation_percent{pool=\"default-ipv4-ippool\"} 10",
            "kubemend_leader_lease_transitions{lease=\"kube-scheduler\"} 4499",
            "kubemend_apiserver_forbidden_total 721",
            "kubemend_apiserver_forbidden_per_minute 12",
            "kubemend_dqlite_locked_errors{node=\"k8s02\",unit=\"snap.microk8s.daemon-kubelite\"} 30",
            "kubemend_dqlite_locked_errors{node=\"k8s02\",unit=\"snap.microk8s.daemon-k8s-dqlite\"} 0",
            "kubemend_watch_errors{node=\"k8s02\"} 4",
            "kubemend_journal_window_seconds 900",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        // A gauge nothing read is left out, not reported as 0.
        let mut none: Outcome<Report> = Outcome::default();
        record(
            &mut none,
            Check::Kubelite,
            Err("no SSH options given".into()),
        );
        let Value::Object(keys) = serde_json::to_value(&none.report).unwrap() else {
            unreachable!()
        };
        assert!(!prometheus(&keys, false).contains("kubemend_watch_errors"));
    }

    #[test]
    fn certificates_are_gauges_and_a_table_of_their_own() {
        use crate::actions::diagnose::checks::certs::{CertLimits, NodeCerts, cert_findings};
        use crate::certs::{CertInfo, NodeCert};
        let cert = |name: &str, days_left: i64| NodeCert {
            path: format!("/var/snap/microk8s/current/certs/{name}"),
            name: name.into(),
            info: Some(CertInfo {
                subject: "CN=127.0.0.1".into(),
                issuer: "CN=10.152.183.1".into(),
                not_before: "2026-12-06T11:06:07Z".into(),
                not_after: "2026-12-11T11:06:07Z".into(),
                days_left,
            }),
            problem: None,
        };
        let reading = NodeCerts {
            node: "k8s01".into(),
            files: Some(Ok(vec![cert("server.crt", 5), cert("ca.crt", -1)])),
            ..NodeCerts::default()
        };
        let limits = CertLimits {
            warning_days: 30,
            critical_days: 7,
            ..CertLimits::default()
        };
        let mut out: Outcome<Report> = Outcome::default();
        record(&mut out, Check::Certs, Ok(cert_findings(&reading, &limits)));
        finish(&mut out.report, FailOn::Never);
        let Value::Object(keys) = serde_json::to_value(&out.report).unwrap() else {
            unreachable!()
        };
        let metrics = prometheus(&keys, false);
        for line in [
            "kubemend_cert_days_left{node=\"k8s01\",cert=\"server.crt\"} 5",
            "kubemend_cert_days_left{node=\"k8s01\",cert=\"ca.crt\"} -1",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
        }
        let table = text(&keys).unwrap();
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("NODE   CERTIFICATE  DAYS LEFT")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("k8s01  server.crt           5  2026-12-11")),
            "{table}"
        );
    }
}
