//! cert_refresh: renews, node by node, the microk8s certificates that expire within
//! `renew_before` days, the way microk8s does it (`microk8s refresh-certs -e <cert>`, which
//! re-signs the certificate with the cluster's CA for 365 days and restarts kubelite), under the
//! same lock, pre-flight, order, gates and resume as kubelite_restart ([`super::rolling`]).
//!
//! microk8s signs each node's apiserver certificate (server.crt) and the front-proxy client
//! certificate (front-proxy-client.crt) for 365 days and never renews them by itself
//! (canonical/microk8s#5576): on the anniversary of the install the node's apiserver is no
//! longer trusted, or every aggregated API breaks. Those two are what this action renews
//! (`certificates`). The CA (ca.crt, front-proxy-ca.crt), dqlite's cluster.crt and the kubelet
//! and client certificates are read and reported, never renewed: a new CA means every node
//! leaves and rejoins the cluster, which is for an operator to do.
//!
//! # Pre-flight (besides the rolling operation's)
//! Each node's certificates under /var/snap/microk8s/current/certs and dqlite's cluster.crt are
//! read over SSH (subject, issuer, days left). A node where a certificate to renew is missing
//! or unreadable, or that is a worker (`var/lock/clustered.lock`: `microk8s refresh-certs`
//! does nothing there), fails the pre-flight. A certificate kubemend never renews that expires
//! within `renew_before` is a warning naming the manual procedure.
//!
//! # Proof (after the gates)
//! Each renewed certificate read back over SSH: a new expiry, more than `renew_before` days
//! away; for server.crt, the node's apiserver serving that very certificate (its notAfter read
//! through a TLS handshake), and answering /readyz through a client that verifies it with the
//! cluster's CA (unless `validate_certs: false`). Then, as for every rolling run, every node
//! Ready and the leader Leases held.
//!
//! # Idempotency
//! A node whose certificates in `certificates` all have at least `renew_before` days left is
//! skipped; the renewed ones get 365, so a second run changes nothing. A monthly run with the
//! default (30) renews each certificate in its last month, so it never expires.
//!
//! # Check mode
//! Every node's certificates with their days left, and which ones on which node would be
//! renewed (`would renew`); nothing is done, no lock is taken.
//!
//! # Errors
//! `renew_before` outside 1..364 or an unknown certificate fail before any SSH or API call. A
//! `refresh-certs` that fails is the failed gate `refresh-certs` with its output (microk8s then
//! restores its backup and restarts the node's services); nothing further is touched, and a
//! rerun resumes.

use std::net::SocketAddr;
use std::time::Instant;

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rolling::{
    self, NodeStep, Plan, Preflight, Rolling, RollingArgs, Step, StepData, StepFailed, StepKind,
    Words,
};
use super::{Action, Context};
use crate::certs::{self, NodeCert, RENEWABLE};
use crate::client::{ClusterArgs, NodeServer};
use crate::error::{Error, Result};
use crate::microk8s::SNAP_RESTART_LIMIT;
use crate::outcome::Outcome;
use crate::ssh::Remote;

/// Renew the microk8s certificates that expire within renew_before days (server.crt,
/// front-proxy-client.crt), one node at a time, with `microk8s refresh-certs`, proving each
/// node healthy and its new certificate served before the next.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in RollingArgs")]
    pub rolling: RollingArgs,

    /// Renew a certificate that has fewer than this many days left (1 to 364: a renewed one
    /// gets 365, so a second run renews nothing). The monthly maintenance's 30 renews each in
    /// its last month.
    #[arg(long, value_name = "DAYS")]
    #[serde(default = "default_renew_before")]
    pub renew_before: u32,

    /// The certificates to renew, among server.crt (the node's apiserver) and
    /// front-proxy-client.crt (the apiserver's client certificate towards aggregated APIs).
    /// The CA, dqlite's and the kubelet's are never renewed: they are reported.
    #[arg(long, value_enum, value_name = "CERT", value_delimiter = ',')]
    #[serde(default = "default_certificates")]
    pub certificates: Vec<Renewable>,
}

/// A certificate cert_refresh renews (`microk8s refresh-certs -e` takes it by its file name).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Deserialize,
    Serialize,
    JsonSchema,
    ValueEnum,
)]
pub enum Renewable {
    /// The node's apiserver serving certificate.
    #[serde(rename = "server.crt")]
    #[value(name = "server.crt")]
    Server,
    /// The apiserver's client certificate towards aggregated APIs.
    #[serde(rename = "front-proxy-client.crt")]
    #[value(name = "front-proxy-client.crt")]
    FrontProxyClient,
}

impl Renewable {
    /// Its file name under the certificates directory.
    #[must_use]
    pub fn file(self) -> &'static str {
        match self {
            Self::Server => RENEWABLE[0],
            Self::FrontProxyClient => RENEWABLE[1],
        }
    }
}

fn default_renew_before() -> u32 {
    30
}

fn default_certificates() -> Vec<Renewable> {
    vec![Renewable::Server, Renewable::FrontProxyClient]
}

/// A renewed certificate's validity (microk8s's gen_server_cert and gen_proxy_client_cert sign
/// for 365 days).
const RENEWED_DAYS: u32 = 365;

/// The file that makes a node a worker, where `microk8s refresh-certs` does nothing
/// (microk8s-resources/wrappers/microk8s-refresh-certs.wrapper).
const CLUSTERED_LOCK: &str = "/var/snap/microk8s/current/var/lock/clustered.lock";

/// How long one `microk8s refresh-certs -e` may take: the signing, then the restart of kubelite
/// it makes (as long as a `snap restart`), with room for the cluster agent's.
const REFRESH_LIMIT: std::time::Duration =
    SNAP_RESTART_LIMIT.saturating_add(std::time::Duration::from_secs(45));

/// How often the served certificate is read again while it is not the renewed one.
const SERVED_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The certificate-refresh step.
#[derive(Debug, Clone)]
pub struct RefreshCerts {
    renew_before: u32,
    certificates: Vec<String>,
}

/// The action: the rolling node operation with the certificate step.
#[derive(Debug)]
pub struct CertRefresh(Rolling);

/// The result keys: each node's certificates ([`StepData`]) with the common results.
pub type Report = rolling::Report<StepData>;

impl Action for CertRefresh {
    const NAME: &'static str = "cert_refresh";
    const ABOUT: &'static str = "Renew expiring microk8s certificates (server.crt, \
                                 front-proxy-client.crt) one node at a time, proving each healthy";
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        let (rolling, step) = RefreshCerts::split(options)?;
        Rolling::new(rolling, StepKind::RefreshCerts(step)).map(Self)
    }

    fn cluster_args(&self) -> &ClusterArgs {
        self.0.cluster_args()
    }

    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        Box::pin(self.0.plan(cx, out)).await
    }

    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        Box::pin(self.0.apply(cx, plan, out)).await
    }

    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        Box::pin(self.0.verify(cx, out)).await
    }
}

/// One certificate of one node.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct CertState {
    /// Its file name, e.g. C(server.crt); C(cluster.crt) is dqlite's.
    pub name: String,
    /// Its path on the node.
    pub path: String,
    /// Its subject.
    pub subject: Option<String>,
    /// Its issuer.
    pub issuer: Option<String>,
    /// When it expires (RFC 3339), as read in the pre-flight.
    pub not_after: Option<String>,
    /// Whole days left then (negative: expired).
    pub days_left: Option<i64>,
    /// C(renew) (C(would renew) in check mode), C(renewed), C(keep) (at least renew_before
    /// days left, or not in certificates), or C(report) (never renewed by kubemend).
    pub action: String,
    /// After the renewal: its new expiry, read back over SSH.
    pub renewed_not_after: Option<String>,
    /// After the renewal: whole days left.
    pub renewed_days_left: Option<i64>,
    /// server.crt after the renewal: the expiry of the certificate the node's apiserver serves
    /// (TLS handshake), the same as the file's.
    pub served_not_after: Option<String>,
    /// Why it could not be read.
    pub problem: Option<String>,
}

impl Step for RefreshCerts {
    const WORDS: Words = Words {
        doing: "renewing certificates",
        would_do: "would renew certificates",
        done: "renewed certificates",
        status: "renewed",
        would: "would renew",
    };
    const PREFLIGHT_HINT: &'static str = ", each certificate to renew readable on a node that is \
                                          not a worker";
    const GATE: &'static str = "refresh-certs";
    const PROVEN: &'static str = "certificates renewed";

    fn name(&self) -> &'static str {
        CertRefresh::NAME
    }

    fn service(&self) -> &'static str {
        "microk8s.daemon-kubelite"
    }

    fn limit(&self) -> String {
        format!(
            "each `microk8s refresh-certs -e` is given {}s",
            REFRESH_LIMIT.as_secs()
        )
    }

    /// Not the node's name alone: a kubelite_restart's record does not count as renewed.
    fn record_item(&self, node: &str) -> String {
        format!("{node} (certificates)")
    }

    async fn preflight(
        &self,
        _node: &str,
        remote: &Remote,
        _pre: &Preflight,
        _now: Timestamp,
    ) -> NodeStep<StepData> {
        let mut step = NodeStep::default();
        let (read, worker) = tokio::join!(
            certs::node_certs(remote),
            remote.run(false, "test", &["-e", CLUSTERED_LOCK])
        );
        if worker.is_ok_and(|w| w.success()) {
            step.problems.push(format!(
                "a worker node ({CLUSTERED_LOCK}): `microk8s refresh-certs` does nothing there; \
                 refresh on a control-plane node, then this node leaves and rejoins"
            ));
        }
        match read {
            Ok(read) => self.judge(&read, &mut step),
            Err(err) => step.problems.push(err.message_with_causes()),
        }
        step
    }

    async fn run(
        &self,
        _node: &str,
        remote: &Remote,
        step: &StepData,
        progress: &dyn Fn(&str),
    ) -> std::result::Result<(), StepFailed> {
        let mut changed = false;
        for cert in step.certificates.iter().filter(|c| c.action == "renew") {
            progress(&format!(
                "microk8s refresh-certs -e {} ({} days left)",
                cert.name,
                cert.days_left.unwrap_or_default()
            ));
            let output = remote
                .run_within(
                    REFRESH_LIMIT,
                    true,
                    "microk8s",
                    &["refresh-certs", "-e", &cert.name],
                )
                .await
                .map_err(|err| StepFailed {
                    observed: format!(
                        "the outcome of `microk8s refresh-certs -e {}` is unknown: {}",
                        cert.name,
                        err.message_with_causes()
                    ),
                    changed: true,
                })?;
            // microk8s takes a backup first and signs after "Creating new certificates"; a
            // failure before that changed nothing, one after it restored the backup and
            // restarted the node's services.
            changed |= output.stdout.contains("Creating new certificates");
            if !output.success() {
                return Err(StepFailed {
                    observed: format!(
                        "`microk8s refresh-certs -e {}` failed: {}",
                        cert.name,
                        output.tails(6)
                    ),
                    changed,
                });
            }
        }
        Ok(())
    }

    async fn prove(
        &self,
        node: &str,
        remote: &Remote,
        apiserver: Option<(SocketAddr, &NodeServer)>,
        step: &mut StepData,
        until: Instant,
    ) -> std::result::Result<(), String> {
        let read = certs::node_certs(remote).await.map_err(|e| {
            format!(
                "the certificates could not be read back: {}",
                e.message_with_causes()
            )
        })?;
        let mut problems = Vec::new();
        let mut server_after = None;
        for cert in step.certificates.iter_mut().filter(|c| c.action == "renew") {
            let info = read
                .iter()
                .find(|r| r.name == cert.name)
                .and_then(|r| r.info.clone());
            let Some(info) = info else {
                problems.push(format!("{} is not readable after its renewal", cert.name));
                continue;
            };
            cert.renewed_not_after = Some(info.not_after.clone());
            cert.renewed_days_left = Some(info.days_left);
            if cert.not_after.as_ref() == Some(&info.not_after)
                || info.days_left < i64::from(self.renew_before)
            {
                problems.push(format!(
                    "{} still expires {} ({} days) after `microk8s refresh-certs -e {}`",
                    cert.name, info.not_after, info.days_left, cert.name
                ));
                continue;
            }
            cert.action = "renewed".into();
            if cert.name == "server.crt" {
                server_after = Some(info.not_after.clone());
            }
        }
        if let (Some(expected), Some((address, server))) = (&server_after, apiserver) {
            match served_until(address, expected, until).await {
                Ok(served) => {
                    if let Some(cert) = step
                        .certificates
                        .iter_mut()
                        .find(|c| c.name == "server.crt")
                    {
                        cert.served_not_after = Some(served);
                    }
                }
                Err(why) => problems.push(format!("{node}'s apiserver at {address}: {why}")),
            }
            if server.credentials
                && let Err(why) = rolling::readyz(&server.cluster).await
            {
                problems.push(format!(
                    "{node}'s apiserver, verified with the cluster's CA, does not answer \
                     /readyz: {why}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    fn finished(&self, report: &Report) -> Option<String> {
        let renewed: Vec<String> = report
            .nodes
            .iter()
            .filter_map(|n| {
                let certs: Vec<&str> = n
                    .step
                    .certificates
                    .iter()
                    .filter(|c| c.action == "renewed")
                    .map(|c| c.name.as_str())
                    .collect();
                (!certs.is_empty()).then(|| format!("{} on {}", certs.join(" and "), n.name))
            })
            .collect();
        (!renewed.is_empty())
            .then(|| format!("renewed {} one node at a time", renewed.join(", then ")))
    }
}

impl RefreshCerts {
    /// Validates the step's own options (no I/O).
    fn split(options: Options) -> Result<(RollingArgs, Self)> {
        if !(1..RENEWED_DAYS).contains(&options.renew_before) {
            return Err(Error::InvalidOption {
                option: "renew_before".into(),
                problem: format!(
                    "{} is outside 1..364: a renewed certificate gets {RENEWED_DAYS} days, so \
                     with {} or more every run would renew it again",
                    options.renew_before, RENEWED_DAYS
                ),
            });
        }
        if options.certificates.is_empty() {
            return Err(Error::InvalidOption {
                option: "certificates".into(),
                problem: format!("is empty; name one or more of {}", RENEWABLE.join(", ")),
            });
        }
        // In microk8s's order, each once.
        let mut certificates = options.certificates;
        certificates.sort_unstable();
        certificates.dedup();
        let certificates = certificates
            .into_iter()
            .map(|c| c.file().to_owned())
            .collect();
        Ok((
            options.rolling,
            Self {
                renew_before: options.renew_before,
                certificates,
            },
        ))
    }

    /// What this run does with each certificate the node has: renew those of `certificates`
    /// with fewer than renew_before days left; report the others that expire as soon, with the
    /// manual procedure; skip the node when there is nothing to renew.
    fn judge(&self, read: &[NodeCert], step: &mut NodeStep<StepData>) {
        let before = i64::from(self.renew_before);
        for wanted in &self.certificates {
            if !read.iter().any(|c| &c.name == wanted && c.info.is_some()) {
                step.problems.push(format!(
                    "{}/{wanted} is missing or not a certificate: `microk8s refresh-certs -e \
                     {wanted}` cannot renew it",
                    certs::CERTS_DIR
                ));
            }
        }
        let mut kept = Vec::new();
        for cert in read {
            let info = cert.info.as_ref();
            let days = info.map(|i| i.days_left);
            let renewable = self.certificates.contains(&cert.name);
            let action = match days {
                Some(days) if renewable && days < before => "renew",
                Some(days) if !renewable && days < before => {
                    step.warnings.push(manual_renewal(&cert.name, days));
                    "report"
                }
                _ if renewable => "keep",
                _ => "report",
            };
            if action == "keep"
                && let Some(days) = days
            {
                kept.push(format!("{} {days} days", cert.name));
            }
            step.node.certificates.push(CertState {
                name: cert.name.clone(),
                path: cert.path.clone(),
                subject: info.map(|i| i.subject.clone()),
                issuer: info.map(|i| i.issuer.clone()),
                not_after: info.map(|i| i.not_after.clone()),
                days_left: days,
                action: action.into(),
                problem: cert.problem.clone(),
                ..CertState::default()
            });
        }
        if !step.node.certificates.iter().any(|c| c.action == "renew") {
            step.skip = Some(format!(
                "{} left: at least renew_before ({before} days)",
                kept.join(", ")
            ));
        }
    }
}

/// The warning for a certificate kubemend never renews that expires within renew_before.
fn manual_renewal(name: &str, days: i64) -> String {
    let when = if days < 0 {
        format!("expired {} days ago", -days)
    } else {
        format!("expires in {days} days")
    };
    let how = match name {
        "ca.crt" | "front-proxy-ca.crt" => {
            "kubemend never renews a CA: run `sudo microk8s refresh-certs -e ca.crt` on one \
             control-plane node (it makes a new CA and every certificate), then every other \
             node leaves (`microk8s leave`) and rejoins (`microk8s add-node` / `microk8s join`)"
        }
        "cluster.crt" => {
            "dqlite's certificate is shared by every node: renewing it means re-creating the \
             dqlite cluster's certificate on every node at once; follow microk8s's documentation"
        }
        _ => {
            "it is not renewed by `microk8s refresh-certs -e`: it is made again with the CA \
             (`microk8s refresh-certs -e ca.crt`), or when the node rejoins"
        }
    };
    format!("{name} {when}: {how}")
}

/// The expiry of the certificate the apiserver at `address` serves once it is `expected` (the
/// renewed file's), or why not by `until`.
async fn served_until(
    address: SocketAddr,
    expected: &str,
    until: Instant,
) -> std::result::Result<String, String> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let last = match certs::served_cert(address, left.min(std::time::Duration::from_secs(10)))
            .await
        {
            Ok(served) if served.info.not_after == expected => return Ok(served.info.not_after),
            Ok(served) => format!(
                "serves a certificate expiring {}, not the renewed one ({expected})",
                served.info.not_after
            ),
            Err(why) => why,
        };
        if Instant::now() + SERVED_POLL >= until {
            return Err(last);
        }
        tokio::time::sleep(SERVED_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertInfo;
    use serde_json::json;

    fn step(options: serde_json::Value) -> Result<RefreshCerts> {
        RefreshCerts::split(serde_json::from_value(options).expect("options")).map(|(_, s)| s)
    }

    fn cert(name: &str, days: i64) -> NodeCert {
        NodeCert {
            path: format!("{}/{name}", certs::CERTS_DIR),
            name: name.into(),
            info: Some(CertInfo {
                subject: "CN=127.0.0.1".into(),
                issuer: "CN=10.152.183.1".into(),
                not_before: "2026-01-01T00:00:00Z".into(),
                not_after: format!("day {days}"),
                days_left: days,
            }),
            problem: None,
        }
    }

    #[test]
    fn renew_before_and_certificates_are_checked_naming_the_option() {
        for (options, option) in [
            (json!({"renew_before": 0}), "renew_before"),
            (json!({"renew_before": 365}), "renew_before"),
            (json!({"certificates": ["ca.crt"]}), "certificates[0]"),
            (json!({"certificates": []}), "certificates"),
        ] {
            let serde_json::Value::Object(raw) = options.clone() else {
                panic!("options are an object")
            };
            match crate::actions::validate::<CertRefresh>(raw) {
                Err(Error::InvalidOption { option: named, .. }) => {
                    assert_eq!(named, option, "{options}");
                }
                other => panic!("{options}: {other:?}"),
            }
        }
        let ordered =
            step(json!({"certificates": ["front-proxy-client.crt", "server.crt"]})).expect("valid");
        assert_eq!(
            ordered.certificates,
            ["server.crt", "front-proxy-client.crt"]
        );
    }

    #[test]
    fn only_expiring_renewable_certificates_are_renewed_and_a_fresh_node_is_skipped() {
        let refresh = step(json!({})).expect("defaults");
        let mut expiring = NodeStep::default();
        refresh.judge(
            &[
                cert("ca.crt", 3000),
                cert("server.crt", 5),
                cert("front-proxy-client.crt", 200),
            ],
            &mut expiring,
        );
        let actions: Vec<(&str, &str)> = expiring
            .node
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("ca.crt", "report"),
                ("server.crt", "renew"),
                ("front-proxy-client.crt", "keep")
            ]
        );
        assert_eq!(expiring.skip, None);
        assert!(expiring.problems.is_empty() && expiring.warnings.is_empty());

        let mut fresh = NodeStep::default();
        refresh.judge(
            &[cert("server.crt", 364), cert("front-proxy-client.crt", 364)],
            &mut fresh,
        );
        let why = fresh.skip.expect("skipped");
        assert!(
            why.contains("server.crt 364 days") && why.contains("(30 days)"),
            "{why}"
        );
    }

    #[test]
    fn an_expiring_ca_is_reported_with_the_manual_procedure_never_renewed() {
        let refresh = step(json!({})).expect("defaults");
        let mut node = NodeStep::default();
        refresh.judge(
            &[
                cert("ca.crt", -2),
                cert("server.crt", 300),
                cert("front-proxy-client.crt", 300),
            ],
            &mut node,
        );
        assert!(node.skip.is_some(), "nothing kubemend renews is due");
        let [warning] = node.warnings.as_slice() else {
            panic!("{:?}", node.warnings)
        };
        assert!(
            warning.contains("ca.crt expired 2 days ago") && warning.contains("rejoins"),
            "{warning}"
        );
    }

    #[test]
    fn a_missing_certificate_to_renew_fails_the_preflight() {
        let refresh = step(json!({"certificates": ["server.crt"]})).expect("valid");
        let mut node = NodeStep::default();
        refresh.judge(&[cert("ca.crt", 3000)], &mut node);
        assert_eq!(node.problems.len(), 1, "{:?}", node.problems);
        assert!(node.problems[0].contains("server.crt is missing"));
    }
}
