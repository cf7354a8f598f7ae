//! calico_version: the running Calico release against the Kubernetes releases it is
//! documented to be tested on ([`CALICO_SUPPORT`]).

use serde_json::json;

use super::{Check, Outcome, Run, reason};
use crate::actions::Action as _;
use crate::actions::calico_rbac::CalicoRbac;
use crate::actions::calico_rbac::{self};
use crate::actions::diagnose::Diagnose;
use crate::actions::diagnose::report::{Finding, Severity, finding, fix};
use crate::calico_rules::CalicoVersion as Version;
use crate::client::Cluster;

/// Runs the check on calico_rbac's plan (made here when that check did not run).
pub(super) async fn run(_: &Diagnose, run: &mut Run<'_>) -> Outcome {
    if run.calico.is_none() {
        run.calico = Some(super::calico_rbac::calico_plan(&run.scratch).await);
    }
    match run.calico.as_ref() {
        Some(Ok(report)) => calico_version(&run.cx.cluster, report).await,
        Some(Err(why)) => Err(why.clone()),
        None => Err("the calico_rbac plan did not run".into()),
    }
}

/// Which Kubernetes minor releases each Calico minor release is documented to be tested on
/// (the "Kubernetes requirements" of its system requirements page), with the source. A
/// release not listed is reported as unknown (info), not as unsupported.
pub const CALICO_SUPPORT: &[(u32, (u32, u32), &str)] = &[
    (
        13,
        (15, 17),
        "projectcalico/calico:getting-started/kubernetes/requirements.md@v3.13.1",
    ),
    (
        26,
        (24, 28),
        "tigera/docs:calico_versioned_docs/version-3.26/getting-started/kubernetes/requirements.mdx@04b54fcb",
    ),
    (
        28,
        (27, 30),
        "tigera/docs:calico_versioned_docs/version-3.28/getting-started/kubernetes/requirements.mdx@1054f3f9",
    ),
    (
        29,
        (29, 31),
        "tigera/docs:calico_versioned_docs/version-3.29/getting-started/kubernetes/requirements.mdx@01059829",
    ),
];

/// The Calico release against the Kubernetes release of the API server.
async fn calico_version(
    cluster: &Cluster,
    report: &calico_rbac::Report,
) -> std::result::Result<Vec<Finding>, String> {
    let Some(calico) = report
        .calico_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok())
    else {
        return Err("the Calico version is unknown (no version tag on the image)".into());
    };
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|e| reason(cluster.error("get", "/version")(e)))?;
    let minor: u32 = info.minor.trim_end_matches('+').parse().map_err(|_| {
        format!(
            "the API server's minor version {:?} is no number",
            info.minor
        )
    })?;
    Ok(vec![calico_version_finding(
        calico,
        &info.git_version,
        minor,
    )])
}

/// Judges Calico `calico` on Kubernetes 1.`minor` (`kubernetes` as the server gives it).
#[must_use]
pub fn calico_version_finding(calico: Version, kubernetes: &str, minor: u32) -> Finding {
    let object = format!("calico/{calico}");
    let known = (calico.major == 3)
        .then(|| CALICO_SUPPORT.iter().find(|(m, _, _)| *m == calico.minor))
        .flatten();
    let Some((_, (low, high), source)) = known else {
        let mut f = finding(
            Check::CalicoVersion,
            Severity::Info,
            object,
            format!(
                "Calico {calico} on Kubernetes {kubernetes}: this release is not in kubemend's \
                 support table"
            ),
        );
        "check the Kubernetes requirements of its system requirements page".clone_into(&mut f.hint);
        return f;
    };
    let tested = format!("v1.{low}-v1.{high}");
    let supported = (*low..=*high).contains(&minor);
    let mut f = finding(
        Check::CalicoVersion,
        if supported {
            Severity::Info
        } else {
            Severity::Warning
        },
        object,
        format!(
            "Calico {calico} is tested on Kubernetes {tested}; the cluster runs {kubernetes}{}",
            if supported { "" } else { ": unsupported" }
        ),
    );
    f.data
        .insert("calico_version".into(), json!(calico.to_string()));
    f.data
        .insert("kubernetes_version".into(), json!(kubernetes));
    f.data.insert("tested_kubernetes".into(), json!(tested));
    f.data.insert("source".into(), json!(source));
    if supported {
        "nothing to do".clone_into(&mut f.hint);
    } else {
        f.hint = format!(
            "upgrade Calico to a release tested on v1.{minor} (kubemend does not upgrade Calico; \
             on microk8s never re-apply the old cni.yaml), then run calico_rbac for the new \
             release's permissions"
        );
        f.fix = Some(fix(CalicoRbac::NAME, &json!({})));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_v3_13_on_kubernetes_1_34_is_unsupported() {
        let v = |t: &str| Version::parse(t).unwrap();
        let f = calico_version_finding(v("v3.13.2"), "v1.34.4", 34);
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.evidence.contains("v1.15-v1.17"), "{}", f.evidence);
        assert!(f.data["source"].as_str().unwrap().contains("v3.13"));
        assert_eq!(f.fix.unwrap().module, "calico_rbac");
        assert_eq!(
            calico_version_finding(v("v3.29.3"), "v1.30.2", 30).severity,
            Severity::Info
        );
        assert_eq!(
            calico_version_finding(v("v3.21.4"), "v1.34.4", 34).severity,
            Severity::Info
        );
    }
}
