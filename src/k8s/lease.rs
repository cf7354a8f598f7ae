//! Leases: whether one is held (leader election, node heartbeats), and the leader-election
//! Leases of the control plane, read one way by every action.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::duration::seconds_since;

/// The namespace of the control plane's leader-election Leases.
pub const LEADER_NAMESPACE: &str = "kube-system";

/// The leader-election Leases of the kube-scheduler and kube-controller-manager (kubelite runs
/// both on microk8s), in [`LEADER_NAMESPACE`].
pub const LEADER_LEASES: [&str; 2] = ["kube-scheduler", "kube-controller-manager"];

/// A leader-election Lease in [`LEADER_NAMESPACE`], if it exists. Listed by name (not read),
/// so that `list` on leases is all it takes.
pub async fn leader_lease(cluster: &Cluster, name: &str) -> Result<Option<Lease>> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), LEADER_NAMESPACE);
    let params = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api
        .list(&params)
        .await
        .map_err(cluster.error("list", format!("leases {LEADER_NAMESPACE}/{name}")))?
        .items
        .into_iter()
        .next())
}

/// Whether a Lease is held: it has a holder and was renewed within its duration.
#[must_use]
pub fn lease_held(spec: &LeaseSpec, now: Timestamp) -> bool {
    let holder = spec
        .holder_identity
        .as_deref()
        .is_some_and(|h| !h.is_empty());
    let fresh = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(duration)) => seconds_since(renewed.0, now) <= i64::from(duration),
        _ => false,
    };
    holder && fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_lease_is_held_only_by_a_holder_within_its_duration() {
        let now = ts("2026-05-15T07:40:00Z");
        let spec = |holder: Option<&str>, renewed: &str| LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        };
        assert!(lease_held(
            &spec(Some("k8s02_abc"), "2026-05-15T07:39:50Z"),
            now
        ));
        assert!(!lease_held(
            &spec(Some("k8s02_abc"), "2026-05-15T07:39:00Z"),
            now
        ));
        assert!(!lease_held(&spec(Some(""), "2026-05-15T07:39:59Z"), now));
        assert!(!lease_held(&spec(None, "2026-05-15T07:39:59Z"), now));
        assert!(!lease_held(&LeaseSpec::default(), now));
    }
}
