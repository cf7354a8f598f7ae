//! calico_rbac: what the calico_rbac action would add to the calico-kube-controllers
//! ClusterRole, from its own read-only plan, with the SubjectAccessReview it makes for each
//! missing permission (critical when denied).

use std::fmt::Write as _;

use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::Context;
use crate::actions::calico_rbac::CalicoRbac;
use crate::actions::calico_rbac::{self};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::error::Error;

/// Runs the check, keeping calico_rbac's plan for calico_version.
pub(super) async fn run(_: &Diagnose, run: &mut Run<'_>) -> Outcome {
    let plan = calico_plan(&run.scratch).await;
    let findings = plan
        .as_ref()
        .map_err(Clone::clone)
        .map(calico_rbac_findings);
    run.calico = Some(plan);
    findings
}

/// calico_rbac's survey; a failure is the skip reason.
pub(super) async fn calico_plan(cx: &Context) -> std::result::Result<calico_rbac::Report, String> {
    match calico_rbac::survey(cx).await {
        Ok(report) => Ok(report),
        Err(error @ Error::NotFound { .. }) => Err(format!(
            "calico-kube-controllers is not installed here: {}",
            error.message_with_causes()
        )),
        Err(error) => Err(reason(error)),
    }
}

/// The gap calico_rbac would close, confirmed (or not) by its SubjectAccessReviews.
fn calico_rbac_findings(report: &calico_rbac::Report) -> Vec<Finding> {
    let object = format!("clusterrole/{}", report.clusterrole);
    let version = report.calico_version.clone().unwrap_or_default();
    if report.missing_before.is_empty() {
        let mut f = finding(
            Check::CalicoRbac,
            Severity::Info,
            object,
            format!(
                "grants everything calico-kube-controllers {version} ({}) needs",
                report.enabled_controllers.join(", ")
            ),
        );
        "nothing to do".clone_into(&mut f.hint);
        return vec![f];
    }
    let missing: Vec<String> = report
        .missing_before
        .iter()
        .map(|r| {
            let groups: Vec<&str> = r
                .api_groups
                .iter()
                .map(|g| if g.is_empty() { "core" } else { g.as_str() })
                .collect();
            format!(
                "{} ({}): {}",
                r.resources.join(", "),
                groups.join(", "),
                r.verbs.join(", ")
            )
        })
        .collect();
    let permissions: usize = report
        .missing_before
        .iter()
        .map(|r| r.api_groups.len() * r.resources.len() * r.verbs.len())
        .sum();
    let mut evidence = format!(
        "calico-kube-controllers {version} ({}) needs {permissions} permission(s) the role lacks: {}",
        report.enabled_controllers.join(", "),
        missing.join("; ")
    );
    let severity = match &report.denied_before {
        Some(denied) if denied.is_empty() => {
            evidence.push_str(
                "; SubjectAccessReview allows them anyway (RBAC not enforced, or another \
                 binding), so nothing is refused yet",
            );
            Severity::Warning
        }
        Some(denied) => {
            let _ = write!(
                evidence,
                "; SubjectAccessReview denies {} of them to {}",
                denied.len(),
                report.service_accounts.join(", ")
            );
            Severity::Critical
        }
        None => {
            evidence.push_str("; not confirmed by SubjectAccessReview (no review could be made)");
            Severity::Critical
        }
    };
    let mut f = finding(Check::CalicoRbac, severity, object, evidence);
    f.data.insert("calico_version".into(), json!(version));
    f.data
        .insert("missing_permissions".into(), json!(permissions));
    f.data
        .insert("missing_rules".into(), json!(report.missing_before));
    f.data
        .insert("denied_before".into(), json!(report.denied_before));
    f.hint = "add the missing permissions to the ClusterRole (only adds, never removes a rule): \
              the controllers stop failing their list calls"
        .into();
    let mut args = json!({});
    if let Some(owned) = report.ownership.as_ref().filter(|o| o.at_risk()) {
        // The fix would not last: say so, and have the fix hand it to the repository too.
        let _ = write!(f.hint, "; but {}", owned.consequence);
        args = json!({"gitops": "patch"});
        f.data.insert("ownership".into(), json!(owned));
    }
    f.fix = Some(fix(CalicoRbac::NAME, &args));
    vec![f]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::calico_rbac::RuleSpec;
    use crate::k8s::ownership::{self, Change};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn lacking_pods_list(annotations: &[(&str, &str)]) -> calico_rbac::Report {
        let meta = ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        };
        calico_rbac::Report {
            clusterrole: "calico-kube-controllers".into(),
            missing_before: vec![RuleSpec {
                api_groups: vec![String::new()],
                resources: vec!["pods".into()],
                verbs: vec!["list".into()],
            }],
            denied_before: Some(vec![
                "kube-system/calico-kube-controllers: list pods".into(),
            ]),
            ownership: Some(ownership::of(
                "clusterrole calico-kube-controllers",
                &meta,
                Change::Update,
            )),
            ..calico_rbac::Report::default()
        }
    }

    #[test]
    fn a_gap_in_a_role_argo_cd_manages_says_the_fix_would_not_last_and_asks_for_the_patch() {
        let report = lacking_pods_list(&[(
            "argocd.argoproj.io/tracking-id",
            "calico:rbac.authorization.k8s.io/ClusterRole:/calico-kube-controllers",
        )]);
        let f = &calico_rbac_findings(&report)[0];
        assert!(
            f.hint.contains("at the latest when Git changes it"),
            "{}",
            f.hint
        );
        let fix = f.fix.as_ref().unwrap();
        assert_eq!(fix.options.get("gitops"), Some(&json!("patch")));
        assert_eq!(f.data["ownership"]["owner"], "argo_cd");
    }

    #[test]
    fn a_gap_in_a_role_nothing_manages_asks_for_the_plain_fix() {
        let f = &calico_rbac_findings(&lacking_pods_list(&[]))[0];
        assert!(!f.hint.contains("but"), "{}", f.hint);
        assert!(f.fix.as_ref().unwrap().options.is_empty());
        assert!(!f.data.contains_key("ownership"));
    }
}
