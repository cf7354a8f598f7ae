//! Writes (or checks) the generated files: `schemas/<module>.json`, the JSON schema of every
//! action's options, and `ansible/kubemend/plugins/modules/<module>.yml`, each module's sidecar
//! docs ([`crate::module_docs`]).
//!
//! Both are generated from the options structs and committed; `tests/schemas.rs` fails when a
//! committed file is stale. Regenerate with [`REGENERATE`] (`make schemas`).

use std::path::Path;

use crate::actions;
use crate::error::Error;
use crate::module_docs;

/// The command that regenerates the committed schemas and module docs.
pub const REGENERATE: &str = "make schemas";

/// Every schema file: (file name, content).
#[must_use]
pub fn files() -> Vec<(String, String)> {
    actions::modules()
        .iter()
        .map(|spec| {
            let text = serde_json::to_string_pretty(&(spec.schema)()).unwrap_or_default();
            (format!("{}.json", spec.name), format!("{text}\n"))
        })
        .collect()
}

/// Every module's sidecar docs file: (file name, content).
#[must_use]
pub fn doc_files() -> Vec<(String, String)> {
    actions::modules().iter().map(module_docs::file).collect()
}

/// Names of the schema files in `dir` that are missing or differ from what would be generated.
#[must_use]
pub fn stale_files(dir: &Path) -> Vec<String> {
    stale(dir, files())
}

/// Names of the sidecar docs in `dir` that are missing or differ from what would be generated.
#[must_use]
pub fn stale_doc_files(dir: &Path) -> Vec<String> {
    stale(dir, doc_files())
}

fn stale(dir: &Path, files: Vec<(String, String)>) -> Vec<String> {
    files
        .into_iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect()
}

/// `kubemend-schemagen`: write the schemas into `dir` and, given `docs_dir`, the module docs
/// there; with `check`, only report stale ones. Returns the exit code.
#[must_use]
pub fn run(dir: &Path, docs_dir: Option<&Path>, check: bool) -> i32 {
    let mut outputs = vec![(dir, files())];
    if let Some(docs_dir) = docs_dir {
        outputs.push((docs_dir, doc_files()));
    }
    if check {
        let mut code = 0;
        for (dir, files) in outputs {
            let stale = stale(dir, files);
            if !stale.is_empty() {
                eprintln!(
                    "stale file(s) in {}: {}; regenerate with `{REGENERATE}`",
                    dir.display(),
                    stale.join(", ")
                );
                code = 1;
            }
        }
        return code;
    }
    let write = |dir: &Path, name: &str, content: &str| -> Result<(), Error> {
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, content))
            .map_err(|source| Error::WriteFile { path, source })
    };
    for (dir, files) in outputs {
        for (name, content) in files {
            if let Err(error) = write(dir, &name, &content) {
                eprintln!("error: {}", error.message_with_causes());
                return 1;
            }
            eprintln!("wrote {}", dir.join(&name).display());
        }
    }
    0
}
