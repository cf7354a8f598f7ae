//! `kubemend-schemagen`: writes (or with `--check`, checks) the generated files, the JSON schema
//! of every module's options (`schemas/<module>.json`) and each module's sidecar docs
//! (`--docs-dir`, `ansible/kubemend/plugins/modules/<module>.yml`). `make schemas` runs it.
//!
//! A binary of its own, as controller-rs's crdgen: the RETURN docs come from every action's
//! Report schema, and the YAML writer with them, which the kubemend binary (under 8 MB) does
//! not need to carry.

use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, value_parser};

fn main() {
    let matches = Command::new("kubemend-schemagen")
        .about("Write the JSON schema of every module's options, and the modules' docs")
        .arg(
            Arg::new("out_dir")
                .long("out-dir")
                .value_name("DIR")
                .default_value("schemas")
                .value_parser(value_parser!(PathBuf))
                .help("Where the JSON schemas go"),
        )
        .arg(
            Arg::new("docs_dir")
                .long("docs-dir")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help(
                    "Where each module's sidecar docs (<module>.yml) go, e.g. \
                     ansible/kubemend/plugins/modules; none are written without it",
                ),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help("Only check that the files are current; exit 1 if not"),
        )
        .get_matches();
    let dir = matches
        .get_one::<PathBuf>("out_dir")
        .cloned()
        .unwrap_or_else(|| PathBuf::from("schemas"));
    let docs_dir = matches.get_one::<PathBuf>("docs_dir");
    let code = kubemend::schema::run(
        &dir,
        docs_dir.map(PathBuf::as_path),
        matches.get_flag("check"),
    );
    #[allow(
        clippy::disallowed_methods,
        reason = "main is the one place that exits"
    )]
    std::process::exit(code);
}
