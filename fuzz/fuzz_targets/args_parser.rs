//! Fuzzes the module args path: bytes → JSON object → `_ansible_*` split → every module's
//! schema validation, coercion, deserialization and option checks. It must never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    kubemend::actions::fuzz_args(data, Path::new("args"));
});
