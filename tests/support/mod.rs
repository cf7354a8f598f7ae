//! Test support: the shared test-bed cluster, and isolation between tests.
//!
//! `cluster()` runs `tests/cluster/testcluster up` once per test binary (it
//! returns in well under a second when the cluster already runs) and hands out
//! its kubeconfig and ssh_config. Tests never share objects: `unique()` names
//! and `namespace()` give each test its own. Tests that disrupt a node (stop
//! or restart its kubelite, set a fault) hold `node_lock()` for it, and tests
//! that use the seeded incident hold `incident()`, tests that write Calico IPAM
//! hold `calico()`: all are file locks, so they also order test binaries that
//! run at the same time.
//!
//! It also runs the binary the ways the tests drive it (`kubemend()`, `run_module()`), reaches
//! the nodes with the key in an ssh-agent only (`SshAgent`), reads the test bed's record of
//! kubelite starts and stops (`kubelite_events_since()`, `restarts_one_at_a_time()`) and holds
//! small helpers several test files share (`create()`, `allowed()`).
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support module"
)]
#![allow(
    unreachable_pub,
    reason = "pub items of a test-only module shared by several test crates"
)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test support panics with a message on purpose"
)]

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Paths of the running test bed.
#[derive(Debug)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub ssh_config: PathBuf,
    pub run_dir: PathBuf,
}

pub const NODES: [&str; 3] = ["k8s01", "k8s02", "k8s03"];

pub fn testcluster_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/testcluster")
}

/// Starts the test bed once per process and returns its paths.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let out = Command::new(testcluster_path())
            .arg("up")
            .output()
            .expect("failed to run tests/cluster/testcluster up");
        assert!(
            out.status.success(),
            "testcluster up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let export = |name: &str| -> PathBuf {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("testcluster up printed no {name}:\n{stdout}"))
                .into()
        };
        let kubeconfig = export("KUBECONFIG");
        let run_dir = kubeconfig
            .parent()
            .expect("kubeconfig has a parent")
            .to_path_buf();
        Cluster {
            kubeconfig,
            ssh_config: export("KUBEMEND_SSH_CONFIG"),
            run_dir,
        }
    })
}

/// A client on the default context: the apiserver VIP, which survives the
/// restart of any one node.
pub async fn client() -> Client {
    client_for(None).await
}

/// A client straight to one node's apiserver (`Some("k8s02")`), or the VIP.
pub async fn client_for(context: Option<&str>) -> Client {
    let kubeconfig = Kubeconfig::read_from(&cluster().kubeconfig).expect("readable kubeconfig");
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client from kubeconfig")
}

/// A name no other test (in this run or an earlier one) uses: `prefix-<id>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{:x}{:x}{n:x}", std::process::id() % 0xfff, nanos % 0xffff);
    let mut name = format!("{prefix}-{id}");
    name.truncate(63);
    name
}

/// Creates a fresh namespace and waits for its default ServiceAccount (the
/// ServiceAccount admission plugin rejects pods until it exists).
pub async fn namespace(client: &Client, prefix: &str) -> String {
    create_namespace(client, prefix, json!({ "kubemend.test/owner": prefix })).await
}

/// A namespace named `prefix-<id>` with `labels`, once its default ServiceAccount exists.
async fn create_namespace(client: &Client, prefix: &str, labels: Value) -> String {
    let name = unique(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": labels }
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("failed to create namespace {name}: {e}"));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_until(
        &format!("serviceaccount {name}/default"),
        Duration::from_secs(30),
        || async { sas.get_opt("default").await.ok().flatten() },
    )
    .await;
    name
}

/// Polls `f` every 250 ms until it returns `Ok`, or panics after `timeout` with the last state
/// `f` described (`Err`), so that a timeout says what was seen, not only that it took too long.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls `f` every 250 ms until it returns `Some`, or panics after `timeout` ([`wait_for`]
/// without a description of the last state).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for(what, timeout, || {
        let next = f();
        async move { next.await.ok_or_else(|| "not yet".to_owned()) }
    })
    .await
}

/// Runs a command on a node over real SSH, with the test bed's ssh_config.
pub fn ssh(node: &str, command: &str) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(&cluster().ssh_config)
        .arg(node)
        .arg(command)
        .output()
        .expect("failed to run ssh")
}

/// `ssh` that must succeed; returns stdout.
pub fn ssh_ok(node: &str, command: &str) -> String {
    let out = ssh(node, command);
    assert!(
        out.status.success(),
        "ssh {node} {command:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `tests/cluster/testcluster ARGS`.
pub fn testcluster(args: &[&str]) -> Output {
    Command::new(testcluster_path())
        .args(args)
        .output()
        .expect("failed to run testcluster")
}

/// One property of the node's kubelite unit, as `systemctl show` reports it.
pub fn unit_property(node: &str, property: &str) -> String {
    ssh_ok(
        node,
        &format!("systemctl show -p {property} --value snap.microk8s.daemon-kubelite"),
    )
    .trim()
    .to_owned()
}

/// The test bed's nodes reached with the key in an ssh-agent only, the way an AWX Machine
/// credential hands its key over: a copy of the test bed's ssh_config without IdentityFile and
/// IdentitiesOnly, an `ssh-agent` on a socket of its own holding the key, and a HOME without
/// keys. The agent is killed on drop.
#[derive(Debug)]
pub struct SshAgent {
    /// The ssh_config that names no key.
    pub ssh_config: PathBuf,
    /// The agent's socket, for SSH_AUTH_SOCK.
    pub socket: PathBuf,
    /// An empty HOME: no ~/.ssh, no ~/.kube.
    pub home: PathBuf,
    agent: Child,
}

impl SshAgent {
    /// Starts an agent in `dir` and adds the key of the test bed's ssh_config to it.
    pub async fn start(dir: &Path) -> Self {
        let config = std::fs::read_to_string(&cluster().ssh_config).expect("the ssh_config");
        let key = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("IdentityFile "))
            .expect("an IdentityFile in the test bed's ssh_config")
            .to_owned();
        let agentless = config
            .lines()
            .filter(|l| {
                !l.trim().starts_with("IdentityFile") && !l.trim().starts_with("IdentitiesOnly")
            })
            .fold(String::new(), |out, l| out + l + "\n");
        let ssh_config = dir.join("ssh_config");
        std::fs::write(&ssh_config, agentless).expect("the agentless ssh_config");
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("the HOME without keys");
        let socket = dir.join("agent.sock");
        let agent = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("failed to start ssh-agent");
        // Dropped on a failure below, it kills the agent.
        let agent = Self {
            ssh_config,
            socket,
            home,
            agent,
        };
        wait_until(
            "the ssh-agent's socket",
            Duration::from_secs(10),
            || async { agent.socket.exists().then_some(()) },
        )
        .await;
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("failed to run ssh-add");
        assert!(added.status.success(), "ssh-add {key}: {added:?}");
        agent
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

/// Seconds since the epoch, as the test bed's kubelite events record time.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64()
}

/// One line of the test bed's record of kubelite starts and stops: (time, node, what), `what`
/// being `stopping`, `started` and the like.
pub type KubeliteEvent = (f64, String, String);

/// The test bed's kubelite events at or after `since` (`now()`), from the nodes' journals
/// (`testcluster events`: systemd's stop messages and kubelite's start message of the unit).
pub fn kubelite_events_since(since: f64) -> Vec<KubeliteEvent> {
    let out = testcluster(&["events", "--since", &format!("{since:.6}")]);
    assert!(
        out.status.success(),
        "testcluster events failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let t: f64 = parts.next()?.parse().ok()?;
            let node = parts.next()?.to_owned();
            let what = parts.next()?.to_owned();
            (t >= since).then_some((t, node, what))
        })
        .collect()
}

/// How often each node went down (stopping) and came back (started) in `events`, if no two
/// nodes were ever down at once and every node is back at the end; else what went wrong.
pub fn restarts_one_at_a_time(events: &[KubeliteEvent]) -> Result<BTreeMap<String, usize>, String> {
    let mut down: BTreeMap<String, f64> = BTreeMap::new();
    let mut restarts: BTreeMap<String, usize> = BTreeMap::new();
    for (t, node, what) in events {
        match what.as_str() {
            "stopping" => {
                if !(down.is_empty() || down.contains_key(node)) {
                    return Err(format!(
                        "{node} went down at {t} while {:?} was down: {events:?}",
                        down.keys().collect::<Vec<_>>()
                    ));
                }
                down.insert(node.clone(), *t);
            }
            "started" if down.remove(node).is_some() => {
                *restarts.entry(node.clone()).or_default() += 1;
            }
            _ => {}
        }
    }
    if down.is_empty() {
        Ok(restarts)
    } else {
        Err(format!("still down at the end: {down:?}: {events:?}"))
    }
}

/// An exclusive lock on a test-bed resource, released on drop.
#[derive(Debug)]
pub struct Lock {
    file: File,
    node: Option<String>,
}

fn lock(name: &str) -> File {
    let dir = cluster().run_dir.join("locks");
    std::fs::create_dir_all(&dir).expect("lock dir");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))
        .expect("lock file");
    file.lock().expect("lock");
    file
}

/// Holds `node` for a test that disrupts it. On drop the node's faults are
/// cleared and its kubelite is started again, so the next test finds it whole.
pub fn node_lock(node: &str) -> Lock {
    Lock {
        file: lock(node),
        node: Some(node.to_owned()),
    }
}

/// Holds every node, in a fixed order (no deadlock between tests).
pub fn all_nodes_lock() -> Vec<Lock> {
    NODES.iter().map(|n| node_lock(n)).collect()
}

/// Seeds the incident afresh and holds it for the test.
pub fn incident() -> Lock {
    let file = lock("incident");
    let out = testcluster(&["seed", "incident"]);
    assert!(
        out.status.success(),
        "seed incident failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Lock { file, node: None }
}

/// Holds the aggregated-API tests for one test: while an APIService is unavailable no namespace
/// finishes deleting, so tests that wait for a namespace to go while making APIServices
/// unavailable run one at a time.
pub fn aggregated_apis() -> Lock {
    Lock {
        file: lock("aggregated-apis"),
        node: None,
    }
}

/// Shapes the test bed as the Kubernetes datastore of Calico `shape` (`v3.13` or `v3.32`), with a
/// clean IPAM (`testcluster calico SHAPE`), and holds it for the test: the tests that write Calico
/// IPAM objects run one at a time.
pub fn calico(shape: &str) -> Lock {
    let file = lock("calico");
    let out = testcluster(&["calico", shape]);
    assert!(
        out.status.success(),
        "testcluster calico {shape} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Lock { file, node: None }
}

/// `tests/cluster/calico-cni ARGS`, the stand-in for Calico's CNI IPAM, to run.
pub fn calico_cni_command(args: &[&str]) -> Command {
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/calico-cni"));
    cmd.args(args);
    cmd
}

/// A pod on `node` in `namespace`, Running with the address kwok gave it (what Calico's CNI
/// would allocate: `calico-cni add` takes it from there).
pub async fn calico_pod(
    client: &Client,
    namespace: &str,
    node: &str,
) -> k8s_openapi::api::core::v1::Pod {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let name = unique("ipam");
    create(
        &pods,
        json!({
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "main", "image": "busybox"}],
            },
        }),
    )
    .await;
    wait_for(
        &format!("pod {namespace}/{name} Running with an IP"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
            let status = pod.status.clone().unwrap_or_default();
            match (status.phase.as_deref(), status.pod_ip.as_deref()) {
                (Some("Running"), Some(ip)) if !ip.is_empty() => Ok(pod),
                other => Err(format!("phase and IP {other:?}")),
            }
        },
    )
    .await
}

/// Deletes `pod` at once and waits until it is gone (kwok confirms the deletion): no CNI DEL
/// runs, as when a node loses a pod's sandbox.
pub async fn delete_pod_now(client: &Client, pod: &k8s_openapi::api::core::v1::Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    let _ = pods
        .delete(&name, &kube::api::DeleteParams::default().grace_period(0))
        .await;
    wait_for(
        &format!("pod {namespace}/{name} gone"),
        Duration::from_secs(60),
        || async {
            match pods.get_opt(&name).await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Runs `tests/cluster/calico-cni ARGS`.
pub fn calico_cni(args: &[&str]) -> Output {
    calico_cni_command(args)
        .output()
        .expect("failed to run tests/cluster/calico-cni")
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            let _ = testcluster(&["fault", "clear", node]);
            let _ = ssh(node, "sudo -n snap start microk8s.daemon-kubelite");
        }
        let _ = self.file.unlock();
    }
}

/// The kubemend binary with the test bed's kubeconfig in its environment.
pub fn kubemend() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubemend"));
    cmd.env("KUBECONFIG", &cluster().kubeconfig)
        .env("KUBEMEND_SSH_CONFIG", &cluster().ssh_config)
        .env_remove("K8S_AUTH_HOST")
        .env_remove("K8S_AUTH_API_KEY")
        .env_remove("K8S_AUTH_KUBECONFIG")
        .env_remove("K8S_AUTH_CONTEXT");
    cmd
}

/// Runs the module the way ansible-core does: the binary under the name `AnsiballZ_<module>`
/// (a hard link in a temporary directory, or a copy where linking fails), its one argument the
/// args file holding `args`, in `kubemend()`'s environment. Returns the exit code and the JSON
/// result.
pub fn run_module(module: &str, args: &Value) -> (i32, Value) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = module_command(dir.path(), module, args);
    for (key, value) in kubemend().get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    result_of(&cmd.output().expect("failed to run the module"))
}

/// The module as ansible-core runs it, in `dir`: `AnsiballZ_<module>` (a hard link of the
/// binary, or a copy where linking fails) with the args file of `args` as its one argument, and
/// the environment of this process. A hard link, not a copy, where it can: a copy's write
/// descriptor can leak into a child another test forks meanwhile, and exec then fails with
/// "Text file busy".
pub fn module_command(dir: &Path, module: &str, args: &Value) -> Command {
    let binary = dir.join(format!("AnsiballZ_{module}"));
    let kubemend_binary = env!("CARGO_BIN_EXE_kubemend");
    if !binary.exists() && std::fs::hard_link(kubemend_binary, &binary).is_err() {
        std::fs::copy(kubemend_binary, &binary).expect("copy of the kubemend binary");
    }
    let args_file = dir.join("args");
    std::fs::write(&args_file, serde_json::to_vec(args).expect("args as JSON")).expect("args file");
    let mut cmd = Command::new(&binary);
    cmd.arg(&args_file);
    cmd
}

/// The exit code and the result object of a run that must print exactly one line of JSON on
/// stdout (module mode, or the CLI with `--output json`).
pub fn result_of(output: &Output) -> (i32, Value) {
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8 on stdout");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line expected on stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.code().expect("an exit code, not a signal"),
        serde_json::from_str(&stdout).expect("a JSON object on stdout"),
    )
}

/// A Kubernetes object (or any type) from its JSON.
pub fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object from JSON")
}

/// Creates the object `value` describes with `api`; panics with its name if that fails.
pub async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = from_json(value);
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("failed to create {:?}: {e}", object.meta().name))
}

/// Whether a SubjectAccessReview allows the ServiceAccount `namespace/sa` to `verb` the
/// `resource` of API `group` (`""`: core) cluster-wide.
pub async fn allowed(
    client: &Client,
    namespace: &str,
    sa: &str,
    group: &str,
    resource: &str,
    verb: &str,
) -> bool {
    let review: SubjectAccessReview = from_json(json!({
        "spec": {
            "user": format!("system:serviceaccount:{namespace}:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")],
            "resourceAttributes": {"group": group, "resource": resource, "verb": verb}
        }
    }));
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .expect("SubjectAccessReview answered without status")
        .allowed
}

/// Label on every object a [`Reaper`] cleans up; its value is the reaper's id.
pub const REAP_LABEL: &str = "kubemend.test/reap";

/// Cleans up after a test, also when it fails: when dropped (at the end of the test, or while
/// its panic unwinds) it deletes everything labelled `REAP_LABEL=<id>`: APIServices (first),
/// namespaces (their pods force-deleted and their ConfigMaps' finalizers cleared first),
/// webhook configurations (finalizers cleared),
/// ClusterRoles, ClusterRoleBindings and ValidatingAdmissionPolicies with their bindings.
#[derive(Debug)]
pub struct Reaper {
    /// The label value, unique to the test.
    pub id: String,
}

impl Reaper {
    /// A reaper with an id unique to this test.
    pub fn new(prefix: &str) -> Self {
        Self { id: unique(prefix) }
    }

    /// The labels that put an object in this reaper's care, to merge into `metadata.labels`.
    pub fn labels(&self) -> Value {
        json!({ REAP_LABEL: self.id })
    }

    /// A fresh namespace in this reaper's care (waits for its default ServiceAccount).
    pub async fn namespace(&self, client: &Client) -> String {
        create_namespace(client, &self.id, self.labels()).await
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let id = self.id.clone();
        // Drop cannot await, and the test's runtime may be unwinding: reap on a thread of its
        // own with its own runtime, and wait for it.
        let reaped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for the reaper")
                .block_on(reap(&id));
        })
        .join();
        if reaped.is_err() {
            eprintln!(
                "reaper {}: cleanup failed; objects may be left over",
                self.id
            );
        }
    }
}

async fn reap(id: &str) {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        ValidatingWebhookConfiguration,
    };
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

    let client = client().await;
    let selected = ListParams::default().labels(&format!("{REAP_LABEL}={id}"));
    let unfinalize = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let patch = PatchParams::default();
    let delete = DeleteParams::default();
    // APIServices first: while one is unavailable, no namespace finishes deleting.
    let _ = apiservices(&client)
        .delete_collection(&delete, &selected)
        .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces
        .list(&selected)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = ns.metadata.name.unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        for pod in pods
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let pod_name = pod.metadata.name.unwrap_or_default();
            if pod.metadata.finalizers.is_some() {
                let _ = pods.patch(&pod_name, &patch, &unfinalize).await;
            }
            let _ = pods
                .delete(&pod_name, &DeleteParams::default().grace_period(0))
                .await;
        }
        let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), &name);
        for configmap in configmaps
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            if configmap.metadata.finalizers.is_some() {
                let name = configmap.metadata.name.unwrap_or_default();
                let _ = configmaps.patch(&name, &patch, &unfinalize).await;
            }
        }
        let _ = namespaces.delete(&name, &delete).await;
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for object in mutating
        .list(&selected)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let _ = mutating
            .patch(
                &object.metadata.name.unwrap_or_default(),
                &patch,
                &unfinalize,
            )
            .await;
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for object in validating
        .list(&selected)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let _ = validating
            .patch(
                &object.metadata.name.unwrap_or_default(),
                &patch,
                &unfinalize,
            )
            .await;
    }
    let _ = mutating.delete_collection(&delete, &selected).await;
    let _ = validating.delete_collection(&delete, &selected).await;
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete_collection(&delete, &selected)
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete_collection(&delete, &selected)
        .await;
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete_collection(&delete, &selected)
        .await;
    let _ = Api::<ClusterRole>::all(client)
        .delete_collection(&delete, &selected)
        .await;
}

/// APIServices (`apiregistration.k8s.io/v1`), which k8s-openapi has no type for.
pub fn apiservices(client: &Client) -> Api<kube::api::DynamicObject> {
    let resource = kube::api::ApiResource {
        group: "apiregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiregistration.k8s.io/v1".into(),
        kind: "APIService".into(),
        plural: "apiservices".into(),
    };
    Api::all_with(client.clone(), &resource)
}

/// An HTTPS server on loopback (127.0.0.1, and ::1 on the same port where it can bind) that
/// answers every request with 401 Unauthorized, as an aggregated API server does to a client
/// certificate it does not trust. Its certificate is self-signed for `localhost`. It stops on
/// drop.
#[derive(Debug)]
pub struct Https401 {
    /// The port it listens on.
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Https401 {
    /// Starts it on a free port.
    pub fn start() -> Self {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;

        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a self-signed certificate");
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert], private)
                .expect("the server certificate"),
        );
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = v4.local_addr().expect("its address").port();
        let v6 = std::net::TcpListener::bind(("::1", port)).ok();
        let stop = Arc::new(AtomicBool::new(false));
        for listener in std::iter::once(v4).chain(v6) {
            let (config, stop) = (config.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let config = config.clone();
                        std::thread::spawn(move || answer_401(stream, config));
                    }
                }
            });
        }
        Self { port, stop }
    }
}

impl Drop for Https401 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loops, which then see the stop.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        let _ = std::net::TcpStream::connect(("::1", self.port));
    }
}

/// Reads one request head over TLS and answers 401 with a Status body, then closes.
fn answer_401(stream: std::net::TcpStream, config: std::sync::Arc<rustls::ServerConfig>) {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(connection) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let mut head = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
        match tls.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
    let response = format!(
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(response.as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Waits until `object` is older than `age` by its own creationTimestamp (whole seconds, as the
/// API server writes it), so that kubemend, which judges ages the same way, sees it as older.
/// Panics after `age` plus 30 s.
pub async fn until_older_than<K: Resource>(object: &K, age: Duration) {
    let created = object
        .meta()
        .creation_timestamp
        .as_ref()
        .expect("a created object has a creationTimestamp")
        .0;
    let name = object.meta().name.clone().unwrap_or_default();
    let need = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    wait_until(
        &format!("{name} to be older than {age:?}"),
        age + Duration::from_secs(30),
        || async {
            let seconds = k8s_openapi::jiff::Timestamp::now().as_second() - created.as_second();
            (seconds > need).then_some(())
        },
    )
    .await;
}

/// A ValidatingAdmissionPolicy and its binding, in `reaper`'s care, under which the API server
/// refuses to DELETE `resource` (of `api_group`) in the namespaces named, wherever the CEL
/// `allowed` (over `oldObject`) is false. It takes effect once the API server has loaded it:
/// callers wait for it to refuse a probe.
pub async fn refuse_deletes(
    client: &Client,
    reaper: &Reaper,
    (api_group, resource): (&str, &str),
    allowed: &str,
    namespaces: &[&str],
) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let policy = unique("refuse-delete");
    create(
        &Api::<ValidatingAdmissionPolicy>::all(client.clone()),
        json!({
            "metadata": {"name": policy, "labels": reaper.labels()},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [api_group], "apiVersions": ["v1"], "operations": ["DELETE"],
                    "resources": [resource]}]},
                "validations": [{"expression": allowed,
                                 "message": "this test refuses the delete"}],
            },
        }),
    )
    .await;
    create(
        &Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
        json!({
            "metadata": {"name": policy, "labels": reaper.labels()},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "In",
                    "values": namespaces}]}},
            },
        }),
    )
    .await;
}

// ---------------------------------------------------------------- certificates

/// `openssl ARGS` on the host with `input` on its stdin: (success, stdout and stderr).
pub fn openssl(args: &[&str], input: &str) -> Result<(bool, String), String> {
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
pub fn served_cert(node: &str) -> Result<String, String> {
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
pub fn x509(pem: &str, args: &[&str]) -> Result<(bool, String), String> {
    openssl(&[&["x509", "-noout"], args].concat(), pem)
}

/// Whether the certificate is still valid `days` days from now.
pub fn valid_in(pem: &str, days: u64) -> Result<bool, String> {
    Ok(x509(pem, &["-checkend", &(days * 86_400).to_string()])?.0)
}

/// `testcluster ARGS`, which must succeed.
#[track_caller]
pub fn testcluster_ok(args: &[&str]) {
    let out = testcluster(args);
    assert!(
        out.status.success(),
        "testcluster {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Gives `node` a `cert` that expires in `days` days, served (for server.crt) before it returns.
pub fn seed_cert(node: &str, cert: &str, days: u32) {
    testcluster_ok(&["seed", "cert", node, cert, &days.to_string()]);
}

/// Every node's server.crt with a year left, renewed by hand where it has not, each renewed
/// node's kubelite started again before this returns (its start is recorded once its
/// components run, after `refresh-certs` returned).
pub async fn renew_all_by_hand() {
    for node in NODES {
        let pem = served_cert(node).unwrap_or_else(|e| panic!("{node}: {e}"));
        if valid_in(&pem, 300).unwrap_or_else(|e| panic!("{node}: {e}")) {
            continue;
        }
        let since = now();
        ssh_ok(node, "sudo -n microk8s refresh-certs -e server.crt");
        wait_until(
            &format!("{node}'s kubelite started after its renewal"),
            Duration::from_secs(120),
            || async {
                kubelite_events_since(since)
                    .iter()
                    .any(|e| e.1 == node && e.2 == "started")
                    .then_some(())
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------- rolling operations

/// The lock Lease of the rolling operations (kubelite_restart, cert_refresh).
pub const ROLLING_LOCK: &str = "kubemend-kubelite-restart";

/// Options for a rolling run (kubelite_restart, cert_refresh) on the test bed: its ssh_config,
/// a short settle and a bounded gate_timeout; `extra` is merged in.
pub fn rolling_args(extra: &Value) -> Value {
    let mut args = json!({
        "ssh_config": cluster().ssh_config,
        "settle": "1s",
        "gate_timeout": "90s",
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        args[key] = value.clone();
    }
    args
}

/// Removes the rolling operations' lock Lease an earlier test left behind, so that runs never
/// resume each other's records by accident.
pub async fn no_rolling_lock() {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client().await, "kube-system");
    let _ = leases
        .delete(ROLLING_LOCK, &kube::api::DeleteParams::default())
        .await;
}
