//! A cluster-wide lock: a coordination.k8s.io Lease that one run holds while it works, renews
//! while it works, and that records what the run has done, so that a run that was stopped or
//! failed can be resumed by the next one.
//!
//! # States
//! - **Free**: no Lease. Taking it creates one (a concurrent creator gets 409 and is refused).
//! - **Held**: a holder renewed it within its TTL. Another run is refused, told who and since
//!   when.
//! - **Released** (holder empty) after a failed run, or **expired** (not renewed within the TTL)
//!   after a run that was killed: the next run takes it over (with a warning when expired) and
//!   reads the record of what was done.
//!
//! Every write carries the resourceVersion read, so two runs taking it at once cannot both
//! win. A finished run deletes the Lease (and with it the record). Whether a new run resumes
//! from a record is the caller's decision ([`LockState::record_age`]): a taker that does not
//! resume starts with an empty record. Every write goes through the client it is given, so a
//! caller can move its writes off an apiserver that is restarting.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};

use crate::client::Cluster;
use crate::error::{Error, Result};
use crate::k8s::FIELD_MANAGER;
use crate::k8s::duration::{format_ago, seconds_since};

/// Annotation holding the JSON list of what the run has finished (node names).
pub const DONE_ANNOTATION: &str = "kubemend.io/done";

/// Annotation holding when the run holding the lock started.
pub const STARTED_ANNOTATION: &str = "kubemend.io/started";

/// What a lock looks like before a run takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// No lease.
    Free,
    /// Released by a run that stopped on a failure; `done` is its record.
    Released {
        /// The run that released it.
        run: String,
        /// What it had finished.
        done: Vec<String>,
        /// Seconds since it was last written (released).
        released_ago: i64,
    },
    /// Not renewed within its TTL: the holder died.
    Expired {
        /// The dead holder.
        holder: String,
        /// What it had finished.
        done: Vec<String>,
        /// Seconds since the last renewal.
        renewed_ago: i64,
    },
    /// Held by a live run.
    Held {
        /// The holder.
        holder: String,
        /// When its run started (or acquired the lease).
        since: String,
        /// What it has finished.
        done: Vec<String>,
    },
}

impl LockState {
    /// The record a new run resumes from.
    #[must_use]
    pub fn done(&self) -> &[String] {
        match self {
            Self::Free => &[],
            Self::Released { done, .. } | Self::Expired { done, .. } | Self::Held { done, .. } => {
                done
            }
        }
    }
}

/// The state of a lease as read.
#[must_use]
pub fn state_of(lease: Option<&Lease>, now: Timestamp) -> LockState {
    let Some(lease) = lease else {
        return LockState::Free;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let annotations = lease.metadata.annotations.clone().unwrap_or_default();
    let done: Vec<String> = annotations
        .get(DONE_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed_ago = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map_or(i64::MAX, |t| seconds_since(t.0, now));
    if holder.is_empty() {
        let run = annotations
            .get("kubemend.io/released-by")
            .cloned()
            .unwrap_or_default();
        return LockState::Released {
            run,
            done,
            released_ago: renewed_ago,
        };
    }
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    if renewed_ago > ttl {
        return LockState::Expired {
            holder,
            done,
            renewed_ago,
        };
    }
    let since = annotations
        .get(STARTED_ANNOTATION)
        .cloned()
        .or_else(|| spec.acquire_time.as_ref().map(|t| t.0.to_string()))
        .unwrap_or_default();
    LockState::Held {
        holder,
        since,
        done,
    }
}

impl LockState {
    /// The run that left a record, and how long ago it last wrote it (None: no record to
    /// resume, free or held).
    #[must_use]
    pub fn record_age(&self) -> Option<(&str, i64)> {
        match self {
            Self::Released {
                run, released_ago, ..
            } => Some((run, *released_ago)),
            Self::Expired {
                holder,
                renewed_ago,
                ..
            } => Some((holder, *renewed_ago)),
            Self::Free | Self::Held { .. } => None,
        }
    }

    /// What the lock is, for people (never Rust's debug text).
    #[must_use]
    pub fn text(&self) -> String {
        let done = |done: &[String]| {
            if done.is_empty() {
                String::new()
            } else {
                format!(" (done: {})", done.join(", "))
            }
        };
        match self {
            Self::Free => "deleted".into(),
            Self::Released { run, done: d, .. } if run.is_empty() => {
                format!("released{}", done(d))
            }
            Self::Released { run, done: d, .. } => {
                format!("released by run {run}{}", done(d))
            }
            Self::Expired {
                holder,
                done: d,
                renewed_ago,
            } => format!(
                "expired: run {holder} last renewed it {}{}",
                format_ago(*renewed_ago),
                done(d)
            ),
            Self::Held {
                holder,
                since,
                done: d,
            } => format!("held by run {holder} since {since}{}", done(d)),
        }
    }
}

/// A lock this run holds.
#[derive(Debug)]
pub struct Lock {
    namespace: String,
    name: String,
    run: String,
    ttl_seconds: i32,
    lease: Lease,
    last_renew: std::time::Instant,
    /// What this run (and the one it resumed) has finished.
    pub done: Vec<String>,
}

fn refused(namespace: &str, name: &str, holder: &str, since: &str, done: &[String]) -> Error {
    Error::LockHeld {
        lease: format!("{namespace}/{name}"),
        holder: holder.to_owned(),
        since: since.to_owned(),
        done: if done.is_empty() {
            String::new()
        } else {
            format!(" (done: {})", done.join(", "))
        },
    }
}

/// Reads the lock's lease.
pub async fn read(cluster: &Cluster, namespace: &str, name: &str) -> Result<Option<Lease>> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(cluster.error("get", format!("lease {namespace}/{name}")))
}

/// Takes the lock for `run`, unless a live run holds it. Returns the lock and the state it was
/// taken from (to warn on a take-over). With `resume`, the lock keeps the record it was taken
/// with; without, it starts with an empty one.
pub async fn acquire(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    run: &str,
    ttl_seconds: i32,
    resume: bool,
) -> Result<(Lock, LockState)> {
    let api: Api<Lease> = Api::namespaced(cluster.client.clone(), namespace);
    let label = format!("lease {namespace}/{name}");
    let now = Timestamp::now();
    let current = api
        .get_opt(name)
        .await
        .map_err(cluster.error("get", label.clone()))?;
    let state = state_of(current.as_ref(), now);
    if let LockState::Held {
        holder,
        since,
        done,
    } = &state
        && holder != run
    {
        return Err(refused(namespace, name, holder, since, done));
    }
    let done = if resume {
        state.done().to_vec()
    } else {
        Vec::new()
    };
    let mut lease = current.clone().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    });
    lease.metadata.managed_fields = None;
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(STARTED_ANNOTATION.into(), now.to_string());
    annotations.insert(
        DONE_ANNOTATION.into(),
        serde_json::to_string(&done).unwrap_or_default(),
    );
    annotations.remove("kubemend.io/released-by");
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(run.to_owned()),
        lease_duration_seconds: Some(ttl_seconds),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    });
    let params = PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let written = match &current {
        Some(_) => api.replace(name, &params, &lease).await,
        None => api.create(&params, &lease).await,
    };
    let lease = match written {
        Ok(lease) => lease,
        // Another run created or took it between our read and our write.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let now_held = api
                .get_opt(name)
                .await
                .map_err(cluster.error("get", label.clone()))?;
            return Err(match state_of(now_held.as_ref(), Timestamp::now()) {
                LockState::Held {
                    holder,
                    since,
                    done,
                } => refused(namespace, name, &holder, &since, &done),
                other => Error::LockChanged {
                    lease: format!("{namespace}/{name}"),
                    now: other.text(),
                },
            });
        }
        Err(err) => return Err(cluster.error("write", label)(err)),
    };
    Ok((
        Lock {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            run: run.to_owned(),
            ttl_seconds,
            lease,
            last_renew: std::time::Instant::now(),
            done,
        },
        state,
    ))
}

impl Lock {
    fn label(&self) -> String {
        format!("lease {}/{}", self.namespace, self.name)
    }

    /// Writes the lease through `cluster` (the apiserver the caller chose for now).
    async fn write(&mut self, cluster: &Cluster) -> Result<()> {
        self.lease.metadata.managed_fields = None;
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.into()),
        };
        let api: Api<Lease> = Api::namespaced(cluster.client.clone(), &self.namespace);
        match api.replace(&self.name, &params, &self.lease).await {
            Ok(lease) => {
                self.lease = lease;
                self.last_renew = std::time::Instant::now();
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Err(Error::LockHeld {
                lease: format!("{}/{}", self.namespace, self.name),
                holder: "another run (this run lost the lock: the lease changed under it)".into(),
                since: "just now".into(),
                done: String::new(),
            }),
            Err(err) => Err(cluster.error("renew", self.label())(err)),
        }
    }

    /// Renews the lease now (before a step that cannot renew it while it runs).
    pub async fn renew(&mut self, cluster: &Cluster) -> Result<()> {
        self.touch();
        self.write(cluster).await
    }

    /// Renews the lease when a third of its TTL has passed since the last write.
    pub async fn renew_if_due(&mut self, cluster: &Cluster) -> Result<()> {
        let third = std::time::Duration::from_secs(u64::from(self.ttl_seconds.unsigned_abs()) / 3);
        if self.last_renew.elapsed() < third.max(std::time::Duration::from_secs(1)) {
            return Ok(());
        }
        self.touch();
        self.write(cluster).await
    }

    fn touch(&mut self) {
        if let Some(spec) = self.lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(Timestamp::now()));
        }
    }

    /// Records `item` as done (and renews).
    pub async fn record(&mut self, cluster: &Cluster, item: &str) -> Result<()> {
        if !self.done.iter().any(|d| d == item) {
            self.done.push(item.to_owned());
        }
        let done = serde_json::to_string(&self.done).unwrap_or_default();
        self.lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(DONE_ANNOTATION.into(), done);
        self.touch();
        self.write(cluster).await
    }

    /// Releases the lock after a failure, keeping the record for the next run to resume from.
    pub async fn release_keeping_record(mut self, cluster: &Cluster) -> Result<()> {
        self.touch();
        if let Some(spec) = self.lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        self.lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("kubemend.io/released-by".into(), self.run.clone());
        self.write(cluster).await
    }

    /// Releases the lock after a finished run: the lease and its record are deleted.
    pub async fn finish(&mut self, cluster: &Cluster) -> Result<()> {
        let params =
            DeleteParams {
                preconditions: self.lease.metadata.uid.clone().map(|uid| {
                    kube::api::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }
                }),
                ..DeleteParams::default()
            };
        let api: Api<Lease> = Api::namespaced(cluster.client.clone(), &self.namespace);
        match api.delete(&self.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(cluster.error("delete", self.label())(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, ttl: i32, done: &[&str]) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l", "annotations": {
                DONE_ANNOTATION: serde_json::to_string(done).unwrap(),
                STARTED_ANNOTATION: "2026-05-15T07:00:00Z",
            }},
            "spec": {"holderIdentity": holder, "renewTime": renewed,
                     "leaseDurationSeconds": ttl},
        }))
        .unwrap()
    }

    #[test]
    fn a_lock_that_changed_meanwhile_is_told_in_words_not_debug_text() {
        let now: Timestamp = "2026-05-15T07:10:00Z".parse().unwrap();
        let expired = lease(Some("run-a"), "2026-05-15T07:00:00.000000Z", 60, &["k8s01"]);
        let released = lease(None, "2026-05-15T07:09:50.000000Z", 60, &[]);
        let texts = [
            LockState::Free.text(),
            state_of(Some(&expired), now).text(),
            state_of(Some(&released), now).text(),
        ];
        assert_eq!(texts[0], "deleted");
        assert_eq!(
            texts[1],
            "expired: run run-a last renewed it 10m ago (done: k8s01)"
        );
        assert_eq!(texts[2], "released");
        for text in &texts {
            assert!(
                !text.contains('{') && !text.contains("renewed_ago"),
                "{text}"
            );
        }
        let err = Error::LockChanged {
            lease: "kube-system/l".into(),
            now: texts[1].clone(),
        };
        assert!(err.hint().is_some());
        assert!(
            err.to_string()
                .contains("changed while this run was taking it")
        );
    }

    #[test]
    fn a_live_lock_is_held_an_old_one_expired_a_released_one_keeps_its_record() {
        let now: Timestamp = "2026-05-15T07:10:00Z".parse().unwrap();
        assert_eq!(state_of(None, now), LockState::Free);
        let held = lease(Some("run-a"), "2026-05-15T07:09:50.000000Z", 60, &["k8s01"]);
        assert!(
            matches!(state_of(Some(&held), now), LockState::Held { holder, .. } if holder == "run-a")
        );
        let expired = lease(Some("run-a"), "2026-05-15T07:00:00.000000Z", 60, &["k8s01"]);
        match state_of(Some(&expired), now) {
            LockState::Expired { done, .. } => assert_eq!(done, ["k8s01"]),
            other => panic!("{other:?}"),
        }
        let released = lease(None, "2026-05-15T07:09:50.000000Z", 60, &["k8s01", "k8s02"]);
        assert_eq!(state_of(Some(&released), now).done(), ["k8s01", "k8s02"]);
    }
}
