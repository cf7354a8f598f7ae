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
/// (comment lines), then the object as YAML without server-populated fields. Atomic: a
/// temporary file, then a rename. Returns the path.
pub fn write_backup(
    dir: &std::path::Path,
    file_name: &str,
    header: &str,
    object: &Value,
) -> crate::Result<std::path::PathBuf> {
    let file = dir.join(file_name);
    let mut manifest = object.clone();
    strip_server_fields(&mut manifest);
    let text = format!("{header}{}", to_yaml(&manifest));
    let tmp = file.with_extension("yaml.tmp");
    let io = |source| crate::Error::WriteBackup {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &file).map_err(io)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
