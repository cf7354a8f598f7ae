//! certs: each node's certificates and clock. Without node access, the certificate each node's
//! apiserver serves (a TLS handshake with its InternalIP at the apiserver's port) and its clock
//! (the Date of its answer); with SSH options, also every certificate file of the node
//! ([`certs::node_certs`]) and its clock over SSH. Fewer than `cert_warning_days` days left is
//! a warning, fewer than `cert_critical_days` or expired critical; a clock more than
//! `clock_skew_max` away from the API server's a warning.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use serde_json::{Map, Value, json};

use super::{Check, Outcome, Run, reason};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::certs::{self, CertInfo, Expiry, NodeCert, Served};
use crate::k8s::duration::format_duration;
use crate::k8s::nodes::{endpoint_port, internal_ip};
use crate::k8s::objects::Node;
use crate::ssh::{self, Target};

/// How long one TLS handshake (and its `GET /livez`) may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The most the check spends on one node over SSH.
const NODE_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// The cert label of the certificate an apiserver serves, when no file read over SSH is the
/// same certificate.
pub const SERVED: &str = "served";

/// The module and action that renews server.crt and front-proxy-client.crt.
const CERT_REFRESH: &str = "cert_refresh";

/// microk8s's documentation of `refresh-certs`, for what kubemend does not renew.
const REFRESH_CERTS_DOC: &str =
    "https://microk8s.io/docs/command-reference#heading--microk8s-refresh-certs";

/// Runs the check: the served certificates always, the files when SSH options were given.
pub(super) async fn run(d: &Diagnose, run: &mut Run<'_>) -> Outcome {
    let cluster = &run.cx.cluster;
    let listed = Api::<Node>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(cluster.error("list", "nodes"))
        .map_err(reason)?
        .items;
    let port = endpoint_port(&cluster.endpoint);
    let reference = reference_clock(&cluster.endpoint, port).await;
    let addresses: Vec<(
        String,
        Option<std::result::Result<std::net::IpAddr, String>>,
    )> = listed
        .iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, internal_ip(n))))
        .collect();
    let mut readings: Vec<NodeCerts> = ssh::each_bounded(addresses, |(node, ip)| async move {
        let served = match ip {
            None => None,
            Some(Err(text)) => Some(Err(format!("its InternalIP {text:?} is no IP address"))),
            Some(Ok(ip)) => Some(certs::served_cert((ip, port).into(), HANDSHAKE_TIMEOUT).await),
        };
        NodeCerts {
            node,
            served,
            ..NodeCerts::default()
        }
    })
    .await;
    if d.ssh_given {
        let targets = crate::microk8s::targets(&listed, d.nodes.as_deref()).map_err(reason)?;
        let read = ssh::each_bounded(targets.iter(), |t| read_node(d, t, run.cx.check_mode)).await;
        for (target, (files, clock)) in targets.iter().zip(read) {
            let reading = if let Some(r) = readings.iter_mut().find(|r| r.node == target.node) {
                r
            } else {
                readings.push(NodeCerts {
                    node: target.node.clone(),
                    ..NodeCerts::default()
                });
                readings.last_mut().ok_or("no reading")?
            };
            reading.files = Some(files);
            reading.clock = clock;
        }
    }
    if readings.iter().all(|r| !r.read_anything()) {
        return Err(format!(
            "no certificate could be read: {}",
            readings
                .iter()
                .map(NodeCerts::why_unread)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let limits = CertLimits {
        warning_days: d.cert_warning_days,
        critical_days: d.cert_critical_days,
        clock_skew_max: d.clock_skew_max.seconds(),
        reference,
        ssh_options: if d.ssh_given {
            d.ssh.given_options()
        } else {
            Map::new()
        },
    };
    Ok(readings
        .iter()
        .flat_map(|r| cert_findings(r, &limits))
        .collect())
}

/// The API server's clock, as the Date of the configured endpoint's answer, with this host's
/// clock when it came; None when it did not answer.
async fn reference_clock(endpoint: &str, port: u16) -> Option<(Timestamp, Timestamp)> {
    let uri: http::Uri = endpoint.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let lookup = tokio::net::lookup_host((host, port));
    let addr = tokio::time::timeout(HANDSHAKE_TIMEOUT, lookup)
        .await
        .ok()?
        .ok()?
        .next()?;
    let served = certs::served_cert(addr, HANDSHAKE_TIMEOUT).await.ok()?;
    Some((served.server_time?, served.received))
}

/// A node's certificate files and clock over SSH, within [`NODE_BUDGET`].
async fn read_node(
    d: &Diagnose,
    target: &Target,
    check_mode: bool,
) -> (
    std::result::Result<Vec<NodeCert>, String>,
    Option<std::result::Result<(Timestamp, Timestamp), String>>,
) {
    let read = async {
        let remote = ssh::connect(&d.ssh, target, check_mode)
            .await
            .map_err(|e| e.message_with_causes())?;
        let files = certs::node_certs(&remote)
            .await
            .map_err(|e| e.message_with_causes());
        let clock = certs::node_clock(&remote)
            .await
            .map(|clock| (clock, Timestamp::now()))
            .map_err(|e| e.message_with_causes());
        remote.close().await;
        Ok::<_, String>((files, Some(clock)))
    };
    match tokio::time::timeout(NODE_BUDGET, read).await {
        Ok(Ok((files, clock))) => (files, clock),
        Ok(Err(why)) => (Err(why), None),
        Err(_) => (
            Err(format!("no answer within {}s", NODE_BUDGET.as_secs())),
            None,
        ),
    }
}

/// What the check read of one node.
#[derive(Debug, Clone, Default)]
pub struct NodeCerts {
    /// The node.
    pub node: String,
    /// The certificate its apiserver serves (None: the node advertises no InternalIP).
    pub served: Option<std::result::Result<Served, String>>,
    /// Its certificate files over SSH (None: SSH not used).
    pub files: Option<std::result::Result<Vec<NodeCert>, String>>,
    /// Its clock over SSH and this host's when it was read.
    pub clock: Option<std::result::Result<(Timestamp, Timestamp), String>>,
}

impl NodeCerts {
    fn read_anything(&self) -> bool {
        matches!(self.served, Some(Ok(_))) || matches!(self.files, Some(Ok(_)))
    }

    fn why_unread(&self) -> String {
        let mut why = Vec::new();
        match &self.served {
            Some(Err(e)) => why.push(format!("served: {e}")),
            None => why.push("no InternalIP".into()),
            Some(Ok(_)) => {}
        }
        if let Some(Err(e)) = &self.files {
            why.push(format!("over SSH: {e}"));
        }
        format!("{}: {}", self.node, why.join(", "))
    }
}

/// What the certificate findings are judged against.
#[derive(Debug, Clone, Default)]
pub struct CertLimits {
    /// Fewer days left than this: a warning.
    pub warning_days: u32,
    /// Fewer days left than this: critical.
    pub critical_days: u32,
    /// Seconds a node's clock may be away from the API server's.
    pub clock_skew_max: i64,
    /// The API server's clock and this host's when it was read.
    pub reference: Option<(Timestamp, Timestamp)>,
    /// The SSH options diagnose was given, for the fixes.
    pub ssh_options: Map<String, Value>,
}

/// One certificate as the findings and gauges show it.
fn cert_data(cert: &str, path: Option<&str>, info: &CertInfo) -> Value {
    json!({
        "cert": cert,
        "path": path,
        "subject": info.subject,
        "issuer": info.issuer,
        "not_before": info.not_before,
        "not_after": info.not_after,
        "days_left": info.days_left,
    })
}

/// A certs finding about `what` on `node`, with its own id.
fn node_finding(what: &str, node: &str, severity: Severity, evidence: String) -> Finding {
    let mut f = finding(Check::Certs, severity, format!("node/{node}"), evidence);
    f.id = format!("certs:{what}:node/{node}");
    f.data.insert("node".into(), json!(node));
    f
}

/// "in 5 days", "today", "5 days ago".
fn days_text(days_left: i64) -> String {
    match days_left {
        0 => "within a day".into(),
        1 => "in 1 day".into(),
        -1 => "1 day ago".into(),
        d if d < 0 => format!("{} days ago", d.saturating_neg()),
        d => format!("in {d} days"),
    }
}

/// What to do about a certificate `cert` of `node` near its end: cert_refresh for the ones it
/// renews, else microk8s's documented manual procedure.
fn remedy(f: &mut Finding, cert: &str, node: &str, limits: &CertLimits) {
    if certs::RENEWABLE.contains(&cert) {
        let mut options = json!({"nodes": [node], "renew_before": limits.warning_days});
        if let Some(map) = options.as_object_mut() {
            map.extend(limits.ssh_options.clone());
        }
        f.hint = format!(
            "renew it on {node} (what `microk8s refresh-certs -e {cert}` does, node by node, \
             with kubelite restarted and checked after it)"
        );
        f.fix = Some(fix(CERT_REFRESH, &options));
    } else {
        f.hint = manual_hint(cert);
    }
}

/// The documented manual renewal of a certificate kubemend does not renew.
fn manual_hint(cert: &str) -> String {
    let how = match cert {
        "cluster.crt" => {
            "dqlite's cluster.crt is one certificate shared by every node, and no microk8s \
             command renews it: make a new one and put it (with its key) in every node's \
             backend directory while k8s-dqlite is stopped on all of them, by hand and with a \
             backup"
        }
        "ca.crt" | "front-proxy-ca.crt" => {
            "a CA is renewed by hand: `sudo microk8s refresh-certs -e ca.crt` on one node (a new \
             CA and every certificate it signs), then every other node leaves (`microk8s \
             leave`) and joins again (`microk8s add-node` there, `microk8s join` on the node); \
             every kubeconfig holding the old CA must be replaced"
        }
        _ => {
            "signed by the cluster CA, it is made anew with it: renew by hand as for ca.crt \
             (`sudo microk8s refresh-certs -e ca.crt` on one node, then every other node \
             leaves and joins again)"
        }
    };
    format!("{how}; kubemend does not do this ({REFRESH_CERTS_DOC})")
}

/// The findings of one node: a summary (every certificate, info), one finding per certificate
/// near its end, the served certificate when it is not the file, the clock, what could not be
/// read.
#[must_use]
pub fn cert_findings(reading: &NodeCerts, limits: &CertLimits) -> Vec<Finding> {
    let node = reading.node.as_str();
    let mut findings = Vec::new();
    let mut listed: Vec<Value> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    let files: &[NodeCert] = match &reading.files {
        Some(Ok(files)) => files,
        Some(Err(why)) => {
            let mut f = node_finding(
                "ssh",
                node,
                Severity::Warning,
                format!("its certificate files could not be read over SSH: {why}"),
            );
            "check SSH to the node (the kubelite check's options) and sudo -n for the login \
             user (become)"
                .clone_into(&mut f.hint);
            findings.push(f);
            &[]
        }
        None => &[],
    };
    for file in files {
        let Some(info) = &file.info else {
            unread.push(format!(
                "{}: {}",
                file.path,
                file.problem.as_deref().unwrap_or("unreadable")
            ));
            continue;
        };
        listed.push(cert_data(&file.name, Some(&file.path), info));
        if let Some(f) = expiry_finding(node, &file.name, info, "on disk", limits) {
            findings.push(f);
        }
    }
    match &reading.served {
        Some(Ok(served)) => {
            let file = files
                .iter()
                .find(|c| c.name == "server.crt")
                .and_then(|c| c.info.as_ref());
            served_findings(node, served, file, limits, &mut findings, &mut listed);
        }
        Some(Err(why)) => {
            let mut f = node_finding(
                SERVED,
                node,
                Severity::Warning,
                format!("the certificate its apiserver serves could not be read: {why}"),
            );
            "check that the node's apiserver is up (`microk8s status`, the kubelite journal) and \
             reachable from here at its InternalIP"
                .clone_into(&mut f.hint);
            findings.push(f);
        }
        None => unread.push("the served certificate: the node advertises no InternalIP".into()),
    }
    if let Some(f) = clock_finding(node, reading, limits) {
        findings.push(f);
    }
    findings.push(summary(node, listed, &unread, limits));
    findings
}

/// The node's summary: every certificate read, for the gauges and the certificate table.
fn summary(node: &str, listed: Vec<Value>, unread: &[String], limits: &CertLimits) -> Finding {
    let soonest = listed
        .iter()
        .min_by_key(|c| c["days_left"].as_i64().unwrap_or(i64::MAX));
    let mut evidence = match soonest {
        Some(c) => format!(
            "{} certificate(s) read, the first to expire {} {} ({})",
            listed.len(),
            c["cert"].as_str().unwrap_or_default(),
            days_text(c["days_left"].as_i64().unwrap_or_default()),
            c["not_after"].as_str().unwrap_or_default()
        ),
        None => "no certificate read".into(),
    };
    if !unread.is_empty() {
        let _ = write!(evidence, "; not read: {}", unread.join("; "));
    }
    let mut f = node_finding("summary", node, Severity::Info, evidence);
    f.id = format!("certs:node/{node}");
    f.hint = format!("nothing to do before {} days are left", limits.warning_days);
    f.data.insert("certs".into(), Value::Array(listed));
    f
}

/// A finding for a certificate with fewer than `warning_days` left; None when it has more.
fn expiry_finding(
    node: &str,
    cert: &str,
    info: &CertInfo,
    whence: &str,
    limits: &CertLimits,
) -> Option<Finding> {
    let (severity, state) =
        match certs::severity(info.days_left, limits.warning_days, limits.critical_days) {
            Expiry::Valid => return None,
            Expiry::Warning => (Severity::Warning, "expires"),
            Expiry::Critical => (Severity::Critical, "expires"),
            Expiry::Expired => (Severity::Critical, "expired"),
        };
    let mut f = node_finding(
        cert,
        node,
        severity,
        format!(
            "{cert} ({whence}: {}, issued by {}) {state} {} ({})",
            info.subject,
            info.issuer,
            days_text(info.days_left),
            info.not_after
        ),
    );
    let renewed = if cert == SERVED { "server.crt" } else { cert };
    remedy(&mut f, renewed, node, limits);
    if let Some(map) = cert_data(cert, None, info).as_object() {
        f.data.extend(map.clone());
    }
    Some(f)
}

/// The served certificate's findings: judged like a file unless it is server.crt as read over
/// SSH; a warning when the two differ (the apiserver still serves the old one).
fn served_findings(
    node: &str,
    served: &Served,
    file: Option<&CertInfo>,
    limits: &CertLimits,
    findings: &mut Vec<Finding>,
    listed: &mut Vec<Value>,
) {
    match file {
        Some(file) if same_certificate(file, &served.info) => return,
        Some(file) => {
            let mut f = node_finding(
                "served_differs",
                node,
                Severity::Warning,
                format!(
                    "the apiserver serves a certificate valid until {} ({}), server.crt on disk \
                     is valid until {} ({})",
                    served.info.not_after, served.info.subject, file.not_after, file.subject
                ),
            );
            "kubelite reads server.crt when it starts: restart it on this node so that it \
             serves the one on disk (kubelite_restart)"
                .clone_into(&mut f.hint);
            let mut options = json!({"nodes": [node]});
            if let Some(map) = options.as_object_mut() {
                map.extend(limits.ssh_options.clone());
            }
            f.fix = Some(fix("kubelite_restart", &options));
            findings.push(f);
        }
        None => {}
    }
    listed.push(cert_data(SERVED, None, &served.info));
    if let Some(f) = expiry_finding(
        node,
        SERVED,
        &served.info,
        "served by its apiserver",
        limits,
    ) {
        findings.push(f);
    }
}

/// Whether two readings are of the same certificate (their days left may differ: they were
/// counted at different moments).
fn same_certificate(a: &CertInfo, b: &CertInfo) -> bool {
    (&a.subject, &a.issuer, &a.not_before, &a.not_after)
        == (&b.subject, &b.issuer, &b.not_before, &b.not_after)
}

/// A warning when the node's clock (over SSH, else its apiserver's Date) is more than
/// `clock_skew_max` away from the API server's; None when within, or unknown.
fn clock_finding(node: &str, reading: &NodeCerts, limits: &CertLimits) -> Option<Finding> {
    let reference = limits.reference?;
    let (clock, whence) = match (&reading.clock, &reading.served) {
        (Some(Ok(clock)), _) => (*clock, "over SSH"),
        (_, Some(Ok(served))) => (
            (served.server_time?, served.received),
            "its apiserver's Date",
        ),
        _ => return None,
    };
    let skew = certs::skew_seconds(clock, reference);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "whole seconds of a skew far below i64's range"
    )]
    let whole = skew.round() as i64;
    if whole.abs() <= limits.clock_skew_max {
        return None;
    }
    let mut f = node_finding(
        "clock",
        node,
        Severity::Warning,
        format!(
            "its clock ({whence}) is {} {} the API server's (more than {})",
            format_duration(whole.abs()),
            if whole > 0 { "ahead of" } else { "behind" },
            format_duration(limits.clock_skew_max)
        ),
    );
    "certificates look valid or expired by the wrong clock, and leases and tokens expire early \
     or late: synchronise the node's clock (`timedatectl status`, NTP)"
        .clone_into(&mut f.hint);
    f.data.insert("clock_skew_seconds".into(), json!(skew));
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn info(days_left: i64) -> CertInfo {
        CertInfo {
            subject: "C=GB, ST=Canonical, L=Canonical, O=Canonical, OU=Canonical, CN=127.0.0.1"
                .into(),
            issuer: "CN=10.152.183.1".into(),
            not_before: "2026-12-06T11:06:07Z".into(),
            not_after: format!("2027-01-{:02}T11:06:07Z", 1 + days_left.clamp(0, 30)),
            days_left,
        }
    }

    fn file(name: &str, days_left: i64) -> NodeCert {
        NodeCert {
            path: format!("{}/{name}", certs::CERTS_DIR),
            name: name.into(),
            info: Some(info(days_left)),
            problem: None,
        }
    }

    fn limits() -> CertLimits {
        CertLimits {
            warning_days: 30,
            critical_days: 7,
            clock_skew_max: 30,
            reference: Some((ts("2026-12-06T11:00:00Z"), ts("2026-12-06T11:00:00Z"))),
            ssh_options: Map::new(),
        }
    }

    fn by_id<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {findings:#?}"))
    }

    fn served(days_left: i64) -> Served {
        Served {
            info: info(days_left),
            server_time: Some(ts("2026-12-06T11:00:01Z")),
            received: ts("2026-12-06T11:00:00Z"),
        }
    }

    #[test]
    fn a_server_certificate_with_four_days_left_is_critical_and_cert_refresh_renews_it() {
        // The handshake read it a moment before SSH did, at 5 days to the second.
        let mut early = served(4);
        early.info.days_left = 5;
        let reading = NodeCerts {
            node: "k8s01".into(),
            files: Some(Ok(vec![file("server.crt", 4), file("ca.crt", 3000)])),
            served: Some(Ok(early)),
            clock: None,
        };
        let mut limits = limits();
        limits
            .ssh_options
            .insert("ssh_user".into(), json!("k8sadmin"));
        let findings = cert_findings(&reading, &limits);
        let server = by_id(&findings, "certs:server.crt:node/k8s01");
        assert_eq!(server.severity, Severity::Critical);
        assert!(server.evidence.contains("in 4 days"), "{}", server.evidence);
        assert!(
            server.evidence.contains("CN=127.0.0.1"),
            "{}",
            server.evidence
        );
        assert_eq!(
            server.fix.as_ref().unwrap().command,
            "kubemend cert-refresh --nodes k8s01 --renew-before 30 --ssh-user k8sadmin"
        );
        // The served certificate is the file: no second finding for it.
        assert!(
            !findings.iter().any(|f| f.id.contains(SERVED)),
            "{findings:#?}"
        );
        let summary = by_id(&findings, "certs:node/k8s01");
        assert_eq!(summary.severity, Severity::Info);
        assert_eq!(summary.data["certs"].as_array().unwrap().len(), 2);
        assert!(
            summary.evidence.contains("server.crt in 4 days"),
            "{}",
            summary.evidence
        );
    }

    #[test]
    fn without_ssh_the_served_certificate_alone_is_judged() {
        let reading = NodeCerts {
            node: "k8s02".into(),
            served: Some(Ok(served(20))),
            ..NodeCerts::default()
        };
        let findings = cert_findings(&reading, &limits());
        let f = by_id(&findings, "certs:served:node/k8s02");
        assert_eq!(f.severity, Severity::Warning);
        let fix = f.fix.as_ref().unwrap();
        assert_eq!(fix.module, "cert_refresh");
        assert_eq!(
            fix.command,
            "kubemend cert-refresh --nodes k8s02 --renew-before 30"
        );
        let listed = &by_id(&findings, "certs:node/k8s02").data["certs"];
        assert_eq!(listed[0]["cert"], json!(SERVED));
        assert_eq!(listed[0]["days_left"], json!(20));
    }

    #[test]
    fn a_ca_near_its_end_gets_the_manual_procedure_never_a_fix() {
        for name in ["ca.crt", "front-proxy-ca.crt", "cluster.crt", "kubelet.crt"] {
            let reading = NodeCerts {
                node: "k8s01".into(),
                files: Some(Ok(vec![file(name, -2)])),
                ..NodeCerts::default()
            };
            let findings = cert_findings(&reading, &limits());
            let f = by_id(&findings, &format!("certs:{name}:node/k8s01"));
            assert_eq!(f.severity, Severity::Critical);
            assert!(f.evidence.contains("expired 2 days ago"), "{}", f.evidence);
            assert!(f.fix.is_none(), "{name}");
            assert!(f.hint.contains(REFRESH_CERTS_DOC), "{}", f.hint);
        }
        let reading = NodeCerts {
            node: "k8s01".into(),
            files: Some(Ok(vec![
                file("front-proxy-client.crt", 29),
                file("ca.crt", 30),
            ])),
            ..NodeCerts::default()
        };
        let findings = cert_findings(&reading, &limits());
        let f = by_id(&findings, "certs:front-proxy-client.crt:node/k8s01");
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.fix.as_ref().unwrap().module, "cert_refresh");
        assert!(!findings.iter().any(|f| f.id == "certs:ca.crt:node/k8s01"));
    }

    #[test]
    fn an_apiserver_serving_an_older_certificate_than_on_disk_needs_a_kubelite_restart() {
        let reading = NodeCerts {
            node: "k8s03".into(),
            files: Some(Ok(vec![file("server.crt", 365)])),
            served: Some(Ok(served(3))),
            clock: None,
        };
        let findings = cert_findings(&reading, &limits());
        let differs = by_id(&findings, "certs:served_differs:node/k8s03");
        assert_eq!(differs.severity, Severity::Warning);
        assert_eq!(differs.fix.as_ref().unwrap().module, "kubelite_restart");
        assert_eq!(
            by_id(&findings, "certs:served:node/k8s03").severity,
            Severity::Critical
        );
    }

    #[test]
    fn a_clock_beyond_clock_skew_max_is_a_warning_and_one_within_is_silent() {
        let mut reading = NodeCerts {
            node: "k8s01".into(),
            served: Some(Ok(served(300))),
            clock: Some(Ok((ts("2026-12-06T11:00:45Z"), ts("2026-12-06T11:00:00Z")))),
            ..NodeCerts::default()
        };
        let findings = cert_findings(&reading, &limits());
        let f = by_id(&findings, "certs:clock:node/k8s01");
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.evidence.contains("45s ahead of"), "{}", f.evidence);
        reading.clock = Some(Ok((ts("2026-12-06T10:59:40Z"), ts("2026-12-06T11:00:00Z"))));
        assert!(
            !cert_findings(&reading, &limits())
                .iter()
                .any(|f| f.id.starts_with("certs:clock"))
        );
        // Without SSH the apiserver's Date tells the node's clock.
        reading.clock = None;
        reading.served = Some(Ok(Served {
            server_time: Some(ts("2026-12-06T10:58:00Z")),
            ..served(300)
        }));
        let findings = cert_findings(&reading, &limits());
        let f = by_id(&findings, "certs:clock:node/k8s01");
        assert!(f.evidence.contains("2m behind"), "{}", f.evidence);
    }

    #[test]
    fn a_node_ssh_cannot_read_warns_and_keeps_what_tls_read() {
        let reading = NodeCerts {
            node: "k8s03".into(),
            files: Some(Err("connect: no answer within 10s".into())),
            served: Some(Ok(served(300))),
            clock: None,
        };
        let findings = cert_findings(&reading, &limits());
        assert_eq!(
            by_id(&findings, "certs:ssh:node/k8s03").severity,
            Severity::Warning
        );
        assert_eq!(
            by_id(&findings, "certs:node/k8s03").data["certs"][0]["cert"],
            json!(SERVED)
        );
    }
}
