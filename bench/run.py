#!/usr/bin/env python3
"""kubemend benchmarks: each action against the tool an operator would
otherwise use, in one run, on the test bed. Writes BENCHMARKS.md.

Run it with `make bench` (it builds the release binary and starts the test
bed first). Every command runs RUNS times after WARMUP runs; the table gives
the median wall time and the peak resident set of the largest process
(ru_maxrss from wait4, so for a shell pipeline it is its largest member).
No number here is asserted anywhere: they are measured, reported, compared.
"""

import datetime
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
KUBEMEND = ROOT / "target" / "release" / "kubemend"
RUNS = int(os.environ.get("BENCH_RUNS", "15"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
POD_SCALES = [int(x) for x in os.environ.get("BENCH_POD_SCALES", "2000,20000").split(",")]
STUCK = 50
GNU_TIME = "/usr/bin/time"


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
    sh(str(TESTCLUSTER), "seed", "incident", stdout=subprocess.DEVNULL)
    rows = [
        ("kubemend calico-rbac --check", [str(KUBEMEND), "calico-rbac", "--check"], (2,)),
        ("kubectl get clusterrole calico-kube-controllers -o json",
         [str(bins / "kubectl"), "get", "clusterrole", "calico-kube-controllers", "-o", "json"], (0,)),
    ]
    return [(name, measure(argv, env, ok)) for name, argv, ok in rows]


def bench_stuck(bins, env):
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
    results = {}
    have = 0
    for scale in POD_SCALES:
        t0 = time.time()
        create_pods(api, ns, scale - have, start=have)
        wait_running(bins, env, ns, scale - STUCK // 2 if scale > STUCK else scale)
        have = scale
        print(f"bench: {scale} pods ready in {time.time() - t0:.0f}s", file=sys.stderr)
        km = [str(KUBEMEND), "stuck-pods", "--check", "--terminating-grace", "0s",
              "--pending-age", "0s", "--max-pods", "1000", "--exclude-namespaces", "kube-system"]
        pipeline = f"{bins / 'kubectl'} get pods -A -o json | jq -c '{JQ_STUCK}'"
        results[scale] = [
            ("kubemend stuck-pods --check", measure(km, env, (0, 2), runs=max(5, RUNS // 3))),
            ("kubectl get pods -A -o json | jq", measure(["sh", "-c", pipeline], env,
                                                          runs=max(5, RUNS // 3))),
        ]
    kubectl(bins, env, "delete", "namespace", ns, "--wait=false", stdout=subprocess.DEVNULL)
    return results


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


def main():
    env = cluster_env()
    bins = bin_dir()
    if not KUBEMEND.exists():
        raise SystemExit("bench: build the release binary first (make release)")
    if not Path(GNU_TIME).exists():
        raise SystemExit("bench: GNU time is needed for peak memory (apt-get install time)")
    only = set(sys.argv[1:]) or {"calico", "stuck"}
    sections = []
    cpu = platform.processor() or platform.machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# Benchmarks", "",
        f"Written by `make bench` on {now}: {os.cpu_count()} cores ({cpu}), Linux "
        f"{platform.release()}, against the test bed (Kubernetes v1.34 built from source, three "
        "kwok nodes, one shared etcd). Each command ran "
        f"{RUNS} times (the pod-scale rows {max(5, RUNS // 3)} times) after {WARMUP} warm-up runs, "
        "in the same run as the tool it is compared with. Peak RSS is the largest process's "
        "maximum resident set (GNU time's `%M`); for a shell pipeline, its largest member.",
        "",
        f"kubemend: {KUBEMEND.stat().st_size / 1e6:.1f} MB release binary (LTO, stripped). "
        f"kubectl: v1.34.4 built from the same sources as the cluster.",
    ]
    if "calico" in only:
        rows = bench_calico(bins, env)
        sections += ["", "## calico_rbac: check the incident's ClusterRole", "",
                     "`kubemend calico-rbac --check` reads the calico-kube-controllers Deployment "
                     "and ClusterRole, derives the rules v3.13.2 with the workloadendpoint "
                     "controller needs, and reports what is missing (exit 2). kubectl only "
                     "fetches the ClusterRole; the comparison is to its cheapest useful call.", "",
                     table(rows), "",
                     f"kubemend takes {ratio(rows[0][1], rows[1][1]):.2f}x kubectl's median time."]
    if "stuck" in only:
        res = bench_stuck(bins, env)
        sections += ["", "## stuck_pods: find stuck pods at cluster scale", "",
                     f"{STUCK} stuck pods (half Pending unseen by any scheduler, half Terminating "
                     "on a node that never confirms) among N Running pods. kubemend pages "
                     "through pods 500 at a time and evaluates them as they stream; kubectl "
                     "loads every pod as one JSON document and jq filters it with the same "
                     "rules (without the event check, which would need another call).", ""]
        for scale, rows in res.items():
            sections += [f"### {scale:,} pods", "", table(rows), "",
                         f"kubemend takes {ratio(rows[0][1], rows[1][1]):.2f}x the pipeline's "
                         "median time.", ""]
        if len(res) >= 2:
            (s1, r1), (s2, r2) = list(res.items())[0], list(res.items())[-1]
            sections += [f"Growth from {s1:,} to {s2:,} pods: kubemend "
                         f"{r2[0][1]['median_ms'] / r1[0][1]['median_ms']:.1f}x time, "
                         f"{r2[0][1]['peak_rss_mib'] / r1[0][1]['peak_rss_mib']:.1f}x memory; "
                         f"kubectl | jq {r2[1][1]['median_ms'] / r1[1][1]['median_ms']:.1f}x time, "
                         f"{r2[1][1]['peak_rss_mib'] / r1[1][1]['peak_rss_mib']:.1f}x memory."]
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(head + sections).rstrip() + "\n")
    print(f"bench: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
