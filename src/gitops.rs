//! The forms of an in-cluster fix that a repository can take, for the GitOps tool (or the
//! manifest microk8s applies) that would otherwise revert it: items appended to a list of one
//! object, as a kustomize JSON 6902 patch, as the whole corrected object, or as a unified diff
//! of a manifest file in a checkout.
//!
//! kubemend writes nothing into a repository and pushes nothing: the fix is returned, and the
//! playbook (or the operator) commits it with the credentials it already has.
//!
//! A list without a merge key (a ClusterRole's `rules`) is replaced whole by strategic merge and
//! by server-side apply, so the patch appends each item (`op: add`, `path: /rules/-`) to what
//! the manifest holds: it survives re-renders of an upstream manifest that itself changes.

use std::fmt::Write as _;

use serde_json::Value;

use crate::error::{Error, Result};

/// A kustomize JSON 6902 patch (YAML) appending each of `items` to the list at `list` (a JSON
/// pointer such as `/rules`), each preceded by its comment line, if any.
#[must_use]
pub fn append_patch(list: &str, items: &[(Value, Option<String>)]) -> String {
    let mut out = String::new();
    for (item, comment) in items {
        if let Some(comment) = comment {
            let _ = writeln!(out, "# {comment}");
        }
        let _ = writeln!(out, "- op: add\n  path: {list}/-\n  value: {}", flow(item));
    }
    out
}

/// The kustomization entry that applies the patch file `file` to one object.
#[must_use]
pub fn kustomization_entry(
    group: &str,
    version: &str,
    kind: &str,
    name: &str,
    file: &str,
) -> String {
    format!(
        "patches:\n  - path: {file}\n    target:\n      group: {group}\n      version: {version}\n      \
         kind: {kind}\n      name: {name}\n"
    )
}

/// `value` as one line of YAML flow style (JSON is YAML: strings quoted, so nothing is read as
/// another type).
fn flow(value: &Value) -> String {
    value.to_string()
}

/// The manifest document of `kind` named `name` in a (multi-document) YAML `text`, parsed, with
/// its line span; `None` when no document is that object.
#[must_use]
pub fn find_document(text: &str, kind: &str, name: &str) -> Option<(Value, usize, usize)> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut start = 0;
    for end in 0..=lines.len() {
        let separator = lines
            .get(end)
            .is_some_and(|l| l.trim_end() == "---" || l.starts_with("--- "));
        if end < lines.len() && !separator {
            continue;
        }
        let doc: String = lines[start..end].concat();
        if !doc.trim().is_empty() {
            let value: Value = serde_saphyr::from_str(&doc).unwrap_or(Value::Null);
            if value["kind"] == kind && value["metadata"]["name"] == name {
                return Some((value, start, end));
            }
        }
        start = end + 1;
    }
    None
}

/// `text` with `items` appended at the end of the top-level list `key` of the document spanning
/// lines `start..end`, in the indentation the list already uses, each preceded by its comment
/// line. The list must exist in block style (`key:` on its own line).
pub fn append_to_list(
    text: &str,
    (start, end): (usize, usize),
    key: &str,
    items: &[(Value, Option<String>)],
    file: &str,
) -> Result<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_comment_or_blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let key_line = (start..end)
        .find(|&i| indent(lines[i]) == 0 && lines[i].trim_end() == format!("{key}:"))
        .ok_or_else(|| Error::InvalidOption {
            option: "repo_file".into(),
            problem: format!(
                "{file}: the document has no top-level `{key}:` line in block style; write the \
                 list in block style (`{key}:` on its own line), or use gitops patch or \
                 manifest instead"
            ),
        })?;
    let mut item_indent = None;
    let mut last = key_line;
    for (i, line) in lines.iter().enumerate().take(end).skip(key_line + 1) {
        if is_comment_or_blank(line) {
            continue;
        }
        let at = indent(line);
        let is_item = line.trim_start().starts_with("- ") || line.trim() == "-";
        if item_indent.is_none() && is_item {
            item_indent = Some(at);
        }
        let inside = at > 0 || (is_item && item_indent == Some(0));
        if !inside {
            break;
        }
        last = i;
    }
    let pad = " ".repeat(item_indent.unwrap_or(2));
    let mut added = String::new();
    for (item, comment) in items {
        if let Some(comment) = comment {
            let _ = writeln!(added, "{pad}# {comment}");
        }
        let fields: Vec<(String, String)> = item
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), flow(v)))
            .collect();
        for (n, (field, value)) in fields.iter().enumerate() {
            let lead = if n == 0 { "- " } else { "  " };
            let _ = writeln!(added, "{pad}{lead}{field}: {value}");
        }
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        if i == last {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&added);
        }
    }
    Ok(out)
}

/// A unified diff of `before` and `after`, both headed `path`, that `patch -p0` applies from the
/// directory `path` is relative to (or `patch PATH < diff`).
#[must_use]
pub fn unified_diff(path: &str, before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(path, path)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MANIFEST: &str = "\
---
# Source: calico/templates/calico-kube-controllers-rbac.yaml
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: calico-kube-controllers
rules:
  # Nodes are watched to monitor for deletions.
  - apiGroups: [\"\"]
    resources:
      - nodes
    verbs:
      - watch
      - list
      - get
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: calico-kube-controllers
";

    fn pods() -> (Value, Option<String>) {
        (
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}),
            Some("kubemend: workloadendpoint (v3.13.2) lists pods".into()),
        )
    }

    #[test]
    fn the_patch_appends_each_item_with_its_comment() {
        let patch = append_patch("/rules", &[pods()]);
        assert_eq!(
            patch,
            "# kubemend: workloadendpoint (v3.13.2) lists pods\n- op: add\n  path: /rules/-\n  \
             value: {\"apiGroups\":[\"\"],\"resources\":[\"pods\"],\"verbs\":[\"get\",\"list\",\"watch\"]}\n"
        );
        let parsed: Value = serde_saphyr::from_str(&patch).unwrap();
        assert_eq!(parsed[0]["value"]["resources"], json!(["pods"]));
    }

    #[test]
    fn a_rule_is_appended_to_the_right_document_in_the_lists_own_indentation() {
        let (value, start, end) =
            find_document(MANIFEST, "ClusterRole", "calico-kube-controllers").unwrap();
        assert_eq!(value["rules"][0]["resources"], json!(["nodes"]));
        let after =
            append_to_list(MANIFEST, (start, end), "rules", &[pods()], "calico.yaml").unwrap();
        assert!(after.contains(
            "      - get\n  # kubemend: workloadendpoint (v3.13.2) lists pods\n  - apiGroups: [\"\"]\n    \
             resources: [\"pods\"]\n    verbs: [\"get\",\"list\",\"watch\"]\n---\nkind: ClusterRoleBinding"
        ), "{after}");
        let (fixed, _, _) =
            find_document(&after, "ClusterRole", "calico-kube-controllers").unwrap();
        assert_eq!(fixed["rules"][1]["resources"], json!(["pods"]));
        assert_eq!(fixed["rules"][0]["verbs"], json!(["watch", "list", "get"]));
        let diff = unified_diff("calico.yaml", MANIFEST, &after);
        assert!(
            diff.starts_with("--- calico.yaml\n+++ calico.yaml\n"),
            "{diff}"
        );
    }

    #[test]
    fn items_at_the_keys_own_indentation_are_kept_in_the_list() {
        let text = "kind: ClusterRole\nmetadata:\n  name: r\nrules:\n- apiGroups: [\"\"]\n  resources: [nodes]\n  verbs: [get]\n";
        let (_, start, end) = find_document(text, "ClusterRole", "r").unwrap();
        let after = append_to_list(
            text,
            (start, end),
            "rules",
            &[(json!({"verbs": ["list"]}), None)],
            "f",
        )
        .unwrap();
        assert!(
            after.ends_with("  verbs: [get]\n- verbs: [\"list\"]\n"),
            "{after}"
        );
    }

    #[test]
    fn a_file_without_the_object_or_with_a_flow_list_is_said_so() {
        assert!(find_document("kind: Pod\n", "ClusterRole", "r").is_none());
        let text = "kind: ClusterRole\nmetadata: {name: r}\nrules: []\n";
        let (_, start, end) = find_document(text, "ClusterRole", "r").unwrap();
        let err = append_to_list(text, (start, end), "rules", &[pods()], "f.yaml").unwrap_err();
        assert!(err.to_string().contains("f.yaml"), "{err}");
    }
}
