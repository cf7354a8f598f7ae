//! kubelite_restart: restarts `microk8s.daemon-kubelite` on the control-plane nodes one at a
//! time, over SSH, and proves each node and the control plane healthy before the next.
//!
//! The order, pre-flight, checks before each further node, gates, lock, resume, check mode and
//! errors are the rolling node operation's ([`super::rolling`]), shared with cert_refresh;
//! this step is `snap restart <service>` (microk8s.daemon-kubelite).
//!
//! # Idempotency
//! `restarted_within` skips nodes whose kubelite became active more recently, so a second
//! monthly run reports `changed: false`. A unit active since a time ahead of this host's clock
//! says nothing about how recent its start was: that node is not skipped, and a warning names
//! the clocks to check.
//!
//! # Check mode
//! The ordered plan with every pre-flight result; no restart, no lock taken.
//!
//! # Errors
//! Invalid node names, hosts, users, durations, service or order fail before any SSH or API
//! call, naming the option. `snap restart` failing (or refused: a snapd change in progress) is
//! the failed gate `restart`, with its output.

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rolling::{
    self, NodeStep, Plan, Preflight, Rolling, RollingArgs, Step, StepData, StepFailed, StepKind,
    Words, in_steps_outcome,
};
use super::{Action, Context};
use crate::client::{ClusterArgs, NodeServer};
use crate::error::Result;
use crate::k8s::duration::{Duration, format_ago, seconds_since};
use crate::microk8s::SNAP_RESTART_LIMIT;
use crate::outcome::Outcome;
use crate::ssh::{Remote, check_word};

pub use rolling::{NodeSpec, NodeTarget, Order};

/// Restart microk8s.daemon-kubelite on the control-plane nodes one at a time, over SSH,
/// proving each node and the control plane healthy before the next.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in RollingArgs")]
    pub rolling: RollingArgs,

    /// The snap service to restart.
    #[arg(long, value_name = "SERVICE")]
    #[serde(default = "default_service")]
    pub service: String,

    /// Skip nodes whose kubelite became active less than this long ago, e.g. 1h: running
    /// the monthly maintenance twice then restarts nothing the second time.
    #[arg(long, value_name = "DURATION")]
    #[serde(default)]
    pub restarted_within: Option<Duration>,
}

fn default_service() -> String {
    "microk8s.daemon-kubelite".into()
}

/// The restart step.
#[derive(Debug, Clone)]
pub struct Restart {
    service: String,
    restarted_within: Option<Duration>,
}

/// The action: the rolling node operation with the restart step.
#[derive(Debug)]
pub struct KubeliteRestart(Rolling);

/// A restart adds nothing to a node's result: its gates are its proof.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct RestartNode {}

/// The result keys.
pub type Report = rolling::Report<RestartNode>;

impl Action for KubeliteRestart {
    const NAME: &'static str = "kubelite_restart";
    const ABOUT: &'static str =
        "Restart microk8s.daemon-kubelite one node at a time, proving each node healthy first";
    const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        let (rolling, step) = Restart::split(options)?;
        Rolling::new(rolling, StepKind::Restart(step)).map(Self)
    }

    fn cluster_args(&self) -> &ClusterArgs {
        self.0.cluster_args()
    }

    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        Box::pin(in_steps_outcome(out, async |inner| {
            Box::pin(self.0.plan(cx, inner)).await
        }))
        .await
    }

    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        Box::pin(in_steps_outcome(out, async |inner| {
            Box::pin(self.0.apply(cx, plan, inner)).await
        }))
        .await
    }

    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        Box::pin(in_steps_outcome(out, async |inner| {
            Box::pin(self.0.verify(cx, inner)).await
        }))
        .await
    }
}

impl Step for Restart {
    const WORDS: Words = Words {
        doing: "restarting kubelite",
        would_do: "would restart kubelite",
        done: "restarted kubelite",
        status: "restarted",
        would: "would restart",
    };
    const PREFLIGHT_HINT: &'static str = "";
    const GATE: &'static str = "restart";
    const PROVEN: &'static str = "";

    fn name(&self) -> &'static str {
        KubeliteRestart::NAME
    }

    fn service(&self) -> &str {
        &self.service
    }

    fn limit(&self) -> String {
        format!("`snap restart` is given {}s", SNAP_RESTART_LIMIT.as_secs())
    }

    /// A restart's record is the node's name (as before cert_refresh shared the lock).
    fn record_item(&self, node: &str) -> String {
        node.to_owned()
    }

    async fn preflight(
        &self,
        node: &str,
        _remote: &Remote,
        pre: &Preflight,
        now: Timestamp,
    ) -> NodeStep<StepData> {
        NodeStep {
            skip: self.skip_reason(pre, now),
            warnings: self.clock_skew(node, pre, now).into_iter().collect(),
            ..NodeStep::default()
        }
    }

    async fn run(
        &self,
        _node: &str,
        remote: &Remote,
        _step: &StepData,
        progress: &dyn Fn(&str),
    ) -> std::result::Result<(), StepFailed> {
        progress(&format!("restarting {}", self.service));
        let restarted = remote
            .run_within(
                SNAP_RESTART_LIMIT,
                true,
                "snap",
                &["restart", &self.service],
            )
            .await
            .map_err(|err| StepFailed {
                // Sent, but no answer: the restart may have happened.
                observed: format!(
                    "the outcome of `snap restart {}` is unknown: {}",
                    self.service,
                    err.message_with_causes()
                ),
                changed: true,
            })?;
        if restarted.success() {
            return Ok(());
        }
        Err(StepFailed {
            observed: format!(
                "`snap restart {}` failed: {}",
                self.service,
                restarted.tail(6)
            ),
            // snapd refuses before doing anything while a change is in progress; any other
            // failure may come after systemd stopped the unit.
            changed: !restarted.stderr.contains("change in progress"),
        })
    }

    async fn prove(
        &self,
        _node: &str,
        _remote: &Remote,
        _apiserver: Option<(std::net::SocketAddr, &NodeServer)>,
        _step: &mut StepData,
        _until: std::time::Instant,
    ) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl Restart {
    /// Validates the restart's own options (no I/O).
    fn split(options: Options) -> Result<(RollingArgs, Self)> {
        check_word("service", &options.service)?;
        if let Some(within) = &options.restarted_within {
            within.require_positive("restarted_within")?;
        }
        Ok((
            options.rolling,
            Self {
                service: options.service,
                restarted_within: options.restarted_within,
            },
        ))
    }

    /// Why `restarted_within` skips the node, if it does. A unit active since a time ahead of
    /// this host's clock (the node's clock is ahead) says nothing about how recent its start
    /// was: it is not skipped, and [`Self::clock_skew`] warns.
    fn skip_reason(&self, pre: &Preflight, now: Timestamp) -> Option<String> {
        let within = self.restarted_within.as_ref()?;
        let since: Timestamp = pre.active_since.as_deref()?.parse().ok()?;
        let age = seconds_since(since, now);
        (0..within.seconds()).contains(&age).then(|| {
            format!(
                "kubelite active since {since} ({}), within restarted_within ({within})",
                format_ago(age)
            )
        })
    }

    /// A warning when `restarted_within` cannot judge the node because its unit became active
    /// after this host's now.
    fn clock_skew(&self, node: &str, pre: &Preflight, now: Timestamp) -> Option<String> {
        let within = self.restarted_within.as_ref()?;
        let since: Timestamp = pre.active_since.as_deref()?.parse().ok()?;
        let age = seconds_since(since, now);
        (age < 0).then(|| {
            format!(
                "kubelite active since {since}, {}; restarted_within ({within}) cannot judge \
                 it, so it is not skipped; check the clocks (timedatectl) of {node} and of \
                 this host",
                format_ago(age)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restart_within(within: &str) -> Restart {
        Restart::split(serde_json::from_value(json!({"restarted_within": within})).unwrap())
            .unwrap()
            .1
    }

    fn active_since(text: &str) -> Preflight {
        Preflight {
            active_since: Some(text.into()),
            ..Preflight::default()
        }
    }

    #[test]
    fn restarted_within_skips_recent_starts_but_not_one_ahead_of_this_clock() {
        let action = restart_within("1h");
        let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
        let recent = active_since("2026-12-05T11:30:00Z");
        let why = action.skip_reason(&recent, now).unwrap();
        assert!(why.contains("(30m ago)"), "{why}");
        assert!(action.clock_skew("k8s01", &recent, now).is_none());
        assert!(
            action
                .skip_reason(&active_since("2026-12-05T10:00:00Z"), now)
                .is_none()
        );
        // A node whose clock is a day ahead: not skipped as "-1d ago", and said why.
        let ahead = active_since("2026-12-06T12:00:00Z");
        assert_eq!(action.skip_reason(&ahead, now), None);
        let warning = action.clock_skew("k8s01", &ahead, now).unwrap();
        assert!(
            warning.contains("1d in the future (clock skew") && warning.contains("not skipped"),
            "{warning}"
        );
        assert!(!warning.contains("-1d"), "{warning}");
    }
}
