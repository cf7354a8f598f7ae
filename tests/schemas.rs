//! The committed generated files must match what the options structs generate: schemas/*.json
//! and the modules' sidecar docs, ansible/kubemend/plugins/modules/*.yml.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn docs_dir() -> PathBuf {
    root().join("ansible/kubemend/plugins/modules")
}

/// Sorted names of the files in `dir` with this extension.
fn present(dir: &Path, extension: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == extension))
        .collect();
    names.sort();
    names
}

fn names(files: Vec<(String, String)>) -> Vec<String> {
    let mut names: Vec<String> = files.into_iter().map(|(n, _)| n).collect();
    names.sort();
    names
}

#[test]
fn committed_schemas_are_current() {
    let stale = kubemend::schema::stale_files(&root().join("schemas"));
    assert!(
        stale.is_empty(),
        "stale schema file(s) in schemas/: {}; regenerate with `{}` and commit them",
        stale.join(", "),
        kubemend::schema::REGENERATE
    );
}

#[test]
fn every_module_has_a_schema_file_and_no_other_file_is_there() {
    assert_eq!(
        present(&root().join("schemas"), "json"),
        names(kubemend::schema::files()),
        "schemas/ holds files for modules that do not exist"
    );
}

#[test]
fn committed_module_docs_are_current() {
    let stale = kubemend::schema::stale_doc_files(&docs_dir());
    assert!(
        stale.is_empty(),
        "stale module docs in ansible/kubemend/plugins/modules/: {}; regenerate with `{}` and \
         commit them",
        stale.join(", "),
        kubemend::schema::REGENERATE
    );
}

#[test]
fn every_module_has_its_docs_and_no_other_docs_are_there() {
    assert_eq!(
        present(&docs_dir(), "yml"),
        names(kubemend::schema::doc_files()),
        "ansible/kubemend/plugins/modules/ holds docs for modules that do not exist; remove them"
    );
}
