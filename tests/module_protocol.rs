//! The binary as Ansible runs it: argv[0] names the module, argv[1] is the args file, stdout
//! carries exactly one JSON object. These cases all fail before any cluster access, which the
//! unreachable K8S_AUTH_HOST proves: a message about the input, not about the connection.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// The binary named like ansible-core names the uploaded module: a hard link (a copy's write
/// descriptor can leak into a child another test forks meanwhile: "Text file busy").
fn module_binary(dir: &Path, module: &str) -> PathBuf {
    let path = dir.join(format!("AnsiballZ_{module}"));
    if std::fs::hard_link(env!("CARGO_BIN_EXE_kubemend"), &path).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_kubemend"), &path).unwrap();
    }
    path
}

struct Run {
    code: i32,
    result: Value,
    stdout: String,
}

fn run_module(module: &str, args: Option<&[u8]>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let binary = module_binary(dir.path(), module);
    let args_path = dir.path().join("args");
    if let Some(bytes) = args {
        std::fs::write(&args_path, bytes).unwrap();
    }
    let output = Command::new(&binary)
        .arg(&args_path)
        // Nothing listens here: reaching the network would show up as a connection error.
        .env("K8S_AUTH_HOST", "https://127.0.0.1:1")
        .env_remove("KUBECONFIG")
        .env_remove("K8S_AUTH_KUBECONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line of JSON expected, got {stdout:?}"
    );
    let result: Value = serde_json::from_str(lines[0]).unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        result,
        stdout,
    }
}

#[track_caller]
fn assert_input_failure(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(run.result["failed"], json!(true), "{}", run.stdout);
    assert_eq!(run.result["changed"], json!(false), "{}", run.stdout);
    let msg = run.result["msg"].as_str().unwrap();
    assert!(
        msg.contains(needle),
        "msg {msg:?} should mention {needle:?}"
    );
    assert!(!msg.contains("cannot reach"), "no API call expected: {msg}");
    assert!(!run.stdout.contains("_ansible_"), "{}", run.stdout);
}

#[test]
fn unknown_option_is_named_with_the_valid_ones() {
    let run = run_module(
        "calico_rbac",
        Some(br#"{"nmae": "x", "_ansible_check_mode": false}"#),
    );
    assert_input_failure(&run, "nmae");
    assert!(
        run.result["msg"]
            .as_str()
            .unwrap()
            .contains("supported options are: kubeconfig")
    );
}

#[test]
fn wrong_type_names_the_option() {
    let run = run_module("stale_webhook", Some(br#"{"detect": "perhaps"}"#));
    assert_input_failure(&run, "\"detect\"");
}

#[test]
fn missing_required_choice_is_explained() {
    let run = run_module("stale_webhook", Some(b"{}"));
    assert_input_failure(&run, "detect: true");
}

#[test]
fn invalid_kubernetes_name_is_refused() {
    let run = run_module("calico_rbac", Some(br#"{"name": "Not_A_Name"}"#));
    assert_input_failure(&run, "not a valid Kubernetes name");
}

#[test]
fn missing_args_file_is_reported() {
    let run = run_module("calico_rbac", None);
    assert_input_failure(&run, "failed to read args file");
}

#[test]
fn empty_args_file_is_reported() {
    let run = run_module("calico_rbac", Some(b""));
    assert_input_failure(&run, "is empty");
}

#[test]
fn args_file_that_is_not_json_is_reported() {
    let run = run_module("calico_rbac", Some(b"name=calico-kube-controllers"));
    assert_input_failure(&run, "is not valid JSON");
}

#[test]
fn args_file_that_is_not_an_object_is_reported() {
    let run = run_module("calico_rbac", Some(b"[\"name\"]"));
    assert_input_failure(&run, "must hold a JSON object");
}

#[test]
fn ten_megabytes_of_garbage_are_refused_without_panic() {
    let mut garbage = Vec::with_capacity(10 * 1024 * 1024);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    while garbage.len() < 10 * 1024 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        garbage.extend_from_slice(&state.to_le_bytes());
    }
    let run = run_module("calico_rbac", Some(&garbage));
    assert_input_failure(&run, "larger than the limit");
}

#[test]
fn wrong_number_of_arguments_is_a_usage_failure() {
    let dir = tempfile::tempdir().unwrap();
    let binary = module_binary(dir.path(), "stale_webhook");
    let output = Command::new(&binary).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["failed"], json!(true));
    assert!(
        result["msg"]
            .as_str()
            .unwrap()
            .contains("exactly one argument")
    );
}

#[test]
fn no_log_value_is_masked_even_in_a_failure() {
    let run = run_module(
        "calico_rbac",
        Some(br#"{"api_key": "s3cr3t-t0ken", "name": "bad name s3cr3t-t0ken"}"#),
    );
    assert_eq!(run.code, 1);
    assert!(!run.stdout.contains("s3cr3t-t0ken"), "{}", run.stdout);
    assert_eq!(
        run.result["invocation"]["module_args"]["api_key"],
        json!("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER")
    );
    assert_eq!(
        run.result["invocation"]["module_args"]["name"],
        json!("bad name ********")
    );
}

/// ansible-core 2.21 sends `_ansible_inject_invocation` (false unless INJECT_INVOCATION is on)
/// and its own modules then return no `invocation`; older cores send no such key.
#[test]
fn invocation_is_returned_unless_ansible_core_asks_for_none() {
    let args = |inject: &str| format!(r#"{{"name": "bad name"{inject}}}"#).into_bytes();
    let run = run_module("calico_rbac", Some(&args("")));
    assert_eq!(run.result["invocation"]["module_args"]["name"], "bad name");
    let run = run_module(
        "calico_rbac",
        Some(&args(r#", "_ansible_inject_invocation": true"#)),
    );
    assert_eq!(run.result["invocation"]["module_args"]["name"], "bad name");
    let run = run_module(
        "calico_rbac",
        Some(&args(r#", "_ansible_inject_invocation": false"#)),
    );
    assert_input_failure(&run, "name");
    assert!(run.result.get("invocation").is_none(), "{}", run.stdout);
}

#[test]
fn unreachable_api_names_the_endpoint_and_a_hint() {
    let run = run_module(
        "calico_rbac",
        Some(br#"{"calico_version": "v3.13.2", "enabled_controllers": ["node"]}"#),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    let msg = run.result["msg"].as_str().unwrap();
    assert!(
        msg.contains("cannot reach the Kubernetes API at https://127.0.0.1:1"),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(
        run.result["hint"].as_str().unwrap().contains("reachable"),
        "{msg}"
    );
}

#[test]
fn explicit_module_subcommand_behaves_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let args = dir.path().join("args");
    std::fs::write(&args, br#"{"bogus": 1}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kubemend"))
        .args(["module", "calico_rbac"])
        .arg(&args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(result["msg"].as_str().unwrap().contains("bogus"));
}

#[test]
fn cli_bad_flag_value_fails_with_exit_1_not_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_kubemend"))
        .args(["stale-webhook", "--kind", "sideways"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let output = Command::new(env!("CARGO_BIN_EXE_kubemend"))
        .args(["calico-rbac", "--name", "UPPER", "--output", "json"])
        .env("K8S_AUTH_HOST", "https://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["failed"], json!(true));
    assert!(result["msg"].as_str().unwrap().contains("\"name\""));
}

/// One validator for both faces: a bad flag value of any kind (enum, integer, duration,
/// selector, boolean, name) is refused by the options schema, not by the flag parser, so
/// `--output json` prints exactly one JSON object with `failed: true` that names the option,
/// and no write or API call happens (the API address is unreachable on purpose).
#[test]
fn cli_bad_flag_values_give_one_json_failure_naming_the_option() {
    let cases: [(&[&str], &str); 7] = [
        (&["stale-webhook", "--kind", "sideways"], "kind"),
        (&["stuck-pods", "--max-pods", "abc"], "max_pods"),
        (&["stuck-pods", "--max-pods", "0"], "max_pods"),
        (&["stuck-pods", "--pending-age", "5x"], "pending_age"),
        (&["stuck-pods", "--kinds", "pending,stale"], "kinds"),
        (
            &["stuck-pods", "--label-selector", "a in ("],
            "label_selector",
        ),
        (
            &["calico-rbac", "--validate-certs", "maybe"],
            "validate_certs",
        ),
    ];
    for (args, option) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_kubemend"))
            .args(args)
            .args(["--output", "json"])
            .env("K8S_AUTH_HOST", "https://127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "{args:?}: one line: {stdout}");
        let result: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(result["failed"], json!(true), "{args:?}");
        assert_eq!(result["failed_step"], json!("validate"), "{args:?}");
        let msg = result["msg"].as_str().unwrap();
        assert!(msg.contains(&format!("\"{option}")), "{args:?}: {msg}");
    }
}
