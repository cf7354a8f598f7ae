//! The runbook's checks, one file each, and their registry.
//!
//! # Adding a check
//! Write `checks/<name>.rs` with a `run(&Diagnose, &mut Run) -> Outcome` (its findings, or why
//! it could not run: a skipped check, never a failed run) and its judgement as functions its
//! unit tests call; declare it below (`pub mod <name>;`) and add its line to [`registry!`]: the
//! variant, the module and the name in results. The `Check` enum (`checks` option, `--checks`
//! values, result and metric names), `Check::ALL` and the dispatch all come from that line. A
//! registry line without its module does not compile; a module without its line leaves its
//! `run` unused, which the lints (warnings are errors) refuse. Its options go into diagnose's
//! `Options`, from which the schema, the module docs and the role's argument spec are checked.

use super::Diagnose;
use super::report::Finding;
use crate::actions::diagnose::Context;
use crate::error::Error;

/// What one check gives: its findings, or why it could not run.
pub(super) type Outcome = std::result::Result<Vec<Finding>, String>;

/// What the checks of one run share.
#[derive(Debug)]
pub(super) struct Run<'a> {
    /// The run's context (its cluster, check mode).
    pub(super) cx: &'a Context,
    /// The same in check mode, without progress: for the sibling actions' read-only plans.
    pub(super) scratch: Context,
    /// When the action's timeout ends.
    pub(super) deadline: tokio::time::Instant,
    /// calico_rbac's plan, made once for calico_rbac and calico_version.
    pub(super) calico: Option<std::result::Result<crate::actions::calico_rbac::Report, String>>,
    /// The read of the 403 counters made when the run began, for the rate of now.
    pub(super) first_forbidden: Option<(tokio::time::Instant, apiserver_403::Forbidden)>,
}

impl<'a> Run<'a> {
    /// The shared state of a run of `checks`, with what must be read before any check runs.
    pub(super) async fn new(
        cx: &'a Context,
        deadline: tokio::time::Instant,
        checks: &[Check],
    ) -> Self {
        Self {
            cx,
            scratch: Context {
                cluster: cx.cluster.clone(),
                check_mode: true,
                diff: false,
                progress: false,
                deadline: cx.deadline,
            },
            deadline,
            calico: None,
            first_forbidden: if checks.contains(&Check::Apiserver403) {
                apiserver_403::first_read(&cx.cluster).await
            } else {
                None
            },
        }
    }
}

/// Why a check could not run, for `checks[].reason`.
#[allow(
    clippy::needless_pass_by_value,
    reason = "taken by value to be used as `map_err(reason)`"
)]
pub(super) fn reason(error: Error) -> String {
    let message = error.message_with_causes();
    match error.api_status() {
        Some(403) => format!("permission denied: {message}"),
        _ => message,
    }
}

pub mod apiserver_403;
pub mod calico_ipam;
pub mod calico_rbac;
pub mod calico_version;
pub mod certs;
pub mod kubelite;
pub mod leader_leases;
pub mod namespaces;
pub mod node_leases;
pub mod rbac_enforced;
pub mod stale_webhook;
pub mod stuck_pods;

/// The registry: one line a check (doc, variant, module, name in results), in the order they
/// run. It makes the `Check` enum with its names, `Check::ALL` and the dispatch.
macro_rules! registry {
    ($($(#[doc = $doc:literal])* $variant:ident => $module:ident, $name:literal;)*) => {

        /// One check of the runbook.
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            serde::Deserialize,
            serde::Serialize,
            schemars::JsonSchema,
            clap::ValueEnum,
        )]
        pub enum Check {
            $(
                $(#[doc = $doc])*
                #[serde(rename = $name)]
                #[value(name = $name)]
                $variant,
            )*
        }

        impl Check {
            /// Every check, in the order they run.
            pub const ALL: &[Self] = &[$(Self::$variant),*];

            /// The name in results and metrics.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        /// Runs one check.
        pub(super) async fn run(check: Check, diagnose: &Diagnose, run: &mut Run<'_>) -> Outcome {
            match check {
                $(Check::$variant => $module::run(diagnose, run).await,)*
            }
        }
    };
}

registry! {
    /// What calico_rbac would add to the calico-kube-controllers ClusterRole.
    CalicoRbac => calico_rbac, "calico_rbac";
    /// Whether the API server enforces RBAC at all.
    RbacEnforced => rbac_enforced, "rbac_enforced";
    /// Webhook configurations whose backend is gone.
    StaleWebhook => stale_webhook, "stale_webhook";
    /// Pods Pending unseen by the scheduler, pods Terminating past their grace.
    StuckPods => stuck_pods, "stuck_pods";
    /// Namespaces stuck Terminating and what holds each; unavailable APIServices.
    Namespaces => namespaces, "namespaces";
    /// The kube-scheduler and kube-controller-manager Leases.
    LeaderLeases => leader_leases, "leader_leases";
    /// Nodes Ready although their Lease expired.
    NodeLeases => node_leases, "node_leases";
    /// The Calico release against the Kubernetes release.
    CalicoVersion => calico_version, "calico_version";
    /// 403 answers of the API server against its uptime.
    Apiserver403 => apiserver_403, "apiserver_403";
    /// kubelite on each node, over SSH.
    Kubelite => kubelite, "kubelite";
    /// Calico's IPAM: leaked addresses, orphaned handles, pool use.
    CalicoIpam => calico_ipam, "calico_ipam";
    /// Each node's certificates (served, and over SSH its files) and clock.
    Certs => certs, "certs";
}
