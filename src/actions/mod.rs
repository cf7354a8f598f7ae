//! The remediation actions and the one pipeline they all run through.
//!
//! An action is a type implementing [`Action`], laid out in one file (or folder) in this order:
//! its contract (a `//!` comment with `# Idempotency`, `# Check mode`, `# Errors`), `Options`
//! (serde + schemars + clap; each field's doc comment is its `--help`, schema and module doc),
//! `Report` (serde + schemars; each field's doc comment is its RETURN doc), the `Plan`, then
//! `validate` (options → action, no I/O), `plan` (read-only), `apply` (dry runs in check mode)
//! and `verify`, then its unit tests. [`execute`] drives it from raw options to a
//! [`Report`](crate::protocol::Report), the same way for the Ansible module and the CLI;
//! [`run`] is the pipeline on a connected cluster, for callers that build their own client.
//!
//! Adding an action: write `src/actions/<name>.rs`, add it to [`modules`], remove its name from
//! [`PLANNED`], write its EXAMPLES in `src/module_docs/`, and run `make schemas` to write
//! `schemas/<name>.json` and the module's docs (RETURN comes from the Report).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use clap::Args;
use futures::FutureExt as _;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::client::{Cluster, ClusterArgs, connect};
use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::protocol::{self, Flags, Report};

pub mod calico_ipam;
pub mod calico_rbac;
pub mod cert_refresh;
pub mod diagnose;
pub mod kubelite_restart;
pub mod rolling;
pub mod selection;
pub mod stale_apiservice;
pub mod stale_webhook;
pub mod stuck_pods;

/// Every module name kubemend answers to in module mode, implemented or planned.
pub const MODULE_NAMES: &[&str] = &[
    "calico_rbac",
    "stale_webhook",
    "stuck_pods",
    "kubelite_restart",
    "diagnose",
    "calico_ipam",
    "stale_apiservice",
    "cert_refresh",
];

/// Module names reserved for actions not in this build yet: they fail with a clear message.
pub const PLANNED: &[&str] = &[];

/// How the action is being run, and the cluster it runs against.
#[derive(Debug, Clone)]
pub struct Context {
    /// The connected client.
    pub cluster: Cluster,
    /// Report what would change, change nothing: every write is sent as a server-side dry run
    /// and no file is written.
    pub check_mode: bool,
    /// The caller wants diffs (actions compute them regardless; they are cheap).
    pub diff: bool,
    /// Print a progress line on stderr as each long step advances (the CLI).
    pub progress: bool,
    /// When the `timeout` option runs out (the whole run is cut there).
    pub deadline: Option<std::time::Instant>,
}

impl Context {
    /// One progress line on stderr, when the caller wants them.
    pub fn progress(&self, action: &str, line: &str) {
        if self.progress {
            eprintln!("{action}: {line}");
        }
    }
}

/// The stage of the pipeline an action was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Checking the options (no I/O).
    Validate,
    /// Building the client and reaching the API server.
    Connect,
    /// Reading the cluster and deciding what to do (read-only).
    Plan,
    /// Making the changes (dry runs in check mode).
    Apply,
    /// Proving the effect after a real run.
    Verify,
}

impl Step {
    /// The name in results (`failed_step`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Connect => "connect",
            Self::Plan => "plan",
            Self::Apply => "apply",
            Self::Verify => "verify",
        }
    }
}

/// A failed run: the step, the error, and (in [`Run::outcome`]) everything done before it.
#[derive(Debug)]
pub struct Failure {
    /// Where it failed.
    pub step: Step,
    /// Why.
    pub error: Error,
}

/// What a run produced: the outcome (complete on success, partial on failure) and the failure.
#[derive(Debug)]
pub struct Run<R> {
    /// What was found and done, up to the failure if there is one.
    pub outcome: Outcome<R>,
    /// Set when a step failed.
    pub failure: Option<Failure>,
}

/// One remediation action: options, a read-only plan, an apply step and a verification.
///
/// The pipeline ([`run`]) is validate → connect → plan → apply → verify, the same for the
/// module and the CLI. `plan` only reads, so check mode and the real run share it and cannot
/// disagree, and other actions (diagnose) can call it on its own. `apply` runs in both modes:
/// in check mode every write it sends is a server-side dry run. `verify` runs after a real
/// apply. Each step records into the one [`Outcome`] as it goes, so that a failure still
/// carries what was already done (objects deleted, with their manifests, and `changed`).
pub trait Action: Sized {
    /// Module name (snake_case); the CLI subcommand is the kebab-case form.
    const NAME: &'static str;

    /// One line for `--help` and the schema title.
    const ABOUT: &'static str;

    /// How long a run may take when the `timeout` option is not given.
    const DEFAULT_TIMEOUT: std::time::Duration = crate::client::DEFAULT_ACTION_TIMEOUT;

    /// Options as the user gives them. Field doc comments are the documentation.
    type Options: DeserializeOwned + Serialize + JsonSchema + Args;

    /// What `plan` found and decided; `apply` carries it out.
    type Plan;

    /// The action's result keys. Field doc comments become the module's RETURN docs.
    type Report: Serialize + JsonSchema + Default;

    /// Checks the options and builds the action. Must not contact the cluster.
    fn validate(options: Self::Options) -> Result<Self>;

    /// The cluster-access options.
    fn cluster_args(&self) -> &ClusterArgs;

    /// Reads the cluster and decides; never writes. May fill the report and warnings.
    fn plan(
        &self,
        cx: &Context,
        out: &mut Outcome<Self::Report>,
    ) -> impl Future<Output = Result<Self::Plan>>;

    /// Carries the plan out (dry runs in check mode), recording each change as it is made.
    fn apply(
        &self,
        cx: &Context,
        plan: Self::Plan,
        out: &mut Outcome<Self::Report>,
    ) -> impl Future<Output = Result<()>>;

    /// Proves the effect of a real run (not called in check mode).
    fn verify(
        &self,
        cx: &Context,
        out: &mut Outcome<Self::Report>,
    ) -> impl Future<Output = Result<()>>;
}

/// Runs plan, apply and verify on a connected cluster. The outcome is kept on failure.
pub async fn run<A: Action>(action: &A, cx: &Context) -> Run<A::Report> {
    let mut outcome = Outcome::default();
    let mut step = Step::Plan;
    let result = steps(action, cx, &mut outcome, &mut step).await;
    Run {
        outcome,
        failure: result.err().map(|error| Failure { step, error }),
    }
}

async fn steps<A: Action>(
    action: &A,
    cx: &Context,
    out: &mut Outcome<A::Report>,
    step: &mut Step,
) -> Result<()> {
    *step = Step::Plan;
    let plan = action.plan(cx, out).await?;
    *step = Step::Apply;
    action.apply(cx, plan, out).await?;
    if !cx.check_mode {
        *step = Step::Verify;
        action.verify(cx, out).await?;
    }
    Ok(())
}

/// Connects with the action's cluster options, then runs plan, apply and verify, all within
/// the action's `timeout`. On a timeout the run fails naming the step it was in, and keeps the
/// outcome as far as it got (the steps record into it as they go).
pub async fn connect_and_run<A: Action>(action: &A, flags: &Flags) -> Run<A::Report> {
    let limit = action.cluster_args().timeout_or(A::DEFAULT_TIMEOUT);
    let mut outcome = Outcome::default();
    let mut step = Step::Connect;
    let deadline = std::time::Instant::now() + limit;
    let result = tokio::time::timeout(limit, async {
        let cluster = connect(action.cluster_args()).await?;
        let cx = Context {
            cluster,
            check_mode: flags.check_mode,
            diff: flags.diff,
            progress: flags.progress,
            deadline: Some(deadline),
        };
        steps(action, &cx, &mut outcome, &mut step).await
    })
    .await;
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(Failure { step, error }),
        Err(_elapsed) => Some(Failure {
            step,
            error: Error::TimedOut {
                step: step.name(),
                after: crate::k8s::duration::format_duration(
                    i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
                ),
            },
        }),
    };
    Run { outcome, failure }
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
    /// An empty Report as JSON: the keys every result of the action has.
    pub default_report: fn() -> Value,
    /// Adds the options as flags to a clap command (for `--help`; values are validated by the
    /// schema, not by clap).
    pub augment_args: fn(clap::Command) -> clap::Command,
    /// Runs it from raw options.
    pub execute: fn(Map<String, Value>, Flags) -> Report,
    /// Only validates raw options (schema, types, then the action's own checks); no I/O.
    pub validate: fn(Map<String, Value>) -> Result<()>,
    /// How the CLI shows the result, when the action has its own way (diagnose's table).
    pub view: Option<View>,
}

/// An action's own CLI rendering of its result keys, in place of the defaults.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// The text output (`--output text`), or `None` for the default.
    pub text: fn(&Map<String, Value>) -> Option<String>,
    /// `--output prometheus`: the result in Prometheus text format; the flag says whether the
    /// run failed.
    pub prometheus: fn(&Map<String, Value>, bool) -> String,
    /// The exit status of a run that did not fail, or `None` for the default.
    pub exit_code: fn(&Map<String, Value>) -> Option<i32>,
}

impl ModuleSpec {
    fn of<A: Action>() -> Self {
        Self {
            name: A::NAME,
            about: A::ABOUT,
            schema: schema::<A>,
            default_report: || serde_json::to_value(A::Report::default()).unwrap_or_default(),
            augment_args: <A::Options as Args>::augment_args,
            execute: execute::<A>,
            validate: validate::<A>,
            view: None,
        }
    }

    fn with_view(self, view: View) -> Self {
        Self {
            view: Some(view),
            ..self
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
        ModuleSpec::of::<calico_ipam::CalicoIpam>(),
        ModuleSpec::of::<calico_rbac::CalicoRbac>(),
        ModuleSpec::of::<cert_refresh::CertRefresh>(),
        ModuleSpec::of::<kubelite_restart::KubeliteRestart>(),
        ModuleSpec::of::<stale_apiservice::StaleApiService>(),
        ModuleSpec::of::<stale_webhook::StaleWebhook>(),
        ModuleSpec::of::<stuck_pods::StuckPods>(),
        ModuleSpec::of::<diagnose::Diagnose>().with_view(View {
            text: diagnose::text,
            prometheus: diagnose::prometheus,
            exit_code: diagnose::exit_code,
        }),
    ]
}

/// A schema, made when asked.
pub type SchemaFn = fn() -> Value;

/// Each action's result keys' JSON schema (its Report), for the module docs' RETURN. Only the
/// schema generator (`kubemend-schemagen`) calls it, so the kubemend binary carries none of the
/// Reports' schemas; a test holds it equal to [`modules`].
#[must_use]
pub fn report_schemas() -> Vec<(&'static str, SchemaFn)> {
    fn of<A: Action>() -> (&'static str, SchemaFn) {
        (A::NAME, report_schema::<A>)
    }
    vec![
        of::<calico_ipam::CalicoIpam>(),
        of::<calico_rbac::CalicoRbac>(),
        of::<cert_refresh::CertRefresh>(),
        of::<kubelite_restart::KubeliteRestart>(),
        of::<stale_apiservice::StaleApiService>(),
        of::<stale_webhook::StaleWebhook>(),
        of::<stuck_pods::StuckPods>(),
        of::<diagnose::Diagnose>(),
    ]
}

/// Finds an implemented action by module name.
pub fn find(name: &str) -> Result<ModuleSpec> {
    let available = || {
        modules()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    modules()
        .into_iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| {
            if PLANNED.contains(&name) {
                Error::CannotPlan {
                    action: "module dispatch",
                    problem: format!("module {name} is not available in this version of kubemend"),
                    hint: format!("available modules: {}", available()),
                }
            } else {
                Error::UnknownModule {
                    name: name.to_owned(),
                    known: MODULE_NAMES.join(", "),
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

/// The JSON schema of an action's result keys (its Report).
#[must_use]
pub fn report_schema<A: Action>() -> Value {
    serde_json::to_value(schemars::schema_for!(A::Report)).unwrap_or_default()
}

/// Raw options → validated action, without running it.
pub fn validate<A: Action>(raw: Map<String, Value>) -> Result<()> {
    let schema = schema::<A>();
    let options = protocol::validate_options(A::NAME, &schema, raw)?;
    validated::<A>(protocol::deserialize_options::<A::Options>(options)?).map(drop)
}

/// The action's own checks, then those every action shares.
fn validated<A: Action>(options: A::Options) -> Result<A> {
    let action = A::validate(options)?;
    if let Some(timeout) = &action.cluster_args().timeout {
        timeout.require_positive("timeout")?;
    }
    Ok(action)
}

/// Raw options → validated options → action → run, never panicking.
pub fn execute<A: Action>(raw: Map<String, Value>, flags: Flags) -> Report {
    let schema = schema::<A>();
    let mut secrets = protocol::no_log_values(&schema, &raw);
    secrets.extend(protocol::env_secrets());
    let mut report = Report::new(A::NAME, flags, raw.clone(), secrets);
    let prepared = protocol::validate_options(A::NAME, &schema, raw)
        .and_then(protocol::deserialize_options::<A::Options>)
        .and_then(|options| {
            if let Ok(Value::Object(args)) = serde_json::to_value(&options) {
                report.module_args = args;
            }
            validated::<A>(options)
        });
    let action = match prepared {
        Ok(action) => action,
        Err(error) => {
            report.fail(Step::Validate.name(), error);
            return report;
        }
    };
    let run = block_on(async { Ok(connect_and_run(&action, &flags).await) });
    match run {
        Ok(run) => {
            report.set_outcome(run.outcome);
            if let Some(failure) = run.failure {
                report.fail(failure.step.name(), failure.error);
            }
        }
        Err(error) => report.fail(Step::Apply.name(), error),
    }
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

/// Validates the `backup_dir` option, the same in check mode and for real (so that a dry run
/// does not pass where the real run would fail): absent is fine, blank is an error, `~` and
/// `$VAR` are expanded, and the path (or the nearest part of it that exists) must be a
/// directory. It is created, if missing, only when a backup is written.
pub fn backup_dir(option: Option<String>) -> Result<Option<std::path::PathBuf>> {
    let invalid = |problem: String| Error::InvalidOption {
        option: "backup_dir".into(),
        problem,
    };
    let dir = match option {
        Some(dir) if dir.trim().is_empty() => return Err(invalid("must not be empty".into())),
        Some(dir) => crate::client::expand_home(&dir),
        None => return Ok(None),
    };
    let existing = dir.ancestors().find(|p| p.exists());
    if let Some(existing) = existing
        && !existing.is_dir()
    {
        return Err(invalid(format!(
            "{} exists and is not a directory, so no backup could be written there",
            existing.display()
        )));
    }
    Ok(Some(dir))
}

/// The whole args path on arbitrary bytes, for fuzzing: parse, split, and validate against
/// every module. Returns how many modules accepted the options. Never panics, never does I/O.
#[must_use]
pub fn fuzz_args(bytes: &[u8], path: &std::path::Path) -> usize {
    let Ok(args) = protocol::parse_args_bytes(bytes, path) else {
        return 0;
    };
    let secrets: Vec<String> = args.keys().take(2).cloned().collect();
    let Ok((options, _flags)) = protocol::split_internal(args) else {
        return 0;
    };
    let mut accepted = 0;
    for spec in modules() {
        let schema = (spec.schema)();
        let mut value = Value::Object(options.clone());
        protocol::mask(&mut value, &protocol::no_log_values(&schema, &options));
        protocol::mask(&mut value, &secrets);
        if (spec.validate)(options.clone()).is_ok() {
            accepted += 1;
        }
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_its_report_schema_for_the_docs() {
        let modules: Vec<&str> = modules().iter().map(|m| m.name).collect();
        let schemas: Vec<&str> = report_schemas().iter().map(|(name, _)| *name).collect();
        assert_eq!(schemas, modules);
        for (name, schema) in report_schemas() {
            assert!(schema()["properties"].is_object(), "{name}");
        }
    }

    #[test]
    fn backup_dir_under_a_file_is_refused_before_anything_runs() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let under = file.path().join("backups");
        for path in [file.path(), under.as_path()] {
            let err = backup_dir(Some(path.display().to_string())).unwrap_err();
            assert!(err.to_string().contains("backup_dir"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new/sub");
        assert_eq!(
            backup_dir(Some(missing.display().to_string())).unwrap(),
            Some(missing)
        );
        assert!(backup_dir(Some(" ".into())).is_err());
    }

    #[test]
    fn every_module_name_is_implemented_or_planned() {
        for name in MODULE_NAMES {
            let implemented = modules().iter().any(|m| m.name == *name);
            assert!(implemented != PLANNED.contains(name), "{name}");
        }
    }
}
