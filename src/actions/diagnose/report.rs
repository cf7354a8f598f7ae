//! The typed result of a diagnose run: findings with their severity, evidence and fix, the
//! summary and each check's status; the JSON result keys are these types serialized.

use std::fmt::Write as _;

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::checks::Check;

/// How severe a finding is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to do.
    #[default]
    Info,
    /// Something to fix soon.
    Warning,
    /// Something breaking the cluster now, or about to.
    Critical,
}

impl Severity {
    /// Every severity, mildest first.
    pub const ALL: [Self; 3] = [Self::Info, Self::Warning, Self::Critical];

    /// The name in results and metrics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// The severity from which findings count as an alert.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Never.
    #[default]
    Never,
    /// A warning or critical finding.
    Warning,
    /// A critical finding.
    Critical,
}

impl FailOn {
    pub(super) fn reached_by(self, severity: Severity) -> bool {
        match self {
            Self::Never => false,
            Self::Warning => severity >= Severity::Warning,
            Self::Critical => severity >= Severity::Critical,
        }
    }
}

/// Exit status of the CLI when a finding reaches `fail_on`.
pub const EXIT_FINDINGS: i32 = 3;

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// Everything the checks found, most severe first.
    pub findings: Vec<Finding>,
    /// How many findings of each severity, and how many checks were skipped.
    pub summary: Summary,
    /// Every check asked for: whether it ran or was skipped, and why.
    pub checks: Vec<CheckReport>,
    /// Whether a finding is at least as severe as O(fail_on); the CLI then exits 3.
    #[schemars(extend("x-sample" = false))]
    pub fail_on_reached: bool,
}

/// One finding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Finding {
    /// Stable identifier, C(check:object), for alerts and silences.
    #[schemars(extend(
        "x-sample" = "stale_webhook:mutatingwebhookconfiguration/newrelic-bundle-nri-metadata-injection"
    ))]
    pub id: String,
    /// The check that found it.
    #[schemars(extend("x-sample" = "stale_webhook"))]
    pub check: String,
    /// C(info), C(warning) or C(critical).
    pub severity: Severity,
    /// What it is about, e.g. C(clusterrole/calico-kube-controllers) or C(namespace/ci).
    pub object: String,
    /// What was seen, for people.
    pub evidence: String,
    /// The numbers and timestamps behind the evidence.
    #[schemars(with = "Map<String, Value>")]
    pub data: Map<String, Value>,
    /// What to do about it.
    pub hint: String,
    /// The kubemend action that remedies it, with its options.
    ///
    /// V(null) when no kubemend action does.
    pub fix: Option<Fix>,
}

/// A kubemend action that remedies a finding.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Fix {
    /// The module name, e.g. C(stale_webhook).
    pub module: String,
    /// Its options.
    #[schemars(with = "Map<String, Value>")]
    pub options: Map<String, Value>,
    /// The same as a command line.
    #[schemars(extend(
        "x-sample" = "kubemend stale-webhook --name newrelic-bundle-nri-metadata-injection"
    ))]
    pub command: String,
}

/// Counts of the findings by severity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Info findings.
    pub info: usize,
    /// Warnings.
    pub warning: usize,
    /// Critical findings.
    pub critical: usize,
    /// Checks skipped.
    pub skipped: usize,
}

/// One check asked for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    /// The check.
    pub check: String,
    /// C(ran) or C(skipped).
    pub status: String,
    /// Why it was skipped, e.g. permission denied.
    ///
    /// V(null) when it ran.
    pub reason: Option<String>,
    /// How many findings it made.
    pub findings: usize,
}

/// A finding's fix: `module` with `options`, and the same as a command line.
#[must_use]
pub(super) fn fix(module: &str, options: &Value) -> Fix {
    let options = options.as_object().cloned().unwrap_or_default();
    let mut command = format!("kubemend {}", module.replace('_', "-"));
    for (key, value) in &options {
        let flag = key.replace('_', "-");
        match value {
            Value::Bool(true) => {
                let _ = write!(command, " --{flag}");
            }
            Value::Bool(false) | Value::Null => {}
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(text_of).collect();
                let _ = write!(command, " --{flag} {}", items.join(","));
            }
            other => {
                let _ = write!(command, " --{flag} {}", text_of(other));
            }
        }
    }
    Fix {
        module: module.into(),
        options,
        command,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A finding with its id made from check and object.
pub(super) fn finding(
    check: Check,
    severity: Severity,
    object: String,
    evidence: String,
) -> Finding {
    Finding {
        id: format!("{}:{object}", check.name()),
        check: check.name().into(),
        severity,
        object,
        evidence,
        ..Finding::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_fix_is_also_a_command_line() {
        let f = fix(
            "stuck_pods",
            &json!({"kinds": ["pending"], "namespaces": ["ci"], "pending_age": "10m"}),
        );
        assert_eq!(
            f.command,
            "kubemend stuck-pods --kinds pending --namespaces ci --pending-age 10m"
        );
        assert_eq!(
            fix("calico_rbac", &json!({})).command,
            "kubemend calico-rbac"
        );
        assert_eq!(
            fix("stale_webhook", &json!({"name": "x", "force": true})).command,
            "kubemend stale-webhook --name x --force"
        );
    }
}
