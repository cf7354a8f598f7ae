//! Cluster access against API servers that misbehave (tests/support/fake_api.rs, loopback only):
//! every run must end, within a generous bound, with one JSON result that says what went wrong.
//! One fake stands in front of the test bed's real apiserver, as a flaky virtual IP would.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fake_api::{Behaviour, FakeApi, run_bounded};
use serde_json::{Value, json};

/// Options that make calico_rbac's first request a GET of its ClusterRole.
fn calico_args() -> Value {
    json!({"calico_version": "v3.13.2", "enabled_controllers": ["node"]})
}

/// The result of one module run.
#[derive(Debug)]
struct Run {
    code: i32,
    result: Value,
    stderr: String,
}

impl Run {
    fn msg(&self) -> &str {
        self.result["msg"].as_str().unwrap_or_default()
    }
}

/// The binary as ansible-core runs it, in an environment that names no cluster but `env`'s.
fn module_command(dir: &Path, module: &str, args: &Value, env: &[(&str, &str)]) -> Command {
    let mut cmd = support::module_command(dir, module, args);
    cmd.env("HOME", dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"));
    for (name, _) in std::env::vars() {
        if name.starts_with("K8S_AUTH_") || name == "RUST_LOG" || name.starts_with("KUBERNETES_") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd
}

/// Runs the module, killing it after `limit`; fails the test if it had to be killed.
fn run_module(module: &str, args: &Value, env: &[(&str, &str)], limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (output, finished) = run_bounded(module_command(dir.path(), module, args, env), limit);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        finished,
        "{module} was still running after {limit:?}; stdout: {}; stderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line expected: {stdout:?} {stderr}"
    );
    Run {
        code: output.status.code().unwrap_or(-1),
        result: serde_json::from_str(&stdout).unwrap(),
        stderr,
    }
}

#[test]
fn api_server_that_never_answers_fails_within_the_request_timeout() {
    let server = FakeApi::start(Behaviour::Silent);
    let run = run_module(
        "calico_rbac",
        &calico_args(),
        &[
            ("K8S_AUTH_HOST", &server.url()),
            ("K8S_AUTH_API_KEY", "tok"),
        ],
        Duration::from_secs(150),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.msg().contains("did not answer within 30s"),
        "{}",
        run.msg()
    );
    assert!(server.requests() >= 1, "the request reached the server");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn timeout_option_bounds_the_wait_for_a_tls_handshake_that_never_ends() {
    let server = FakeApi::start(Behaviour::Silent);
    let mut args = calico_args();
    args["timeout"] = json!("2s");
    let run = run_module(
        "calico_rbac",
        &args,
        &[
            ("K8S_AUTH_HOST", &server.https_url()),
            ("K8S_AUTH_API_KEY", "tok"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{run:?}");
    // The whole action's bound, not only a request's: the pipeline names the step it was in.
    assert!(run.msg().contains("timed out after 2s"), "{}", run.msg());
    assert_eq!(run.result["failed_step"], json!("plan"), "{:?}", run.result);
    assert_eq!(
        run.result["invocation"]["module_args"]["timeout"],
        json!("2s")
    );
}

#[test]
fn api_answering_503_forever_is_retried_a_few_times_with_retry_after_capped() {
    let server = FakeApi::start(Behaviour::Unavailable);
    let run = run_module(
        "calico_rbac",
        &calico_args(),
        &[
            ("K8S_AUTH_HOST", &server.url()),
            ("K8S_AUTH_API_KEY", "tok"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.msg().contains("HTTP 503"), "{}", run.msg());
    let requests = server.requests();
    assert!(
        (2 * CALICO_FIRST_READS..=4 * CALICO_FIRST_READS).contains(&requests),
        "for each of calico_rbac's {CALICO_FIRST_READS} first reads one request and at most 3 \
         retries expected, the server saw {requests}"
    );
}

/// calico_rbac's plan sends its first reads at once (the Deployment, the ClusterRoleBindings,
/// the role): against a server that fails every one, each is retried on its own budget.
const CALICO_FIRST_READS: usize = 3;

/// A virtual IP that hands two connections to an apiserver shutting down (they close mid TLS
/// handshake) and the third to a live one: the request was never sent, so it is sent again.
#[test]
fn connection_closed_during_the_tls_handshake_is_tried_again_on_the_next_connection() {
    let cluster = support::cluster();
    let vip = "127.0.0.1:16443";
    let server = FakeApi::start(Behaviour::HangUpThenForward {
        hang_ups: 2,
        to: vip.parse().unwrap(),
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let via_proxy = text.replace(&format!("https://{vip}"), &server.https_url());
    assert_ne!(text, via_proxy, "the test bed's kubeconfig names {vip}");
    std::fs::write(&kubeconfig, via_proxy).unwrap();
    let mut args = calico_args();
    args["kubeconfig"] = json!(kubeconfig);
    args["_ansible_check_mode"] = json!(true);
    let run = run_module("calico_rbac", &args, &[], Duration::from_secs(120));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.result["failed"], json!(false), "{run:?}");
    assert!(
        server.requests() >= 3,
        "two closed connections and a forwarded one expected, the proxy saw {}",
        server.requests()
    );
}

#[test]
fn connection_closed_during_every_tls_handshake_fails_after_a_few_attempts_with_a_hint() {
    let server = FakeApi::start(Behaviour::HangUpThenForward {
        hang_ups: usize::MAX,
        to: "127.0.0.1:9".parse().unwrap(),
    });
    let run = run_module(
        "calico_rbac",
        &calico_args(),
        &[
            ("K8S_AUTH_HOST", &server.https_url()),
            ("K8S_AUTH_API_KEY", "tok"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.msg().contains("tls handshake eof"), "{}", run.msg());
    assert!(
        run.result["hint"]
            .as_str()
            .is_some_and(|h| h.contains("closed before the API server answered")),
        "{:?}",
        run.result["hint"]
    );
    assert_eq!(
        server.requests(),
        4 * CALICO_FIRST_READS,
        "for each of calico_rbac's {CALICO_FIRST_READS} first reads one connection and 3 retries \
         expected, the proxy saw {}",
        server.requests()
    );
}

#[test]
fn response_far_larger_than_asked_for_fails_with_a_message() {
    let server = FakeApi::start(Behaviour::Giant);
    let run = run_module(
        "calico_rbac",
        &calico_args(),
        &[
            ("K8S_AUTH_HOST", &server.url()),
            ("K8S_AUTH_API_KEY", "tok"),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.msg().contains("larger than the limit of 64 MiB"),
        "{}",
        run.msg()
    );
    assert!(!run.msg().contains("cannot reach"), "{}", run.msg());
}

#[test]
fn token_with_a_trailing_newline_is_sent_without_it_and_never_shown() {
    let server = FakeApi::start(Behaviour::EchoAuthorization);
    let run = run_module(
        "calico_rbac",
        &calico_args(),
        &[
            ("K8S_AUTH_HOST", &server.url()),
            ("K8S_AUTH_API_KEY", "s3cr3t-t0ken\n"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{run:?}");
    let msg = run.msg();
    assert!(!msg.contains("bug in kubemend"), "{msg}");
    // The server saw the token (it echoes it back in its 401) and the echo is masked.
    assert!(msg.contains("HTTP 401"), "{msg}");
    assert!(msg.contains("Authorization: Bearer ********"), "{msg}");
    assert!(
        !run.result.to_string().contains("s3cr3t-t0ken"),
        "{}",
        run.result
    );
}

#[test]
fn host_with_a_password_or_a_bad_port_is_refused_without_echoing_it() {
    let mut args = calico_args();
    args["host"] = json!("https://admin:hunter2@127.0.0.1:1");
    let run = run_module("calico_rbac", &args, &[], Duration::from_secs(60));
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        !run.result.to_string().contains("hunter2"),
        "{}",
        run.result
    );
    assert!(run.msg().contains("user:password@"), "{}", run.msg());
    for port in ["99999", "65536", ""] {
        let url = format!("https://127.0.0.1:{port}");
        let run = run_module(
            "calico_rbac",
            &calico_args(),
            &[("K8S_AUTH_HOST", &url), ("K8S_AUTH_API_KEY", "tok")],
            Duration::from_secs(60),
        );
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.msg().contains("K8S_AUTH_HOST"), "{}", run.msg());
        assert!(run.msg().contains("1 to 65535"), "{}", run.msg());
    }
}

#[test]
fn debug_logs_mask_what_the_server_echoes_and_stay_bounded() {
    let server = FakeApi::start(Behaviour::EchoAuthorization);
    let dir = tempfile::tempdir().unwrap();
    // One run with the token in the environment, one with it in a kubeconfig.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  \
             cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\nusers:\n- name: fake\n  user:\n    token: kc-s3cr3t-t0ken\n",
            server.url()
        ),
    )
    .unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap().to_owned();
    for (env, secret) in [
        (
            vec![
                ("K8S_AUTH_HOST", server.url()),
                ("K8S_AUTH_API_KEY", "env-s3cr3t-t0ken".to_owned()),
            ],
            "env-s3cr3t-t0ken",
        ),
        (
            vec![("K8S_AUTH_KUBECONFIG", kubeconfig.clone())],
            "kc-s3cr3t-t0ken",
        ),
    ] {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("RUST_LOG", "debug"));
        let run = run_module("calico_rbac", &calico_args(), &env, Duration::from_secs(60));
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr.contains("not accepted"),
            "the echo is logged: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(secret), "{}", run.stderr);
        assert!(!run.result.to_string().contains(secret), "{}", run.result);
        for line in run.stderr.lines() {
            assert!(
                line.len() <= 4096 + 100,
                "{} bytes: {line:.200}",
                line.len()
            );
        }
    }
}

#[test]
fn kubernetes_core_aliases_and_variables_are_accepted() {
    let server = FakeApi::start(Behaviour::EchoAuthorization);
    let mut args = calico_args();
    // As a module_defaults block written for kubernetes.core would pass them.
    args["verify_ssl"] = json!("no");
    args["host"] = json!(server.url());
    args["api_key"] = json!("tok");
    // Named but never read: host and api_key need no kubeconfig.
    args["kubeconfig"] = json!("/nonexistent/kubeconfig");
    let run = run_module(
        "calico_rbac",
        &args,
        &[("K8S_AUTH_VALIDATE_CERTS", "false")],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.msg().contains("HTTP 401"), "{}", run.msg());
    assert_eq!(
        run.result["invocation"]["module_args"]["validate_certs"],
        json!(false)
    );
}
