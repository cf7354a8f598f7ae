//! The committed schemas/*.json must match what the options structs generate.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::Path;

#[test]
fn committed_schemas_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let stale = kubemend::schema::stale_files(&dir);
    assert!(
        stale.is_empty(),
        "stale schema file(s) in schemas/: {}; regenerate with `{}` and commit them",
        stale.join(", "),
        kubemend::schema::REGENERATE
    );
}

#[test]
fn every_module_has_a_schema_file_and_no_other_file_is_there() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut expected: Vec<String> = kubemend::schema::files()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    expected.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "json"))
        .collect();
    present.sort();
    assert_eq!(
        present, expected,
        "schemas/ holds files for modules that do not exist"
    );
}
