//! Leases: whether one is held (leader election, node heartbeats).

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::jiff::Timestamp;

use crate::k8s::duration::seconds_since;

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
