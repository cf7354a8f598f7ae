//! The remediation actions and the one pipeline they all run through.
//!
//! An action is a type implementing [`Action`]: an options struct (serde + schemars + clap, one
//! doc comment per field, which become the JSON schema, the module docs and `--help`), a
//! `validate` step that turns options into the action without touching the cluster, and a `run`
//! step that observes, plans, applies unless in check mode, and verifies. [`execute`] drives it
//! from raw options to a [`Report`], the same way for the Ansible module and the CLI.
//!
//! Adding an action: write `src/actions/<name>.rs`, add it to [`modules`], remove its name from
//! [`PLANNED`], write its EXAMPLES and RETURN in `src/module_docs/`, and run `make schemas` to
//! write `schemas/<name>.json` and the module's docs.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use clap::Args;
use futures::FutureExt as _;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::protocol::{self, Flags, Report};

pub mod calico_rbac;
pub mod stale_webhook;
pub mod stuck_pods;

/// Every module name kubemend answers to in module mode, implemented or planned.
pub const MODULE_NAMES: &[&str] = &[
    "calico_rbac",
    "stale_webhook",
    "stuck_pods",
    "kubelite_restart",
    "diagnose",
];

/// Module names reserved for actions not in this build yet: they fail with a clear message.
pub const PLANNED: &[&str] = &["kubelite_restart", "diagnose"];

/// How the action is being run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunContext {
    /// Report what would change, change nothing (no API write, no file written).
    pub check_mode: bool,
    /// The caller wants diffs (actions may compute them regardless; they are cheap).
    pub diff: bool,
}

/// One remediation action.
pub trait Action: Sized {
    /// Module name (snake_case); the CLI subcommand is the kebab-case form.
    const NAME: &'static str;

    /// One line for `--help` and the schema title.
    const ABOUT: &'static str;

    /// Options as the user gives them. Field doc comments are the documentation.
    type Options: DeserializeOwned + Serialize + JsonSchema + Args;

    /// Checks the options and builds the action. Must not contact the cluster.
    fn validate(options: Self::Options) -> Result<Self>;

    /// Observes, plans, applies unless `ctx.check_mode`, verifies.
    fn run(self, ctx: RunContext) -> impl Future<Output = Result<Outcome>>;
}

/// Type-erased description of an action, for dispatch, the CLI and the schema generator.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    /// Module name.
    pub name: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// The options' JSON schema.
    pub schema: fn() -> Value,
    /// Adds the options as flags to a clap command.
    pub augment_args: fn(clap::Command) -> clap::Command,
    /// Runs it from raw options.
    pub execute: fn(Map<String, Value>, Flags) -> Report,
    /// Only validates raw options (schema, types, then the action's own checks); no I/O.
    pub validate: fn(Map<String, Value>) -> Result<()>,
}

impl ModuleSpec {
    fn of<A: Action>() -> Self {
        Self {
            name: A::NAME,
            about: A::ABOUT,
            schema: schema::<A>,
            augment_args: <A::Options as Args>::augment_args,
            execute: execute::<A>,
            validate: validate::<A>,
        }
    }

    /// The CLI subcommand name: `calico-rbac` for `calico_rbac`.
    #[must_use]
    pub fn command_name(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// All implemented actions.
#[must_use]
pub fn modules() -> Vec<ModuleSpec> {
    vec![
        ModuleSpec::of::<calico_rbac::CalicoRbac>(),
        ModuleSpec::of::<stale_webhook::StaleWebhook>(),
        ModuleSpec::of::<stuck_pods::StuckPods>(),
    ]
}

/// Finds an implemented action by module name.
pub fn find(name: &str) -> Result<ModuleSpec> {
    modules()
        .into_iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| {
            if PLANNED.contains(&name) {
                Error::CannotPlan {
                    action: "module dispatch",
                    problem: format!("module {name} is not available in this version of kubemend"),
                    hint: format!(
                        "available modules: {}",
                        modules()
                            .iter()
                            .map(|m| m.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            } else {
                Error::UnknownModule {
                    name: name.to_owned(),
                }
            }
        })
}

/// The JSON schema of an action's options, with module name and no_log markers.
#[must_use]
pub fn schema<A: Action>() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(A::Options)).unwrap_or_default();
    if let Some(object) = schema.as_object_mut() {
        object.insert("title".into(), Value::String(A::NAME.into()));
        if !object.contains_key("description") {
            object.insert("description".into(), Value::String(A::ABOUT.into()));
        }
    }
    schema
}

/// Raw options → validated action, without running it.
pub fn validate<A: Action>(raw: Map<String, Value>) -> Result<()> {
    let schema = schema::<A>();
    let options = protocol::validate_options(A::NAME, &schema, raw)?;
    A::validate(protocol::deserialize_options::<A::Options>(options)?).map(drop)
}

/// Raw options → validated options → action → outcome, never panicking.
pub fn execute<A: Action>(raw: Map<String, Value>, flags: Flags) -> Report {
    let schema = schema::<A>();
    let mut secrets = protocol::no_log_values(&schema, &raw);
    secrets.extend(protocol::env_secrets());
    let ctx = RunContext {
        check_mode: flags.check_mode,
        diff: flags.diff,
    };
    let mut report = Report {
        module: A::NAME.to_owned(),
        flags,
        module_args: raw.clone(),
        secrets,
        result: Err(Error::Internal {
            message: "action did not run".into(),
        }),
    };
    let prepared = protocol::validate_options(A::NAME, &schema, raw)
        .and_then(protocol::deserialize_options::<A::Options>)
        .and_then(|options| {
            if let Ok(Value::Object(args)) = serde_json::to_value(&options) {
                report.module_args = args;
            }
            A::validate(options)
        });
    let action = match prepared {
        Ok(action) => action,
        Err(error) => {
            report.result = Err(error);
            return report;
        }
    };
    report.result = block_on(action.run(ctx));
    report
}

/// Runs a future on a fresh current-thread runtime, turning a panic into [`Error::Internal`].
pub fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;
    runtime.block_on(async {
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(result) => result,
            Err(payload) => Err(Error::Internal {
                message: panic_message(payload.as_ref()),
            }),
        }
    })
}

/// The text of a panic payload.
#[must_use]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Validates the `backup_dir` option: absent is fine, blank is an error, `~/` is expanded.
pub fn backup_dir(option: Option<String>) -> Result<Option<std::path::PathBuf>> {
    match option {
        Some(dir) if dir.trim().is_empty() => Err(Error::InvalidOption {
            option: "backup_dir".into(),
            problem: "must not be empty".into(),
        }),
        Some(dir) => Ok(Some(crate::client::expand_home(&dir))),
        None => Ok(None),
    }
}

/// Kubernetes names: RFC 1123 DNS subdomain (ClusterRoles, webhook configurations,
/// deployments) — lower-case alphanumerics, `-` and `.`, starting and ending alphanumeric, at
/// most 253 characters.
pub fn check_subdomain(option: &str, value: &str) -> Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: option.to_owned(),
            problem: format!(
                "{value:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters)"
            ),
        })
    }
}

/// Kubernetes namespace and ServiceAccount-style names: RFC 1123 label, at most 63 characters.
pub fn check_label(option: &str, value: &str) -> Result<()> {
    if value.len() <= 63 && !value.contains('.') && check_subdomain(option, value).is_ok() {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: option.to_owned(),
            problem: format!(
                "{value:?} is not a valid Kubernetes name (lower-case letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters)"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_are_checked() {
        assert!(check_subdomain("name", "calico-kube-controllers").is_ok());
        assert!(check_subdomain("name", "a.b-c.d").is_ok());
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(check_subdomain("name", bad).is_err(), "{bad:?}");
        }
        assert!(check_label("namespace", "kube-system").is_ok());
        assert!(check_label("namespace", "a.b").is_err());
        assert!(check_label("namespace", &"x".repeat(64)).is_err());
    }

    #[test]
    fn every_module_name_is_implemented_or_planned() {
        for name in MODULE_NAMES {
            let implemented = modules().iter().any(|m| m.name == *name);
            assert!(implemented != PLANNED.contains(name), "{name}");
        }
    }
}
