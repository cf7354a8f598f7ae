//! kubemend: remediation actions for microk8s HA clusters, as one binary with two faces.
//!
//! - **Ansible binary module.** When argv[0], less an `AnsiballZ_` prefix, names a module
//!   (`calico_rbac`, `stale_webhook`, ...), argv[1] is the JSON args file and stdout gets exactly
//!   one JSON result object ([`protocol`]). `kubemend module NAME ARGS_FILE` does the same.
//! - **CLI.** `kubemend calico-rbac --check --diff` and so on ([`cli`]): flags mirror the module
//!   options, `--params FILE` takes the same object as the module, exit 0 ok, 1 failed, 2 check
//!   mode found changes.
//!
//! Both go through [`actions::execute`], so options are validated and actions behave the same.

pub mod actions;
pub mod calico_rules;
/// Node certificates: the files over SSH, the apiserver's served one, the node's clock.
pub mod certs;
pub mod cli;
pub mod client;
pub mod error;
pub mod gitops;
pub mod http_guard;
pub mod k8s;
pub mod log_mask;
pub mod microk8s;
pub mod module_docs;
pub mod outcome;
pub mod protocol;
pub mod schema;
pub mod secrets;
pub mod ssh;
pub mod x509;

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::path::Path;

pub use error::{Error, Result};
pub use outcome::{Diff, Outcome};

/// Prefix ansible-core gives the copied module file.
const ANSIBALLZ_PREFIX: &str = "AnsiballZ_";

/// Runs kubemend with these arguments (argv[0] first) and returns the process exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let module = args.first().and_then(|argv0| module_from_argv0(argv0));
    let outcome = std::panic::catch_unwind(|| match module {
        Some(name) => {
            cli::init_logging(0);
            run_module(&name, &args[1..])
        }
        None => cli::run(&args),
    });
    outcome.unwrap_or_else(|payload| {
        let error = Error::Internal {
            message: actions::panic_message(payload.as_ref()),
        };
        print_json(&protocol::module_result(&protocol::Report::early_failure(
            "kubemend", error,
        )));
        1
    })
}

/// The module named by argv[0]'s file name, without the `AnsiballZ_` prefix, if it is one.
#[must_use]
pub fn module_from_argv0(argv0: &OsStr) -> Option<String> {
    let file = Path::new(argv0).file_name()?.to_str()?;
    let name = file.strip_prefix(ANSIBALLZ_PREFIX).unwrap_or(file);
    actions::MODULE_NAMES
        .contains(&name)
        .then(|| name.to_owned())
}

/// Module mode: read the args file, run, print one JSON object. Returns 0, or 1 on failure.
#[must_use]
pub fn run_module(name: &str, rest: &[OsString]) -> i32 {
    let report = module_report(name, rest);
    print_json(&protocol::module_result(&report));
    i32::from(report.failed())
}

fn module_report(name: &str, rest: &[OsString]) -> protocol::Report {
    let [args_file] = rest else {
        return protocol::Report::early_failure(name, Error::ModuleUsage);
    };
    let path = Path::new(args_file);
    let parsed = protocol::read_input(path, "args file")
        .and_then(|bytes| protocol::parse_args_bytes(&bytes, path))
        .and_then(protocol::split_internal);
    let (options, flags) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return protocol::Report::early_failure(name, error),
    };
    match actions::find(name) {
        Ok(spec) => (spec.execute)(options, flags),
        Err(error) => protocol::Report::early_failure(name, error),
    }
}

/// Prints one JSON value and a newline on stdout. A closed stdout is not worth a panic.
pub fn print_json(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_is_found_from_ansiballz_file_name() {
        let name = |s: &str| module_from_argv0(OsStr::new(s));
        assert_eq!(
            name("/root/.ansible/tmp/ansible-tmp-1-2-3/AnsiballZ_calico_rbac").as_deref(),
            Some("calico_rbac")
        );
        assert_eq!(
            name("library/stale_webhook").as_deref(),
            Some("stale_webhook")
        );
        assert_eq!(name("AnsiballZ_stuck_pods").as_deref(), Some("stuck_pods"));
        assert_eq!(name("/usr/bin/kubemend"), None);
        assert_eq!(name("AnsiballZ_unknown"), None);
    }
}
