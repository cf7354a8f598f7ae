//! The command line: one subcommand per action, flags mirroring the module options.
//!
//! Flags given on the command line are turned back into a JSON object of options (snake_case
//! names, raw text values), laid over the `--params` file, and sent through the same validation
//! as module args, so the CLI and the module accept exactly the same things. Exit status: 0
//! success, 1 failure, 2 check mode found changes to make, 3 (diagnose) a finding at least as
//! severe as `--fail-on`.

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches as _, ValueEnum};
use serde_json::{Map, Value};

use crate::actions::{self, ModuleSpec};
use crate::error::Error;
use crate::protocol::{self, Flags, Report};

/// Exit status when check mode found something to change.
pub const EXIT_CHECK_CHANGES: i32 = 2;

/// Flags every action subcommand has, besides its options.
#[derive(Debug, Clone, Args)]
struct RunFlags {
    /// Report what would change without changing anything (no API write, no file written).
    /// Exits 2 when something would change.
    #[arg(long)]
    check: bool,

    /// Show the before and after of every object changed (or, with --check, to be changed).
    #[arg(long)]
    diff: bool,

    /// text: a readable diff and a one-line summary (diagnose: a table of findings); json: the
    /// Ansible module result object; prometheus (diagnose only): the findings as gauges for
    /// node_exporter's textfile collector.
    #[arg(long, value_enum, default_value_t = Output::Text, value_name = "FORMAT")]
    output: Output,

    /// JSON or YAML file holding options, the same object the Ansible module takes; flags given
    /// on the command line override it.
    #[arg(long, value_name = "FILE")]
    params: Option<PathBuf>,
}

const RUN_FLAG_IDS: &[&str] = &["check", "diff", "output", "params"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Prometheus,
}

/// The full clap command tree.
#[must_use]
pub fn command() -> clap::Command {
    let mut cmd = clap::Command::new("kubemend")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Remediation actions for microk8s HA clusters, as a CLI and as Ansible modules")
        .long_about(
            "Remediation actions for microk8s HA clusters.\n\n\
             Every action also runs as an Ansible binary module: install the binary (or a \
             symlink to it) under the module's name, e.g. library/calico_rbac.\n\n\
             Exit status: 0 success, 1 failure, 2 --check found changes to make, 3 diagnose \
             found something at least as severe as --fail-on.",
        )
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            clap::Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::Count)
                .global(true)
                .help("Log more to stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides"),
        );
    for spec in actions::modules() {
        cmd = cmd.subcommand(action_command(&spec));
    }
    cmd.subcommand(
        clap::Command::new("module")
            .about("Run as an Ansible module: read ARGS_FILE, print one JSON result object")
            .arg(
                clap::Arg::new("name")
                    .required(true)
                    .value_name("NAME")
                    .help("Module name, e.g. calico_rbac"),
            )
            .arg(
                clap::Arg::new("args_file")
                    .required(true)
                    .value_name("ARGS_FILE")
                    .value_parser(clap::value_parser!(OsString))
                    .help("JSON file with the module options"),
            ),
    )
}

fn action_command(spec: &ModuleSpec) -> clap::Command {
    let schema = (spec.schema)();
    let long_about = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or(spec.about)
        .to_owned();
    // Derived augment_args sets about from the struct docs: set ours afterwards.
    let cmd = RunFlags::augment_args((spec.augment_args)(clap::Command::new(spec.command_name())))
        .about(spec.about)
        .long_about(format!(
            "{long_about}\n\nAlso an Ansible module named {}; flags mirror its options.",
            spec.name
        ));
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // Requiredness and defaults belong to the schema (so --params can supply them): clap
    // only shows the default in --help.
    cmd.mut_args(|arg| {
        let id = arg.get_id().as_str().to_owned();
        if RUN_FLAG_IDS.contains(&id.as_str()) {
            return arg;
        }
        let arg = arg.required(false);
        // One validator: clap hands every option value over as text and the schema validates
        // it, so a bad value gets the same message as in module mode, and `--output json`
        // still prints one JSON object. The possible values stay in --help.
        let arg = if arg.get_action().takes_values() {
            let possible: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect();
            let arg = arg.value_parser(clap::builder::ValueParser::os_string());
            if possible.is_empty() {
                arg
            } else {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [possible values: {}]", possible.join(", ")))
            }
        } else {
            arg
        };
        match properties.get(&id).and_then(|p| p.get("default")) {
            Some(Value::String(s)) => arg.default_value(s.clone()),
            Some(Value::Number(n)) => arg.default_value(n.to_string()),
            // A flag that takes true or false (one whose default is true): show the default.
            Some(Value::Bool(b)) if arg.get_action().takes_values() => {
                arg.default_value(b.to_string())
            }
            _ => arg,
        }
    })
}

/// Runs the CLI; returns the exit status.
#[must_use]
pub fn run(args: &[OsString]) -> i32 {
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(err) => {
            let _ = err.print();
            return i32::from(err.use_stderr());
        }
    };
    init_logging(matches.get_count("verbose"));
    match matches.subcommand() {
        Some(("module", sub)) => {
            let name = sub
                .get_one::<String>("name")
                .map(|n| n.replace('-', "_"))
                .unwrap_or_default();
            let file = sub
                .get_one::<OsString>("args_file")
                .cloned()
                .unwrap_or_default();
            crate::run_module(&name, &[file])
        }
        Some((name, sub)) => match actions::modules()
            .into_iter()
            .find(|spec| spec.command_name() == name)
        {
            Some(spec) => run_action(&spec, sub),
            None => 1,
        },
        None => 1,
    }
}

fn run_action(spec: &ModuleSpec, matches: &ArgMatches) -> i32 {
    let flags = match RunFlags::from_arg_matches(matches) {
        Ok(flags) => flags,
        Err(err) => {
            let _ = err.print();
            return 1;
        }
    };
    let report = match options_from_cli(spec, matches, &flags) {
        Ok(options) => (spec.execute)(
            options,
            Flags {
                check_mode: flags.check,
                diff: flags.diff,
                progress: true,
                ..Flags::default()
            },
        ),
        Err(error) => {
            let mut report = Report::early_failure(spec.name, error);
            report.flags.check_mode = flags.check;
            report
        }
    };
    let keys = report
        .outcome
        .as_ref()
        .map(|o| o.report.clone())
        .unwrap_or_default();
    match (flags.output, spec.view) {
        (Output::Json, _) => crate::print_json(&protocol::module_result(&report)),
        (Output::Text, _) => print_text(&report, flags.diff, spec.view),
        (Output::Prometheus, Some(view)) => {
            let mut text = Value::String((view.prometheus)(&keys, report.failed()));
            protocol::mask(&mut text, &report.secrets);
            let _ = write!(
                std::io::stdout().lock(),
                "{}",
                text.as_str().unwrap_or_default()
            );
            print_failure(&report);
        }
        (Output::Prometheus, None) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}: --output prometheus is only for diagnose",
                spec.command_name()
            );
            return 1;
        }
    }
    match spec.view {
        Some(view) if !report.failed() => {
            (view.exit_code)(&keys).unwrap_or_else(|| exit_code(&report))
        }
        _ => exit_code(&report),
    }
}

/// 0 ok, 1 failed, 2 check mode found changes. diagnose adds 3: a finding reached
/// `--fail-on`.
#[must_use]
pub fn exit_code(report: &Report) -> i32 {
    if report.failed() {
        1
    } else if report.flags.check_mode && report.changed() {
        EXIT_CHECK_CHANGES
    } else {
        0
    }
}

/// The error of a failed run on stderr, with its hint.
fn print_failure(report: &Report) {
    if let Some((step, error)) = &report.failure {
        let mut text = Value::String(format!(
            "{}: failed ({step}): {}{}",
            report.module,
            error.message_with_causes(),
            error
                .hint()
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default()
        ));
        protocol::mask(&mut text, &report.secrets);
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}",
            text.as_str().unwrap_or_default()
        );
    }
}

/// The options object: the params file, with flags given on the command line laid over it.
fn options_from_cli(
    spec: &ModuleSpec,
    matches: &ArgMatches,
    flags: &RunFlags,
) -> crate::Result<Map<String, Value>> {
    let mut options = match &flags.params {
        Some(path) => {
            let bytes = protocol::read_input(path, "params file")?;
            protocol::parse_params_bytes(&bytes, path)?
        }
        None => Map::new(),
    };
    let schema = (spec.schema)();
    let names: Vec<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for id in &names {
        let id = id.as_str();
        if matches.try_contains_id(id).is_err()
            || matches.value_source(id) != Some(ValueSource::CommandLine)
        {
            continue;
        }
        let Some(raw) = matches.get_raw(id) else {
            continue;
        };
        let mut values = Vec::new();
        for value in raw {
            let text = value.to_str().ok_or_else(|| Error::InvalidOption {
                option: id.to_owned(),
                problem: "is not valid UTF-8".into(),
            })?;
            values.push(Value::String(text.to_owned()));
        }
        let is_list = schema
            .pointer(&format!("/properties/{id}/type"))
            .is_some_and(|t| {
                t == "array" || t.as_array().is_some_and(|ts| ts.contains(&"array".into()))
            });
        let value = if is_list {
            Value::Array(values)
        } else {
            values.pop().unwrap_or(Value::Null)
        };
        options.insert(id.to_owned(), value);
    }
    Ok(options)
}

fn print_text(report: &Report, show_diff: bool, view: Option<actions::View>) {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let color = std::io::stdout().is_terminal();
    let mask = |text: &str| {
        let mut value = Value::String(text.to_owned());
        protocol::mask(&mut value, &report.secrets);
        value.as_str().unwrap_or_default().to_owned()
    };
    if let Some(outcome) = &report.outcome {
        if show_diff {
            for diff in &outcome.diff {
                let text = mask(&diff.unified());
                for line in text.lines() {
                    let painted = match line.chars().next() {
                        Some('+') if color && !line.starts_with("+++") => {
                            format!("\x1b[32m{line}\x1b[0m")
                        }
                        Some('-') if color && !line.starts_with("---") => {
                            format!("\x1b[31m{line}\x1b[0m")
                        }
                        _ => line.to_owned(),
                    };
                    let _ = writeln!(stdout, "{painted}");
                }
            }
        }
        for warning in &outcome.warnings {
            let _ = writeln!(stderr, "warning: {}", mask(warning));
        }
    }
    let status = match (report.changed(), report.flags.check_mode) {
        (true, true) => "would change",
        (true, false) => "changed",
        (false, _) => "ok",
    };
    let own = view
        .zip(report.outcome.as_ref())
        .and_then(|(view, outcome)| (view.text)(&outcome.report));
    if let Some(own) = own {
        let _ = write!(stdout, "{}", mask(&own));
    }
    match (&report.failure, &report.outcome) {
        (None, Some(outcome)) => {
            let _ = writeln!(
                stdout,
                "{}: {status}: {}",
                report.module,
                mask(&outcome.msg)
            );
        }
        (None, None) => {}
        (Some((step, error)), outcome) => {
            // What was done before the failure is not lost: say it first.
            if let Some(outcome) = outcome.as_ref().filter(|o| o.changed) {
                let _ = writeln!(
                    stdout,
                    "{}: {status} before failing: {}",
                    report.module,
                    mask(&outcome.msg)
                );
            }
            let _ = writeln!(
                stderr,
                "{}: failed ({step}): {}",
                report.module,
                mask(&error.message_with_causes())
            );
            if let Some(hint) = error.hint() {
                let _ = writeln!(stderr, "hint: {}", mask(&hint));
            }
        }
    }
}

/// Sends tracing output to stderr: RUST_LOG if set, else warn/info/debug/trace by verbosity.
pub fn init_logging(verbosity: u8) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let default = match verbosity {
        0 => "warn",
        1 => "kubemend=info",
        2 => "kubemend=debug,kube=debug",
        _ => "trace",
    };
    // RUST_LOG as targets and levels (`kubemend=debug,kube=info`, or a bare level); EnvFilter's
    // span and field filters are left out: its parser alone would take the release binary over
    // 8 MB.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| text.parse::<Targets>().ok())
        .or_else(|| default.parse::<Targets>().ok())
        .unwrap_or_default();
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // Masks known secrets and bounds each event: kube logs what the server sent
                // back.
                .with_writer(crate::log_mask::MaskedStderr)
                // Plain text, also on a terminal: no escape sequences of ours (nor of a
                // node's, which log lines quote) reach it.
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn flags_become_options_over_the_params_file() {
        let dir = tempfile::tempdir().unwrap();
        let params = dir.path().join("p.yaml");
        std::fs::write(&params, "name: from-params\nnamespace: ns1\n").unwrap();
        let spec = actions::find("calico_rbac").unwrap();
        let matches = command()
            .try_get_matches_from([
                OsString::from("kubemend"),
                "calico-rbac".into(),
                "--params".into(),
                params.into_os_string(),
                "--name".into(),
                "from-flag".into(),
                "--validate-certs".into(),
                "false".into(),
            ])
            .unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        let flags = RunFlags::from_arg_matches(sub).unwrap();
        let options = options_from_cli(&spec, sub, &flags).unwrap();
        assert_eq!(options["name"], "from-flag");
        assert_eq!(options["namespace"], "ns1");
        assert_eq!(options["validate_certs"], "false");
        // Defaults are not turned into options: the schema supplies them.
        assert!(!options.contains_key("deployment"));
    }
}
