//! Builds each module's sidecar docs, `ansible/kubemend/plugins/modules/<module>.yml`: what
//! `ansible-doc kubemend.microk8s.<module>` shows and what ansible-test's validate-modules
//! checks, for modules that are one compiled binary and so cannot carry DOCUMENTATION in code.
//!
//! DOCUMENTATION is derived from the options structs, like `schemas/<module>.json`: the
//! action's ABOUT is the short description and the struct's doc comment the description; each
//! option's type, elements, default, choices (enums), required and suboptions (nested objects
//! such as RuleSpec) come from its JSON schema, and an option whose flag takes a PATH, DIR or
//! FILE is `type: path`. `no_log` (`x-no-log`) is left out: it belongs to the argument spec, not
//! to the docs, whose schema refuses it; the option's description says that it is never shown.
//! Binary modules cannot use doc fragments, so the cluster-access options are repeated in every
//! module.
//!
//! RETURN is derived the same way from the action's Report struct: each field's doc comment
//! is the description, its type the type, `x-sample` (a schemars extension on the field) the
//! sample, and nested structs the `contains`. So the docs cannot drift from the results.
//!
//! EXAMPLES cannot be derived: they are written per module beside this file ([`calico_ipam`],
//! [`calico_rbac`], [`cert_refresh`], [`diagnose`], [`stale_apiservice`], [`stale_webhook`], [`stuck_pods`]) as the YAML Ansible users know.
//!
//! The files are written and checked with the schemas ([`crate::schema`]).

mod calico_ipam;
mod calico_rbac;
mod cert_refresh;
mod diagnose;
mod kubelite_restart;
mod stale_apiservice;
mod stale_webhook;
mod stuck_pods;

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::actions::ModuleSpec;

/// The collection's FQCN prefix.
pub const COLLECTION: &str = "kubemend.microk8s";

/// The action group of `meta/runtime.yml`, for `module_defaults`.
const ACTION_GROUP: &str = "kubemend.microk8s.kubemend";

/// DOCUMENTATION's author. validate-modules accepts only `Name (@github-handle)` or
/// `Name (!UNKNOWN)`; the maintainers have no GitHub handle to give yet.
const AUTHOR: &str = "kubemend maintainers (!UNKNOWN)";

/// The header comment. The collection is Apache-2.0, which the GPLv3 accepts; validate-modules
/// looks for "GNU General Public License" and "v3.0" on one line in the first 20 lines.
const HEADER: &str = "\
# Generated from the options structs by `kubemend-schemagen`; do not edit. Regenerate with
# `make schemas`, or see src/module_docs/ for the parts that are written by hand.
#
# Copyright: kubemend maintainers
# Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0), compatible with the
# GNU General Public License v3.0+ (https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: Apache-2.0
";

/// Notes every module shares: how it runs and where its cluster access comes from.
const NOTES: &[&str] = &[
    "The module is the compiled C(kubemend) binary: it needs no Python libraries and talks to \
     the Kubernetes API only. Run it where the API server is reachable, usually on the \
     controller with C(connection: local) or C(delegate_to: localhost).",
    "Cluster access, first match wins: the options O(kubeconfig), O(context), O(host), \
     O(api_key), O(ca_cert) and O(validate_certs); then the C(K8S_AUTH_*) variables an AWX \
     Kubernetes credential injects; then C(KUBECONFIG) or C(~/.kube/config); then the \
     in-cluster service account.",
    "Set the cluster-access options once for every module of the collection with \
     C(module_defaults) and C(group/kubemend.microk8s.kubemend).",
];

/// What the options structs cannot say about a module: written by hand, per module.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// The collection version the module first shipped in.
    version_added: &'static str,
    /// EXAMPLES: a YAML list of tasks, kept as text (ansible-doc shows it verbatim).
    examples: &'static str,
}

fn written(module: &str) -> Option<Written> {
    let written = match module {
        "calico_ipam" => Written {
            version_added: calico_ipam::VERSION_ADDED,
            examples: calico_ipam::EXAMPLES,
        },
        "calico_rbac" => Written {
            version_added: calico_rbac::VERSION_ADDED,
            examples: calico_rbac::EXAMPLES,
        },
        "cert_refresh" => Written {
            version_added: cert_refresh::VERSION_ADDED,
            examples: cert_refresh::EXAMPLES,
        },
        "kubelite_restart" => Written {
            version_added: kubelite_restart::VERSION_ADDED,
            examples: kubelite_restart::EXAMPLES,
        },
        "stale_apiservice" => Written {
            version_added: stale_apiservice::VERSION_ADDED,
            examples: stale_apiservice::EXAMPLES,
        },
        "stale_webhook" => Written {
            version_added: stale_webhook::VERSION_ADDED,
            examples: stale_webhook::EXAMPLES,
        },
        "diagnose" => Written {
            version_added: diagnose::VERSION_ADDED,
            examples: diagnose::EXAMPLES,
        },
        "stuck_pods" => Written {
            version_added: stuck_pods::VERSION_ADDED,
            examples: stuck_pods::EXAMPLES,
        },
        _ => return None,
    };
    Some(written)
}

/// The sidecar file of one module: (file name, content).
#[must_use]
pub fn file(spec: &ModuleSpec) -> (String, String) {
    let written = written(spec.name);
    let document = json!({
        "DOCUMENTATION": documentation(spec, written.map_or("", |w| w.version_added)),
        "EXAMPLES": written.map_or("", |w| w.examples),
        "RETURN": returns(spec),
    });
    // Sequences indented under their key, as yamllint (ansible-lint's yaml rule) wants.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.compact_list_indent = false;
    let body = serde_saphyr::to_string_with_options(&Block(&document), options).unwrap_or_default();
    let body: String = body.lines().map(tidy).collect();
    (format!("{}.yml", spec.name), format!("{HEADER}---\n{body}"))
}

/// One line of serde_saphyr's output, tidied for yamllint and exact reading back (which a unit
/// test checks): blank lines inside block scalars lose their indentation (trailing spaces),
/// and a folded scalar's `>` becomes `>-`, as no folded string here ends with a line break.
fn tidy(line: &str) -> String {
    if line.trim().is_empty() {
        "\n".to_owned()
    } else if line.ends_with(": >") || line.trim_start() == "- >" {
        format!("{line}-\n")
    } else {
        format!("{line}\n")
    }
}

/// A value serialized with every string as a block scalar where it helps reading: literal
/// (`|`) when it has line breaks (EXAMPLES), folded (`>`) when it is long. Plain serialization
/// would put a long string that needs quotes (a `: ` inside) on one line of any length.
struct Block<'a>(&'a Value);

impl serde::Serialize for Block<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::String(text) if text.contains('\n') => {
                serde_saphyr::LitStr(text).serialize(serializer)
            }
            Value::String(text) => serde_saphyr::FoldStr(text).serialize(serializer),
            Value::Array(items) => serializer.collect_seq(items.iter().map(Block)),
            Value::Object(map) => serializer.collect_map(map.iter().map(|(k, v)| (k, Block(v)))),
            other => other.serialize(serializer),
        }
    }
}

/// When the report keys are in the result: after validation, also when a later step fails.
const RETURNED: &str = "success, and on failure once the action has started";

/// RETURN of one module, from its Report's schema.
fn returns(spec: &ModuleSpec) -> Value {
    let schema = crate::actions::report_schemas()
        .into_iter()
        .find(|(name, _)| *name == spec.name)
        .map(|(_, schema)| schema())
        .unwrap_or_default();
    let mut out = Map::new();
    for (name, property) in properties(&schema, &schema) {
        let mut entry = return_entry(&property, &schema);
        entry.insert("returned".into(), json!(RETURNED));
        out.insert(name, Value::Object(reorder(entry)));
    }
    Value::Object(out)
}

/// The properties of an object schema, those of flattened structs (`allOf`) included.
fn properties(object: &Value, root: &Value) -> Vec<(String, Value)> {
    let object = resolve(object, root);
    let mut out: Vec<(String, Value)> = object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for part in object
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(properties(part, root));
    }
    out
}

/// One RETURN entry (description, type, elements, sample, contains).
fn return_entry(property: &Value, root: &Value) -> Map<String, Value> {
    let mut entry = Map::new();
    let description = property
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut description = paragraphs(description);
    let one = description.len() == 1;
    entry.insert(
        "description".into(),
        if one {
            json!(description.remove(0))
        } else {
            json!(description)
        },
    );
    let resolved = resolve(property, root);
    let kind = return_type(resolved, root);
    entry.insert("type".into(), json!(kind));
    let object = if kind == "list" {
        let items = resolve(resolved.get("items").unwrap_or(&Value::Null), root);
        entry.insert("elements".into(), json!(return_type(items, root)));
        items
    } else {
        resolved
    };
    let contains = properties(object, root);
    if !contains.is_empty() && (kind == "dict" || kind == "list") {
        let mut inner = Map::new();
        for (name, property) in contains {
            inner.insert(name, Value::Object(reorder(return_entry(&property, root))));
        }
        entry.insert("contains".into(), Value::Object(inner));
    }
    if let Some(sample) = property.get("x-sample") {
        entry.insert("sample".into(), sample.clone());
    }
    entry
}

/// Ansible's type of a result value.
fn return_type(schema: &Value, root: &Value) -> &'static str {
    let schema = resolve(schema, root);
    match json_type(schema) {
        Some("string") => "str",
        Some("boolean") => "bool",
        Some("integer") => "int",
        Some("number") => "float",
        Some("array") => "list",
        Some("object") => "dict",
        _ if schema.get("allOf").is_some() || schema.get("properties").is_some() => "dict",
        _ => "raw",
    }
}

/// The entry's keys in the order Ansible's own docs use.
fn reorder(entry: Map<String, Value>) -> Map<String, Value> {
    let mut entry = entry;
    let mut out = Map::new();
    for key in [
        "description",
        "type",
        "elements",
        "returned",
        "sample",
        "contains",
    ] {
        if let Some(value) = entry.remove(key) {
            out.insert(key.into(), value);
        }
    }
    out.extend(entry);
    out
}

/// DOCUMENTATION of one module, from its schema and its clap flags.
fn documentation(spec: &ModuleSpec, version_added: &str) -> Value {
    let schema = (spec.schema)();
    let path_options = path_options(spec);
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or(spec.about);
    let mut description = paragraphs(description);
    description.push(format!(
        "The same action runs from the command line as C(kubemend {}); its flags mirror these \
         options.",
        spec.command_name()
    ));
    json!({
        "module": spec.name,
        "short_description": spec.about,
        "description": description,
        "version_added": version_added,
        "author": [AUTHOR],
        "options": options(&schema, &schema, &path_options),
        "notes": NOTES,
        "attributes": {
            "action_group": {
                "description": format!(
                    "Use C(group/{ACTION_GROUP}) in C(module_defaults) to set defaults for \
                     this module."
                ),
                "support": "full",
                "membership": [ACTION_GROUP],
            },
            "check_mode": {
                "description": "Can run in check_mode and return changed status prediction \
                                without modifying target. Writes are sent as server-side dry \
                                runs and no backup file is written.",
                "support": "full",
            },
            "diff_mode": {
                "description": "Will return details on what has changed (or possibly needs \
                                changing in check_mode), when in diff mode: each object \
                                changed or deleted, as YAML before and after.",
                "support": "full",
            },
            "platform": {
                "description": "Target OS/families that can be operated against.",
                "support": "full",
                "platforms": "posix",
            },
        },
    })
}

/// Options whose flag takes a path (value name PATH, DIR or FILE): Ansible's `type: path`.
fn path_options(spec: &ModuleSpec) -> Vec<String> {
    let command = (spec.augment_args)(clap::Command::new(spec.name));
    command
        .get_arguments()
        .filter(|arg| {
            arg.get_value_names().is_some_and(|names| {
                names
                    .iter()
                    .any(|n| ["PATH", "DIR", "FILE"].contains(&n.as_str()))
            })
        })
        .map(|arg| arg.get_id().as_str().to_owned())
        .collect()
}

/// The `options` (or `suboptions`) of an object schema, in the schema's order.
fn options(object: &Value, root: &Value, path_options: &[String]) -> Map<String, Value> {
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut options = Map::new();
    for (name, property) in object
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let is_path = path_options.iter().any(|p| p == name);
        let mut option = option(property, root, is_path);
        if required.contains(&name.as_str()) {
            option.insert("required".into(), Value::Bool(true));
        }
        options.insert(name.clone(), Value::Object(option));
    }
    options
}

/// One option's documentation from its property schema.
fn option(property: &Value, root: &Value, is_path: bool) -> Map<String, Value> {
    let mut option = Map::new();
    let description = property
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    option.insert("description".into(), json!(paragraphs(description)));
    let resolved = resolve(property, root);
    let kind = match json_type(resolved) {
        Some("string") if is_path => "path",
        Some("boolean") => "bool",
        Some("integer") => "int",
        Some("array") => "list",
        Some("object") => "dict",
        _ => "str",
    };
    option.insert("type".into(), json!(kind));
    if kind == "list" {
        let items = resolve(resolved.get("items").unwrap_or(&Value::Null), root);
        let elements = match json_type(items) {
            Some("object") => "dict",
            Some("boolean") => "bool",
            Some("integer") => "int",
            _ => "str",
        };
        option.insert("elements".into(), json!(elements));
        if let Some(choices) = choices(items) {
            option.insert("choices".into(), json!(choices));
        }
        if elements == "dict" {
            option.insert(
                "suboptions".into(),
                Value::Object(options(items, root, &[])),
            );
        }
    } else if let Some(choices) = choices(resolved) {
        option.insert("choices".into(), json!(choices));
    } else if kind == "dict" && resolved.get("properties").is_some() {
        option.insert(
            "suboptions".into(),
            Value::Object(options(resolved, root, &[])),
        );
    }
    if let Some(default) = property.get("default").filter(|d| !d.is_null()) {
        option.insert("default".into(), default.clone());
    }
    if let Some(aliases) = property.get(crate::protocol::ALIASES_KEYWORD) {
        option.insert("aliases".into(), aliases.clone());
    }
    option
}

/// A `$ref` to `#/$defs/X` resolved against the root schema; anything else as it is.
fn resolve<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/"))
        .and_then(|pointer| root.pointer(&format!("/{pointer}")))
        .unwrap_or(schema)
}

/// The JSON type of a schema, ignoring `null` (`["string", "null"]` is a string); enums of
/// strings (`enum`, or `oneOf` of `const`s) are strings.
fn json_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => choices(schema).map(|_| "string"),
    }
}

/// The allowed values of an enum schema (`enum: [...]`, or `oneOf` of `const`s).
fn choices(schema: &Value) -> Option<Vec<Value>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.clone());
    }
    let variants = schema.get("oneOf").and_then(Value::as_array)?;
    variants
        .iter()
        .map(|v| v.get("const").cloned())
        .collect::<Option<Vec<_>>>()
}

/// Rustdoc text as Ansible doc paragraphs: blank lines separate paragraphs, other line breaks
/// are wraps; `code` becomes Ansible's C(code) unless it holds a parenthesis.
fn paragraphs(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .map(|p| ansible_markup(&p))
        .collect()
}

fn ansible_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let code = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        if code.contains(['(', ')']) {
            out.push_str(&rest[start..start + len + 2]);
        } else {
            let _ = write!(out, "C({code})");
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions;

    #[test]
    fn rustdoc_becomes_ansible_paragraphs_with_code_markup() {
        assert_eq!(
            paragraphs("Joined with `:`. Falls\nback.\n\nSecond `f(x)` para."),
            vec!["Joined with C(:). Falls back.", "Second `f(x)` para."]
        );
    }

    #[test]
    fn every_module_has_examples_return_and_version_added() {
        for spec in actions::modules() {
            let written = written(spec.name)
                .unwrap_or_else(|| panic!("{}: add its EXAMPLES and RETURN", spec.name));
            assert!(!written.version_added.is_empty(), "{}", spec.name);
            let examples: Value = serde_saphyr::from_str(written.examples)
                .unwrap_or_else(|e| panic!("{} EXAMPLES: {e}", spec.name));
            for task in examples.as_array().unwrap() {
                let module = format!("{COLLECTION}.{}", spec.name);
                let name = task["name"].as_str().unwrap_or_default();
                assert!(
                    name.starts_with(|c: char| c.is_ascii_uppercase()),
                    "{}: task names are capitalized sentences: {name:?}",
                    spec.name
                );
                let uses = task.get(&module).is_some()
                    || task["block"]
                        .as_array()
                        .is_some_and(|b| b.iter().any(|t| t.get(&module).is_some()));
                assert!(
                    uses,
                    "{}: example {name:?} does not use {module}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn return_documents_exactly_the_keys_of_each_report() {
        for spec in actions::modules() {
            let returns = returns(&spec);
            let documented: Vec<&String> = returns.as_object().unwrap().keys().collect();
            let report = (spec.default_report)();
            let produced: Vec<&String> = report.as_object().unwrap().keys().collect();
            assert_eq!(documented, produced, "{}: RETURN vs Report", spec.name);
            for key in &produced {
                assert!(
                    !crate::protocol::RESERVED_KEYS.contains(&key.as_str()),
                    "{}: report key {key:?} is a protocol key and would be dropped",
                    spec.name
                );
            }
            for (key, value) in returns.as_object().unwrap() {
                for field in ["description", "type", "returned"] {
                    assert!(
                        value.get(field).is_some(),
                        "{} RETURN {key}: no {field}",
                        spec.name
                    );
                }
                assert!(
                    !value["description"].as_str().is_some_and(str::is_empty),
                    "{} RETURN {key}: empty description (a doc comment on the field)",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn nested_report_structs_become_contains() {
        let spec = actions::find("stuck_pods").unwrap();
        let returns = returns(&spec);
        let deleted = &returns["deleted"];
        assert_eq!(deleted["type"], "list");
        assert_eq!(deleted["elements"], "dict");
        // Flattened StuckPod fields and DeletedPod's own.
        assert_eq!(deleted["contains"]["namespace"]["type"], "str");
        assert_eq!(deleted["contains"]["manifest"]["type"], "dict");
        assert_eq!(deleted["contains"]["gone"]["type"], "bool");
        assert_eq!(returns["counts"]["contains"]["scanned"]["type"], "int");
        assert_eq!(returns["verified"]["sample"], true);
    }

    /// Every `description` under `entries` (and their suboptions or contains) is text: a string
    /// or a list of strings. A `: ` in plain YAML would quietly make it a mapping.
    fn descriptions_are_text(entries: &Value, nested: &str, at: &str) {
        for (key, entry) in entries.as_object().into_iter().flatten() {
            let text = match &entry["description"] {
                Value::String(_) => true,
                Value::Array(lines) => lines.iter().all(Value::is_string),
                _ => false,
            };
            assert!(
                text,
                "{at}.{key}: description is not text: {}",
                entry["description"]
            );
            if let Some(inner) = entry.get(nested) {
                descriptions_are_text(inner, nested, &format!("{at}.{key}"));
            }
        }
    }

    #[test]
    fn every_file_reads_back_as_the_document_it_was_made_from() {
        for spec in actions::modules() {
            let written = written(spec.name).unwrap();
            let expected = json!({
                "DOCUMENTATION": documentation(&spec, written.version_added),
                "EXAMPLES": written.examples,
                "RETURN": returns(&spec),
            });
            let (_, text) = file(&spec);
            let read: Value = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(read, expected, "{}", spec.name);
            for line in text.lines() {
                assert!(
                    !line.ends_with(' '),
                    "{}: trailing space in {line:?}",
                    spec.name
                );
                assert!(line.len() <= 120, "{}: long line {line:?}", spec.name);
            }
        }
    }

    /// The keys ansible-test's validate-modules allows in a module option (`option_schema` in
    /// its `schema.py`, ansible-core 2.15 to 2.21).
    const OPTION_KEYS: &[&str] = &[
        "description",
        "required",
        "choices",
        "aliases",
        "version_added",
        "version_added_collection",
        "default",
        "type",
        "elements",
        "suboptions",
    ];

    fn option_keys_are_allowed(options: &Value, at: &str) {
        for (name, option) in options.as_object().into_iter().flatten() {
            for key in option.as_object().unwrap().keys() {
                assert!(
                    OPTION_KEYS.contains(&key.as_str()),
                    "{at}.{name}: `{key}` is not allowed in DOCUMENTATION options"
                );
            }
            if let Some(inner) = option.get("suboptions") {
                option_keys_are_allowed(inner, &format!("{at}.{name}"));
            }
        }
    }

    #[test]
    fn options_have_only_keys_the_docs_schema_allows() {
        for spec in actions::modules() {
            let (_, text) = file(&spec);
            let doc: Value = serde_saphyr::from_str(&text).unwrap();
            option_keys_are_allowed(&doc["DOCUMENTATION"]["options"], spec.name);
        }
    }

    #[test]
    fn every_description_is_text() {
        for spec in actions::modules() {
            let (_, text) = file(&spec);
            let doc: Value = serde_saphyr::from_str(&text).unwrap();
            let options = &doc["DOCUMENTATION"]["options"];
            descriptions_are_text(options, "suboptions", spec.name);
            descriptions_are_text(&doc["RETURN"], "contains", spec.name);
            for line in doc["DOCUMENTATION"]["description"].as_array().unwrap() {
                assert!(line.is_string(), "{}: {line}", spec.name);
            }
        }
    }

    #[test]
    fn options_follow_the_schema() {
        let spec = actions::find("calico_rbac").unwrap();
        let doc = documentation(&spec, "0.1.0");
        let options = &doc["options"];
        assert_eq!(options["kubeconfig"]["type"], "path");
        assert_eq!(options["validate_certs"]["type"], "bool");
        assert!(options["validate_certs"].get("default").is_none());
        assert_eq!(options["extra_rules"]["type"], "list");
        assert_eq!(options["extra_rules"]["elements"], "dict");
        assert_eq!(options["extra_rules"]["default"], json!([]));
        let rule = &options["rules"]["suboptions"];
        assert_eq!(rule["verbs"]["required"], true);
        assert_eq!(rule["verbs"]["elements"], "str");

        let spec = actions::find("stale_webhook").unwrap();
        let options = &documentation(&spec, "0.1.0")["options"];
        assert_eq!(
            options["kind"]["choices"],
            json!(["both", "mutating", "validating"])
        );
        assert_eq!(options["kind"]["default"], "both");
        assert_eq!(options["backup_dir"]["type"], "path");

        let spec = actions::find("stuck_pods").unwrap();
        let options = &documentation(&spec, "0.1.0")["options"];
        assert_eq!(options["kinds"]["elements"], "str");
        assert_eq!(
            options["kinds"]["choices"],
            json!(["terminating", "pending"])
        );
        assert_eq!(options["max_pods"]["type"], "int");
    }
}
