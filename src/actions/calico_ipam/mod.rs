//! calico_ipam: finds Calico IP addresses allocated to nothing (leaked) and IPAM handles that
//! no allocation references (orphaned), and releases them with Calico's own algorithm, without
//! locking the datastore.
//!
//! Works on Calico v3.13 to v3.32 in the Kubernetes datastore: the `crd.projectcalico.org/v1`
//! CRDs, or `projectcalico.org/v3` CRDs where only those are served (v3.32). The plan reads
//! every IPAMBlock, IPAMHandle, IPPool, Node, Service and Pod (paged) and classifies as
//! calicoctl's `ipam check` does, with kube-controllers' stricter rule for pods (see
//! [`scan`]). It also reports what it never fixes: addresses in use with no allocation,
//! allocations whose handle object is missing, invalid blocks, empty blocks of deleted nodes,
//! and each pool's use.
//!
//! # Evidence before any write
//! Releasing an address a live pod still uses gives two pods one address. So a candidate is
//! released only when the second scan, `confirm_after` after the first, finds it the same
//! (same block ordinal and handle; on v3.23+ blocks the same sequence number; for a handle
//! the same UID and resourceVersion); a pod it was allocated to is read again by a direct GET
//! just before the write; a handle, and the allocations under it, must be older than
//! `min_age` (v3.13 allocations carry no time: the handle's creationTimestamp stands for it).
//! It never judges on a node mismatch: an allocation whose pod exists is never released.
//! Tunnel addresses of existing nodes and handles not of the pod network are left alone
//! unless `tunnel_addresses` / `other_handles` ask.
//!
//! # Apply
//! Per block, one compare-and-swap update (the resourceVersion read) freeing its confirmed
//! ordinals as libcalico-go's `release` does, each still under the same handle (and sequence
//! number); a conflict re-reads the block and plans it again. Then each handle is decremented
//! (`decrementBlock`), or, when it holds nothing more, marked `deleted` and deleted with UID
//! and resourceVersion preconditions (`DeleteKVP`), as libcalico-go does. Orphaned handles are
//! deleted the same way. Every object written or deleted is returned whole as it was before
//! (and with `backup_dir` written there first).
//!
//! # Idempotency
//! Released addresses are free and deleted handles gone, so a second run finds nothing and
//! reports `changed: false`.
//!
//! # Check mode
//! The same two scans and plan; every write is a server-side dry run; no backup is written.
//!
//! # Errors
//! Durations that do not parse, a confirm_after of 0s, fail before any API call. More
//! releases than `max_releases` fail after the plan with nothing written. A failed write
//! names the object and keeps the report of what was released before it.

pub mod block;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
    Preconditions,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::block::{Block, Handle, Release};
use self::scan::{Findings, Inputs, Leak, Note, Orphan, PodView, Pool, Rules};
use super::{Action, Context};
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::delete::{BackupOf, backup, dry_run_refused};
use crate::k8s::duration::Duration;
use crate::k8s::paging::Pages;
use crate::outcome::{Diff, Outcome};

/// Most entries of each list in the result; the counts are always whole.
pub const REPORT_LIMIT: usize = 1000;

/// Compare-and-swap attempts on one block or handle before giving up.
const CONFLICT_RETRIES: u32 = 5;

/// Release leaked Calico IP addresses and orphaned IPAM handles, on evidence from two scans,
/// with Calico's own compare-and-swap and no datastore lock.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// How long apart the two scans are: a candidate is released only when the second finds
    /// it unchanged (same block ordinal and handle, same sequence number, same handle
    /// resourceVersion), e.g. 30s, 2m.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_confirm_after")]
    pub confirm_after: Duration,

    /// How old a handle must be before it, or an address allocated under it, is released
    /// (Calico writes the handle before the block, so a young handle may be an allocation in
    /// progress; v3.13 allocations carry no time and their handle's creationTimestamp stands
    /// for them). The default is kube-controllers' leak grace period.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_min_age")]
    pub min_age: Duration,

    /// Most addresses and handles to release in one run. When more qualify, nothing is
    /// released and the run fails: that many leaks point to a wider problem, review them in
    /// check mode first.
    #[arg(long, value_name = "N")]
    #[serde(default = "default_max_releases")]
    #[schemars(range(min = 1))]
    pub max_releases: u32,

    /// Also judge tunnel addresses (IPIP, VXLAN, WireGuard) of nodes that exist but no longer
    /// name them. Tunnel addresses of deleted nodes are judged anyway.
    #[arg(long)]
    #[serde(default)]
    pub tunnel_addresses: bool,

    /// Also judge handles that are neither a pod's (`k8s-pod-network.*`) nor a tunnel's, e.g.
    /// addresses assigned with calicoctl by hand.
    #[arg(long)]
    #[serde(default)]
    pub other_handles: bool,

    /// Directory for a YAML copy of each block and handle before it is updated or deleted
    /// (created if missing), written before the write.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub backup_dir: Option<String>,
}

fn default_confirm_after() -> Duration {
    Duration::from_secs(30)
}

/// calico_ipam's default min_age: kube-controllers' leak grace period.
#[must_use]
pub fn default_min_age() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_max_releases() -> u32 {
    500
}

/// An address released.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Released {
    /// The address.
    pub ip: String,
    /// Its block.
    pub block: String,
    /// The handle it was allocated under.
    pub handle: String,
    /// Why it was leaked.
    pub reason: String,
}

/// An object updated or deleted, as it was before.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Written {
    /// IPAMBlock or IPAMHandle.
    pub kind: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// updated or deleted.
    pub verb: String,
    /// The backup file, with O(backup_dir) in a real run.
    pub backup_file: Option<String>,
    /// The whole object as it was before the write.
    pub object: Value,
}

/// How many of each, whole (the lists stop at REPORT_LIMIT).
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct Counts {
    /// Blocks read.
    pub blocks: usize,
    /// Handles read.
    pub handles: usize,
    /// Allocations in all blocks.
    pub allocations: usize,
    /// Leaked addresses the second scan confirmed.
    pub leaked: usize,
    /// Orphaned handles the second scan confirmed.
    pub orphaned: usize,
    /// Candidates of the first scan the second did not confirm.
    pub unconfirmed: usize,
    /// Addresses released (check mode: that would be).
    pub released: usize,
    /// Handles deleted (check mode: that would be).
    pub deleted_handles: usize,
}

/// The result keys of calico_ipam.
#[derive(Debug, Default, Clone, Serialize, JsonSchema)]
pub struct Report {
    /// The Calico version ClusterInformation `default` records, if any.
    pub calico_version: Option<String>,
    /// The API group and version of Calico's objects, e.g. crd.projectcalico.org/v1.
    pub api_group: String,
    /// The counts.
    pub counts: Counts,
    /// What the second scan found: leaked addresses and orphaned handles it confirmed, what
    /// was left alone and why, what is never fixed, and each pool's use.
    pub findings: Findings,
    /// Candidates of the first scan that the second did not find the same (or whose pod
    /// came back in the GET before the write).
    pub unconfirmed: Vec<Note>,
    /// Addresses released (check mode: would be).
    pub released: Vec<Released>,
    /// Handles deleted (check mode: would be).
    pub deleted_handles: Vec<String>,
    /// Every block and handle updated or deleted, whole as before the write.
    pub written: Vec<Written>,
    /// After a real run: a fresh scan found the released addresses free, the deleted handles
    /// gone, and no pod whose address lost its allocation.
    pub verified: Option<bool>,
}

/// One read-only scan with the default rules but `min_age` (tunnel addresses of existing nodes
/// and other handles left alone), for diagnose: its leaks and orphans are candidates that
/// calico_ipam confirms with a second scan before releasing any. `Ok(None)` when Calico's IPAM
/// is not in the Kubernetes datastore.
pub async fn survey(
    cluster: &Cluster,
    min_age: &Duration,
) -> Result<Option<(Resources, Findings)>> {
    let resources = match Resources::discover(cluster).await {
        Ok(resources) => resources,
        Err(Error::CannotPlan { .. }) => return Ok(None),
        Err(err) => return Err(err),
    };
    let action = CalicoIpam {
        cluster: ClusterArgs::default(),
        confirm_after: default_confirm_after(),
        min_age: min_age.clone(),
        max_releases: usize::MAX,
        tunnel_addresses: false,
        other_handles: false,
        backup_dir: None,
    };
    let findings = action.scan(cluster, &resources).await?;
    Ok(Some((resources, findings)))
}

/// The validated action.
#[derive(Debug)]
pub struct CalicoIpam {
    cluster: ClusterArgs,
    confirm_after: Duration,
    min_age: Duration,
    max_releases: usize,
    tunnel_addresses: bool,
    other_handles: bool,
    backup_dir: Option<PathBuf>,
}

/// The kinds calico_ipam reads and writes, in the API group found.
#[derive(Debug, Clone)]
pub struct Resources {
    blocks: ApiResource,
    handles: ApiResource,
    pools: ApiResource,
    cluster_information: ApiResource,
}

impl Resources {
    fn in_group(group: &str, version: &str) -> Self {
        let resource = |kind: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
        };
        Self {
            blocks: resource("IPAMBlock", "ipamblocks"),
            handles: resource("IPAMHandle", "ipamhandles"),
            pools: resource("IPPool", "ippools"),
            cluster_information: resource("ClusterInformation", "clusterinformations"),
        }
    }

    /// The group Calico's IPAM lives in: `crd.projectcalico.org/v1` when it serves
    /// ipamblocks, else `projectcalico.org/v3` when that does (v3.32's native CRDs;
    /// libcalico-go/lib/backend/k8s/discovery.go@v3.32.1 `UsingV3CRDs`).
    pub async fn discover(cluster: &Cluster) -> Result<Self> {
        for (group, version) in [("crd.projectcalico.org", "v1"), ("projectcalico.org", "v3")] {
            let api_version = format!("{group}/{version}");
            match cluster.client.list_api_group_resources(&api_version).await {
                Ok(list) if list.resources.iter().any(|r| r.name == "ipamblocks") => {
                    return Ok(Self::in_group(group, version));
                }
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => return Err(cluster.error("discover", api_version)(err)),
            }
        }
        Err(Error::CannotPlan {
            action: CalicoIpam::NAME,
            problem: "neither crd.projectcalico.org/v1 nor projectcalico.org/v3 serves ipamblocks"
                .into(),
            hint: "is Calico installed with the Kubernetes datastore (CALICO_DATASTORE_TYPE=\
                   kubernetes)? With etcd as its datastore, use calicoctl"
                .into(),
        })
    }

    /// `crd.projectcalico.org/v1`.
    #[must_use]
    pub fn api_version(&self) -> &str {
        &self.blocks.api_version
    }
}

/// What the plan decided.
#[derive(Debug, Default)]
pub struct Plan {
    resources: Option<Resources>,
    /// Block name → the leaks confirmed in it.
    blocks: BTreeMap<String, Vec<Leak>>,
    orphans: Vec<Orphan>,
}

impl Action for CalicoIpam {
    const NAME: &'static str = "calico_ipam";
    const ABOUT: &'static str =
        "Release leaked Calico IP addresses and orphaned IPAM handles, on evidence from two scans";
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        options.confirm_after.require_positive("confirm_after")?;
        Ok(Self {
            cluster: options.cluster,
            confirm_after: options.confirm_after,
            min_age: options.min_age,
            max_releases: usize::try_from(options.max_releases).unwrap_or(usize::MAX),
            tunnel_addresses: options.tunnel_addresses,
            other_handles: options.other_handles,
            backup_dir: super::backup_dir(options.backup_dir)?,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let cluster = &cx.cluster;
        let resources = Resources::discover(cluster).await?;
        resources
            .api_version()
            .clone_into(&mut out.report.api_group);
        out.report.calico_version = calico_version(cluster, &resources).await?;
        cx.progress(Self::NAME, "first scan");
        let first = self.scan(cluster, &resources).await?;
        let mut findings = first.clone();
        let candidates = first.leaked.len() + first.orphaned.len();
        let mut unconfirmed = Vec::new();
        if candidates > 0 {
            if let Some(deadline) = cx.deadline
                && std::time::Instant::now() + self.confirm_after.std() >= deadline
            {
                return Err(Error::CannotPlan {
                    action: Self::NAME,
                    problem: format!(
                        "{candidates} candidate(s) found, but the run's timeout ends before \
                         confirm_after ({}) has passed for the second scan",
                        self.confirm_after
                    ),
                    hint: "raise timeout above confirm_after plus a few minutes".into(),
                });
            }
            cx.progress(
                Self::NAME,
                &format!(
                    "{candidates} candidate(s); second scan in {} to confirm them",
                    self.confirm_after
                ),
            );
            tokio::time::sleep(self.confirm_after.std()).await;
            findings = self.scan(cluster, &resources).await?;
            unconfirmed = confirm(&first, &mut findings);
            for note in self.recheck_pods(cluster, &mut findings).await? {
                unconfirmed.push(note);
            }
        }
        let mut plan = Plan {
            resources: Some(resources),
            ..Plan::default()
        };
        for leak in &findings.leaked {
            plan.blocks
                .entry(leak.block.clone())
                .or_default()
                .push(leak.clone());
        }
        plan.orphans.clone_from(&findings.orphaned);
        let releases = findings.leaked.len() + findings.orphaned.len();
        out.report.counts = Counts {
            blocks: findings.blocks,
            handles: findings.handles,
            allocations: findings.allocations,
            leaked: findings.leaked.len(),
            orphaned: findings.orphaned.len(),
            unconfirmed: unconfirmed.len(),
            ..Counts::default()
        };
        out.report.unconfirmed = capped(unconfirmed);
        out.report.findings = capped_findings(findings);
        out.msg = format!(
            "{} leaked address(es) and {} orphaned handle(s) confirmed",
            out.report.counts.leaked, out.report.counts.orphaned
        );
        if releases > self.max_releases {
            return Err(Error::CannotPlan {
                action: Self::NAME,
                problem: format!(
                    "{releases} release(s) qualify ({} address(es), {} handle(s)), more than \
                     max_releases ({}): nothing was released",
                    out.report.counts.leaked, out.report.counts.orphaned, self.max_releases
                ),
                hint: "review them (check mode lists them), then raise max_releases".into(),
            });
        }
        Ok(plan)
    }

    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        let Some(resources) = plan.resources else {
            return Ok(());
        };
        let blocks: Api<DynamicObject> =
            Api::all_with(cx.cluster.client.clone(), &resources.blocks);
        let handles: Api<DynamicObject> =
            Api::all_with(cx.cluster.client.clone(), &resources.handles);
        let total = plan.blocks.len();
        for (done, (name, leaks)) in plan.blocks.iter().enumerate() {
            cx.progress(
                Self::NAME,
                &format!(
                    "block {name} ({}/{total}): releasing {}",
                    done + 1,
                    leaks.len()
                ),
            );
            let freed = self.release_in_block(cx, &blocks, name, leaks, out).await?;
            // Then each handle, as libcalico-go does after the block.
            let mut per_handle: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
            for leak in &freed {
                let entry = per_handle
                    .entry(leak.handle.as_str())
                    .or_insert((0, leak.block_cidr.as_str()));
                entry.0 += 1;
            }
            for (handle, (count, cidr)) in per_handle {
                self.decrement_handle(cx, &handles, handle, cidr, count, out)
                    .await?;
            }
        }
        for orphan in &plan.orphans {
            self.delete_orphan(cx, &handles, orphan, out).await?;
        }
        out.report.counts.released = out.report.released.len();
        out.report.counts.deleted_handles = out.report.deleted_handles.len();
        out.changed = !out.report.written.is_empty();
        let verb = if cx.check_mode {
            "would release"
        } else {
            "released"
        };
        out.msg = format!(
            "{verb} {} address(es) and delete {} orphaned handle(s)",
            out.report.counts.released, out.report.counts.deleted_handles
        );
        if !cx.check_mode {
            out.msg = out.msg.replacen("and delete", "and deleted", 1);
        }
        Ok(())
    }

    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        if out.report.written.is_empty() {
            return Ok(());
        }
        let resources = Resources::discover(&cx.cluster).await?;
        let inputs = self.read(&cx.cluster, &resources).await?;
        let mut problems = Vec::new();
        let allocated: BTreeMap<IpAddr, Option<String>> = inputs
            .blocks
            .iter()
            .flat_map(|b| b.allocated().map(|a| (a.ip, a.handle)))
            .collect();
        for released in &out.report.released {
            let ip: Option<IpAddr> = released.ip.parse().ok();
            if ip.and_then(|ip| allocated.get(&ip)) == Some(&Some(released.handle.clone())) {
                problems.push(format!(
                    "{} is still allocated under {}",
                    released.ip, released.handle
                ));
            }
        }
        for handle in &out.report.deleted_handles {
            if let Some(h) = inputs.handles.get(handle)
                && out
                    .report
                    .written
                    .iter()
                    .any(|w| w.uid == h.uid && w.verb == "deleted")
            {
                problems.push(format!("handle {handle} is still there"));
            }
        }
        let released: BTreeSet<&str> = out.report.released.iter().map(|r| r.ip.as_str()).collect();
        let findings = scan::classify(&inputs, self.rules());
        for note in &findings.in_use_not_allocated {
            if released.contains(note.object.as_str()) {
                problems.push(format!("{}: {}", note.object, note.reason));
            }
        }
        out.report.verified = Some(problems.is_empty());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::NotVerified {
                what: problems.join("; "),
                hint: "another writer changed Calico's IPAM meanwhile; run calico_ipam in check \
                       mode to see the state now"
                    .into(),
            })
        }
    }
}

impl CalicoIpam {
    fn rules(&self) -> Rules {
        Rules {
            now: k8s_openapi::jiff::Timestamp::now().as_second(),
            min_age: self.min_age.seconds(),
            tunnel_addresses: self.tunnel_addresses,
            other_handles: self.other_handles,
        }
    }

    async fn scan(&self, cluster: &Cluster, resources: &Resources) -> Result<Findings> {
        let inputs = self.read(cluster, resources).await?;
        Ok(scan::classify(&inputs, self.rules()))
    }

    /// Reads every object a scan judges, page by page, keeping only what it needs of each.
    async fn read(&self, cluster: &Cluster, resources: &Resources) -> Result<Inputs> {
        let mut inputs = Inputs::default();
        let client = &cluster.client;
        let blocks: Api<DynamicObject> = Api::all_with(client.clone(), &resources.blocks);
        list_pages(cluster, &blocks, "ipamblocks", &mut |object| {
            let value = serde_json::to_value(object).unwrap_or_default();
            let name = value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            match Block::from_object(value) {
                Ok(block) => inputs.blocks.push(block),
                Err(why) => inputs.invalid_blocks.push((name, why)),
            }
        })
        .await?;
        let handles: Api<DynamicObject> = Api::all_with(client.clone(), &resources.handles);
        list_pages(cluster, &handles, "ipamhandles", &mut |object| {
            let handle = Handle::from_object(serde_json::to_value(object).unwrap_or_default());
            inputs.handles.insert(handle.handle_id.clone(), handle);
        })
        .await?;
        let pools: Api<DynamicObject> = Api::all_with(client.clone(), &resources.pools);
        list_pages(cluster, &pools, "ippools", &mut |object| {
            let spec = &object.data["spec"];
            if let Some(cidr) = spec["cidr"].as_str().and_then(block::Cidr::parse) {
                inputs.pools.push(Pool {
                    name: object.metadata.name.clone().unwrap_or_default(),
                    cidr,
                    disabled: spec["disabled"].as_bool().unwrap_or(false),
                });
            }
        })
        .await?;
        // Nodes, Services and Pods as untyped objects too: one list path for every kind keeps
        // the static binary small, and a scan needs only a few fields of each.
        let core = |kind: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural)
        };
        let nodes: Api<DynamicObject> = Api::all_with(client.clone(), &core("Node", "nodes"));
        list_pages(cluster, &nodes, "nodes", &mut |node| {
            let annotations = &node.metadata.annotations;
            let ips = scan::TUNNEL_ANNOTATIONS
                .iter()
                .filter_map(|a| annotations.as_ref()?.get(*a))
                .filter_map(|v| parse_ip(v))
                .collect();
            inputs
                .nodes
                .insert(node.metadata.name.clone().unwrap_or_default(), ips);
        })
        .await?;
        let services: Api<DynamicObject> =
            Api::all_with(client.clone(), &core("Service", "services"));
        list_pages(cluster, &services, "services", &mut |service| {
            let ingress = &service.data["status"]["loadBalancer"]["ingress"];
            for entry in ingress.as_array().into_iter().flatten() {
                if let Some(ip) = entry["ip"].as_str().and_then(parse_ip) {
                    inputs.load_balancer_ips.insert(ip);
                }
            }
        })
        .await?;
        let pods: Api<DynamicObject> = Api::all_with(client.clone(), &core("Pod", "pods"));
        list_pages(cluster, &pods, "pods", &mut |pod| {
            inputs.pods.push(pod_view(&pod));
        })
        .await?;
        Ok(inputs)
    }

    /// A direct GET of each confirmed leak's pod, just before the write: one that exists and
    /// has not finished takes the leak out of the plan.
    async fn recheck_pods(&self, cluster: &Cluster, findings: &mut Findings) -> Result<Vec<Note>> {
        let mut notes = Vec::new();
        let mut kept = Vec::new();
        for leak in std::mem::take(&mut findings.leaked) {
            let Some((namespace, name)) = leak.pod.as_deref().and_then(|p| p.split_once('/'))
            else {
                kept.push(leak);
                continue;
            };
            let api: Api<DynamicObject> = Api::namespaced_with(
                cluster.client.clone(),
                namespace,
                &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Pod"), "pods"),
            );
            let pod = api
                .get_opt(name)
                .await
                .map_err(cluster.error("get", format!("pod {namespace}/{name}")))?;
            match pod.map(|p| pod_view(&p)) {
                Some(view) if !view.finished => notes.push(Note {
                    object: format!("{} in block {}", leak.ip, leak.block),
                    reason: format!("its pod {namespace}/{name} exists again: left alone"),
                }),
                _ => kept.push(leak),
            }
        }
        findings.leaked = kept;
        Ok(notes)
    }

    /// Frees `leaks` in one block with a compare-and-swap; re-reads and re-plans on conflict.
    /// Returns the leaks freed.
    async fn release_in_block(
        &self,
        cx: &Context,
        api: &Api<DynamicObject>,
        name: &str,
        leaks: &[Leak],
        out: &mut Outcome<Report>,
    ) -> Result<Vec<Leak>> {
        let label = format!("ipamblock {name}");
        for _ in 0..CONFLICT_RETRIES {
            let Some(object) = api
                .get_opt(name)
                .await
                .map_err(cx.cluster.error("get", label.clone()))?
            else {
                out.warn(format!(
                    "{label} is gone; its {} leak(s) left as they are",
                    leaks.len()
                ));
                return Ok(Vec::new());
            };
            let block = Block::from_object(serde_json::to_value(&object).unwrap_or_default())
                .map_err(|why| Error::CannotPlan {
                    action: Self::NAME,
                    problem: format!("{label} is not valid now: {why}"),
                    hint: "leave it to Calico; run calico_ipam in check mode to see it".into(),
                })?;
            let (still, changed): (Vec<&Leak>, Vec<&Leak>) = leaks.iter().partition(|leak| {
                block.allocated().any(|a| {
                    a.ordinal == leak.ordinal
                        && a.handle.as_deref() == Some(leak.handle.as_str())
                        && a.sequence == leak.sequence
                })
            });
            for leak in changed {
                out.warn(format!(
                    "{} in {label} changed since it was confirmed (freed or allocated again); \
                     left alone",
                    leak.ip
                ));
            }
            if still.is_empty() {
                return Ok(Vec::new());
            }
            let releases: Vec<Release> = still
                .iter()
                .map(|l| Release {
                    ordinal: l.ordinal,
                    handle: l.handle.clone(),
                    sequence: l.sequence,
                })
                .collect();
            let after = block.release(&releases).map_err(|why| Error::CannotPlan {
                action: Self::NAME,
                problem: format!("{label}: {why}"),
                hint: "run calico_ipam again: the next plan starts from the block as it is now"
                    .into(),
            })?;
            let record = self.before_write(cx, "IPAMBlock", &block.object, "updated")?;
            let Some(_) = compare_and_swap(cx, api, name, &label, &after, out).await? else {
                cx.progress(
                    Self::NAME,
                    &format!("{label} changed meanwhile; reading it again"),
                );
                continue;
            };
            out.diff.push(Diff::of(
                &label,
                Some(&block.object["spec"]),
                Some(&after["spec"]),
            ));
            out.report.written.push(record);
            let freed: Vec<Leak> = still.into_iter().cloned().collect();
            for leak in &freed {
                out.report.released.push(Released {
                    ip: leak.ip.clone(),
                    block: leak.block.clone(),
                    handle: leak.handle.clone(),
                    reason: leak.reason.clone(),
                });
            }
            out.changed = true;
            return Ok(freed);
        }
        Err(Error::ConflictRetriesExhausted {
            object: label,
            attempts: CONFLICT_RETRIES,
        })
    }

    /// libcalico-go's `decrementHandle`: the handle's count in the block lowered, or the
    /// handle marked deleted and deleted when it holds nothing more.
    async fn decrement_handle(
        &self,
        cx: &Context,
        api: &Api<DynamicObject>,
        handle_id: &str,
        cidr: &str,
        count: i64,
        out: &mut Outcome<Report>,
    ) -> Result<()> {
        let name = handle_id.to_lowercase();
        let label = format!("ipamhandle {name}");
        for _ in 0..CONFLICT_RETRIES {
            let Some(object) = api
                .get_opt(&name)
                .await
                .map_err(cx.cluster.error("get", label.clone()))?
            else {
                out.warn(format!("{label} does not exist: nothing to decrement"));
                return Ok(());
            };
            let handle = Handle::from_object(serde_json::to_value(&object).unwrap_or_default());
            let (after, empty) = match handle.decrement(cidr, count) {
                Ok(decremented) => decremented,
                Err(why) => {
                    // libcalico-go only logs a failed decrement: the address is free already.
                    out.warn(format!("{label}: {why}; left as it is"));
                    return Ok(());
                }
            };
            let done = if empty {
                self.delete_handle(cx, api, &handle, &after, out).await?
            } else {
                self.update_handle(cx, api, &handle, &after, out).await?
            };
            if done {
                return Ok(());
            }
        }
        Err(Error::ConflictRetriesExhausted {
            object: label,
            attempts: CONFLICT_RETRIES,
        })
    }

    /// Deletes a confirmed orphaned handle, if it is still the one confirmed.
    async fn delete_orphan(
        &self,
        cx: &Context,
        api: &Api<DynamicObject>,
        orphan: &Orphan,
        out: &mut Outcome<Report>,
    ) -> Result<()> {
        let label = format!("ipamhandle {}", orphan.name);
        let object = api
            .get_opt(&orphan.name)
            .await
            .map_err(cx.cluster.error("get", label.clone()))?;
        let Some(object) = object else {
            out.warn(format!("{label} is gone already"));
            return Ok(());
        };
        let handle = Handle::from_object(serde_json::to_value(&object).unwrap_or_default());
        if handle.uid != orphan.uid || handle.resource_version != orphan.resource_version {
            out.warn(format!(
                "{label} changed since it was confirmed orphaned (an allocation in progress?); \
                 left alone"
            ));
            return Ok(());
        }
        if !self
            .delete_handle(cx, api, &handle, &handle.object, out)
            .await?
        {
            out.warn(format!("{label} changed while being deleted; left alone"));
        }
        Ok(())
    }

    /// Updates a handle with its resourceVersion; `false` on a conflict.
    async fn update_handle(
        &self,
        cx: &Context,
        api: &Api<DynamicObject>,
        handle: &Handle,
        after: &Value,
        out: &mut Outcome<Report>,
    ) -> Result<bool> {
        let label = format!("ipamhandle {}", handle.name);
        let record = self.before_write(cx, "IPAMHandle", &handle.object, "updated")?;
        if compare_and_swap(cx, api, &handle.name, &label, after, out)
            .await?
            .is_none()
        {
            return Ok(false);
        }
        out.diff.push(Diff::of(
            &label,
            Some(&handle.object["spec"]),
            Some(&after["spec"]),
        ));
        out.report.written.push(record);
        out.changed = true;
        Ok(true)
    }

    /// `DeleteKVP`: marks the handle deleted with an update (its resourceVersion), then
    /// deletes it with UID and resourceVersion preconditions; `false` on a conflict.
    async fn delete_handle(
        &self,
        cx: &Context,
        api: &Api<DynamicObject>,
        handle: &Handle,
        after: &Value,
        out: &mut Outcome<Report>,
    ) -> Result<bool> {
        let label = format!("ipamhandle {}", handle.name);
        let record = self.before_write(cx, "IPAMHandle", &handle.object, "deleted")?;
        let marked = Handle::marked_deleted(after);
        let Some(updated) = compare_and_swap(cx, api, &handle.name, &label, &marked, out).await?
        else {
            return Ok(false);
        };
        // A dry run changes nothing: the delete's precondition is the version read.
        let resource_version = if cx.check_mode {
            Some(handle.resource_version.clone())
        } else {
            updated
        };
        let params = DeleteParams {
            dry_run: cx.check_mode,
            preconditions: Some(Preconditions {
                uid: Some(handle.uid.clone()),
                resource_version,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&handle.name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(kube::Error::Api(status)) if status.code == 409 => return Ok(false),
            Err(err) if cx.check_mode => {
                out.warn(dry_run_refused(
                    "delete",
                    &cx.cluster.error("delete", label.clone())(err),
                ));
            }
            Err(err) => return Err(cx.cluster.error("delete", label)(err)),
        }
        out.diff
            .push(Diff::of(&label, Some(&handle.object), None::<&Value>));
        out.report.deleted_handles.push(handle.handle_id.clone());
        out.report.written.push(record);
        out.changed = true;
        Ok(true)
    }

    /// What is about to be written, whole as it is now: the record returned in `written`,
    /// with its backup file written first (real runs with backup_dir).
    fn before_write(
        &self,
        cx: &Context,
        kind: &str,
        object: &Value,
        verb: &str,
    ) -> Result<Written> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
        let backup_file = match (&self.backup_dir, cx.check_mode) {
            (Some(dir), false) => {
                let of = BackupOf {
                    kind: &kind.to_ascii_lowercase(),
                    namespace: None,
                    name,
                    uid,
                    verb,
                };
                Some(backup(dir, of, object)?.display().to_string())
            }
            _ => None,
        };
        Ok(Written {
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            verb: verb.to_owned(),
            backup_file,
            object: object.clone(),
        })
    }
}

/// Replaces `name` with `object`, whose resourceVersion is the compare-and-swap's
/// precondition (a server-side dry run in check mode). `Ok(None)` on a conflict (409), else the
/// new resourceVersion (in check mode, a refused dry run is a warning).
async fn compare_and_swap(
    cx: &Context,
    api: &Api<DynamicObject>,
    name: &str,
    label: &str,
    object: &Value,
    out: &mut Outcome<Report>,
) -> Result<Option<Option<String>>> {
    let update: DynamicObject =
        serde_json::from_value(object.clone()).map_err(|e| Error::Internal {
            message: format!("{label} as changed does not read back: {e}"),
        })?;
    let params = PostParams {
        dry_run: cx.check_mode,
        field_manager: None,
    };
    match api.replace(name, &params, &update).await {
        Ok(written) => Ok(Some(written.metadata.resource_version)),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(err) if cx.check_mode => {
            let err = cx.cluster.error("update", label.to_owned())(err);
            out.warn(dry_run_refused("update", &err));
            Ok(Some(None))
        }
        Err(err) => Err(cx.cluster.error("update", label.to_owned())(err)),
    }
}

/// The Calico version ClusterInformation `default` records.
async fn calico_version(cluster: &Cluster, resources: &Resources) -> Result<Option<String>> {
    let api: Api<DynamicObject> =
        Api::all_with(cluster.client.clone(), &resources.cluster_information);
    let found = api
        .get_opt("default")
        .await
        .map_err(cluster.error("get", "clusterinformation default"))?;
    Ok(found.and_then(|o| o.data["spec"]["calicoVersion"].as_str().map(str::to_owned)))
}

/// Keeps only the candidates the second scan found the same as the first; returns the others.
fn confirm(first: &Findings, second: &mut Findings) -> Vec<Note> {
    let mut notes = Vec::new();
    let earlier: BTreeSet<_> = first.leaked.iter().map(Leak::key).collect();
    let (same, new): (Vec<Leak>, Vec<Leak>) = std::mem::take(&mut second.leaked)
        .into_iter()
        .partition(|l| earlier.contains(&l.key()));
    for leak in new {
        notes.push(Note {
            object: format!("{} in block {}", leak.ip, leak.block),
            reason: "leaked in the second scan only: confirmed by the next run".into(),
        });
    }
    let later: BTreeSet<_> = same.iter().map(Leak::key).collect();
    for leak in &first.leaked {
        if !later.contains(&leak.key()) {
            notes.push(Note {
                object: format!("{} in block {}", leak.ip, leak.block),
                reason: "changed between the scans (freed, allocated again, or now in use)".into(),
            });
        }
    }
    second.leaked = same;
    let earlier: BTreeSet<(&str, &str)> = first
        .orphaned
        .iter()
        .map(|o| (o.uid.as_str(), o.resource_version.as_str()))
        .collect();
    let (same, changed): (Vec<Orphan>, Vec<Orphan>) = std::mem::take(&mut second.orphaned)
        .into_iter()
        .partition(|o| earlier.contains(&(o.uid.as_str(), o.resource_version.as_str())));
    for orphan in changed {
        notes.push(Note {
            object: format!("handle {}", orphan.handle),
            reason: "orphaned in the second scan only, or changed between the scans".into(),
        });
    }
    second.orphaned = same;
    notes
}

fn capped<T>(mut items: Vec<T>) -> Vec<T> {
    items.truncate(REPORT_LIMIT);
    items
}

fn capped_findings(mut f: Findings) -> Findings {
    f.leaked.truncate(REPORT_LIMIT);
    f.orphaned.truncate(REPORT_LIMIT);
    f.left_alone.truncate(REPORT_LIMIT);
    f.in_use_not_allocated.truncate(REPORT_LIMIT);
    f.missing_handles.truncate(REPORT_LIMIT);
    f.invalid_blocks.truncate(REPORT_LIMIT);
    f.empty_blocks_of_deleted_nodes.truncate(REPORT_LIMIT);
    f
}

/// Lists `what` page by page, handing each item to `each`.
async fn list_pages(
    cluster: &Cluster,
    api: &Api<DynamicObject>,
    what: &str,
    each: &mut dyn FnMut(DynamicObject),
) -> Result<()> {
    let mut pages = Pages::new(ListParams::default(), what);
    while let Some(params) = pages.next() {
        let list = api
            .list(params)
            .await
            .map_err(cluster.error("list", what.to_owned()))?;
        pages.advance(&list.metadata, list.items.len())?;
        for item in list.items {
            each(item);
        }
    }
    Ok(())
}

/// An address, or the address of a `10.1.2.3/32` CIDR.
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().split('/').next()?.parse().ok()
}

/// What a scan needs of a pod: its addresses as libcalico-go's `getPodIPs` reads them.
fn pod_view(pod: &DynamicObject) -> PodView {
    let status = &pod.data["status"];
    let spec = &pod.data["spec"];
    let mut ips: Vec<IpAddr> = status["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["ip"].as_str().and_then(parse_ip))
        .collect();
    if ips.is_empty() {
        ips.extend(status["podIP"].as_str().and_then(parse_ip));
    }
    if ips.is_empty()
        && let Some(annotations) = pod.metadata.annotations.as_ref()
    {
        let listed = annotations
            .get("cni.projectcalico.org/podIPs")
            .or_else(|| annotations.get("cni.projectcalico.org/podIP"));
        ips.extend(
            listed
                .into_iter()
                .flat_map(|v| v.split(','))
                .filter_map(parse_ip),
        );
    }
    PodView {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: spec["nodeName"].as_str().map(str::to_owned),
        finished: matches!(status["phase"].as_str(), Some("Succeeded" | "Failed")),
        host_network: spec["hostNetwork"].as_bool() == Some(true),
        ips,
    }
}
