#!/usr/bin/env python3
"""kubemend benchmarks: each action against the tool an operator would
otherwise use (kubectl on the command line, kubernetes.core under Ansible),
in one run, on the test bed. Writes BENCHMARKS.md.

Run it with `make bench` (it builds the release binary, starts the test bed
and creates .venv-bench/ with bench/venv.sh first); `bench/run.py calico
stuck ansible kubelite diagnose tasks maintenance ipam` picks sections, all by default; a
run of some sections keeps the others from BENCHMARKS.md as they were, and says so.
Every command runs RUNS times
after WARMUP runs; the table gives the median wall time and the peak
resident set of the largest process (ru_maxrss from wait4, so for a shell
pipeline it is its largest member, for ansible-playbook the largest process
of the play). No number here is asserted anywhere: they are measured,
reported, compared.

Sections that restart nodes, seed the incident or create many pods hold the test bed's
lock files (the nodes' and the incident's, in the order the tests take them) while they
run, so that they wait for tests on the same test bed and tests wait for them.
"""

import contextlib
import datetime
import fcntl
import hashlib
import importlib.machinery
import importlib.util
import http.client
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTCLUSTER = ROOT / "tests" / "cluster" / "testcluster"
# cargo's target dir (CARGO_TARGET_DIR, relative to the repository root as make runs cargo).
KUBEMEND = ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target") / "release" / "kubemend"
# What the collection ships (make release): the static musl build, the modules of every play.
SHIPPED = (ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target") / "x86_64-unknown-linux-musl"
           / "dist" / "kubemend")
BENCH_VENV = ROOT / ".venv-bench"  # bench/venv.sh: ansible with kubernetes.core, kubernetes
RUNS = int(os.environ.get("BENCH_RUNS", "15"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
POD_SCALES = [int(x) for x in os.environ.get("BENCH_POD_SCALES", "2000,20000").split(",")]
STUCK = 50
PLAY_SCALE_RUNS = int(os.environ.get("BENCH_PLAY_SCALE_RUNS", "3"))
GNU_TIME = "/usr/bin/time"
NODES = ["k8s01", "k8s02", "k8s03"]
TASKS = int(os.environ.get("BENCH_TASKS", "100"))
TASK_RUNS = int(os.environ.get("BENCH_TASK_RUNS", "3"))
KUBELITE_RUNS = int(os.environ.get("BENCH_KUBELITE_RUNS", "3"))
# calico_ipam: pods with a Calico address each, and as many addresses leaked (their pods gone).
IPAM_PODS = int(os.environ.get("BENCH_IPAM_PODS", "10000"))
CALICO_CNI = ROOT / "tests" / "cluster" / "calico-cni"


def sh(*args, **kw):
    kw.setdefault("check", True)
    return subprocess.run(args, **kw)


def cluster_env():
    out = sh(str(TESTCLUSTER), "up", stdout=subprocess.PIPE, text=True).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    # Straight to k8s01's apiserver, not through the test bed's VIP, so that
    # neither tool pays for the pass-through.
    src = Path(env["KUBECONFIG"])
    direct = src.with_name("kubeconfig-bench")
    direct.write_text(src.read_text().replace("current-context: testcluster",
                                              "current-context: k8s01"))
    env["KUBECONFIG"] = str(direct)
    return env


def bin_dir():
    return Path(sh(str(TESTCLUSTER), "build", stdout=subprocess.PIPE, text=True).stdout.strip())


def run_dir(env):
    """The test bed's runtime state directory (where its kubeconfig is)."""
    return Path(env["KUBECONFIG"]).parent


@contextlib.contextmanager
def testbed_locks(env):
    """Holds the test bed's node and incident locks (flock on the files the tests lock,
    k8s01, k8s02, k8s03, then incident), waiting for whoever holds one."""
    locks = run_dir(env) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for name in NODES + ["incident"]:
            f = stack.enter_context(open(locks / f"{name}.lock", "a"))
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"bench: waiting for the test bed's {name} lock", file=sys.stderr)
                fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def calico_lock(env):
    """The test bed's calico lock (tests/support's calico()): the Calico shape is this
    section's while it runs."""
    locks = run_dir(env) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / "calico.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def seed_incident():
    sh(str(TESTCLUSTER), "seed", "incident", stdout=subprocess.DEVNULL)


def measure(argv, env, ok=(0,), runs=RUNS, warmup=WARMUP):
    """Median wall time (ms) and peak RSS (MiB) of argv over `runs` runs.

    Peak RSS comes from GNU time's %M (its wait4 rusage): measured from
    Python itself, the child's ru_maxrss would include the interpreter's
    memory copied by fork before the exec.
    """
    times, rss = [], []
    with tempfile.NamedTemporaryFile("r") as out:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            p = subprocess.run([GNU_TIME, "-q", "-f", "%M", "-o", out.name, *argv], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            elapsed = time.perf_counter() - t0
            if p.returncode not in ok:
                err = p.stderr.decode(errors="replace")
                raise SystemExit(f"bench: {' '.join(map(str, argv))} exited {p.returncode}:\n"
                                 f"{err[-2000:]}")
            if i >= warmup:
                times.append(elapsed * 1000)
                out.seek(0)
                rss.append(int(out.read().split()[-1]) / 1024)
    return {"median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "peak_rss_mib": max(rss), "runs": runs}


# ---------------------------------------------------------------- fixtures

class Api:
    """Minimal HTTPS client with the test bed's admin certificate, one
    keep-alive connection per thread, for creating thousands of pods fast."""

    def __init__(self, env):
        pki = Path(env["KUBECONFIG"]).parent / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.local = threading.local()
        self.hosts = ["127.0.1.1", "127.0.1.2", "127.0.1.3"]

    def conn(self, i=0):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPSConnection(self.hosts[i % 3], 16443, context=self.ctx, timeout=30)
            self.local.c = c
        return c

    def call(self, method, path, body=None, i=0):
        for attempt in range(5):
            c = self.conn(i)
            try:
                c.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                if r.status == 429 or r.status >= 500:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                return r.status, json.loads(data or b"{}")
            except (OSError, http.client.HTTPException):
                self.local.c = None
                time.sleep(0.2)
        raise SystemExit(f"bench: {method} {path} kept failing")


def create_pods(api, ns, count, start=0, threads=16):
    nodes = ["k8s01", "k8s02", "k8s03"]

    def worker(t):
        for i in range(start + t, start + count, threads):
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"app-{i:05d}", "labels": {"app": "bench"}},
                   "spec": {"nodeName": nodes[i % 3], "automountServiceAccountToken": False,
                            "containers": [{"name": "app", "image": "registry.local/app:1"}]}}
            status, body = api.call("POST", f"/api/v1/namespaces/{ns}/pods", pod, t)
            if status not in (201, 409):
                raise SystemExit(f"bench: creating pod {i}: {status} {body}")

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def kubectl(bins, env, *args, **kw):
    return sh(str(bins / "kubectl"), *args, env=env, **kw)


def seed_stuck(bins, env, ns):
    """STUCK/2 pods Pending unseen by any scheduler and STUCK/2 Terminating
    whose node never confirms, all owned by ReplicaSets (via Deployments)."""
    half = STUCK // 2
    manifest = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "lost", "namespace": ns},
         "spec": {"replicas": half, "selector": {"matchLabels": {"app": "lost"}},
                  "template": {"metadata": {"labels": {"app": "lost"}},
                               "spec": {"schedulerName": "lost-watch-scheduler",
                                        "containers": [{"name": "a", "image": "r/a:1"}]}}}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "backlog", "namespace": ns},
         "spec": {"replicas": half, "selector": {"matchLabels": {"app": "backlog"}},
                  "template": {"metadata": {"labels": {"app": "backlog"}, "annotations": {
                      "testbed.kubemend.io/kubelet-backlog": "true"}},
                      # A 1 s grace: the deletion time is passed a second after the scale-down.
                      "spec": {"terminationGracePeriodSeconds": 1,
                               "containers": [{"name": "a", "image": "r/a:1"}]}}}}]}
    kubectl(bins, env, "apply", "-f", "-", input=json.dumps(manifest), text=True,
            stdout=subprocess.DEVNULL)

    def pods(sel):
        out = kubectl(bins, env, "get", "pods", "-n", ns, "-l", sel, "-o", "json",
                      stdout=subprocess.PIPE, text=True).stdout
        return json.loads(out)["items"]

    deadline = time.time() + 300
    while time.time() < deadline:
        running = [p for p in pods("app=backlog") if p["status"].get("phase") == "Running"]
        if len(running) >= half and len(pods("app=lost")) >= half:
            break
        time.sleep(1)
    else:
        raise SystemExit("bench: stuck fixtures did not come up")
    # Scale the backlog Deployment to zero: its pods get a deletionTimestamp
    # and stay Terminating, as in the incident.
    kubectl(bins, env, "scale", "deployment/backlog", "-n", ns, "--replicas=0",
            stdout=subprocess.DEVNULL)
    while time.time() < deadline:
        terminating = [p for p in pods("app=backlog") if p["metadata"].get("deletionTimestamp")]
        if len(terminating) >= half:
            return
        time.sleep(1)
    raise SystemExit("bench: backlog pods did not become Terminating")


def wait_running(bins, env, ns, want):
    deadline = time.time() + 900
    while time.time() < deadline:
        out = kubectl(bins, env, "get", "pods", "-n", ns, "-l", "app=bench",
                      "--field-selector=status.phase=Running", "-o", "name",
                      stdout=subprocess.PIPE, text=True).stdout
        n = len(out.split())
        if n >= want:
            return
        time.sleep(2)
    raise SystemExit(f"bench: only {n} of {want} pods Running after 15 min")


# ---------------------------------------------------------------- benchmarks

JQ_STUCK = (
    '[.items[] | select('
    '(.metadata.deletionTimestamp != null and (now - (.metadata.deletionTimestamp | fromdateiso8601)) > 0)'
    ' or (.status.phase == "Pending" and .spec.nodeName == null'
    ' and ((.status.conditions // []) | map(select(.type == "PodScheduled")) | length) == 0))'
    ' | {namespace: .metadata.namespace, name: .metadata.name}]'
)


def bench_calico(bins, env):
    rows = [
        ("kubemend calico-rbac --check", [str(KUBEMEND), "calico-rbac", "--check"], (2,)),
        ("kubectl get clusterrole calico-kube-controllers -o json",
         [str(bins / "kubectl"), "get", "clusterrole", "calico-kube-controllers", "-o", "json"], (0,)),
    ]
    return [(name, measure(argv, env, ok)) for name, argv, ok in rows]


def pod_scales(bins, env):
    """Seeds the stuck fixtures in a namespace of their own, then yields each of POD_SCALES
    once that many pods are there (all Running but the stuck ones); deletes the namespace
    after the last, and waits until it is gone."""
    if shutil.which("jq") is None:
        raise SystemExit("bench: jq is needed (apt-get install jq)")
    api = Api(env)
    ns = "bench-pods"
    kubectl(bins, env, "delete", "namespace", ns, "--ignore-not-found", "--wait=true",
            "--timeout=600s", stdout=subprocess.DEVNULL)
    kubectl(bins, env, "create", "namespace", ns, stdout=subprocess.DEVNULL)
    kubectl(bins, env, "wait", "--for=jsonpath={.metadata.name}=default", "-n", ns,
            "serviceaccount/default", "--timeout=60s", stdout=subprocess.DEVNULL)
    seed_stuck(bins, env, ns)
    have = 0
    for scale in POD_SCALES:
        t0 = time.time()
        create_pods(api, ns, scale - have, start=have)
        wait_running(bins, env, ns, scale - STUCK // 2 if scale > STUCK else scale)
        have = scale
        print(f"bench: {scale} pods ready in {time.time() - t0:.0f}s", file=sys.stderr)
        yield scale
    # Gone before the next section: deleting 20,000 pods keeps the apiserver and both cores
    # busy for a while, which the kubelite rounds after it would measure too. The backlog
    # fixture's pods are never confirmed by their node: they are force-deleted first.
    t0 = time.time()
    kubectl(bins, env, "delete", "pods", "-n", ns, "-l", "app=backlog", "--grace-period=0",
            "--force", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kubectl(bins, env, "delete", "namespace", ns, "--wait=true", "--timeout=900s",
            stdout=subprocess.DEVNULL)
    print(f"bench: {ns} deleted in {time.time() - t0:.0f}s", file=sys.stderr)


def bench_stuck(bins, env):
    km = [str(KUBEMEND), "stuck-pods", "--check", "--terminating-grace", "0s",
          "--pending-age", "0s", "--max-pods", "1000", "--exclude-namespaces", "kube-system"]
    pipeline = f"{bins / 'kubectl'} get pods -A -o json | jq -c '{JQ_STUCK}'"
    return [
        ("kubemend stuck-pods --check", measure(km, env, (0, 2), runs=max(5, RUNS // 3))),
        ("kubectl get pods -A -o json | jq", measure(["sh", "-c", pipeline], env,
                                                      runs=max(5, RUNS // 3))),
    ]


class Plays:
    """ansible-playbook from the bench venv, one play of one task on localhost (connection
    local, no facts), for kubemend.microk8s and kubernetes.core alike: the same ansible-core,
    interpreter, kubeconfig and settings, isolated from the machine's Ansible (ANSIBLE_HOME
    and temp dirs of its own, no ansible.cfg; a TMPDIR of its own, where kubernetes.core
    caches API discovery). kubemend.microk8s is built into `work` with the release binary;
    kubernetes.core is the one the ansible package bundles."""

    def __init__(self, env, work):
        playbook = BENCH_VENV / "bin" / "ansible-playbook"
        if not playbook.exists():
            raise SystemExit(f"bench: {playbook} is missing: run bench/venv.sh (make bench does)")
        self.work = work
        collections = work / "collections"
        sh(str(ROOT / "ansible" / "kubemend" / "build.sh"), "--binary", str(SHIPPED),
           "--into", str(collections), stdout=subprocess.DEVNULL)
        self.env = {k: v for k, v in env.items() if not k.startswith(("ANSIBLE_", "K8S_AUTH_"))}
        (work / "tmp").mkdir()
        self.env.update({
            "PATH": f"{playbook.parent}:{env['PATH']}",
            "TMPDIR": str(work / "tmp"),
            "ANSIBLE_HOME": str(work / "ansible-home"),
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(work / "ansible-remote-tmp"),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_STDOUT_CALLBACK": "default",
        })
        self.playbook = str(playbook)
        self.kubeconfig = env["KUBECONFIG"]
        self.count = 0

    def argv(self, module, args, check=False, tasks=1, kubeconfig=True):
        """The ansible-playbook command line of a play running `module` with `args`, `tasks`
        times (one task after the other); `kubeconfig` adds the kubeconfig option."""
        task = {"name": module, module: {"kubeconfig": self.kubeconfig, **args}
                if kubeconfig else args, "register": "result"}
        if check:
            task["check_mode"] = True
        play = [{"name": module, "hosts": "localhost", "connection": "local",
                 "gather_facts": False,
                 "vars": {"ansible_python_interpreter": str(BENCH_VENV / "bin" / "python")},
                 "tasks": [task] * tasks}]
        return [self.playbook, "-i", "localhost,", str(self.write(play))]

    def write(self, doc):
        """Writes a playbook or inventory into the work dir (JSON is YAML); its path."""
        self.count += 1
        path = self.work / f"play-{self.count}.yml"
        path.write_text(json.dumps(doc, indent=2))
        return path

    def result(self, argv):
        """Runs a play once with the JSON callback: the task's result, which must not fail."""
        env = dict(self.env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            result = json.loads(p.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
        except (ValueError, KeyError, IndexError):
            result = {"failed": True}
        if p.returncode != 0 or result.get("failed"):
            err = p.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"bench: {' '.join(argv)} failed ({p.returncode}): "
                             f"{result.get('msg', '')}\n{err}")
        return result

    def measure(self, argv, **kw):
        return measure(argv, self.env, **kw)


def bench_plays_calico(plays):
    """calico_rbac in check mode against kubernetes.core reading the ClusterRole, and
    patching it (check mode) with the rules calico_rbac reports missing."""
    km = plays.argv("kubemend.microk8s.calico_rbac", {}, check=True)
    info = plays.argv("kubernetes.core.k8s_info", {
        "api_version": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "name": "calico-kube-controllers"})
    missing = plays.result(km)["added_rules"]
    role = plays.result(info)["resources"]
    if not missing or len(role) != 1:
        raise SystemExit("bench: the seeded incident's ClusterRole is not as expected")
    # A merge patch replaces `rules` whole: the definition carries every rule the role has
    # plus the missing ones, as a user would have to write them.
    rules = role[0]["rules"] + [{"apiGroups": r["api_groups"], "resources": r["resources"],
                                 "verbs": r["verbs"]} for r in missing]
    patch = plays.argv("kubernetes.core.k8s", {
        "state": "patched", "definition": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "calico-kube-controllers"}, "rules": rules}}, check=True)
    if not plays.result(patch)["changed"]:
        raise SystemExit("bench: kubernetes.core.k8s reported no change to the ClusterRole")
    return [("kubemend.microk8s.calico_rbac (check mode)", plays.measure(km)),
            ("kubernetes.core.k8s_info (the ClusterRole)", plays.measure(info)),
            ("kubernetes.core.k8s state: patched (check mode)", plays.measure(patch))]


def bench_plays_stuck(plays):
    """stuck_pods in check mode against kubernetes.core listing every pod, PLAY_SCALE_RUNS
    runs after one warm-up."""
    km = plays.argv("kubemend.microk8s.stuck_pods", {
        "terminating_grace": "0s", "pending_age": "0s", "max_pods": 1000,
        "exclude_namespaces": ["kube-system"]}, check=True)
    info = plays.argv("kubernetes.core.k8s_info", {"api_version": "v1", "kind": "Pod"})
    if not plays.result(km)["changed"]:
        raise SystemExit("bench: stuck_pods found no stuck pod")
    runs = {"runs": PLAY_SCALE_RUNS, "warmup": 1}
    return [("kubemend.microk8s.stuck_pods (check mode)", plays.measure(km, **runs)),
            ("kubernetes.core.k8s_info (every Pod)", plays.measure(info, **runs))]


def iso_ts(text):
    """Unix time of an RFC 3339 timestamp (with Z or an offset; naive means UTC)."""
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1]
        if text[-6:-5] in "+-" and text[-3:-2] == ":":
            text = text[:-6]
    t = datetime.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


class LeaseWatch:
    """Polls the three node Leases every 200 ms in a thread (each from whichever node's
    apiserver answers) and keeps every renewTime seen, so that a node's recovery (its first
    Lease renewal after its restart began) can be read for any tool."""

    def __init__(self, env):
        self.api = Api(env)
        self.renewals = {n: set() for n in NODES}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def get(self, host, node):
        c = http.client.HTTPSConnection(host, 16443, context=self.api.ctx, timeout=2)
        try:
            c.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}")
            r = c.getresponse()
            return json.loads(r.read()) if r.status == 200 else None
        finally:
            c.close()

    def poll(self):
        while not self.stop.is_set():
            for node in NODES:
                for host in self.api.hosts:
                    try:
                        lease = self.get(host, node)
                    except (OSError, http.client.HTTPException, ValueError):
                        continue
                    if lease and lease.get("spec", {}).get("renewTime"):
                        self.renewals[node].add(iso_ts(lease["spec"]["renewTime"]))
                        break
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def renewed_after(self, node, t):
        later = [r for r in self.renewals[node] if r > t]
        return min(later) if later else None


def kubelite_events(env, since):
    """The test bed's kubelite events since `since`, from the nodes' journals
    (`testcluster events`): (unix time, node, what)."""
    text = subprocess.run([str(TESTCLUSTER), "events", "--since", f"{since:.6f}"], env=env,
                          check=True, capture_output=True, text=True).stdout
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and float(parts[0]) >= since:
            out.append((float(parts[0]), parts[1], parts[2]))
    return out


def recoveries(env, watch, since):
    """Per node restarted since `since`: when its restart began (the first `stopping`
    event) and when its Lease was next renewed."""
    out = {}
    for t, node, what in kubelite_events(env, since):
        if what == "stopping" and node not in out:
            out[node] = {"stopping": t}
    for node, r in out.items():
        r["renewed"] = watch.renewed_after(node, r["stopping"])
    return out


LEADER_LEASES = ["kube-scheduler", "kube-controller-manager"]


def leaders_settled(api):
    """Whether both leader Leases are held, renewed within their duration, and no election is
    under way (renewed in the last 3 s: a holder renews every 2 s)."""
    now = time.time()
    for name in LEADER_LEASES:
        status, lease = api.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-system"
                                        f"/leases/{name}")
        spec = lease.get("spec", {}) if status == 200 else {}
        if not spec.get("holderIdentity") or not spec.get("renewTime"):
            return False
        if now - iso_ts(spec["renewTime"]) > 3:
            return False
    return True


def settle_cluster(env):
    """Before a round: every node's Lease renewed in the last 10 s and both leader Leases
    settled, so that a round does not wait out an election the one before it started."""
    api = Api(env)
    deadline = time.time() + 120
    while time.time() < deadline:
        fresh = True
        for node in NODES:
            status, lease = api.call("GET", "/apis/coordination.k8s.io/v1/namespaces/"
                                            f"kube-node-lease/leases/{node}")
            renewed = lease.get("spec", {}).get("renewTime") if status == 200 else None
            fresh = fresh and bool(renewed) and time.time() - iso_ts(renewed) < 10
        if fresh and leaders_settled(api):
            return
        time.sleep(0.5)
    raise SystemExit("bench: the test bed's node and leader Leases did not settle in 120 s")


def bench_kubelite(bins, env, plays):
    """KUBELITE_RUNS rounds of kubelite_round, each from a settled cluster, so that who holds
    which leader Lease (the gates wait for those to be renewed) weighs on each tool alike;
    every round's result."""
    rounds = []
    for _ in range(KUBELITE_RUNS):
        settle_cluster(env)
        rounds.append(kubelite_round(bins, env, plays))
    return rounds


def kubelite_overhead(km):
    """kubemend's overhead per node in one round: its wall time less the nodes' recovery."""
    report = km["report"]
    return (km["wall"] - report["recovery_seconds"]) / (len(report["restarted"]) or 1)


LEASES_GATE = "scheduler and controller-manager leases held"


def leader_wait(report):
    """How long, summed over the nodes, kubemend waited for the leader Leases after every other
    gate of the node had passed: a new leader's election, which the gates must wait for."""
    total = 0.0
    for node in report["nodes"]:
        gates = [g for g in node.get("timeline") or [] if not g["gate"].startswith("settled")]
        leases = [g["after_seconds"] for g in gates if g["gate"] == LEASES_GATE]
        others = [g["after_seconds"] for g in gates if g["gate"] != LEASES_GATE]
        if leases and others:
            total += max(0.0, leases[0] - max(others))
    return total


def ansible_recovery(an):
    """The nodes' own recoveries in the Ansible play's round, from the watched Leases."""
    return sum(v["renewed"] - v["stopping"] for v in an["watched"].values() if v.get("renewed"))


def ansible_overhead(an):
    """The same for the Ansible play, from the watched recoveries."""
    return (an["wall"] - ansible_recovery(an)) / (len(an["watched"]) or 1)


def median_round(rounds, key):
    """The round whose value of `key` is the median (the lower middle one of an even count)."""
    ordered = sorted(rounds, key=key)
    return ordered[(len(ordered) - 1) // 2]


def kubelite_round(bins, env, plays):
    """One rolling restart by kubemend (settle 0s), then the usual Ansible play (serial: 1,
    snap restart, a readiness loop with delay 5s), on the same test bed, in that order."""
    ssh_config = env["KUBEMEND_SSH_CONFIG"]
    with LeaseWatch(env) as watch:
        t0 = time.time()
        p = subprocess.run([str(KUBEMEND), "kubelite-restart", "--ssh-config", ssh_config,
                            "--settle", "0s", "--output", "json"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t1 = time.time()
        if p.returncode != 0:
            raise SystemExit(f"bench: kubemend kubelite-restart exited {p.returncode}:\n"
                             f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        report = json.loads(p.stdout)
        km_rec = recoveries(env, watch, t0)

        inventory = plays.write({"all": {"hosts": {n: {} for n in NODES}, "vars": {
            "ansible_ssh_common_args": f"-F {ssh_config}",
            "ansible_python_interpreter": "/usr/bin/python3"}}})
        kubectl_bin = str(bins / "kubectl")
        ready = ("jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
        play = [{"name": "rolling kubelite restart", "hosts": "all", "serial": 1,
                 "gather_facts": False, "become": True, "tasks": [
                     {"name": "restart kubelite",
                      "ansible.builtin.command": "snap restart microk8s.daemon-kubelite",
                      "changed_when": True},
                     # As `microk8s kubectl get node` on the node: its own apiserver answers
                     # and calls the node Ready.
                     {"name": "wait for the node",
                      "ansible.builtin.command": {"argv": [
                          kubectl_bin, "--context", "{{ inventory_hostname }}", "get", "node",
                          "{{ inventory_hostname }}", "-o", ready]},
                      "delegate_to": "localhost", "become": False, "register": "node_ready",
                      "until": "node_ready.rc == 0 and node_ready.stdout == 'True'",
                      "retries": 60, "delay": 5, "changed_when": False}]}]
        path = plays.write(play)
        # The nodes' login user keeps Ansible's remote temp dir in its home, as by default.
        play_env = {k: v for k, v in plays.env.items() if k != "ANSIBLE_REMOTE_TEMP"}
        play_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
        settle_cluster(env)
        a0 = time.time()
        q = subprocess.run([plays.playbook, "-i", str(inventory), str(path)], env=play_env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        a1 = time.time()
        if q.returncode != 0:
            raise SystemExit(f"bench: the serial kubelite play exited {q.returncode}:\n"
                             f"{q.stdout[-3000:]}\n{q.stderr[-2000:]}")
        deadline = time.time() + 60  # until the last node's Lease renewed
        while True:
            an_rec = recoveries(env, watch, a0)
            if all(r["renewed"] for r in an_rec.values()) or time.time() > deadline:
                break
            time.sleep(0.5)
    moved = {}
    for pl in json.loads(q.stdout)["plays"]:
        for task in pl["tasks"]:
            if task["task"]["name"] == "wait for the node":
                for host, res in task["hosts"].items():
                    moved[host] = {"end": iso_ts(task["task"]["duration"]["end"]),
                                   "attempts": res.get("attempts", 1)}
    return {"kubemend": {"wall": t1 - t0, "report": report, "watched": km_rec},
            "ansible": {"wall": a1 - a0, "watched": an_rec, "moved": moved}}


def bench_diagnose(env):
    """kubemend diagnose (every check; kubelite's, which needs SSH, skips itself): time and
    memory, then one run logging kube-client's requests, counted."""
    argv = [str(KUBEMEND), "diagnose", "--output", "json"]
    m = measure(argv, env, runs=max(5, RUNS // 3))
    p = subprocess.run(argv, env=dict(env, RUST_LOG="kube_client=debug"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: kubemend diagnose exited {p.returncode}:\n{p.stderr[-2000:]}")
    urls = [line.split("http.url=", 1)[-1].split()[0] for line in p.stderr.splitlines()
            if line.rstrip().endswith("requesting")]
    paths = [u.split("?", 1)[0] for u in urls]
    return {"measure": m, "requests": len(urls),
            "pod_requests": sum(path.endswith("/pods") for path in paths),
            "event_requests": sum(path.endswith("/events") for path in paths)}


def merged(measures):
    """One measure from single-run measures: the median of their times, the largest peak."""
    times = [m["median_ms"] for m in measures]
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "peak_rss_mib": max(m["peak_rss_mib"] for m in measures), "runs": len(measures)}


def bench_tasks(bins, env, plays):
    """Per-task cost inside ansible-playbook: TASKS tasks of each kind in one play, less a
    one-task play of the same kind. calico_rbac runs for real against the incident's
    ClusterRole once fixed (a first run fixes it), k8s state present with that same role."""
    fix = plays.argv("kubemend.microk8s.calico_rbac", {})
    plays.result(fix)
    role = json.loads(kubectl(bins, env, "get", "clusterrole", "calico-kube-controllers",
                              "-o", "json", stdout=subprocess.PIPE, text=True).stdout)
    definition = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": "calico-kube-controllers"}, "rules": role["rules"]}
    kinds = [
        ("kubemend.microk8s.calico_rbac", {}, True),
        ("kubernetes.core.k8s", {"state": "present", "definition": definition}, True),
        ("ansible.builtin.ping", {}, False),
        ("ansible.builtin.debug", {"msg": "hello"}, False),
    ]
    out = []
    for module, args, kube in kinds:
        one = plays.argv(module, args, kubeconfig=kube)
        if kube and plays.result(one).get("changed"):
            raise SystemExit(f"bench: {module} changed the already-correct ClusterRole")
        many = plays.argv(module, args, tasks=TASKS, kubeconfig=kube)
        # One and many in turn, so that a passing slowdown of the test bed weighs on both.
        plays.measure(one, runs=1, warmup=1)
        ones, manys = [], []
        for _ in range(TASK_RUNS):
            ones.append(plays.measure(one, runs=1, warmup=0))
            manys.append(plays.measure(many, runs=1, warmup=0))
        out.append((module, merged(ones), merged(manys)))
    # The module alone, as ansible-core runs it (a file named AnsiballZ_<module>, an args file):
    # the part of calico_rbac's task that is its own work and its API requests.
    alone = plays.work / "alone"
    alone.mkdir()
    binary = alone / "AnsiballZ_calico_rbac"
    os.link(SHIPPED, binary)
    args = alone / "args"
    args.write_text(json.dumps({"kubeconfig": plays.kubeconfig}))
    module = measure([str(binary), str(args)], plays.env)
    return out, module


def bench_maintenance(plays, env):
    """The collection's monthly maintenance on the freshly seeded incident, as make demo runs
    it (the test bed's inventory and ssh_config, pods stuck after 15 s in namespace ci), once."""
    age = "15s"
    extra = plays.write({
        "kubemend_kubeconfig": env["KUBECONFIG"],
        "microk8s_maintenance_kubelite_restart_ssh_config": env["KUBEMEND_SSH_CONFIG"],
        "microk8s_maintenance_kubelite_restart_settle": "2s",
        "microk8s_maintenance_stuck_pods_namespaces": ["ci"],
        "microk8s_maintenance_stuck_pods_pending_age": age,
        "microk8s_maintenance_stuck_pods_terminating_grace": age,
        "microk8s_maintenance_stuck_pods_include_bare_pods": True,
        "microk8s_maintenance_diagnose_namespaces": ["ci"],
        "microk8s_maintenance_diagnose_pending_age": age,
        "microk8s_maintenance_diagnose_terminating_grace": age})
    argv = [plays.playbook, "-i", str(ROOT / "tests" / "ansible" / "inventory-testbed.yml"),
            "-e", f"@{extra}", "kubemend.microk8s.monthly_maintenance"]
    t0 = time.time()
    p = subprocess.run(argv, env=dict(plays.env, ANSIBLE_SHOW_CUSTOM_STATS="false"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        raise SystemExit(f"bench: the monthly maintenance failed ({p.returncode}):\n"
                         f"{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
    return wall


# ---------------------------------------------------------------- calico_ipam

def calico_cni(env):
    """tests/cluster/calico-cni as a module: the shapes of Calico's IPAM objects, as its CNI
    writes them, for the version the test bed is shaped as."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("KUBEMEND_")})
    loader = importlib.machinery.SourceFileLoader("calico_cni", str(CALICO_CNI))
    spec = importlib.util.spec_from_loader("calico_cni", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def ipam_block_cidr(index):
    """The index-th /26 from 10.1.64.0, clear of the nodes' own blocks (10.1.1-3.0/26)."""
    return f"10.1.{64 + index // 4}.{(index % 4) * 64}/26"


def seed_ipam(bins, env, ns):
    """IPAM_PODS pods, each with a Calico address under its own handle, and IPAM_PODS addresses
    leaked under handles of pods that are gone, interleaved in /26 blocks affine to the three
    nodes, written as calico-cni writes them (tests/cluster/calico-cni: each handle, then its
    block), in bulk. The pods wait for a scheduler that does not exist: kwok gives a node's pods
    addresses from a /24 of its own, too few for this many, so these carry the address Calico's
    CNI records on a pod (its podIP annotation), which is where calico_ipam and calicoctl look
    when a pod has no status.podIP. Their handles are young, so calico_ipam's min_age leaves
    every leak alone: the run measures the plan (two scans), and writes nothing."""
    cni = calico_cni(env)
    shape = cni.current_shape()
    api = Api(env)
    uids, lock = {}, threading.Lock()
    threads = 16

    def pod_worker(t):
        for i in range(t, IPAM_PODS, threads):
            ip = ipam_address(2 * i)
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"ipam-{i:05d}", "labels": {"app": "bench-ipam"},
                                "annotations": {cni.ANNOTATION_POD_IP: f"{ip}/32",
                                                cni.ANNOTATION_POD_IPS: f"{ip}/32"}},
                   "spec": {"schedulerName": "bench-no-scheduler",
                            "automountServiceAccountToken": False,
                            "containers": [{"name": "app", "image": "registry.local/app:1"}]}}
            status, body = api.call("POST", f"/api/v1/namespaces/{ns}/pods", pod, t)
            if status != 201:
                raise SystemExit(f"bench: creating pod {i}: {status} {body}")
            with lock:
                uids[i] = body["metadata"]["uid"]

    run_threads(pod_worker, threads)
    blocks, handles = {}, []
    for n in range(2 * IPAM_PODS):
        index, ordinal = divmod(n, 64)
        node = NODES[index % 3]
        cidr = ipam_block_cidr(index)
        if cidr not in blocks:
            blocks[cidr] = cni.new_block(shape, cidr, node, False)
        i = n // 2
        if n % 2 == 0:
            name = f"ipam-{i:05d}"
            handle = f"{cni.NETWORK}.{hashlib.sha256(uids[i].encode()).hexdigest()}"
        else:
            name = f"gone-{i:05d}"
            handle = f"{cni.NETWORK}.{hashlib.sha256(name.encode()).hexdigest()}"
        fake = {"spec": {"nodeName": node}, "metadata": {"name": name, "namespace": ns}}
        attr = cni.attribute(shape, handle, cni.cni_attributes(shape, fake))
        cni.assign(shape, blocks[cidr]["spec"], ipam_address(n), attr, node, {})
        obj = cni.new_handle(shape, handle)
        obj["spec"]["block"] = {cidr: 1}
        handles.append(obj)
    group = "/apis/crd.projectcalico.org/v1"
    affinities = [cni.affinity_object(shape, blocks[c]["spec"]["affinity"][5:], c, "confirmed")
                  for c in blocks]
    for plural, objects in (("ipamhandles", handles), ("ipamblocks", list(blocks.values())),
                            ("blockaffinities", affinities)):
        def worker(t, plural=plural, objects=objects):
            for k in range(t, len(objects), threads):
                status, body = api.call("POST", f"{group}/{plural}", objects[k], t)
                if status != 201:
                    raise SystemExit(f"bench: creating {plural} {k}: {status} {body}")
        run_threads(worker, threads)
    return {"pods": IPAM_PODS, "handles": len(handles), "blocks": len(blocks),
            "allocations": 2 * IPAM_PODS}


def ipam_address(n):
    index, ordinal = divmod(n, 64)
    net = ipam_block_cidr(index).split("/")[0].rsplit(".", 1)
    return f"{net[0]}.{int(net[1]) + ordinal}"


def run_threads(worker, threads):
    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# Leaked addresses (allocated, in no pod's podIP annotation or status) and orphaned handles
# (in no allocation), from one kubectl document, as calicoctl's check classifies them (without
# its node tunnel addresses, which no allocation here is).
JQ_IPAM = (
    'def n2ip: [(./16777216|floor)%256, (./65536|floor)%256, (./256|floor)%256, .%256]'
    ' | map(tostring) | join(".");'
    ' def ip2n: split(".") | map(tonumber) | .[0]*16777216 + .[1]*65536 + .[2]*256 + .[3];'
    ' .items as $all'
    ' | ([$all[] | select(.kind == "Pod") | ((.status.podIPs // [])[].ip),'
    ' (.metadata.annotations["cni.projectcalico.org/podIP"] // empty | split("/")[0])]'
    ' | map({key: ., value: true}) | from_entries) as $used'
    ' | [$all[] | select(.kind == "IPAMBlock") | .spec as $s'
    ' | ($s.cidr | split("/")[0] | ip2n) as $base'
    ' | $s.allocations | to_entries[] | select(.value != null)'
    ' | {ip: (($base + .key) | n2ip), handle: $s.attributes[.value].handle_id}] as $allocs'
    ' | ($allocs | map({key: .handle, value: true}) | from_entries) as $ref'
    ' | {leaked: [$allocs[] | select($used[.ip] | not) | .ip] | length,'
    ' orphaned: [$all[] | select(.kind == "IPAMHandle") | .spec.handleID'
    ' | select($ref[.] | not)] | length}'
)


def bench_ipam(bins, env):
    """The calico_ipam plan at IPAM_PODS pods and twice as many handles, against kubectl and
    jq; the test bed is shaped as Calico v3.32 first and again after (a clean IPAM)."""
    ns = "bench-ipam"
    sh(str(TESTCLUSTER), "calico", "v3.32", stdout=subprocess.DEVNULL)
    kubectl(bins, env, "delete", "namespace", ns, "--ignore-not-found", "--wait=true",
            "--timeout=600s", stdout=subprocess.DEVNULL)
    kubectl(bins, env, "create", "namespace", ns, stdout=subprocess.DEVNULL)
    kubectl(bins, env, "wait", "--for=jsonpath={.metadata.name}=default", "-n", ns,
            "serviceaccount/default", "--timeout=60s", stdout=subprocess.DEVNULL)
    t0 = time.time()
    seeded = seed_ipam(bins, env, ns)
    print(f"bench: {seeded['pods']} pods, {seeded['handles']} handles, {seeded['blocks']} "
          f"blocks seeded in {time.time() - t0:.0f}s", file=sys.stderr)
    argv = [str(KUBEMEND), "calico-ipam", "--check", "--confirm-after", "1s", "--output", "json"]
    runs = max(5, RUNS // 3)
    km = measure(argv, env, runs=runs)
    p = subprocess.run(argv, env=dict(env, RUST_LOG="kube_client=debug"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench: kubemend calico-ipam exited {p.returncode}:\n{p.stderr[-2000:]}")
    report = json.loads(p.stdout)
    requests = sum(line.rstrip().endswith("requesting") for line in p.stderr.splitlines())
    pipeline = (f"{bins / 'kubectl'} get ipamblocks.crd.projectcalico.org,"
                f"ipamhandles.crd.projectcalico.org,pods -A -o json | jq -c '{JQ_IPAM}'")
    joined = json.loads(sh("sh", "-c", pipeline, env=env, stdout=subprocess.PIPE,
                           text=True).stdout)
    kj = measure(["sh", "-c", pipeline], env, runs=runs)
    return {"seeded": seeded, "rows": [("kubemend calico-ipam --check --confirm-after 1s", km),
                                       ("kubectl get ipamblocks,ipamhandles,pods -A -o json | jq",
                                        kj)],
            "requests": requests, "counts": report.get("counts", {}),
            "left_alone": len(report.get("findings", {}).get("left_alone", [])),
            "joined": joined}


def clean_ipam_bench(bins, env):
    """After the calico_ipam section (its results already in hand): its namespace gone, and a
    clean Calico v3.32 IPAM again."""
    kubectl(bins, env, "delete", "namespace", "bench-ipam", "--ignore-not-found", "--wait=true",
            "--timeout=900s", stdout=subprocess.DEVNULL)
    sh(str(TESTCLUSTER), "calico", "v3.32", stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- report

def table(rows):
    lines = ["| command | median | min | max | peak RSS |", "|---|---:|---:|---:|---:|"]
    for name, m in rows:
        name = name.replace("|", "\\|")  # a pipe inside a table cell must be escaped
        lines.append(f"| `{name}` | {m['median_ms']:.0f} ms | {m['min_ms']:.0f} ms | "
                     f"{m['max_ms']:.0f} ms | {m['peak_rss_mib']:.1f} MiB |")
    return "\n".join(lines)


def ratio(a, b):
    return a["median_ms"] / b["median_ms"] if b["median_ms"] else float("nan")


def calico_section(rows):
    return ["", "## calico_rbac: check the incident's ClusterRole", "",
            "`kubemend calico-rbac --check` reads the calico-kube-controllers Deployment "
            "and ClusterRole, derives the rules v3.13.2 with the workloadendpoint "
            "controller needs, and reports what is missing (exit 2). kubectl only "
            "fetches the ClusterRole; the comparison is to its cheapest useful call.", "",
            table(rows), "",
            f"kubemend takes {ratio(rows[0][1], rows[1][1]):.2f}x kubectl's median time."]


def stuck_section(res):
    lines = ["", "## stuck_pods: find stuck pods at cluster scale", "",
             f"{STUCK} stuck pods (half Pending unseen by any scheduler, half Terminating "
             "on a node that never confirms) among N Running pods. kubemend pages "
             "through pods 500 at a time and evaluates them as they stream; kubectl "
             "loads every pod as one JSON document and jq filters it with the same "
             "rules (without the event check, which would need another call).", ""]
    for scale, rows in res.items():
        lines += [f"### {scale:,} pods", "", table(rows), "",
                  f"kubemend takes {ratio(rows[0][1], rows[1][1]):.2f}x the pipeline's "
                  "median time.", ""]
    if len(res) >= 2:
        (s1, r1), (s2, r2) = list(res.items())[0], list(res.items())[-1]
        lines += [f"Growth from {s1:,} to {s2:,} pods: kubemend "
                  f"{r2[0][1]['median_ms'] / r1[0][1]['median_ms']:.1f}x time, "
                  f"{r2[0][1]['peak_rss_mib'] / r1[0][1]['peak_rss_mib']:.1f}x memory; "
                  f"kubectl | jq {r2[1][1]['median_ms'] / r1[1][1]['median_ms']:.1f}x time, "
                  f"{r2[1][1]['peak_rss_mib'] / r1[1][1]['peak_rss_mib']:.1f}x memory."]
    return lines


def plays_section(calico, stuck):
    lines = ["", "## Ansible: kubemend.microk8s against kubernetes.core", "",
             f"Each row is a whole `ansible-playbook` run ({ansible_versions()}) of one play "
             "with one task on localhost (connection local, no facts), both collections under "
             "the same ansible-core, Python interpreter, kubeconfig and settings. The time is "
             "the whole run, start-up included; peak RSS is the largest process of the whole "
             "play (the controller, a forked worker, or the module), not the module alone: "
             "with kubemend's modules (under 20 MiB, as above) it is ansible-playbook's own. "
             "kubemend's modules are its compiled binary; kubernetes.core's modules run in "
             "Python with the `kubernetes` client library.", "",
             "### calico_rbac", "",
             "`kubemend.microk8s.calico_rbac` in check mode derives the rules from the "
             "Deployment and reports the missing ones, as the CLI above does. kubernetes.core "
             "has no such module: `k8s_info` only reads the ClusterRole, and `k8s` with "
             "`state: patched` (check mode, a server-side dry run) sends a definition whose "
             "rules a user has to write by hand. Its strategic-merge (or merge) patch "
             "replaces the `rules` list whole, so the definition carries every rule the role "
             "has plus the ones calico_rbac reported missing; run again later, it drops any "
             "rule added to the role since, and nothing in it says which rules the running "
             "Calico needs.", "",
             table(calico), "",
             f"calico_rbac takes {ratio(calico[0][1], calico[1][1]):.2f}x k8s_info's and "
             f"{ratio(calico[0][1], calico[2][1]):.2f}x the patch's median time."]
    if stuck:
        lines += ["", "### stuck_pods", "",
                  "The pods of the stuck_pods section above, each row "
                  f"{PLAY_SCALE_RUNS} runs after one warm-up (a play listing every pod is slow). "
                  "`kubemend.microk8s.stuck_pods` in check mode finds the stuck pods as the CLI "
                  "does; `kubernetes.core.k8s_info` with `kind: Pod` and no namespace only lists "
                  "every pod into the task result (registered), before any filter a user would "
                  "still have to write."]
    for scale, rows in stuck.items():
        lines += ["", f"#### {scale:,} pods", "", table(rows), "",
                  f"stuck_pods takes {ratio(rows[0][1], rows[1][1]):.2f}x k8s_info's median "
                  "time."]
    return lines


def kubelite_section(rounds):
    km = median_round([r["kubemend"] for r in rounds], kubelite_overhead)
    an = median_round([r["ansible"] for r in rounds], ansible_overhead)
    report = km["report"]
    n = len(report["restarted"]) or 1
    overhead = kubelite_overhead(km)
    every_km = ", ".join(f"{kubelite_overhead(r['kubemend']):.2f}" for r in rounds)
    every_an = ", ".join(f"{ansible_overhead(r['ansible']):.2f}" for r in rounds)
    lines = ["", "## kubelite_restart: a rolling restart of the three nodes", "",
             f"{len(rounds)} rounds, each one run of `kubemend kubelite-restart --settle 0s` over "
             "SSH (the test bed's "
             "ssh_config), then, on the same test bed, the usual Ansible way: a `serial: 1` "
             "play over k8s01..k8s03 (become with sudo) whose tasks are `ansible.builtin.command: "
             "snap restart microk8s.daemon-kubelite` and a readiness loop (`until` the node's "
             "own apiserver calls it Ready, as `microk8s kubectl get node` on the node would; "
             "`retries: 60`, `delay: 5`). A node's recovery is from its restart until its "
             "node Lease renewed: kubemend reports it (`recovery_seconds`); for both runs it is "
             "also read from the test bed's kubelite events (the node's `stopping`) and the "
             "Lease renewals seen by polling every 200 ms. Each run starts once every node's "
             "Lease is fresh and both leader Leases are held and renewed (no election under "
             "way). The overhead per node is "
             "(total − recovery) / nodes; it also holds what the gates wait for beyond the "
             "node's Lease (its /readyz, and the leader Leases renewed after the restart, which "
             "take longer when the node restarted held one), so it varies from round to round. "
             "Shown below: each tool's median round by that overhead.", "",
             f"kubemend, median round: {km['wall']:.1f} s in all for {n} nodes, of which "
             f"{report['recovery_seconds']:.1f} s the nodes' own recovery; overhead "
             f"{overhead:.2f} s per node (the issue's target: under 1 s per node; every round, "
             f"in order: {every_km} s). Of that overhead, {leader_wait(report) / n:.2f} s per "
             "node was spent waiting for a leader Lease after every other gate of the node had "
             "passed: kube-controller-manager does not release its Lease when it stops, so once "
             "its holder restarts, another is elected only after the Lease (12 s on the test bed) "
             "has expired and a candidate's next try (every 2 s, jittered); the rest, "
             f"{(overhead - leader_wait(report) / n):.2f} s per node, is kubemend's own (the "
             "pre-flight over SSH, the lock, noticing each gate, the final check). Every round, "
             "kubemend's own part: "
             + ", ".join(f"{kubelite_overhead(r['kubemend']) - leader_wait(r['kubemend']['report']) / (len(r['kubemend']['report']['restarted']) or 1):.2f}"
                         for r in rounds) + " s.", "",
             "| node | recovery (kubemend) | recovery (events, Lease poll) | gates passed after "
             "| the last gate to pass |",
             "|---|---:|---:|---:|---|"]
    for node in report["nodes"]:
        w = km["watched"].get(node["name"], {})
        seen = (f"{w['renewed'] - w['stopping']:.1f} s" if w.get("renewed") else "n/a")
        gates = node.get("timeline") or [{"after_seconds": float("nan")}]
        # The last health gate before `settled`, by when it passed.
        health = [g for g in gates if not g.get("gate", "").startswith("settled")]
        last = max(health, key=lambda g: g["after_seconds"]) if health else {}
        lines.append(f"| {node['name']} | {node.get('recovery_seconds') or float('nan'):.1f} s "
                     f"| {seen} | {gates[-1]['after_seconds']:.1f} s "
                     f"| {last.get('gate', 'n/a')} ({last.get('after_seconds', float('nan')):.1f} s) |")
    total_rec = ansible_recovery(an)
    order = sorted(an["watched"], key=lambda k: an["watched"][k]["stopping"])
    overlaps = [f"{a} was restarted {an['watched'][b]['renewed'] - an['watched'][a]['stopping']:.1f} s "
                f"before {b}'s Lease renewed" for b, a in zip(order, order[1:])
                if an["watched"][b].get("renewed")
                and an["watched"][a]["stopping"] < an["watched"][b]["renewed"]]
    lines += ["", f"Ansible (`serial: 1`), median round: {an['wall']:.1f} s in all for "
              f"{len(an['watched'])} "
              f"nodes; the nodes' own recoveries add up to {total_rec:.1f} s, so the overhead "
              f"per node, (total − recovery) / nodes, is "
              f"{ansible_overhead(an):.2f} s (every round, in order: {every_an} s)"
              + ("; but the play moved on before nodes had recovered ("
                 + "; ".join(overlaps) + "), so two nodes were recovering at once." if overlaps
                 else "."), "",
              "| node | recovery (events, Lease poll) | readiness loop done after | "
              "moved on after recovery | attempts |", "|---|---:|---:|---:|---:|"]
    for node in order:
        w, m = an["watched"][node], an["moved"].get(node)
        recovery = w["renewed"] - w["stopping"] if w.get("renewed") else float("nan")
        done = m["end"] - w["stopping"] if m else float("nan")
        lines.append(f"| {node} | {recovery:.1f} s | {done:.1f} s | {done - recovery:+.1f} s | "
                     f"{m['attempts'] if m else 'n/a'} |")
    lines += ["", "A negative lag means the play moved on before the node's Lease was renewed "
              "(its apiserver answered, and the Ready condition was still the one from before "
              "the restart)."]
    return lines


def diagnose_section(res):
    lines = ["", "## diagnose: the incident's runbook at cluster scale", "",
             "`kubemend diagnose --output json` with the incident seeded and the pods of the "
             "stuck_pods section (every check; the kubelite check, which needs SSH, skips "
             "itself). API requests are counted from one more run with "
             "`RUST_LOG=kube_client=debug`: kube-client's `requesting` lines on stderr, one per "
             "HTTP request sent (retries included). Target in the issue: under 2 s without the "
             "SSH checks, requests growing with pages of pods (500 per page), never per pod. "
             "Pod lists are the pages of pods (every pod, and Pending pods with no node); event "
             "lookups are one per Pending pod no scheduler saw (a candidate for stuck), to find "
             "whether it has events.",
             "", "| pods | median | min | max | peak RSS | API requests | pod lists | "
             "event lookups |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for scale, r in res.items():
        m = r["measure"]
        lines.append(f"| {scale:,} | {m['median_ms']:.0f} ms | {m['min_ms']:.0f} ms | "
                     f"{m['max_ms']:.0f} ms | {m['peak_rss_mib']:.1f} MiB | {r['requests']} | "
                     f"{r['pod_requests']} | {r['event_requests']} |")
    return lines


def tasks_section(measured):
    rows, alone = measured
    lines = ["", "## Per-task cost inside ansible-playbook", "",
             f"One play of {TASKS} identical tasks against a one-task play of the same kind, "
             f"{TASK_RUNS} runs of each in turn after a warm-up of the one-task play, on "
             "localhost as above; "
             f"the per-task cost is (median of {TASKS} tasks − median of one) / {TASKS - 1}, "
             "so play start-up is left out. `kubemend.microk8s.calico_rbac` runs for real "
             "against the incident's ClusterRole once it is correct (a first run fixed it), so "
             "every task plans, finds nothing to add and verifies; `kubernetes.core.k8s` "
             "`state: present` gets that same ClusterRole as its definition; `ping` and "
             "`debug` are the floor of a module run and of a task that runs no module.", "",
             f"| task | one-task play | {TASKS}-task play | per task | peak RSS ({TASKS} tasks) |",
             "|---|---:|---:|---:|---:|"]
    for module, one, many in rows:
        per = (many["median_ms"] - one["median_ms"]) / max(1, TASKS - 1)
        lines.append(f"| `{module}` | {one['median_ms']:.0f} ms | {many['median_ms']:.0f} ms | "
                     f"{per:.0f} ms | {many['peak_rss_mib']:.1f} MiB |")
    per = {module: (many["median_ms"] - one["median_ms"]) / max(1, TASKS - 1)
           for module, one, many in rows}
    ours = per["kubemend.microk8s.calico_rbac"]
    k8s, ping = per["kubernetes.core.k8s"], per["ansible.builtin.ping"]
    lines += ["", f"Per task, calico_rbac is {k8s / ours:.1f} times cheaper than "
              f"kubernetes.core.k8s (target: at least 10) and {ours / ping:.2f} of "
              f"ansible.builtin.ping (target: at most 0.5). Of its {ours:.0f} ms, the module "
              f"itself, run alone on its arguments file as ansible-core runs it, takes "
              f"{alone['median_ms']:.0f} ms (median of {alone['runs']}, "
              f"{alone['peak_rss_mib']:.1f} MiB peak): reading the Deployment, the bindings and "
              "the role, and one SubjectAccessReview per permission the controllers need, which "
              "proves that their ServiceAccount has it; the rest is ansible-core's task."]
    return lines


def maintenance_section(wall):
    return ["", "## The whole monthly maintenance", "",
            "`kubemend.microk8s.monthly_maintenance` on the freshly seeded incident, as "
            "`make demo` runs it (diagnose, Calico RBAC with the controller's restart, the "
            "stale webhook, the rolling kubelite restart of the three nodes with `settle: 2s`, "
            "the stuck pods of namespace ci, diagnose again), one run: "
            f"{wall:.0f} s, against the review's 15 minutes by hand "
            f"({wall / 900:.2f}x)."]


def ipam_section(res):
    seeded, counts = res["seeded"], res["counts"]
    km, kj = res["rows"][0][1], res["rows"][1][1]
    return ["", "## calico_ipam: the plan over a large Calico IPAM", "",
            f"{seeded['pods']:,} pods with a Calico address each and {seeded['pods']:,} "
            f"addresses leaked (their pods gone): {seeded['allocations']:,} allocations in "
            f"{seeded['blocks']} /26 blocks, {seeded['handles']:,} handles, shaped as Calico "
            "v3.32 writes them (tests/cluster/calico-cni). Every handle is younger than "
            "calico_ipam's min_age (15 minutes), so it writes nothing: the row is its plan, two "
            "scans of every block, handle, affinity, pool, node, service and pod, 500 objects a "
            "page, one second apart (`--confirm-after 1s`, the shortest it takes, counted in its "
            "time). calicoctl's `ipam check` is not available here; the alternative is one "
            "kubectl document of blocks, handles and pods joined by jq (leaked addresses and "
            "orphaned handles, without node tunnel addresses), which reads each object once "
            "and confirms nothing.", "",
            table(res["rows"]), "",
            f"kubemend takes {ratio(km, kj):.2f}x the pipeline's median time and "
            f"{km['peak_rss_mib'] / kj['peak_rss_mib']:.2f}x its peak memory. Its run sent "
            f"{res['requests']} API requests (kube-client's `requesting` lines with "
            "`RUST_LOG=kube_client=debug`: list pages of both scans, growing with pages, not "
            f"per object); it counted {counts.get('blocks', 0)} blocks, "
            f"{counts.get('handles', 0):,} handles and {counts.get('allocations', 0):,} "
            f"allocations, and released nothing: its report lists {res['left_alone']:,} "
            "candidates left alone as younger than min_age (it lists 1,000 at most). The "
            f"pipeline found {res['joined'].get('leaked', 0):,} leaked addresses "
            f"and {res['joined'].get('orphaned', 0):,} orphaned handles."]


def kept_sections(old, head, sections):
    """A run of some sections: the sections it did not measure are kept from `old` (the
    BENCHMARKS.md of an earlier run), in their order, and the head says when those were
    measured."""
    parts = old.split("\n## ")
    old_head, old_sections = parts[0], {p.split("\n", 1)[0]: "## " + p for p in parts[1:]}
    new = {}
    title = None
    for line in sections:
        if line.startswith("## "):
            title = line[3:]
            new[title] = []
        if title is not None:
            new[title].append(line)
    written = old_head.split("Written by `make bench` on ", 1)[-1].split(" UTC", 1)[0] + " UTC"
    kept = [t for t in old_sections if t not in new]
    out = []
    for t in list(old_sections) + [t for t in new if t not in old_sections]:
        if t in new:
            out += [""] + new[t]
        else:
            out += ["", old_sections[t].rstrip()]
    note = (f"Sections kept from the run of {written}: " + "; ".join(kept) + ".") if kept else ""
    return head + ([""] + [note] if note else []), out


def ansible_versions():
    """ansible-core, kubernetes.core and the `kubernetes` library of the bench venv."""
    def run(*argv):
        return sh(*argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout

    venv = BENCH_VENV / "bin"
    core = run(str(venv / "ansible-playbook"), "--version").split("[core ", 1)[1].split("]")[0]
    listed = run(str(venv / "ansible-galaxy"), "collection", "list", "kubernetes.core")
    collection = next(" ".join(line.split()[:2]) for line in listed.splitlines()
                      if line.startswith("kubernetes.core "))
    client = run(str(venv / "python"), "-c", "import kubernetes; print(kubernetes.__version__)")
    return f"ansible-core {core}, {collection}, Python `kubernetes` {client.strip()}"


SECTIONS = ["calico", "stuck", "ansible", "diagnose", "kubelite", "tasks", "maintenance",
            "ipam"]


def main():
    env = cluster_env()
    bins = bin_dir()
    if not KUBEMEND.exists():
        raise SystemExit("bench: build the release binary first (cargo build --release)")
    if not SHIPPED.exists():
        raise SystemExit("bench: build the collection's binary first (make release)")
    if not Path(GNU_TIME).exists():
        raise SystemExit("bench: GNU time is needed for peak memory (apt-get install time)")
    only = set(sys.argv[1:]) or set(SECTIONS)
    if only - set(SECTIONS):
        raise SystemExit(f"bench: unknown sections {sorted(only - set(SECTIONS))}; "
                         f"choose from {' '.join(SECTIONS)}")
    cpu = platform.processor() or platform.machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmarks", "",
        f"Written by `make bench` on {now}: {os.cpu_count()} cores ({cpu}), Linux "
        f"{platform.release()}, against the test bed (Kubernetes v1.34 built from source, three "
        "systemd machines running kubelite with kwok as its kubelet, a real dqlite cluster, one "
        "shared etcd as the apiservers' datastore). Each command ran "
        f"{RUNS} times (the pod-scale rows {max(5, RUNS // 3)} times) after {WARMUP} warm-up runs, "
        "in the same run as the tool it is compared with. Peak RSS is the largest process's "
        "maximum resident set (GNU time's `%M`); for a shell pipeline, its largest member.",
        "",
        f"kubemend: the {KUBEMEND.stat().st_size / 1e6:.1f} MB release binary (glibc, LTO, "
        f"stripped) on the command line; in every Ansible play the collection's modules are the "
        f"{SHIPPED.stat().st_size / 1e6:.1f} MB static binary it ships (`make release`), run by "
        f"its action plugins. kubectl: v1.34.4 built from the same sources as the cluster.",
    ]
    needs_plays = only & {"ansible", "kubelite", "tasks", "maintenance"}
    with tempfile.TemporaryDirectory(prefix="kubemend-bench-") as work:
        plays = Plays(env, Path(work)) if needs_plays else None
        sections, plays_calico, plays_stuck, diagnose = [], [], {}, {}
        if only & {"calico", "ansible"}:
            with testbed_locks(env):
                seed_incident()
                if "calico" in only:
                    sections += calico_section(bench_calico(bins, env))
                if "ansible" in only:
                    plays_calico = bench_plays_calico(plays)
        if only & {"stuck", "diagnose"}:
            with testbed_locks(env):
                seed_incident()
                stuck = {}
                for scale in pod_scales(bins, env):
                    if "stuck" in only:
                        stuck[scale] = bench_stuck(bins, env)
                        if "ansible" in only:
                            plays_stuck[scale] = bench_plays_stuck(plays)
                    if "diagnose" in only:
                        diagnose[scale] = bench_diagnose(env)
            if stuck:
                sections += stuck_section(stuck)
        if "ansible" in only:
            sections += plays_section(plays_calico, plays_stuck)
        if diagnose:
            sections += diagnose_section(diagnose)
        if "kubelite" in only:
            with testbed_locks(env):
                sections += kubelite_section(bench_kubelite(bins, env, plays))
        if "tasks" in only:
            with testbed_locks(env):
                seed_incident()
                sections += tasks_section(bench_tasks(bins, env, plays))
        if "maintenance" in only:
            with testbed_locks(env):
                seed_incident()
                sections += maintenance_section(bench_maintenance(plays, env))
        if "ipam" in only:
            with testbed_locks(env), calico_lock(env):
                sections += ipam_section(bench_ipam(bins, env))
                # The last section: written before its cleanup, which takes minutes.
                write_benchmarks(only, head, sections)
                clean_ipam_bench(bins, env)
            return
    write_benchmarks(only, head, sections)


def write_benchmarks(only, head, sections):
    """BENCHMARKS.md from the sections measured (a partial run keeps the others)."""
    out = ROOT / "BENCHMARKS.md"
    if only != set(SECTIONS) and out.exists():
        head, sections = kept_sections(out.read_text(), head, sections)
    out.write_text("\n".join(head + sections).rstrip() + "\n")
    print(f"bench: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
