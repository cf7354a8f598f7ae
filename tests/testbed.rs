//! The test bed does what the tests of every action rely on: three Ready
//! v1.34 nodes, each a real systemd machine (k8s03 on systemd 247) with real SSH,
//! a `snap restart` that really restarts a node's kubelite unit, a real dqlite
//! cluster, leader leases that move, the incident on demand, and fault knobs that
//! do what they say.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use support::{NODES, ssh, ssh_ok, testcluster, unit_property, wait_until};

fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

async fn ready_status(client: &Client, name: &str) -> Option<String> {
    let node = Api::<Node>::all(client.clone()).get(name).await.ok()?;
    node_ready(&node)
}

async fn lease_holder(client: &Client, ns: &str, name: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    lease.spec?.holder_identity
}

/// The node part of a leader-election identity `k8s02_<uuid>`.
fn holder_node(identity: &str) -> &str {
    identity.split('_').next().unwrap_or_default()
}

async fn renew_time(client: &Client, node: &str) -> Option<Timestamp> {
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .get(node)
        .await
        .ok()?;
    Some(lease.spec?.renew_time?.0)
}

/// Pids of the node's kubelite processes, as the node itself lists them.
fn kubelite_pids(node: &str) -> Vec<String> {
    let out = ssh_ok(node, "ps -eo pid,args");
    let ip = format!("=127.0.1.{} ", node_index(node) + 1);
    let mut pids: Vec<String> = out
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pid = words.next()?;
            let command = words.next()?;
            // The component itself, not its restart loop or a grep.
            (command.ends_with("/k8s") || command.ends_with("/kwok"))
                .then_some(())
                .filter(|()| format!("{l} ").contains(&ip))
                .map(|()| pid.to_owned())
        })
        .collect();
    pids.sort();
    pids
}

/// The pids of `node`'s apiserver, controller-manager, scheduler and kwok, once all four run.
async fn all_four_components(node: &str) -> Vec<String> {
    wait_until(
        &format!("{node}'s apiserver, controller-manager, scheduler and kwok"),
        Duration::from_secs(60),
        || async {
            let pids = kubelite_pids(node);
            (pids.len() == 4).then_some(pids)
        },
    )
    .await
}

fn node_index(node: &str) -> usize {
    NODES.iter().position(|n| *n == node).unwrap()
}

#[tokio::test]
async fn testbed_has_three_ready_nodes_on_kubernetes_1_34() {
    // No node restarts while each one's own apiserver is asked.
    let _nodes = support::all_nodes_lock();
    let client = support::client().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "34");
    assert!(
        version.git_version.starts_with("v1.34."),
        "{}",
        version.git_version
    );
    for node in NODES {
        assert_eq!(
            ready_status(&client, node).await.as_deref(),
            Some("True"),
            "{node} Ready"
        );
        // Each node's own apiserver answers too.
        let direct = support::client_for(Some(node)).await;
        assert_eq!(direct.apiserver_version().await.unwrap().minor, "34");
    }
}

#[tokio::test]
async fn ssh_reaches_each_node_as_an_unprivileged_user_with_sudo() {
    for node in NODES {
        assert_eq!(ssh_ok(node, "hostname").trim(), node);
        assert_ne!(ssh_ok(node, "id -u").trim(), "0", "login user is not root");
        assert_eq!(
            ssh_ok(node, "sudo -n id -u").trim(),
            "0",
            "sudo works without a password"
        );
        // args/ is root's and the microk8s group's, as on a real node.
        assert!(
            !ssh(node, "cat /var/snap/microk8s/current/args/kube-apiserver")
                .status
                .success()
        );
        let args = ssh_ok(
            node,
            "sudo -n cat /var/snap/microk8s/current/args/kube-apiserver",
        );
        assert!(args.contains("--secure-port=16443"), "{args}");
        assert!(args.contains(&format!(
            "--advertise-address=127.0.1.{}",
            node_index(node) + 1
        )));
        // Without sudo, snap refuses, as on a real node.
        let denied = ssh(node, "snap restart microk8s.daemon-kubelite");
        assert!(!denied.status.success());
        assert!(String::from_utf8_lossy(&denied.stderr).contains("access denied"));
    }
}

#[tokio::test]
async fn dqlite_membership_query_lists_three_voters_and_a_leader() {
    let backend = "/var/snap/microk8s/current/var/kubernetes/backend";
    let base = format!(
        "sudo -n /snap/microk8s/current/bin/dqlite -s file://{backend}/cluster.yaml \
         -c {backend}/cluster.crt -k {backend}/cluster.key -f json k8s"
    );
    let cluster: serde_json::Value =
        serde_json::from_str(&ssh_ok("k8s02", &format!("{base} .cluster"))).unwrap();
    let members = cluster.as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(
        members.iter().all(|m| m["Role"] == 0),
        "three voters: {cluster}"
    );
    let leader = ssh_ok("k8s02", &format!("{base} .leader"));
    assert!(
        members.iter().any(|m| m["Address"] == leader.trim()),
        "leader {leader:?} is a member"
    );
}

#[tokio::test]
async fn snap_restart_restarts_the_node_and_hands_its_scheduler_lease_on() {
    let _locks = support::all_nodes_lock();
    // Talk to k8s02's own apiserver only while it runs; otherwise the VIP.
    let client = support::client().await;

    // Make k8s02 the scheduler leader: with the other two stopped it is the
    // only candidate.
    for other in ["k8s01", "k8s03"] {
        ssh_ok(other, "sudo -n snap stop microk8s.daemon-kubelite");
    }
    wait_until(
        "k8s02 to hold the kube-scheduler lease",
        Duration::from_secs(60),
        || async {
            let holder = lease_holder(&client, "kube-system", "kube-scheduler").await?;
            (holder_node(&holder) == "k8s02").then_some(())
        },
    )
    .await;
    for other in ["k8s01", "k8s03"] {
        ssh_ok(other, "sudo -n snap start microk8s.daemon-kubelite");
    }
    for other in ["k8s01", "k8s03"] {
        wait_until(
            &format!("{other} Ready"),
            Duration::from_secs(60),
            || async {
                (ready_status(&client, other).await.as_deref() == Some("True")).then_some(())
            },
        )
        .await;
    }

    let leader_before = lease_holder(&client, "kube-system", "kube-scheduler")
        .await
        .unwrap_or_default();
    assert_eq!(holder_node(&leader_before), "k8s02", "{leader_before}");
    // Ready comes from kwok's node Lease through any apiserver: k8s02's own components may
    // still be starting (after a crash, say), so wait for its four.
    let pids_before = all_four_components("k8s02").await;
    let invocation_before = unit_property("k8s02", "InvocationID");
    let entered_before = unit_property("k8s02", "ActiveEnterTimestamp");
    // Unit timestamps have 1 s resolution: restart in a later second than the one read.
    let read_at = Timestamp::now().as_second();
    wait_until("the next second", Duration::from_secs(5), || async {
        (Timestamp::now().as_second() > read_at).then_some(())
    })
    .await;
    let restarted_at = Timestamp::now();

    ssh_ok("k8s02", "sudo -n snap restart microk8s.daemon-kubelite");

    // Type=simple: the unit is active at once; kubelite's components come up after.
    let pids_after = all_four_components("k8s02").await;
    assert!(
        pids_before.iter().all(|p| !pids_after.contains(p)),
        "{pids_before:?} -> {pids_after:?}"
    );
    // A manual stop and start is a new invocation, and resets NRestarts (systemd counts only
    // its own automatic restarts).
    assert_ne!(unit_property("k8s02", "InvocationID"), invocation_before);
    assert_eq!(unit_property("k8s02", "NRestarts"), "0");
    assert_ne!(
        unit_property("k8s02", "ActiveEnterTimestamp"),
        entered_before
    );
    assert_eq!(unit_property("k8s02", "ActiveState"), "active");

    // The stopped scheduler released its lease (or let it expire); any candidate may take it,
    // k8s02's new scheduler too, which has a new identity: the old holder must be gone.
    let holder = wait_until(
        "the scheduler lease to leave k8s02's old scheduler",
        Duration::from_secs(60),
        || async {
            let holder = lease_holder(&client, "kube-system", "kube-scheduler").await?;
            (holder != leader_before && !holder.is_empty()).then_some(holder)
        },
    )
    .await;
    assert!(
        NODES.contains(&holder_node(&holder)),
        "{holder} (was {leader_before})"
    );

    wait_until(
        "k8s02's node lease renewed after the restart",
        Duration::from_secs(60),
        || async { (renew_time(&client, "k8s02").await? > restarted_at).then_some(()) },
    )
    .await;
    wait_until("k8s02 Ready", Duration::from_secs(60), || async {
        (ready_status(&client, "k8s02").await.as_deref() == Some("True")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn snap_stop_beyond_the_grace_period_makes_the_node_not_ready() {
    let _lock = support::node_lock("k8s03");
    let client = support::client().await;
    ssh_ok("k8s03", "sudo -n snap stop microk8s.daemon-kubelite");
    assert_eq!(unit_property("k8s03", "ActiveState"), "inactive");
    // node-monitor-grace-period is 20 s; the node-lifecycle controller marks
    // the node Unknown after it.
    let status = wait_until("k8s03 not Ready", Duration::from_secs(60), || async {
        ready_status(&client, "k8s03").await.filter(|s| s != "True")
    })
    .await;
    assert_eq!(status, "Unknown");
    ssh_ok("k8s03", "sudo -n snap start microk8s.daemon-kubelite");
    wait_until("k8s03 Ready again", Duration::from_secs(60), || async {
        (ready_status(&client, "k8s03").await.as_deref() == Some("True")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn seeded_incident_denies_calico_and_strands_the_awx_pod() {
    let _incident = support::incident();
    let client = support::client().await;

    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {
            "user": "system:serviceaccount:kube-system:calico-kube-controllers",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
            "resourceAttributes": { "verb": "list", "resource": "pods" }
        }
    }))
    .unwrap();
    let review = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    assert!(!review.status.unwrap().allowed, "calico may not list pods");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "ci");
    let events: Api<Event> = Api::namespaced(client.clone(), "ci");
    let name = "automation-job-1865-ntgbq";
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let pod = pods.get(name).await.unwrap();
        let status = pod.status.unwrap_or_default();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert!(pod.spec.unwrap().node_name.is_none());
        assert!(
            status
                .conditions
                .unwrap_or_default()
                .iter()
                .all(|c| c.type_ != "PodScheduled"),
            "no PodScheduled condition"
        );
        let selector = format!("involvedObject.name={name}");
        let found = events
            .list(&ListParams::default().fields(&selector))
            .await
            .unwrap();
        assert!(
            found.items.is_empty(),
            "no events for the pod: {:?}",
            found.items
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }

    // The dependency-track-frontend pod stays Terminating on a Ready node.
    let stuck: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=dependency-track-frontend"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .collect();
    assert_eq!(stuck.len(), 1, "one Terminating frontend pod");
    let node = stuck[0].spec.as_ref().unwrap().node_name.clone().unwrap();
    assert_eq!(ready_status(&client, &node).await.as_deref(), Some("True"));
}

#[tokio::test]
async fn fault_restart_fails_makes_snap_restart_exit_nonzero_and_leaves_the_unit_failed() {
    let _lock = support::node_lock("k8s01");
    assert!(
        testcluster(&["fault", "k8s01", "restart-fails"])
            .status
            .success()
    );
    let out = ssh("k8s01", "sudo -n snap restart microk8s.daemon-kubelite");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("snap.microk8s.daemon-kubelite.service failed"),
        "{err}"
    );
    // The stop happened; the start did not: systemd tries again (Restart=on-failure) until
    // its start limit, then calls the unit failed.
    wait_until("k8s01's unit failed", Duration::from_secs(30), || async {
        (unit_property("k8s01", "ActiveState") == "failed").then_some(())
    })
    .await;
    assert!(kubelite_pids("k8s01").is_empty());
    assert!(testcluster(&["fault", "clear", "k8s01"]).status.success());
    assert_eq!(unit_property("k8s01", "ActiveState"), "active");
}

/// Whether `node`'s own apiserver answers.
async fn own_apiserver_answers(node: &str) -> bool {
    support::client_for(Some(node))
        .await
        .apiserver_version()
        .await
        .is_ok()
}

#[tokio::test]
async fn fault_never_ready_keeps_kubelite_down_after_a_restart() {
    let _lock = support::node_lock("k8s03");
    assert!(
        testcluster(&["fault", "k8s03", "never-ready"])
            .status
            .success()
    );
    ssh_ok("k8s03", "sudo -n snap restart microk8s.daemon-kubelite");
    // Type=simple: active, while kubelite never comes up.
    for _ in 0..3 {
        assert_eq!(unit_property("k8s03", "ActiveState"), "active");
        assert!(kubelite_pids("k8s03").is_empty());
        assert!(!own_apiserver_answers("k8s03").await);
    }
    assert!(testcluster(&["fault", "clear", "k8s03"]).status.success());
    assert_eq!(
        unit_property("k8s03", "ActiveState"),
        "active",
        "clearing the fault brings it back"
    );
}

#[tokio::test]
async fn fault_slow_start_delays_kubelite_by_the_given_seconds() {
    let _lock = support::node_lock("k8s02");
    assert!(
        testcluster(&["fault", "k8s02", "slow-start=6"])
            .status
            .success()
    );
    let t0 = Instant::now();
    ssh_ok("k8s02", "sudo -n snap restart microk8s.daemon-kubelite");
    assert_eq!(unit_property("k8s02", "ActiveState"), "active");
    assert!(kubelite_pids("k8s02").is_empty());
    let client = support::client().await;
    wait_until(
        "k8s02's components after its slow start",
        Duration::from_secs(40),
        || async { (kubelite_pids("k8s02").len() == 4).then_some(()) },
    )
    .await;
    assert!(t0.elapsed() >= Duration::from_secs(6), "{:?}", t0.elapsed());
    wait_until("k8s02 Ready", Duration::from_secs(60), || async {
        (ready_status(&client, "k8s02").await.as_deref() == Some("True")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn fault_ssh_down_refuses_connections_until_cleared() {
    let _lock = support::node_lock("k8s01");
    assert!(
        testcluster(&["fault", "k8s01", "ssh-down"])
            .status
            .success()
    );
    let out = ssh("k8s01", "true");
    assert_eq!(out.status.code(), Some(255), "ssh fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"));
    assert!(testcluster(&["fault", "clear", "k8s01"]).status.success());
    ssh_ok("k8s01", "true");
}

#[test]
fn testcluster_rejects_unknown_verbs_nodes_and_faults_with_usage() {
    for args in [
        &["frobnicate"][..],
        &["fault", "k8s09", "ssh-down"],
        &["fault", "k8s01", "bogus"],
    ] {
        let out = testcluster(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("seed incident"),
            "usage printed for {args:?}: {err}"
        );
    }
}

#[test]
fn testcluster_reports_a_port_in_use_before_it_writes_or_starts_anything() {
    // A second test bed in another state directory finds every port taken
    // by the running one: it must say which, and leave its directory empty.
    support::cluster();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::testcluster_path())
        .arg("up")
        .env("KUBEMEND_TESTCLUSTER_RUN", state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("port 127.0.0.1:12379 for etcd client is already in use"),
        "{err}"
    );
    assert!(err.contains("testcluster down"), "says what to do: {err}");
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// `openssl ARGS` on the host with `input` on its stdin: (success, stdout and stderr).
fn openssl(args: &[&str], input: &str) -> Result<(bool, String), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("openssl: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("openssl: no stdin")?
        .write_all(input.as_bytes())
        .map_err(|e| format!("openssl stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("openssl: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// The certificate (PEM) `node`'s apiserver serves, as a TLS client reads it.
fn served_cert(node: &str) -> Result<String, String> {
    let index = NODES
        .iter()
        .position(|n| *n == node)
        .ok_or_else(|| format!("no node {node}"))?;
    let address = format!("127.0.1.{}:16443", index + 1);
    let (_, handshake) = openssl(&["s_client", "-connect", &address], "")?;
    let (ok, pem) = openssl(&["x509"], &handshake)?;
    if ok {
        Ok(pem)
    } else {
        Err(format!("no certificate from {address}: {pem}"))
    }
}

/// `openssl x509 -noout ARGS` of a PEM certificate: (success, output).
fn x509(pem: &str, args: &[&str]) -> Result<(bool, String), String> {
    openssl(&[&["x509", "-noout"], args].concat(), pem)
}

/// Whether the certificate is still valid `days` days from now.
fn valid_in(pem: &str, days: u64) -> Result<bool, String> {
    Ok(x509(pem, &["-checkend", &(days * 86_400).to_string()])?.0)
}

#[tokio::test]
async fn refresh_certs_standin_renews_server_cert_like_microk8s() {
    // k8s03: Debian 11, where the snap's bundled openssl is furthest from the node's own.
    let node = "k8s03";
    let _lock = support::node_lock(node);
    let seeded = testcluster(&["seed", "cert", node, "server.crt", "5"]);
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let short = served_cert(node).unwrap();
    assert!(valid_in(&short, 4).unwrap() && !valid_in(&short, 5).unwrap());
    let names = |pem: &str| x509(pem, &["-subject", "-ext", "subjectAltName"]).unwrap().1;
    let check = ssh_ok(node, "sudo -n microk8s refresh-certs -c");
    // Python's timedelta.days of notAfter - now: 4 days and some hours.
    assert!(
        check.contains("The server certificate will expire in 4 days."),
        "{check}"
    );

    let since = support::now();
    let out = ssh(node, "sudo -n microk8s refresh-certs -e server.crt");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "Taking a backup of the current certificates under /var/snap/microk8s/current/certs-backup/",
        "Creating new certificates",
        "Restarting service kubelite.",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    let renewed = support::wait_for(
        &format!("{node}'s apiserver to serve a renewed certificate"),
        Duration::from_secs(90),
        || async {
            let pem = served_cert(node)?;
            (pem != short && valid_in(&pem, 364)?)
                .then_some(pem)
                .ok_or_else(|| "the seeded certificate, or none".to_owned())
        },
    )
    .await;
    // About a year, as gen_server_cert's -days 365, for the same names, from the cluster's CA.
    assert!(!valid_in(&renewed, 366).unwrap());
    assert_eq!(names(&renewed), names(&short));
    let ca = support::cluster().run_dir.join("pki/ca.crt");
    let (verified, why) = openssl(
        &["verify", "-CAfile", &ca.to_string_lossy(), "/dev/stdin"],
        &renewed,
    )
    .unwrap();
    assert!(verified, "{why}");
    // microk8s restarts kubelite after a refresh.
    wait_until(
        &format!("{node}'s kubelite to stop and start again"),
        Duration::from_secs(60),
        || async {
            let events = support::kubelite_events_since(since);
            let mine: Vec<&str> = events
                .iter()
                .filter(|(_, n, _)| n == node)
                .map(|(_, _, what)| what.as_str())
                .collect();
            (mine.contains(&"stopping") && mine.last() == Some(&"started")).then_some(())
        },
    )
    .await;
    let direct = support::client_for(Some(node)).await;
    wait_until(
        &format!("{node}'s own apiserver"),
        Duration::from_secs(60),
        || async { direct.apiserver_version().await.ok() },
    )
    .await;
}

#[tokio::test]
async fn refresh_certs_standin_fails_reverts_and_exits_20_under_fault_refresh_fails() {
    let node = "k8s01";
    let _lock = support::node_lock(node);
    let before = served_cert(node).unwrap();
    assert!(
        testcluster(&["fault", node, "refresh-fails"])
            .status
            .success()
    );
    let out = ssh(node, "sudo -n microk8s refresh-certs -e server.crt");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(20), "{said}");
    for line in [
        "Creating new certificates",
        "Failed to produce new certificates. Reverting.",
        "Restarting, please wait.",
    ] {
        assert!(said.contains(line), "{line:?} in {said}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca.key"), "openssl says why: {err}");
    // Reverted, and served again after the restart.
    let after = support::wait_for(
        &format!("{node}'s apiserver back"),
        Duration::from_secs(90),
        || async { served_cert(node) },
    )
    .await;
    assert_eq!(after, before);
    assert!(testcluster(&["fault", "clear", node]).status.success());
    ssh_ok(
        node,
        "sudo -n test -s /var/snap/microk8s/current/certs/ca.key",
    );
}
