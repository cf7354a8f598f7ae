//! What an action reports: [`Outcome`] (changed, message, warnings, diffs, data) and [`Diff`].
//!
//! Actions fill these the same way in check mode and for real, so both report the same
//! `changed`; the protocol and the CLI decide how to print them.

use serde::Serialize;
use serde_json::{Map, Value};

/// What an action run found and did: the protocol's keys plus the action's typed report.
///
/// Filled step by step by the pipeline's plan, apply and verify, so that on a failure it still
/// holds everything already done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome<R = Map<String, Value>> {
    /// Whether something was changed (in check mode: would be changed).
    pub changed: bool,
    /// One sentence for people, e.g. `added 2 rules to clusterrole "calico-kube-controllers"`.
    pub msg: String,
    /// Things the operator should know although the run succeeded.
    pub warnings: Vec<String>,
    /// Before/after of every object touched (or that would be touched).
    pub diff: Vec<Diff>,
    /// The action's result keys (snake_case), merged into the module result.
    pub report: R,
    /// Set when the action declined to run (Ansible shows the task as skipped).
    pub skipped: Option<bool>,
}

impl<R> Outcome<R> {
    /// Adds a warning.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// The same outcome with the report turned into its JSON keys.
    #[must_use]
    pub fn into_json(self) -> Outcome
    where
        R: Serialize,
    {
        let report = match serde_json::to_value(&self.report) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Outcome {
            changed: self.changed,
            msg: self.msg,
            warnings: self.warnings,
            diff: self.diff,
            report,
            skipped: self.skipped,
        }
    }
}

/// One object's before and after, as YAML text, in Ansible's diff format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// YAML of the object before; empty when it did not exist.
    pub before: String,
    /// YAML of the object after; empty when it is deleted.
    pub after: String,
    /// Label for the before side, e.g. `clusterrole/calico-kube-controllers (before)`.
    pub before_header: String,
    /// Label for the after side.
    pub after_header: String,
}

impl Diff {
    /// A diff of two optional objects, rendered as YAML with server-managed noise removed.
    #[must_use]
    pub fn of<T: Serialize>(label: &str, before: Option<&T>, after: Option<&T>) -> Self {
        Self {
            before: before.map(to_yaml).unwrap_or_default(),
            after: after.map(to_yaml).unwrap_or_default(),
            before_header: format!(
                "{label} ({})",
                if before.is_some() { "before" } else { "absent" }
            ),
            after_header: format!(
                "{label} ({})",
                if after.is_some() { "after" } else { "deleted" }
            ),
        }
    }

    /// Ansible's `{before, after, before_header, after_header}` object.
    #[must_use]
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "before": self.before,
            "after": self.after,
            "before_header": self.before_header,
            "after_header": self.after_header,
        })
    }

    /// A unified diff for terminals.
    #[must_use]
    pub fn unified(&self) -> String {
        similar::TextDiff::from_lines(&self.before, &self.after)
            .unified_diff()
            .context_radius(4)
            .header(&self.before_header, &self.after_header)
            .to_string()
    }
}

/// YAML of a Kubernetes object for people: without managedFields, resourceVersion, uid,
/// creationTimestamp, generation and status, which only add noise to a diff.
#[must_use]
pub fn to_yaml<T: Serialize>(object: &T) -> String {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    strip_server_fields(&mut value);
    serde_saphyr::to_string(&value).unwrap_or_else(|_| value.to_string())
}

/// Removes server-populated fields so that the object reads like a manifest; the result can be
/// passed to `kubectl apply` to re-create the object.
pub fn strip_server_fields(value: &mut Value) {
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in [
                "managedFields",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "selfLink",
            ] {
                metadata.remove(key);
            }
            if metadata
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                metadata.remove("annotations");
            }
        }
    }
}

/// Writes a restorable backup of an object to `dir/file_name` (creating `dir`): `header`
/// (comment lines), then the object as YAML without server-populated fields. Atomic and safe in
/// a directory others can write to: a temporary file with an unpredictable name, created
/// exclusively (`O_CREAT|O_EXCL` fails on any existing name, a symlink included) with mode 0600, synced, then renamed over the
/// target (a rename replaces a symlink, it does not follow it), and the directory synced.
/// The temporary file is removed when any step fails. Returns the path.
pub fn write_backup(
    dir: &std::path::Path,
    file_name: &str,
    header: &str,
    object: &Value,
) -> crate::Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let file = dir.join(file_name);
    let mut manifest = object.clone();
    strip_server_fields(&mut manifest);
    let text = format!("{header}{}", to_yaml(&manifest));
    let io = |source| crate::Error::WriteBackup {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let (tmp, mut handle) = {
        let mut attempt = 0_u32;
        loop {
            let tmp = dir.join(format!(
                ".{file_name}.{}.tmp",
                unpredictable_suffix(attempt)
            ));
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp);
            match opened {
                Ok(handle) => break (tmp, handle),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(err) => return Err(io(err)),
            }
        }
    };
    let written = handle
        .write_all(text.as_bytes())
        .and_then(|()| handle.sync_all())
        .and_then(|()| {
            drop(handle);
            std::fs::rename(&tmp, &file)
        });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(err));
    }
    // The rename is durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(file)
}

/// Hard to guess before the run: the time in nanoseconds, the process id, a per-call counter.
fn unpredictable_suffix(attempt: u32) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(attempt);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backup_never_writes_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        // The old code's temporary name, and the target name itself, both planted.
        std::os::unix::fs::symlink(&victim, dir.path().join("x.yaml.tmp")).unwrap();
        let object = json!({"kind": "X", "metadata": {"name": "a"}});
        let path = write_backup(dir.path(), "x.yaml", "# backup\n", &object).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# backup\nkind: X"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_backup(dir.path(), "x.yaml", "# again\n", &object).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(std::result::Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp") && n != "x.yaml.tmp")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn failed_backup_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was written.
        std::fs::create_dir(dir.path().join("x.yaml")).unwrap();
        std::fs::write(dir.path().join("x.yaml").join("inside"), "").unwrap();
        let err = write_backup(dir.path(), "x.yaml", "", &json!({"kind": "X"})).unwrap_err();
        assert!(matches!(err, crate::Error::WriteBackup { .. }), "{err}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(std::result::Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x.yaml".to_owned()]);
    }

    #[test]
    fn diff_of_a_deleted_object_has_empty_after() {
        let object =
            json!({"kind": "X", "metadata": {"name": "a", "uid": "u1", "resourceVersion": "5"}});
        let diff = Diff::of("x/a", Some(&object), None);
        assert!(diff.before.contains("name: a"), "{}", diff.before);
        assert!(!diff.before.contains("uid"), "{}", diff.before);
        assert_eq!(diff.after, "");
        assert_eq!(diff.after_header, "x/a (deleted)");
        assert!(diff.unified().contains("-kind: X"), "{}", diff.unified());
    }
}
