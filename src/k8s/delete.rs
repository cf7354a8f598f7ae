//! Safe deletes: a UID precondition, a restorable backup, and a server-side dry run in check
//! mode, the same for every action that deletes.
//!
//! # Guarantees
//! - The delete names the UID that was judged, so an object re-created under the same name in
//!   the meantime is never hit: the API server answers 409 and the result is
//!   [`Deletion::Replaced`]. An object already gone (404) is [`Deletion::Gone`].
//! - In check mode the delete is sent with `dryRun=All`: nothing is removed. A dry run the
//!   server refuses is not a failure of the check (it is what a real run would meet), so it is
//!   returned as [`Deletion::Done`] with a warning from [`dry_run_refused`].
//! - A backup is written (and synced) before the delete is sent; [`backup`] names the file
//!   after the object and the moment, so runs never overwrite each other's files.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::Cluster;
use crate::error::{Error, Result};

/// How a delete went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// Deleted (in check mode: the dry run passed, or was refused with a warning).
    Done,
    /// Already gone (404).
    Gone,
    /// Re-created under the same name (the UID precondition failed, 409).
    Replaced,
}

impl Deletion {
    /// The warning for a delete that found `label` gone or re-created meanwhile; `None` when
    /// it was deleted.
    #[must_use]
    pub fn meanwhile(self, label: &str) -> Option<String> {
        match self {
            Self::Done => None,
            Self::Gone => Some(format!("{label} was deleted by someone else meanwhile")),
            Self::Replaced => Some(format!(
                "{label} was re-created (new UID) meanwhile; the new one was left alone"
            )),
        }
    }
}

/// How to delete: grace period and check mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeleteOptions {
    /// Send a server-side dry run only.
    pub dry_run: bool,
    /// `gracePeriodSeconds` (`Some(0)`: a force delete).
    pub grace_period_seconds: Option<u32>,
}

/// Deletes `name` on condition that its UID is still `uid`. `label` names the object in
/// errors and warnings (`pod ci/x (uid …)`). Returns the API error of a real delete for the
/// caller to wrap with what was done before it.
pub async fn delete_uid<K>(
    api: &Api<K>,
    name: &str,
    uid: &str,
    options: DeleteOptions,
    warnings: &mut Vec<String>,
    cluster: &Cluster,
    label: &str,
) -> std::result::Result<Deletion, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        dry_run: options.dry_run,
        grace_period_seconds: options.grace_period_seconds,
        propagation_policy: options
            .grace_period_seconds
            .map(|_| PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(Deletion::Done),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deletion::Gone),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Deletion::Replaced),
        Err(err) if options.dry_run => {
            let err = cluster.error("delete", label.to_owned())(err);
            warnings.push(dry_run_refused("delete", &err));
            Ok(Deletion::Done)
        }
        Err(err) => Err(err),
    }
}

/// The warning for a server-side dry run the server refused (check mode): the real run would
/// likely fail the same way.
#[must_use]
pub fn dry_run_refused(what: &str, error: &Error) -> String {
    format!(
        "a server-side dry run of the {what} was refused, so the real run may fail: {}",
        error.message_with_causes()
    )
}

/// What a backup file is of.
#[derive(Debug, Clone, Copy)]
pub struct BackupOf<'a> {
    /// Lower-case kind, e.g. `pod`, `mutatingwebhookconfiguration`.
    pub kind: &'a str,
    /// Namespace, for namespaced objects.
    pub namespace: Option<&'a str>,
    /// Name.
    pub name: &'a str,
    /// UID.
    pub uid: &'a str,
    /// What kubemend is about to do, e.g. `deleted`, `force-deleted`.
    pub verb: &'a str,
}

/// Writes a restorable backup of `object` to `dir` before it is deleted: the file is
/// `<kind>-[<namespace>-]<name>-<UTC time>-<uid prefix>.yaml`, a comment saying what it is and
/// how to restore it, then the manifest without server-populated fields. Returns the path.
pub fn backup(dir: &Path, of: BackupOf<'_>, object: &Value) -> Result<PathBuf> {
    let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    let uid_prefix: String = of.uid.chars().take(8).collect();
    let qualified = match of.namespace {
        Some(ns) => format!("{ns}/{}", of.name),
        None => of.name.to_owned(),
    };
    let file_name = format!(
        "{}-{}-{stamp}-{uid_prefix}.yaml",
        of.kind,
        qualified.replace('/', "-")
    );
    let header = format!(
        "# Backup of {} {qualified} (uid {}) taken before kubemend {} it.\n\
         # Restore: kubectl apply -f {file_name}\n",
        of.kind, of.uid, of.verb,
    );
    let mut manifest = object.clone();
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        // A restored object must not arrive already being deleted.
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
    }
    crate::outcome::write_backup(dir, &file_name, &header, &manifest)
}
