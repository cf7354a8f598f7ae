//! Writes (or checks) `schemas/<module>.json`, the JSON schema of every action's options.
//!
//! The schemas are generated from the options structs and committed; `tests/schemas.rs` fails
//! when a committed file is stale. Regenerate with `cargo run -- schema --out-dir schemas`.

use std::path::Path;

use crate::actions;
use crate::error::Error;

/// The command that regenerates the committed schemas.
pub const REGENERATE: &str = "cargo run -- schema --out-dir schemas";

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

/// Names of the files in `dir` that are missing or differ from what would be generated.
#[must_use]
pub fn stale_files(dir: &Path) -> Vec<String> {
    files()
        .into_iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect()
}

/// `kubemend schema`: write the files, or with `check` report stale ones. Returns the exit code.
#[must_use]
pub fn run(dir: &Path, check: bool) -> i32 {
    if check {
        let stale = stale_files(dir);
        if stale.is_empty() {
            return 0;
        }
        eprintln!(
            "stale schema file(s) in {}: {}; regenerate with `{REGENERATE}`",
            dir.display(),
            stale.join(", ")
        );
        return 1;
    }
    let write = |name: &str, content: &str| -> Result<(), Error> {
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, content))
            .map_err(|source| Error::WriteFile { path, source })
    };
    for (name, content) in files() {
        if let Err(error) = write(&name, &content) {
            eprintln!("error: {}", error.message_with_causes());
            return 1;
        }
        eprintln!("wrote {}", dir.join(&name).display());
    }
    0
}
