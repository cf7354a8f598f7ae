//! What a hostile API server or node can make kubemend do (issue 22), against stand-ins on this
//! machine only: a small API server on loopback that answers each path as the test says
//! ([`Api`]), and an `ssh` first on PATH that records how it was called and plays nodes that
//! refuse connections or hang ([`FakeSsh`]). No test bed, no real node.
//!
//! Each run is bounded ([`fake_api::run_measured`]) and must end by itself with one JSON result.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fake_api::run_measured;
use serde_json::{Value, json};

/// The control-plane label microk8s sets.
const CONTROL_PLANE: &str = "node.kubernetes.io/microk8s-controlplane";

/// How the API answers one request: status and JSON body, from the request line's path and
/// query and how many requests came before.
type Answer = dyn Fn(&str, usize) -> (u16, String) + Send + Sync;

/// An API server on loopback answering each request with [`Answer`]; stops when dropped.
struct Api {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Api {
    fn start(answer: impl Fn(&str, usize) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (requests, answer) = (Arc::clone(&requests), Arc::clone(&answer));
                    std::thread::spawn(move || serve(stream, &requests, &*answer));
                }
            });
        }
        Self {
            addr,
            requests,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Answers the requests of one connection (keep-alive) until the client hangs up.
fn serve(mut stream: TcpStream, requests: &AtomicUsize, answer: &Answer) {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0_u8; 8192];
    loop {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        // Requests here have no body (GETs).
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        data.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let (status, body) = answer(&path, n);
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A control-plane Node named `name`.
fn node(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {CONTROL_PLANE: "true"}},
           "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.9"}]}})
}

/// A list of `kind` holding `items`, continued by `token` when given.
fn list(kind: &str, items: &[Value], token: Option<&str>) -> String {
    json!({"kind": kind, "apiVersion": "v1",
           "metadata": {"resourceVersion": "1", "continue": token.unwrap_or("")},
           "items": items})
    .to_string()
}

/// The answers of an API with `nodes` and nothing else (lists of leases empty, 404 for
/// everything else).
fn cluster_of(nodes: Vec<Value>) -> impl Fn(&str, usize) -> (u16, String) + Send + Sync {
    move |path: &str, _| {
        if path.starts_with("/api/v1/nodes") {
            (200, list("NodeList", &nodes, None))
        } else if path.contains("/leases?") || path.ends_with("/leases") {
            (200, list("LeaseList", &[], None))
        } else {
            (
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404})
                .to_string(),
            )
        }
    }
}

/// An `ssh` first on PATH that logs every call to `calls` and plays the nodes: a master
/// connection (`-M`) to a host listed in `$FAKE_SSH_REFUSE` fails as a refused connection;
/// a command on a host in `$FAKE_SSH_HANG` hangs (for at most 60 s); other commands fail,
/// saying so with terminal escape sequences (clear screen, colour, window title, C1 CSI) and a
/// carriage return.
struct FakeSsh {
    dir: tempfile::TempDir,
}

const FAKE_SSH: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_SSH_CALLS"
ctl= log= master= op= dest=
while [ $# -gt 0 ]; do
  case "$1" in
    -S) ctl=$2; shift ;;
    -E) log=$2; shift ;;
    -M) master=1 ;;
    -O) op=$2; shift ;;
    -o|-p|-l|-i|-F|-J) shift ;;
    --) break ;;
    *) dest=$1 ;;
  esac
  shift
done
if [ -n "$op" ]; then exit 0; fi
if [ -n "$master" ]; then
  case " $FAKE_SSH_REFUSE " in
    *" $dest "*) echo "ssh: connect to host $dest port 22: Connection refused" > "$log"; exit 255 ;;
  esac
  echo "$dest" > "$ctl.dest"
  exit 0
fi
dest=$(cat "$ctl.dest")
case " $FAKE_SSH_HANG " in
  *" $dest "*) exec sleep 60 ;;
esac
case " $FAKE_SSH_FLOOD " in
  *" $dest "*) exec yes 'E1206 12:00:00.000000 1 kubelite: database is locked' ;;
esac
printf 'fake node %s: \033[2J\033[31mno such command\r\n\033]0;owned\007\233m\n' "$dest" >&2
exit 1
"#;

impl FakeSsh {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let ssh = bin.join("ssh");
        std::fs::write(&ssh, FAKE_SSH).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        Self { dir }
    }

    fn calls_file(&self) -> PathBuf {
        self.dir.path().join("calls")
    }

    /// Every call of ssh so far, one a line.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.calls_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The environment for kubemend: this ssh first on PATH, its control sockets here.
    fn env(&self, refuse: &str, hang: &str) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        vec![
            ("PATH".into(), path),
            (
                "TMPDIR".into(),
                self.dir.path().join("tmp").display().to_string(),
            ),
            (
                "FAKE_SSH_CALLS".into(),
                self.calls_file().display().to_string(),
            ),
            ("FAKE_SSH_REFUSE".into(), refuse.into()),
            ("FAKE_SSH_HANG".into(), hang.into()),
        ]
    }
}

/// One module run's exit code, result and peak memory.
#[derive(Debug)]
struct Run {
    code: i32,
    result: Value,
    peak_kib: u64,
}

impl Run {
    fn msg(&self) -> &str {
        self.result["msg"].as_str().unwrap_or_default()
    }
}

/// Runs `module` against `api` with `args` (plus host and api_key) in `env`, killing it after
/// `limit`; fails the test if it had to be killed.
fn run_module(
    module: &str,
    api: &Api,
    mut args: Value,
    env: &[(String, String)],
    limit: Duration,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    args["host"] = json!(api.url());
    args["api_key"] = json!("hostile-test-token");
    let mut cmd = support::module_command(dir.path(), module, &args);
    cmd.env("HOME", dir.path())
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"));
    for (name, _) in std::env::vars() {
        if name.starts_with("K8S_AUTH_") || name.starts_with("KUBERNETES_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let (output, finished, peak_kib) = run_measured(cmd, limit);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        finished,
        "{module} still ran after {limit:?}; stdout: {stdout}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Run {
        code: output.status.code().unwrap_or(-1),
        result: serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("one JSON result expected ({e}): {stdout} {stderr}")),
        peak_kib,
    }
}

fn findings(run: &Run) -> Vec<Value> {
    run.result["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finding<'a>(findings: &'a [Value], id: &str) -> &'a Value {
    findings
        .iter()
        .find(|f| f["id"] == json!(id))
        .unwrap_or_else(|| panic!("no finding {id} in {findings:#?}"))
}

/// The kubelite check on `nodes`, with SSH options so that it runs.
fn diagnose_kubelite(extra: &Value) -> Value {
    let mut args = json!({"checks": ["kubelite"], "ssh_user": "core"});
    for (k, v) in extra.as_object().unwrap() {
        args[k] = v.clone();
    }
    args
}

#[test]
fn kubelite_restart_refuses_a_node_name_that_would_choose_the_ssh_destination() {
    let api = Api::start(cluster_of(vec![
        node("k8s01"),
        node("ssh://root@127.0.0.1:2222"),
    ]));
    let ssh = FakeSsh::new();
    let run = run_module(
        "kubelite_restart",
        &api,
        json!({"_ansible_check_mode": true}),
        &ssh.env("", ""),
        Duration::from_secs(60),
    );
    // Refused before any node is reached: not even the well-named one.
    assert_eq!(ssh.calls(), Vec::<String>::new(), "ssh ran");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.msg()
            .contains("refusing what the API server said of node \"ssh://root@127.0.0.1:2222\""),
        "{}",
        run.msg()
    );
    assert!(run.result["hint"].as_str().is_some(), "{run:?}");
}

#[test]
fn diagnose_reaches_no_node_when_the_api_serves_a_name_that_is_an_ssh_option() {
    let api = Api::start(cluster_of(vec![
        node("-oProxyCommand=touch pwned"),
        node("k8s01"),
    ]));
    let ssh = FakeSsh::new();
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({})),
        &ssh.env("", ""),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let check = &run.result["checks"][0];
    assert_eq!(check["status"], json!("skipped"), "{check}");
    assert!(
        check["reason"].as_str().unwrap().contains("refusing"),
        "{check}"
    );
    assert_eq!(ssh.calls(), Vec::<String>::new(), "ssh ran");
}

#[test]
fn a_list_whose_continue_token_never_ends_stops_at_its_bound_with_a_message() {
    // Full pages of new nodes, each with a new token, for ever.
    let full = Api::start(|path: &str, n| {
        if path.starts_with("/api/v1/nodes") {
            let items: Vec<Value> = (0..500).map(|i| node(&format!("n{n}-{i}"))).collect();
            (200, list("NodeList", &items, Some(&format!("t{n}"))))
        } else {
            (404, "{}".into())
        }
    });
    // Empty pages, each with a new token, for ever.
    let empty = Api::start(|path: &str, n| {
        if path.starts_with("/api/v1/nodes") {
            (200, list("NodeList", &[], Some(&format!("t{n}"))))
        } else {
            (404, "{}".into())
        }
    });
    let ssh = FakeSsh::new();
    for (api, most) in [(&full, 41), (&empty, 80)] {
        let run = run_module(
            "kubelite_restart",
            api,
            json!({"_ansible_check_mode": true}),
            &ssh.env("", ""),
            Duration::from_secs(120),
        );
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.msg()
                .contains("refusing what the API server said of the list of nodes"),
            "{}",
            run.msg()
        );
        assert!(run.result["hint"].as_str().is_some(), "{run:?}");
        assert!(api.requests() <= most, "{} requests", api.requests());
    }
    assert_eq!(ssh.calls(), Vec::<String>::new(), "ssh ran");
}

#[test]
fn fail_on_warning_is_reached_when_no_node_could_be_reached() {
    let api = Api::start(cluster_of(vec![node("k8s01"), node("k8s02")]));
    let ssh = FakeSsh::new();
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({"fail_on": "warning"})),
        &ssh.env("k8s01 k8s02", ""),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.result["fail_on_reached"], json!(true), "{run:?}");
    let findings = findings(&run);
    for node in ["k8s01", "k8s02"] {
        let f = finding(&findings, &format!("kubelite:ssh:node/{node}"));
        assert_eq!(f["severity"], json!("warning"), "{f}");
        assert!(
            f["evidence"]
                .as_str()
                .unwrap()
                .contains("Connection refused"),
            "{f}"
        );
    }
    // One node down gives the same, as before.
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({"fail_on": "warning"})),
        &ssh.env("k8s02", ""),
        Duration::from_secs(60),
    );
    assert_eq!(run.result["fail_on_reached"], json!(true), "{run:?}");
}

#[test]
fn a_node_whose_commands_hang_becomes_a_warning_and_the_other_nodes_are_still_reported() {
    let api = Api::start(cluster_of(vec![node("k8s01"), node("k8s02")]));
    let ssh = FakeSsh::new();
    // A timeout of 20 s leaves each node until 2 s before it.
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({"timeout": "20s"})),
        &ssh.env("", "k8s02"),
        Duration::from_secs(90),
    );
    // Exit 0 with the check run: the hung node did not make the run hit `timeout` (which
    // fails it, naming the step).
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.result["checks"][0]["status"], json!("ran"), "{run:?}");
    let findings = findings(&run);
    let hung = finding(&findings, "kubelite:ssh:node/k8s02");
    assert_eq!(hung["severity"], json!("warning"), "{hung}");
    let evidence = hung["evidence"].as_str().unwrap();
    assert!(
        evidence.contains("no answer within") && evidence.contains("the kubelite journal"),
        "{evidence}"
    );
    assert!(hung["hint"].as_str().unwrap().contains("hangs"), "{hung}");
    // k8s01 answered (every command failing): its findings are there.
    assert!(
        findings.iter().any(|f| f["object"] == json!("node/k8s01")),
        "{findings:#?}"
    );
}

#[test]
fn a_node_that_prints_without_end_is_cut_off_at_the_cap_in_bounded_memory() {
    let api = Api::start(cluster_of(vec![node("k8s01"), node("k8s02")]));
    let ssh = FakeSsh::new();
    let mut env = ssh.env("", "");
    // Every command on k8s02 prints journal lines for ever (as a node with a huge journal
    // and a broken filter would).
    env.push(("FAKE_SSH_FLOOD".into(), "k8s02".into()));
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({})),
        &env,
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let findings = findings(&run);
    let flooded: Vec<&str> = findings
        .iter()
        .filter(|f| f["object"] == json!("node/k8s02"))
        .filter_map(|f| f["evidence"].as_str())
        .filter(|e| e.contains("printed more than 4 MiB on stdout"))
        .collect();
    assert!(!flooded.is_empty(), "{findings:#?}");
    assert!(
        findings.iter().any(|f| f["object"] == json!("node/k8s01")),
        "{findings:#?}"
    );
    // Reading stops at the cap: memory stays far below what the flood would take.
    assert!(run.peak_kib < 64 * 1024, "peak {} KiB", run.peak_kib);
    // And every command ran under the node's own `timeout`, which ends it there (TERM, then
    // KILL) before kubemend stops waiting, also when kubemend stopped reading or is gone.
    let commands: Vec<String> = ssh
        .calls()
        .into_iter()
        .filter(|c| !c.contains(" -M ") && !c.contains(" -O "))
        .collect();
    assert!(!commands.is_empty());
    for command in &commands {
        assert!(command.contains(" timeout -k 5 55 "), "{command}");
    }
}

/// A secret file given as ssh_config by mistake: the real ssh refuses it line by line, and
/// kubemend names the file and the line, never the words ssh quotes from it.
#[test]
fn an_ssh_config_that_is_a_secret_is_named_but_never_quoted() {
    let api = Api::start(cluster_of(vec![node("k8s01")]));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(
        &secret,
        "hunter2-0123456789abcdef\nsecond-secret-line here\n",
    )
    .unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({"ssh_config": secret})),
        &[("TMPDIR".into(), tmp.display().to_string())],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let text = run.result.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("second-secret"),
        "{text}"
    );
    let findings = findings(&run);
    let unreachable = finding(&findings, "kubelite:ssh:node/k8s01");
    let evidence = unreachable["evidence"].as_str().unwrap();
    assert!(evidence.contains("line 1"), "{evidence}");
}

#[test]
fn escape_sequences_a_node_prints_never_reach_the_result() {
    let api = Api::start(cluster_of(vec![node("k8s01")]));
    let ssh = FakeSsh::new();
    let run = run_module(
        "diagnose",
        &api,
        diagnose_kubelite(&json!({})),
        &ssh.env("", ""),
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 0, "{run:?}");
    let mut texts = Vec::new();
    strings(&run.result, &mut texts);
    assert!(
        texts.iter().any(|t| t.contains("no such command")),
        "{:#}",
        run.result
    );
    for text in &texts {
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' || ('\u{80}'..='\u{9f}').contains(&c)),
            "{text:?}"
        );
    }
    for f in findings(&run) {
        let evidence = f["evidence"].as_str().unwrap();
        assert!(!evidence.contains('\n'), "{evidence:?}");
    }
}

/// Every string in `value`, keys included.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}
