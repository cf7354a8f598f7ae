//! kubelite_restart against the test bed: real sshd per node, real sudo, the node's own
//! kubelite processes, and the test bed's record of every kubelite start and stop.
//!
//! Every test holds all three node locks (it restarts nodes) and removes a lock Lease left by
//! an earlier test first, so that runs never resume each other's records by accident.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kubemend::k8s::watch::Watched;
use serde_json::{Value, json};

const LOCK_LEASE: &str = support::ROLLING_LOCK;

fn args(extra: &Value) -> Value {
    support::rolling_args(extra)
}

async fn no_lock_lease() {
    support::no_rolling_lock().await;
}

/// The lock Lease, if any. The VIP passes TCP through without health checks, so while a
/// node's kubelite stops it can hand a connection to an apiserver that is shutting down (a
/// TLS handshake EOF): such a read is asked again, as through a real L4 load balancer.
async fn lock_lease() -> Option<Lease> {
    read_lease(LOCK_LEASE).await
}

async fn read_lease(name: &str) -> Option<Lease> {
    let leases = Api::<Lease>::namespaced(support::client().await, "kube-system");
    support::wait_until(
        &format!("Lease kube-system/{name} to be readable through the VIP"),
        Duration::from_secs(30),
        || async { leases.get_opt(name).await.ok() },
    )
    .await
}

/// Each node's restarts (stopping, then started), checking that no two nodes were down at once.
#[track_caller]
fn assert_never_two_down(events: &[support::KubeliteEvent]) -> BTreeMap<String, usize> {
    support::restarts_one_at_a_time(events).unwrap_or_else(|e| panic!("{e}"))
}

/// The kubelite stops someone asked for (`snap restart`, `snap stop`) since `since`; a kubelite
/// that crashed by itself meanwhile is not one of them.
fn stops_since(since: f64) -> Vec<support::KubeliteEvent> {
    support::kubelite_events_since(since)
        .into_iter()
        .filter(|e| e.2 == "stopping")
        .collect()
}

fn gates(node: &Value) -> Vec<String> {
    node["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["gate"].as_str().unwrap().to_owned())
        .collect()
}

fn node_entry<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no entry for {name}: {result}"))
}

async fn scheduler_holder() -> String {
    let lease = read_lease("kube-scheduler")
        .await
        .expect("a kube-scheduler Lease");
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    holder.split('_').next().unwrap().to_owned()
}

/// The leaders moved because kubemend restarted their nodes: diagnose, looking back over the
/// run begun at `since`, counts no churn (every restart was recorded as an Event).
fn assert_no_churn_counted_since(since: f64) {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole seconds since the run began, far below 2^32"
    )]
    // From the run's start on (a test before it may have moved a leader just before), whole
    // seconds rounded up.
    let window = format!("{}s", (support::now() - since).ceil() as u64 + 1);
    let (code, diagnosed) = support::run_module(
        "diagnose",
        &json!({"checks": ["leader_leases"], "window": window}),
    );
    assert_eq!(code, 0, "{diagnosed:#}");
    let leases = diagnosed["findings"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{diagnosed:#}");
    for lease in leases {
        assert_eq!(lease["severity"], "info", "{lease:#}");
        assert_eq!(lease["data"]["changes_in_window"], 0, "{lease:#}");
    }
    assert!(
        leases
            .iter()
            .any(|l| l["data"]["changes_by_kubemend"].as_u64().unwrap() >= 1),
        "the rolling restart moved a leader: {diagnosed:#}"
    );
}

#[tokio::test]
async fn kubelite_restart_rolls_every_node_leaders_last_never_two_down_at_once() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let leader = scheduler_holder().await;
    let since = support::now();
    let (code, result) = support::run_module("kubelite_restart", &args(&json!({})));
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["changed"], json!(true));
    let order: Vec<&str> = result["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 3, "{result:#}");
    // Leaders last: along the order, the number of leaderships (dqlite, scheduler,
    // controller-manager) a node held never goes down, and the scheduler's holder is not first.
    let roles: Vec<usize> = order
        .iter()
        .map(|n| node_entry(&result, n)["roles"].as_array().unwrap().len())
        .collect();
    assert!(
        roles.windows(2).all(|w| w[0] <= w[1]),
        "{roles:?}: {result:#}"
    );
    assert!(roles[2] > 0, "a leader goes last: {result:#}");
    // The scheduler's holder is not first, unless it holds no more leaderships than the first
    // (the real dqlite leader can be anywhere, so nodes can hold one each).
    let held = node_entry(&result, &leader)["roles"]
        .as_array()
        .unwrap()
        .len();
    if held > roles[0] {
        assert_ne!(
            order[0], leader,
            "the scheduler's holder is not first: {result:#}"
        );
    }
    assert_eq!(result["restarted"], json!(order));
    // Each restart was recorded as an Event (diagnose reads them; a refused one is a warning).
    assert!(
        !result["warnings"].to_string().contains("Event"),
        "{result:#}"
    );
    for name in &order {
        let node = node_entry(&result, name);
        assert_eq!(node["status"], "restarted");
        let passed = gates(node);
        for gate in [
            "unit restarted",
            "node lease renewed",
            "node Ready",
            "apiserver /readyz",
            "scheduler and controller-manager leases held",
            "settled 1s",
        ] {
            assert!(
                passed.iter().any(|g| g == gate),
                "{name}: no {gate:?} in {passed:?}"
            );
        }
        assert!(node["recovery_seconds"].as_f64().unwrap() > 0.0);
    }
    let restarts = assert_never_two_down(&support::kubelite_events_since(since));
    for name in &order {
        assert_eq!(
            restarts.get(*name),
            Some(&1),
            "{name} restarted once: {restarts:?}"
        );
    }
    assert!(
        lock_lease().await.is_none(),
        "a finished run deletes its lock"
    );

    assert_no_churn_counted_since(since);

    // The monthly run again within the hour: nothing to do.
    let since = support::now();
    let (code, again) = support::run_module(
        "kubelite_restart",
        &args(&json!({"restarted_within": "1h"})),
    );
    assert_eq!(code, 0, "{again:#}");
    assert_eq!(again["changed"], json!(false), "{again:#}");
    assert_eq!(
        again["skipped_nodes"].as_array().unwrap().len(),
        3,
        "{again:#}"
    );
    assert!(stops_since(since).is_empty());
}

#[tokio::test]
async fn kubelite_restart_refuses_before_any_restart_when_a_node_is_unfit() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    for (fault, words) in [
        ("ssh-down", "ssh to node \"k8s02\""),
        ("no-dqlite-leader", "dqlite reports no leader"),
        // The leader's view still lists three voters: only the node's own unit tells.
        (
            "dqlite-stopped",
            "this node's snap.microk8s.daemon-k8s-dqlite is inactive (dead)",
        ),
        ("escalation-risk", "restart-escalation risk"),
        (
            "snap-change",
            "snapd change 12 (Doing: Auto-refresh snap \"microk8s\")",
        ),
    ] {
        let out = support::testcluster(&["fault", "k8s02", fault]);
        assert!(out.status.success(), "{fault}: {out:?}");
        let since = support::now();
        let (code, result) = support::run_module("kubelite_restart", &args(&json!({})));
        assert_eq!(code, 1, "{fault}: {result:#}");
        assert_eq!(result["failed_step"], "plan", "{fault}: {result:#}");
        assert_eq!(result["changed"], json!(false), "{fault}: {result:#}");
        let msg = result["msg"].as_str().unwrap();
        assert!(
            msg.contains("k8s02") && msg.contains(words),
            "{fault}: {msg}"
        );
        assert!(
            stops_since(since).is_empty(),
            "{fault}: something restarted"
        );
        let out = support::testcluster(&["fault", "clear", "k8s02"]);
        assert!(out.status.success(), "{out:?}");
    }
    assert!(lock_lease().await.is_none(), "a refused run takes no lock");
}

#[tokio::test]
async fn kubelite_restart_stops_at_the_failing_node_and_a_rerun_restarts_only_what_is_left() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let given = json!({"order": "given", "nodes": ["k8s01", "k8s02", "k8s03"]});
    // slow-start=45 comes up by itself 45 s after the restart, past the 30 s gate_timeout (long
    // enough for k8s01's leader Leases to move: 12 s leases). The unit is Type=simple: active as
    // soon as its wrapper runs, so the apiserver is what tells.
    for (fault, gate) in [
        ("restart-fails", "restart"),
        ("never-ready", "apiserver /readyz"),
        ("slow-start=45", "apiserver /readyz"),
    ] {
        no_lock_lease().await;
        assert!(
            support::testcluster(&["fault", "k8s02", fault])
                .status
                .success()
        );
        let since = support::now();
        let mut options = args(&given);
        options["gate_timeout"] = json!("30s");
        let (code, result) = support::run_module("kubelite_restart", &options);
        assert_eq!(code, 1, "{fault}: {result:#}");
        assert_eq!(result["failed_step"], "apply", "{fault}: {result:#}");
        assert_eq!(
            result["changed"],
            json!(true),
            "k8s01 was restarted: {result:#}"
        );
        assert_eq!(result["failed_node"], json!("k8s02"), "{result:#}");
        assert_eq!(result["restarted"], json!(["k8s01"]), "{result:#}");
        assert_eq!(result["not_started"], json!(["k8s03"]), "{result:#}");
        let failed = node_entry(&result, "k8s02");
        assert_eq!(failed["failed_gate"], gate, "{fault}: {failed:#}");
        assert!(failed["observed"].as_str().is_some_and(|o| !o.is_empty()));
        assert!(
            result["msg"].as_str().unwrap().contains(gate),
            "{}",
            result["msg"]
        );
        // The limit named is the one that applied: gate_timeout bounds the gates after the
        // restart, not the restart itself.
        let limit = if gate == "restart" {
            "at the restart"
        } else {
            "within 30s (gate_timeout)"
        };
        assert!(
            result["msg"].as_str().unwrap().contains(limit),
            "{fault}: {}",
            result["msg"]
        );
        let touched: Vec<String> = stops_since(since).into_iter().map(|e| e.1).collect();
        assert!(
            !touched.iter().any(|n| n == "k8s03"),
            "k8s03 untouched: {touched:?}"
        );

        if fault.starts_with("slow-start") {
            // The slow node does come up, late: the run stopped rather than moved on.
            support::wait_until("k8s02's slow start", Duration::from_secs(90), || async {
                support::kubelite_events_since(since)
                    .iter()
                    .any(|e| e.1 == "k8s02" && e.2 == "started")
                    .then_some(())
            })
            .await;
        }

        // The fault goes away; a rerun resumes: k8s01 is not restarted again.
        assert!(
            support::testcluster(&["fault", "clear", "k8s02"])
                .status
                .success()
        );
        let _ = support::ssh("k8s02", "sudo -n snap start microk8s.daemon-kubelite");
        // Until k8s02's kubelet renews its Lease again, the pre-flight rightly refuses.
        let mut check = args(&given);
        check["_ansible_check_mode"] = json!(true);
        support::wait_for("k8s02 fit again", Duration::from_secs(90), || async {
            match support::run_module("kubelite_restart", &check) {
                (0, _) => Ok(()),
                (_, refused) => Err(refused["msg"].to_string()),
            }
        })
        .await;
        let since = support::now();
        let (code, rerun) = support::run_module("kubelite_restart", &args(&given));
        assert_eq!(code, 0, "{fault}: {rerun:#}");
        assert_eq!(rerun["restarted"], json!(["k8s02", "k8s03"]), "{rerun:#}");
        assert_eq!(rerun["skipped_nodes"], json!(["k8s01"]), "{rerun:#}");
        assert_eq!(rerun["lock"]["resumed_done"], json!(["k8s01"]), "{rerun:#}");
        let restarts = assert_never_two_down(&support::kubelite_events_since(since));
        assert!(!restarts.contains_key("k8s01"), "{restarts:?}");
    }
}

#[tokio::test]
async fn kubelite_restart_stops_when_a_crash_after_the_restart_escalates_to_the_whole_snap() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    // k8s02 without cpuset delegation or delegate.conf, and a kubelite that dies 3 s after it
    // came up: systemd restarts it, and microk8s' wrapper then restarts the whole snap.
    for fault in ["escalation-risk", "crash-after-start=3"] {
        assert!(
            support::testcluster(&["fault", "k8s02", fault])
                .status
                .success()
        );
    }
    let dqlite_invocation = || {
        support::ssh_ok(
            "k8s02",
            "systemctl show -p InvocationID --value snap.microk8s.daemon-k8s-dqlite",
        )
    };
    let dqlite_before = dqlite_invocation();
    let since = support::now();
    let options = args(&json!({
        "nodes": ["k8s02", "k8s03"],
        "order": "given",
        "allow_escalation_risk": true,
        "settle": "20s",
    }));
    let (code, result) = support::run_module("kubelite_restart", &options);
    assert_eq!(code, 1, "{result:#}");
    assert_eq!(result["failed_step"], "apply", "{result:#}");
    assert_eq!(result["changed"], json!(true), "{result:#}");
    assert_eq!(result["failed_node"], json!("k8s02"), "{result:#}");
    assert_eq!(result["not_started"], json!(["k8s03"]), "{result:#}");
    let failed = node_entry(&result, "k8s02");
    assert_eq!(failed["failed_gate"], "no escalation", "{failed:#}");
    assert!(
        failed["observed"]
            .as_str()
            .unwrap()
            .contains("snap restart microk8s"),
        "{failed:#}"
    );
    assert!(
        result["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("allow_escalation_risk")),
        "{result:#}"
    );
    // The whole snap did restart: k8s-dqlite has a new invocation and delegate.conf is written.
    assert_ne!(dqlite_invocation(), dqlite_before);
    assert_eq!(
        support::ssh_ok(
            "k8s02",
            "test -e /etc/systemd/system/snap.microk8s.daemon-kubelite.service.d/delegate.conf \
             && echo written"
        )
        .trim(),
        "written"
    );
    // kubemend's restart, then microk8s' own, which kubemend stopped on as soon as it began (the
    // snap's services may still be starting).
    let events = support::wait_for(
        "k8s02 started twice: kubemend's restart, then microk8s' own",
        Duration::from_secs(90),
        || async {
            let events = support::kubelite_events_since(since);
            let starts = events
                .iter()
                .filter(|e| e.1 == "k8s02" && e.2 == "started")
                .count();
            if starts >= 2 {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        },
    )
    .await;
    assert!(!events.iter().any(|e| e.1 == "k8s03"), "{events:?}");

    clear_and_wait_until_fit("k8s02", &json!({})).await;
    no_lock_lease().await;
}

#[tokio::test]
async fn kubelite_restart_checks_dqlite_and_snapd_again_before_each_further_node() {
    let _nodes = support::all_nodes_lock();
    let dir = tempfile::tempdir().unwrap();
    // The dqlite leader, as its member address tells; it goes last.
    let leader_address = support::ssh_ok(
        "k8s01",
        "sudo -n /snap/microk8s/current/bin/dqlite \
         -s file:///var/snap/microk8s/current/var/kubernetes/backend/cluster.yaml \
         -c /var/snap/microk8s/current/var/kubernetes/backend/cluster.crt \
         -k /var/snap/microk8s/current/var/kubernetes/backend/cluster.key k8s .leader",
    );
    let leader = support::NODES
        .iter()
        .find(|n| leader_address.trim() == format!("127.0.1.{}:19001", &n[4..]))
        .copied()
        .unwrap_or_else(|| panic!("no node has dqlite address {leader_address:?}"));
    let mut order: Vec<&str> = support::NODES
        .iter()
        .copied()
        .filter(|n| *n != leader)
        .collect();
    order.push(leader);
    let (first, second, last) = (order[0], order[1], order[2]);
    let killed = format!("{last}: snap.microk8s.daemon-k8s-dqlite restarted during the run");
    let stopped = format!("{last}: this node's snap.microk8s.daemon-k8s-dqlite is inactive (dead)");
    // Each fault comes while the first node restarts, after the pre-flight passed.
    for (node, fault, check, words) in [
        (last, "dqlite-stopped", "dqlite healthy", stopped.as_str()),
        // The leader's member killed: systemd starts it again and it rejoins, but the run does
        // not walk on while a voter may still be catching up.
        (last, "dqlite-killed", "dqlite healthy", killed.as_str()),
        (
            second,
            "snap-change",
            "no snapd change",
            "snapd change 12 (Doing",
        ),
    ] {
        no_lock_lease().await;
        let options = args(&json!({"nodes": order, "order": "given", "settle": "10s"}));
        let since = support::now();
        let run = spawn_cli(&options, dir.path(), fault);
        support::wait_until(
            &format!("{first} restarted"),
            Duration::from_secs(90),
            || async {
                support::kubelite_events_since(since)
                    .iter()
                    .any(|e| e.1 == first && e.2 == "started")
                    .then_some(())
            },
        )
        .await;
        assert!(
            support::testcluster(&["fault", node, fault])
                .status
                .success()
        );
        let (code, result) = result_of(run);
        assert_eq!(code, 1, "{fault}: {result:#}");
        assert_eq!(result["changed"], json!(true), "{fault}: {result:#}");
        assert_eq!(result["restarted"], json!([first]), "{fault}: {result:#}");
        assert_eq!(result["failed_node"], json!(second), "{fault}: {result:#}");
        assert_eq!(result["not_started"], json!([last]), "{fault}: {result:#}");
        let failed = node_entry(&result, second);
        assert_eq!(failed["failed_gate"], check, "{fault}: {failed:#}");
        let observed = failed["observed"].as_str().unwrap();
        assert!(observed.contains(words), "{fault}: {observed}");
        // Stopped by someone (kubemend): a kubelite that crashed by itself meanwhile (its
        // controller-manager losing its Lease on a loaded machine) is not a restart.
        let touched: Vec<String> = stops_since(since)
            .into_iter()
            .map(|e| e.1)
            .filter(|n| n != first)
            .collect();
        assert!(
            touched.is_empty(),
            "{fault}: only {first} restarted: {touched:?}"
        );
        clear_and_wait_until_fit(node, &json!({})).await;
    }
    no_lock_lease().await;
}

/// Clears `node`'s faults and waits until a check-mode run with `extra` passes its pre-flight
/// (the node's kubelet renews its Lease again, its dqlite member is back).
async fn clear_and_wait_until_fit(node: &str, extra: &Value) {
    assert!(
        support::testcluster(&["fault", "clear", node])
            .status
            .success()
    );
    let mut check = args(extra);
    check["_ansible_check_mode"] = json!(true);
    support::wait_until(
        &format!("{node} fit again"),
        Duration::from_secs(90),
        || async { (support::run_module("kubelite_restart", &check).0 == 0).then_some(()) },
    )
    .await;
}

/// A CLI run in the background, printing its JSON result.
fn spawn_cli(options: &Value, dir: &std::path::Path, name: &str) -> Child {
    let params = dir.join(format!("{name}.json"));
    std::fs::write(&params, options.to_string()).unwrap();
    support::kubemend()
        .args(["kubelite-restart", "--output", "json", "--params"])
        .arg(&params)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn result_of(child: Child) -> (i32, Value) {
    support::result_of(&child.wait_with_output().unwrap())
}

#[tokio::test]
async fn kubelite_restart_lets_exactly_one_of_two_runs_started_together_proceed() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let dir = tempfile::tempdir().unwrap();
    let options = args(&json!({"nodes": ["k8s03"]}));
    let since = support::now();
    let first = spawn_cli(&options, dir.path(), "a");
    let second = spawn_cli(&options, dir.path(), "b");
    let results = [result_of(first), result_of(second)];
    let ok: Vec<&Value> = results
        .iter()
        .filter(|(c, _)| *c == 0)
        .map(|r| &r.1)
        .collect();
    let refused: Vec<&Value> = results
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|r| &r.1)
        .collect();
    assert_eq!((ok.len(), refused.len()), (1, 1), "{results:#?}");
    let msg = refused[0]["msg"].as_str().unwrap();
    assert!(msg.contains("is held by run"), "{msg}");
    let restarts = assert_never_two_down(&support::kubelite_events_since(since));
    assert_eq!(restarts.get("k8s03"), Some(&1), "{restarts:?}");
}

#[tokio::test]
async fn kubelite_restart_killed_mid_run_is_resumed_by_the_next_run() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let dir = tempfile::tempdir().unwrap();
    let options = args(&json!({
        "order": "given", "nodes": ["k8s01", "k8s02", "k8s03"], "lock_ttl": "90s",
    }));
    let mut child = spawn_cli(&options, dir.path(), "killed");
    // Once the lock records k8s01 as done, kill the run, as a dead AWX job would be.
    support::wait_until(
        "k8s01 recorded as done",
        Duration::from_secs(90),
        || async {
            let lease = lock_lease().await?;
            let done = lease.metadata.annotations?.get("kubemend.io/done")?.clone();
            done.contains("k8s01").then_some(())
        },
    )
    .await;
    child.kill().unwrap();
    let _ = child.wait();
    // Its lock expires after lock_ttl (90 s, the shortest allowed) without renewal; until then
    // another run is refused.
    support::wait_until(
        "the dead run's lock to expire",
        Duration::from_secs(150),
        || async {
            let spec = lock_lease().await?.spec?;
            let renewed = spec.renew_time?.0;
            let ttl = i64::from(spec.lease_duration_seconds?);
            (Timestamp::now().as_second() - renewed.as_second() > ttl).then_some(())
        },
    )
    .await;
    // Whatever the killed run was doing to k8s02 finishes on its own (snap restart runs on).
    support::wait_until("k8s02 active", Duration::from_secs(60), || async {
        (support::unit_property("k8s02", "ActiveState") == "active").then_some(())
    })
    .await;
    let (code, rerun) = support::run_module("kubelite_restart", &options);
    assert_eq!(code, 0, "{rerun:#}");
    assert_eq!(rerun["skipped_nodes"], json!(["k8s01"]), "{rerun:#}");
    assert_eq!(rerun["restarted"], json!(["k8s02", "k8s03"]), "{rerun:#}");
    assert!(
        rerun["warnings"].to_string().contains("took over"),
        "{rerun:#}"
    );
}

#[tokio::test]
async fn kubelite_restart_works_through_the_apiserver_of_the_node_it_restarts() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let since = support::now();
    let (code, result) = support::run_module(
        "kubelite_restart",
        &args(&json!({"context": "k8s01", "nodes": ["k8s01"]})),
    );
    assert_eq!(code, 0, "{result:#}");
    assert_eq!(result["restarted"], json!(["k8s01"]), "{result:#}");
    let restarts = assert_never_two_down(&support::kubelite_events_since(since));
    assert_eq!(restarts.get("k8s01"), Some(&1));
}

/// An ssh_config like the test bed's without its key, and an ssh-agent holding the key: the
/// way an AWX Machine credential hands its key over. Without the agent the same run fails.
#[tokio::test]
async fn kubelite_restart_reaches_the_nodes_through_an_ssh_agent_with_no_key_option() {
    // Its pre-flight needs every node active and no run holding the lock: not while another
    // test restarts nodes.
    let _nodes = support::all_nodes_lock();
    let dir = tempfile::tempdir().unwrap();
    let agent = support::SshAgent::start(dir.path()).await;
    let options = args(&json!({"ssh_config": agent.ssh_config, "_ansible_check_mode": true}));
    let run = |through_agent: bool, options: &Value| {
        let params = dir.path().join("params.json");
        std::fs::write(&params, options.to_string()).unwrap();
        let mut cmd = support::kubemend();
        cmd.args(["module", "kubelite_restart"])
            .arg(&params)
            .env("HOME", &agent.home);
        if through_agent {
            cmd.env("SSH_AUTH_SOCK", &agent.socket);
        } else {
            cmd.env_remove("SSH_AUTH_SOCK");
        }
        support::result_of(&cmd.output().unwrap())
    };
    let (code, result) = run(true, &options);
    assert_eq!(code, 0, "{result:#}");
    for node in result["nodes"].as_array().unwrap() {
        assert_eq!(node["preflight"]["ssh"], json!(true), "{node:#}");
    }
    let mut one = options.clone();
    one["nodes"] = json!(["k8s01"]);
    let (code, result) = run(false, &one);
    assert_eq!(code, 1, "without the agent there is no key: {result:#}");
    assert!(
        result["msg"].as_str().unwrap().contains("ssh to node"),
        "{result:#}"
    );
}

#[test]
fn kubelite_restart_bad_input_fails_before_any_ssh_or_api_call() {
    for (args, option) in [
        (json!({"nodes": ["k8s01; reboot"]}), "nodes[0].name"),
        (json!({"order": "sideways"}), "order"),
        (json!({"gate_timeout": "0s"}), "gate_timeout"),
        (json!({"settle": "-1m"}), "settle"),
        (json!({"host_key_checking": false}), "host_key_checking"),
    ] {
        // An unreachable API and no ssh_config: any call would fail differently.
        let dir = tempfile::tempdir().unwrap();
        let params = dir.path().join("args.json");
        std::fs::write(&params, args.to_string()).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_kubemend"))
            .args(["module", "kubelite_restart"])
            .arg(&params)
            .env("K8S_AUTH_HOST", "https://127.0.0.1:1")
            .output()
            .unwrap();
        let (code, result) = support::result_of(&output);
        assert_eq!(code, 1, "{args}: {result}");
        assert_eq!(result["failed_step"], "validate", "{args}: {result}");
        assert!(
            result["msg"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{option}")),
            "{args}: {result}"
        );
    }
}

/// Waits (at most 20 s) until the watched Lease's holder is `holder` (None: the Lease is gone),
/// calling `changed` for each step as the gates do.
async fn until_holder(watched: &mut Watched<Lease>, holder: Option<&str>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen = watched.latest.as_ref().map(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default()
        });
        if seen.as_deref() == holder {
            return;
        }
        assert!(
            tokio::time::timeout_at(deadline, watched.changed())
                .await
                .is_ok(),
            "the watch did not see holder {holder:?} within 20 s: {seen:?}, {watched:?}"
        );
    }
}

/// The gates' watch of one object against the test bed's apiserver: the first call lists, each
/// later one returns with the object as it changed; a deletion clears it and a re-creation
/// brings it back (the watch goes on from its resourceVersion throughout).
#[tokio::test]
async fn kubelite_restart_gate_watch_follows_every_change_of_its_object() {
    let reaper = support::Reaper::new("gate-watch");
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    let api: Api<Lease> = Api::namespaced(client.clone(), &namespace);
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "probe"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 8},
        }))
        .unwrap()
    };
    let mut watched = Watched::new(api.clone(), "probe", format!("lease {namespace}/probe"));
    tokio::time::timeout(Duration::from_secs(20), watched.changed())
        .await
        .unwrap();
    assert!(watched.latest.is_none(), "{watched:?}");
    assert!(watched.error.is_none(), "{watched:?}");

    api.create(&PostParams::default(), &lease("first"))
        .await
        .unwrap();
    until_holder(&mut watched, Some("first")).await;
    for holder in ["second", "third"] {
        let patch = json!({"spec": {"holderIdentity": holder}});
        api.patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        until_holder(&mut watched, Some(holder)).await;
    }
    api.delete("probe", &DeleteParams::default()).await.unwrap();
    until_holder(&mut watched, None).await;
    api.create(&PostParams::default(), &lease("again"))
        .await
        .unwrap();
    until_holder(&mut watched, Some("again")).await;
    assert!(watched.error.is_none(), "{watched:?}");
}

/// The lock Lease is released: no holder, so no run waits for it to expire.
#[track_caller]
fn assert_released(lease: &Lease) {
    assert!(
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_ref())
            .is_none_or(String::is_empty),
        "{lease:?}"
    );
}

/// A ValidatingAdmissionPolicy (in `reaper`'s care) under which the API server refuses to
/// delete the lock Lease (as a datastore under write pressure refuses a write); returns once it
/// refuses a probe Lease it also covers.
async fn refuse_deleting_the_lock(reaper: &support::Reaper) {
    let client = support::client().await;
    let namespace = reaper.namespace(&client).await;
    support::refuse_deletes(
        &client,
        reaper,
        ("coordination.k8s.io", "leases"),
        "!(oldObject.metadata.name in ['kubemend-kubelite-restart', 'lock-delete-probe'])",
        &["kube-system", &namespace],
    )
    .await;
    let probes = Api::<Lease>::namespaced(client.clone(), &namespace);
    support::create(
        &probes,
        json!({"metadata": {"name": "lock-delete-probe"}, "spec": {}}),
    )
    .await;
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    support::wait_until(
        "the policy to refuse deleting the probe Lease",
        Duration::from_secs(60),
        || async {
            match probes.delete("lock-delete-probe", &dry_run).await {
                Err(kube::Error::Api(status)) if status.code == 422 || status.code == 403 => {
                    Some(())
                }
                _ => None,
            }
        },
    )
    .await;
}

#[tokio::test]
async fn kubelite_restart_whose_lock_cannot_be_deleted_succeeds_and_no_later_run_is_a_silent_no_op()
{
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let reaper = support::Reaper::new("lock-delete");
    refuse_deleting_the_lock(&reaper).await;
    let options = args(&json!({"nodes": ["k8s03"]}));
    for round in ["first", "second"] {
        let since = support::now();
        let (code, result) = support::run_module("kubelite_restart", &options);
        // Every node restarted and passed its gates: the refused delete is a warning.
        assert_eq!(code, 0, "{round}: {result:#}");
        assert_eq!(result["changed"], json!(true), "{round}: {result:#}");
        assert_eq!(result["restarted"], json!(["k8s03"]), "{round}: {result:#}");
        let warnings = result["warnings"].to_string();
        assert!(
            warnings.contains("could not be deleted") && warnings.contains("released instead"),
            "{round}: {result:#}"
        );
        // The second run found the first one's record naming every node: a finished run's,
        // cleared, not resumed into a run that restarts nothing.
        if round == "second" {
            assert!(warnings.contains("names every node"), "{result:#}");
            assert_eq!(result["lock"]["resumed"], Value::Null, "{result:#}");
        }
        assert_eq!(
            assert_never_two_down(&support::kubelite_events_since(since)).get("k8s03"),
            Some(&1),
            "{round}"
        );
        // Released, not left held until it expires.
        assert_released(&lock_lease().await.expect("the lock Lease stays"));
    }
    drop(reaper);
    no_lock_lease().await;
}

#[tokio::test]
async fn kubelite_restart_cancelled_with_sigterm_releases_its_lock_and_leaves_no_ssh_master() {
    let _nodes = support::all_nodes_lock();
    no_lock_lease().await;
    let dir = tempfile::tempdir().unwrap();
    let masters = || {
        let out = Command::new("pgrep")
            .args(["-f", "ssh .*-M -f -N"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let before = masters();
    let options = args(&json!({"nodes": ["k8s01", "k8s02"], "order": "given"}));
    let since = support::now();
    let run = spawn_cli(&options, dir.path(), "cancelled");
    // As AWX cancels a job: SIGTERM while the first node restarts.
    support::wait_until("k8s01 stopping", Duration::from_secs(90), || async {
        support::kubelite_events_since(since)
            .iter()
            .any(|e| e.1 == "k8s01" && e.2 == "stopping")
            .then_some(())
    })
    .await;
    let pid = run.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (code, result) = result_of(run);
    assert_eq!(code, 1, "{result:#}");
    let msg = result["msg"].as_str().unwrap();
    assert!(
        msg.contains("stopped by SIGTERM while restarting kubelite on k8s01"),
        "{msg}"
    );
    assert_eq!(result["changed"], json!(true), "{result:#}");
    assert_eq!(result["failed_node"], json!("k8s01"), "{result:#}");
    assert_eq!(result["not_started"], json!(["k8s02"]), "{result:#}");
    // The lock is released (holder empty), so the next run need not wait for it to expire.
    assert_released(&lock_lease().await.expect("the lock Lease keeps its record"));
    // Every ssh master of the run is closed.
    assert_eq!(masters(), before, "ssh masters left behind");
    assert!(
        !stops_since(since).iter().any(|e| e.1 == "k8s02"),
        "k8s02 untouched"
    );
    // k8s01 comes back by itself (its restart was under way); the next run resumes.
    clear_and_wait_until_fit("k8s01", &json!({"nodes": ["k8s01", "k8s02"]})).await;
    no_lock_lease().await;
}
