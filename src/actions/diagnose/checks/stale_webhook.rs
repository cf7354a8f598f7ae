//! stale_webhook: webhook configurations with a stale webhook, by stale_webhook's evidence;
//! failurePolicy Fail is critical, Ignore a warning.

use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::actions::stale_webhook::StaleWebhook;
use crate::actions::stale_webhook::{self};

/// Runs the check: stale_webhook's own survey, nothing deleted.
pub(super) async fn run(_: &Diagnose, run: &mut Run<'_>) -> Outcome {
    let report = stale_webhook::survey(&run.scratch).await.map_err(reason)?;
    Ok(webhook_findings(&report))
}

/// A finding per configuration with at least one stale webhook.
#[must_use]
pub fn webhook_findings(report: &stale_webhook::Report) -> Vec<Finding> {
    let mut findings = Vec::new();
    for configuration in &report.configurations {
        let stale: Vec<&stale_webhook::WebhookReport> = configuration
            .webhooks
            .iter()
            .filter(|w| w.is_stale())
            .collect();
        if stale.is_empty() {
            continue;
        }
        let blocking = stale.iter().any(|w| w.failure_policy == "Fail");
        let evidence: Vec<String> = stale
            .iter()
            .map(|w| {
                format!(
                    "webhook {} ({}, failurePolicy {}): {}",
                    w.name, w.target, w.failure_policy, w.reason
                )
            })
            .collect();
        let object = format!(
            "{}/{}",
            configuration.kind.to_ascii_lowercase(),
            configuration.name
        );
        let mut f = finding(
            Check::StaleWebhook,
            if blocking {
                Severity::Critical
            } else {
                Severity::Warning
            },
            object,
            format!(
                "{} of {} webhook(s) stale: {}",
                stale.len(),
                configuration.webhooks.len(),
                evidence.join("; ")
            ),
        );
        f.hint = if blocking {
            "failurePolicy Fail: the API server refuses every request the webhook matches; \
             delete the configuration (a backup is returned and, with backup_dir, written)"
                .into()
        } else {
            "failurePolicy Ignore: every request the webhook matches waits for its timeout; \
             delete the configuration (a backup is returned and, with backup_dir, written)"
                .into()
        };
        let mut options = json!({"name": configuration.name});
        if !configuration.stale {
            options["force"] = json!(true);
        }
        f.fix = Some(fix(StaleWebhook::NAME, &options));
        f.data.insert("kind".into(), json!(configuration.kind));
        f.data.insert("uid".into(), json!(configuration.uid));
        f.data.insert("stale_webhooks".into(), json!(stale.len()));
        f.data
            .insert("webhooks".into(), json!(configuration.webhooks.len()));
        f.data.insert(
            "failure_policies".into(),
            json!(stale.iter().map(|w| &w.failure_policy).collect::<Vec<_>>()),
        );
        findings.push(f);
    }
    findings
}
