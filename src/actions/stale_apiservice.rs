//! stale_apiservice: deletes APIServices (aggregated APIs) whose backend is gone.
//!
//! An aggregated API that is unavailable does more harm than a stale webhook: every discovery
//! client logs errors for its group, and the namespace controller stops deleting namespaces
//! (condition `NamespaceDeletionDiscoveryFailure`), since it cannot list what the namespace
//! might still hold. Works on one APIService by `name`, or on all of them with `detect: true`
//! (minus `exclude`).
//!
//! An APIService is **stale only on evidence**, two of it: the aggregator has it
//! `Available=False` for longer than `min_age` (by the condition's lastTransitionTime), and
//! kubemend's own read of its backend finds it gone: the Service missing, the Service without
//! the port, or no ready endpoint for that port in its EndpointSlices (the evidence
//! stale_webhook judges on, [`crate::k8s::backend`]). A local APIService (no Service: served by
//! the API server itself) is never judged. A backend that is there but failing (ready
//! endpoints, or an ExternalName Service, and the aggregator's discovery check failing: TLS
//! errors, 401 or 403, timeouts) is reported with the aggregator's message and never deleted:
//! it points at certificates or at the backend itself, which deleting the registration would
//! not fix.
//!
//! What the aggregator writes (kube-aggregator, `pkg/controllers/status/remote/
//! remote_available_controller.go`): `ServiceNotFound` ("service/x in "ns" is not present"),
//! `ServicePortError` ("... is not listening on port N", ClusterIP Services only),
//! `EndpointsNotFound` (no EndpointSlice), `MissingEndpoints` ("endpointslices for service/x
//! in "ns" have no addresses with port name "p""), `FailedDiscoveryCheck` (its GET of
//! `/apis/<group>/<version>`, without verifying the serving certificate, got no answer or one
//! outside 200-299: "failing or missing response from URL: bad status from URL: 401"), and
//! `Passed` when Available.
//!
//! # Idempotency
//! A deleted APIService is gone, so a second run finds nothing and reports `changed: false`.
//!
//! # Safety
//! The delete carries a UID precondition, so an APIService re-created under the same name in
//! the meantime is never hit. Nothing is lost: the full object is returned in
//! `deleted[].object`, and with `backup_dir` written (before the delete) to a YAML file that
//! `kubectl apply -f` restores.
//!
//! # Check mode
//! Same evaluation; the delete is sent as a server-side dry run (nothing removed) and no backup
//! file is written.
//!
//! # Errors
//! Invalid names, `name` together with `detect`, or neither, fail before any API call. A failed
//! read or delete names the object; a backup that cannot be written stops before deleting.

use std::path::{Path, PathBuf};

use clap::Args;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::selection::Selection;
use super::{Action, Context};
use crate::client::{Cluster, ClusterArgs};
use crate::error::{Error, Result};
use crate::k8s::backend::{Backend, Backends, ServiceRef};
use crate::k8s::delete::{BackupOf, DeleteOptions, backup, delete_uid};
use crate::k8s::duration::{Duration, format_duration, seconds_since};
use crate::k8s::objects::{ApiService, Whole};
use crate::k8s::ownership::{self, Change, Ownership};
use crate::outcome::{Diff, Outcome};

/// Delete APIServices (aggregated APIs) whose backend is gone, on evidence only, with a UID
/// precondition and a restorable backup.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// Name of the APIService to check, e.g. v1beta1.metrics.k8s.io. Mutually exclusive with
    /// detect.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub name: Option<String>,

    /// Scan every APIService instead of one name.
    #[arg(long)]
    #[serde(default)]
    pub detect: bool,

    /// With detect: names of APIServices to leave alone.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(default)]
    pub exclude: Vec<String>,

    /// How long an APIService must have been Available=False (by the condition's
    /// lastTransitionTime) before it can be judged stale, e.g. 10m: a backend being rolled out
    /// or restarted is unavailable for a moment.
    #[arg(long, value_name = "DURATION")]
    #[serde(default = "default_min_age")]
    pub min_age: Duration,

    /// Directory for a YAML backup of each deleted APIService (created if missing), written
    /// before the delete; restore with `kubectl apply -f FILE`.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub backup_dir: Option<String>,
}

/// stale_apiservice's default min_age.
#[must_use]
pub fn default_min_age() -> Duration {
    Duration::from_secs(600)
}

/// What a failing backend points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// TLS errors, or 401/403: the backend does not accept the aggregator's front-proxy client
    /// certificate, or its serving certificate is wrong.
    Certificates,
    /// Anything else: the backend answers badly or not at all.
    Backend,
}

impl Cause {
    /// What the aggregator's message points at.
    #[must_use]
    pub fn of(message: &str) -> Self {
        let lower = message.to_ascii_lowercase();
        // The discovery check's "bad status from URL: 401" (remote_available_controller.go),
        // or a handshake error from Go's crypto/tls ("tls: ...") or x509 ("x509: ...").
        let refused = [": 401", ": 403"]
            .iter()
            .any(|s| lower.trim_end().ends_with(s));
        if refused || lower.contains("tls:") || lower.contains("x509:") {
            Self::Certificates
        } else {
            Self::Backend
        }
    }

    /// What to do, for people.
    #[must_use]
    pub fn hint(self) -> &'static str {
        match self {
            Self::Certificates => {
                "the backend answers but refuses the aggregator or fails TLS: check the \
                 certificates, the aggregator's front-proxy client certificate \
                 (--proxy-client-cert-file; microk8s: certs/front-proxy-client.crt) against \
                 the client CA the backend trusts (requestheader-client-ca-file in ConfigMap \
                 kube-system/extension-apiserver-authentication), and the backend's serving \
                 certificate against the APIService's caBundle; deleting the APIService would \
                 not fix it"
            }
            Self::Backend => {
                "the backend has ready endpoints but fails the aggregator's discovery check: \
                 look at the backend itself (its logs, its readiness); deleting the APIService \
                 would not fix it"
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Certificates => "certificates",
            Self::Backend => "backend",
        }
    }
}

/// The judgement on one APIService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Unavailable past min_age and its backend is gone: the evidence.
    Stale(String),
    /// Unavailable with its backend there: the evidence and what it points at.
    Failing(String, Cause),
    /// Unavailable with its backend gone, for less than min_age.
    Recent(String),
    /// Available (or not judged unavailable by the aggregator).
    Available(String),
    /// Served by the API server itself.
    Local,
    /// The aggregator and kubemend's read disagree, or the aggregator has not judged it.
    Unjudged(String),
}

impl Verdict {
    /// The name in results.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Stale(_) => "stale",
            Self::Failing(..) => "failing",
            Self::Recent(_) => "recently unavailable",
            Self::Available(_) => "available",
            Self::Local => "local",
            Self::Unjudged(_) => "not judged",
        }
    }

    fn evidence(&self) -> String {
        match self {
            Self::Stale(e)
            | Self::Failing(e, _)
            | Self::Recent(e)
            | Self::Available(e)
            | Self::Unjudged(e) => e.clone(),
            Self::Local => "served by the API server itself (no service)".into(),
        }
    }
}

/// The Available condition as the aggregator wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// `True`, `False` or `Unknown` (`Unknown` also when there is no condition yet).
    pub status: String,
    /// Its reason, e.g. `MissingEndpoints`.
    pub reason: String,
    /// Its message.
    pub message: String,
    /// Seconds since its last transition (None: no time).
    pub for_seconds: Option<i64>,
}

impl Availability {
    /// The Available condition of `api`, its age measured at `now`.
    #[must_use]
    pub fn of(api: &ApiService, now: Timestamp) -> Self {
        let condition = api
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Available"));
        condition.map_or_else(
            || Self {
                status: "Unknown".into(),
                ..Self::default()
            },
            |c| Self {
                status: c.status.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
                for_seconds: c
                    .last_transition_time
                    .as_ref()
                    .map(|t| seconds_since(t.0, now)),
            },
        )
    }

    fn words(&self) -> String {
        let since = self
            .for_seconds
            .map(|s| format!(" for {}", format_duration(s)))
            .unwrap_or_default();
        format!(
            "Available={}{since} ({}: {})",
            self.status, self.reason, self.message
        )
    }
}

/// Judges one APIService from its Available condition and its backend (`None` for a local
/// one), with `min_age` in seconds.
#[must_use]
pub fn judge(
    availability: &Availability,
    backend: Option<(&ServiceRef, &Backend)>,
    min_age: i64,
) -> Verdict {
    let Some((reference, backend)) = backend else {
        return Verdict::Local;
    };
    let read = backend.describe(reference);
    let said = availability.words();
    if availability.status != "False" {
        return if availability.status == "True" {
            Verdict::Available(format!("{said}; {read}"))
        } else {
            Verdict::Unjudged(format!("the aggregator has not judged it: {said}; {read}"))
        };
    }
    if backend.gone() {
        let evidence = format!("{said}; {read}");
        // No transition time: the aggregator always writes one; without it, no age evidence.
        match availability.for_seconds {
            Some(age) if age >= min_age => Verdict::Stale(evidence),
            Some(_) => Verdict::Recent(evidence),
            None => Verdict::Unjudged(format!("{evidence}; the condition has no time")),
        }
    } else {
        let cause = Cause::of(&availability.message);
        Verdict::Failing(format!("{said}; but {read}"), cause)
    }
}

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Report {
    /// The APIServices deleted (in check mode, that would be deleted), each whole, so that it
    /// can be restored.
    ///
    /// Empty when nothing was deleted. On a failure, those deleted before it.
    pub deleted: Vec<Deleted>,
    /// Every APIService considered, with the aggregator's Available condition, kubemend's read
    /// of its backend, the verdict and what was done.
    pub apiservices: Vec<ApiServiceReport>,
    /// Whether every deleted APIService was gone (or replaced by a new UID) afterwards.
    ///
    /// V(null) in check mode and when nothing was deleted.
    #[schemars(extend("x-sample" = true))]
    pub verified: Option<bool>,
}

/// A deleted APIService.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deleted {
    /// Name of the APIService.
    #[schemars(extend("x-sample" = "v1beta1.metrics.k8s.io"))]
    pub name: String,
    /// UID of the APIService; the delete was made on the condition that it still matched.
    pub uid: String,
    /// The backup written before the delete; restore it with C(kubectl apply -f).
    ///
    /// V(null) without O(backup_dir) and in check mode.
    pub backup_file: Option<String>,
    /// Who manages it (Argo CD, Flux, Helm, C(kubectl apply)) and whether that brings it back.
    pub ownership: Ownership,
    /// The APIService as it was read, complete.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub object: Value,
}

/// One APIService considered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct ApiServiceReport {
    /// Name of the APIService, C(<version>.<group>).
    #[schemars(extend("x-sample" = "v1beta1.metrics.k8s.io"))]
    pub name: String,
    /// UID of the APIService.
    pub uid: String,
    /// The API group and version it serves, C(group/version).
    #[schemars(extend("x-sample" = "metrics.k8s.io/v1beta1"))]
    pub group_version: String,
    /// The Service behind it, C(namespace/name:port).
    ///
    /// V(null) for a local APIService.
    #[schemars(extend("x-sample" = "kube-system/metrics-server:443"))]
    pub service: Option<String>,
    /// The Available condition's status: C(True), C(False) or C(Unknown).
    pub available: String,
    /// The Available condition's reason, e.g. C(MissingEndpoints), C(FailedDiscoveryCheck).
    pub reason: String,
    /// The Available condition's message, as the aggregator wrote it.
    pub message: String,
    /// Seconds since the Available condition last changed.
    ///
    /// V(null) when it has no time.
    pub for_seconds: Option<i64>,
    /// C(stale), C(failing), C(recently unavailable), C(available), C(local) or C(not judged).
    pub verdict: String,
    /// The evidence for the verdict: the condition and kubemend's read of the backend.
    pub evidence: String,
    /// For a failing backend, what it points at: C(certificates) or C(backend).
    ///
    /// V(null) otherwise.
    pub points_at: Option<String>,
    /// What to do about it, for a failing backend.
    pub hint: String,
    /// What was done: C(deleted), C(would delete), or C(kept) with the reason.
    #[schemars(extend(
        "x-sample" = "kept: the backend is there but failing; deleting would not fix it"
    ))]
    pub action: String,
}

impl ApiServiceReport {
    /// Whether the verdict is stale.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.verdict == Verdict::Stale(String::new()).label()
    }

    /// Whether the aggregator has it unavailable.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        self.available == "False"
    }
}

/// The read-only survey the runbook makes: every APIService judged as `detect` judges it with
/// `min_age`, nothing deleted (the plan on a scratch outcome; `cx` should be in check mode).
pub async fn survey(cx: &Context, min_age: &Duration) -> Result<Report> {
    let action = StaleApiService {
        cluster: ClusterArgs::default(),
        target: Selection::Detect {
            exclude: Vec::new(),
        },
        min_age: min_age.clone(),
        backup_dir: None,
    };
    let mut scratch = Outcome::default();
    action.plan(cx, &mut scratch).await?;
    Ok(scratch.report)
}

/// The validated action.
#[derive(Debug, Clone)]
pub struct StaleApiService {
    cluster: ClusterArgs,
    target: Selection,
    min_age: Duration,
    backup_dir: Option<PathBuf>,
}

/// What the plan found: every APIService in scope, judged.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The APIServices in scope with their verdicts.
    pub judged: Vec<(Whole<ApiService>, Verdict)>,
}

impl Action for StaleApiService {
    const NAME: &'static str = "stale_apiservice";
    const ABOUT: &'static str =
        "Delete APIServices (aggregated APIs) whose backend is gone, on evidence only";
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        let target = Selection::from_options(
            options.name,
            options.detect,
            options.exclude,
            "an APIService",
        )?;
        Ok(Self {
            cluster: options.cluster,
            target,
            min_age: options.min_age,
            backup_dir: super::backup_dir(options.backup_dir)?,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Reads the APIServices in scope and judges each on its condition and its backend.
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let cluster = &cx.cluster;
        let apiservices = self.observe(cluster).await?;
        let mut backends = Backends::new(cluster);
        let now = Timestamp::now();
        let mut plan = Plan::default();
        for api in apiservices {
            let availability = Availability::of(&api, now);
            let reference = api.spec.service.as_ref().map(|s| ServiceRef {
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                port: s.port.unwrap_or(443),
            });
            let verdict = match &reference {
                Some(reference) => {
                    let backend = backends.read(reference).await?;
                    judge(
                        &availability,
                        Some((reference, &backend)),
                        self.min_age.seconds(),
                    )
                }
                None => judge(&availability, None, self.min_age.seconds()),
            };
            let action = match &verdict {
                Verdict::Stale(_) if cx.check_mode => "would delete".to_owned(),
                Verdict::Stale(_) => "deleted".to_owned(),
                Verdict::Failing(..) => {
                    "kept: the backend is there but failing; deleting would not fix it".to_owned()
                }
                Verdict::Recent(_) => {
                    format!("kept: unavailable for less than min_age ({})", self.min_age)
                }
                Verdict::Available(_) => "kept: available".to_owned(),
                Verdict::Local => "kept: local, never judged".to_owned(),
                Verdict::Unjudged(_) => "kept: no evidence".to_owned(),
            };
            out.report.apiservices.push(ApiServiceReport {
                name: api.metadata.name.clone().unwrap_or_default(),
                uid: api.metadata.uid.clone().unwrap_or_default(),
                group_version: format!("{}/{}", api.spec.group, api.spec.version),
                service: reference
                    .as_ref()
                    .map(|r| format!("{}/{}:{}", r.namespace, r.name, r.port)),
                available: availability.status.clone(),
                reason: availability.reason.clone(),
                message: availability.message.clone(),
                for_seconds: availability.for_seconds,
                verdict: verdict.label().into(),
                evidence: verdict.evidence(),
                points_at: match &verdict {
                    Verdict::Failing(_, cause) => Some(cause.name().into()),
                    _ => None,
                },
                hint: match &verdict {
                    Verdict::Failing(_, cause) => cause.hint().into(),
                    _ => String::new(),
                },
                action,
            });
            plan.judged.push((api, verdict));
        }
        out.msg = self.message(plan.judged.len(), &[], cx.check_mode);
        Ok(plan)
    }

    /// Backs up and deletes each stale APIService (dry runs in check mode), recording each
    /// delete as it is made.
    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        for (api, verdict) in &plan.judged {
            if !matches!(verdict, Verdict::Stale(_)) {
                continue;
            }
            let Some(deleted) = self.delete(cx, api, &mut out.warnings).await? else {
                let uid = api.metadata.uid.as_deref().unwrap_or_default();
                if let Some(entry) = out.report.apiservices.iter_mut().find(|a| a.uid == uid) {
                    "gone or replaced meanwhile; left alone".clone_into(&mut entry.action);
                }
                continue;
            };
            out.changed = true;
            out.diff.push(Diff::of(
                &format!("apiservice/{}", deleted.name),
                Some(&deleted.object),
                None,
            ));
            out.report.deleted.push(deleted);
        }
        out.msg = self.message(plan.judged.len(), &out.report.deleted, cx.check_mode);
        Ok(())
    }

    /// Reads each deleted APIService back: gone, or replaced by one with a new UID.
    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        if out.report.deleted.is_empty() {
            return Ok(());
        }
        // The type the plan read with: one instantiation of the API calls in the binary.
        let api: Api<Whole<ApiService>> = Api::all(cx.cluster.client.clone());
        let mut still = Vec::new();
        for deleted in &out.report.deleted {
            let label = format!("apiservice {:?}", deleted.name);
            let found = api
                .get_opt(&deleted.name)
                .await
                .map_err(cx.cluster.error("get", label.clone()))?;
            if found.and_then(|o| o.metadata.uid.clone()).as_deref() == Some(deleted.uid.as_str()) {
                still.push(label);
            }
        }
        out.report.verified = Some(still.is_empty());
        if still.is_empty() {
            Ok(())
        } else {
            Err(Error::NotVerified {
                what: format!("{} still there after the delete", still.join(", ")),
                hint: "a finalizer keeps it; check metadata.finalizers and \
                       metadata.deletionTimestamp"
                    .into(),
            })
        }
    }
}

impl StaleApiService {
    /// Reads the APIServices in scope, whole.
    async fn observe(&self, cluster: &Cluster) -> Result<Vec<Whole<ApiService>>> {
        let api: Api<Whole<ApiService>> = Api::all(cluster.client.clone());
        Ok(match &self.target {
            Selection::Name(name) => api
                .get_opt(name)
                .await
                .map_err(cluster.error("get", format!("apiservice {name:?}")))?
                .into_iter()
                .collect(),
            Selection::Detect { .. } => api
                .list(&ListParams::default())
                .await
                .map_err(cluster.error("list", "apiservices"))?
                .items
                .into_iter()
                .filter(|a| {
                    !self
                        .target
                        .excludes(a.metadata.name.as_deref().unwrap_or(""))
                })
                .collect(),
        })
    }

    /// Backs up and deletes one APIService (dry run in check mode). `None` when it vanished or
    /// was replaced meanwhile.
    async fn delete(
        &self,
        cx: &Context,
        api: &Whole<ApiService>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Deleted>> {
        let name = api.metadata.name.clone().unwrap_or_default();
        let uid = api.metadata.uid.clone().unwrap_or_default();
        let backup_file = match (&self.backup_dir, cx.check_mode) {
            (Some(dir), false) => Some(write_backup(dir, &name, &uid, api.raw())?),
            _ => None,
        };
        let label = format!("apiservice {name:?}");
        let options = DeleteOptions {
            dry_run: cx.check_mode,
            grace_period_seconds: None,
        };
        let client: Api<Whole<ApiService>> = Api::all(cx.cluster.client.clone());
        let deletion = delete_uid(&client, &name, &uid, options, warnings, &cx.cluster, &label)
            .await
            .map_err(cx.cluster.error("delete", label.clone()))?;
        if let Some(warning) = deletion.meanwhile(&label) {
            warnings.push(warning);
            return Ok(None);
        }
        let ownership = ownership::of_json(&label, api.raw(), Change::Delete);
        if ownership.at_risk() {
            warnings.push(ownership.warning());
        }
        Ok(Some(Deleted {
            ownership,
            name,
            uid,
            backup_file: backup_file.map(|p| p.display().to_string()),
            object: api.raw().clone(),
        }))
    }

    fn message(&self, considered: usize, deleted: &[Deleted], check: bool) -> String {
        let names: Vec<String> = deleted
            .iter()
            .map(|d| format!("apiservice {:?}", d.name))
            .collect();
        self.target.message("APIService", considered, &names, check)
    }
}

/// Writes the backup YAML and returns its path.
fn write_backup(dir: &Path, name: &str, uid: &str, object: &Value) -> Result<PathBuf> {
    let mut manifest = object.clone();
    // The aggregator writes the status again; a restored object starts without one.
    if let Some(object) = manifest.as_object_mut() {
        object.remove("status");
    }
    backup(
        dir,
        BackupOf {
            kind: "apiservice",
            namespace: None,
            name,
            uid,
            verb: "deleted",
        },
        &manifest,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(value: Value) -> Result<StaleApiService> {
        StaleApiService::validate(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn an_apiservice_is_named_or_found_by_a_scan_and_min_age_is_ten_minutes() {
        assert!(validate(json!({})).is_err());
        assert!(validate(json!({"name": "v1.x.test", "detect": true})).is_err());
        let bad_age = json!({"detect": true, "min_age": "soon"});
        assert!(serde_json::from_value::<Options>(bad_age).is_err());
        let action = validate(json!({"name": "v1beta1.metrics.k8s.io"})).unwrap();
        assert_eq!(action.min_age.seconds(), 600);
        assert!(validate(json!({"detect": true, "min_age": "1h"})).is_ok());
    }

    fn reference() -> ServiceRef {
        ServiceRef {
            namespace: "kube-system".into(),
            name: "metrics-server".into(),
            port: 443,
        }
    }

    fn unavailable(reason: &str, message: &str, seconds: i64) -> Availability {
        Availability {
            status: "False".into(),
            reason: reason.into(),
            message: message.into(),
            for_seconds: Some(seconds),
        }
    }

    #[test]
    fn unavailable_past_min_age_with_its_backend_gone_is_stale_and_says_both() {
        let missing = unavailable(
            "MissingEndpoints",
            "endpointslices for service/metrics-server in \"kube-system\" have no addresses \
             with port name \"https\"",
            900,
        );
        for backend in [Backend::Missing, Backend::NoPort, Backend::Endpoints(0)] {
            let verdict = judge(&missing, Some((&reference(), &backend)), 600);
            let Verdict::Stale(evidence) = verdict else {
                panic!("{backend:?}: {verdict:?}")
            };
            assert!(evidence.contains("Available=False for 15m"), "{evidence}");
            assert!(evidence.contains("MissingEndpoints"), "{evidence}");
            assert!(
                evidence.contains(&backend.describe(&reference())),
                "{evidence}"
            );
        }
    }

    #[test]
    fn unavailable_for_less_than_min_age_is_only_recent() {
        let verdict = judge(
            &unavailable("ServiceNotFound", "service/x in \"y\" is not present", 30),
            Some((&reference(), &Backend::Missing)),
            600,
        );
        assert!(matches!(verdict, Verdict::Recent(_)), "{verdict:?}");
    }

    #[test]
    fn a_backend_with_ready_endpoints_is_failing_never_stale_and_points_at_the_cause() {
        let discovery = |message: &str| {
            judge(
                &unavailable("FailedDiscoveryCheck", message, 3600),
                Some((&reference(), &Backend::Endpoints(1))),
                600,
            )
        };
        let refused = "failing or missing response from https://10.1.1.5:443/apis/x/v1: bad \
                       status from https://10.1.1.5:443/apis/x/v1: 401";
        assert!(matches!(
            discovery(refused),
            Verdict::Failing(_, Cause::Certificates)
        ));
        let tls = "failing or missing response from https://10.1.1.5:443/apis/x/v1: Get \
                   \"https://10.1.1.5:443/apis/x/v1\": remote error: tls: bad certificate";
        assert!(matches!(
            discovery(tls),
            Verdict::Failing(_, Cause::Certificates)
        ));
        let timeout = "failing or missing response from https://10.1.1.5:443/apis/x/v1: Get \
                       \"https://10.1.1.5:443/apis/x/v1\": context deadline exceeded";
        assert!(matches!(
            discovery(timeout),
            Verdict::Failing(_, Cause::Backend)
        ));
        let external = judge(
            &unavailable("FailedDiscoveryCheck", refused, 3600),
            Some((&reference(), &Backend::ExternalName)),
            600,
        );
        assert!(matches!(external, Verdict::Failing(_, Cause::Certificates)));
    }

    #[test]
    fn local_available_and_unknown_apiservices_are_never_stale() {
        let gone = Backend::Missing;
        assert_eq!(judge(&unavailable("x", "y", 9999), None, 0), Verdict::Local);
        let available = Availability {
            status: "True".into(),
            reason: "Passed".into(),
            message: "all checks passed".into(),
            for_seconds: Some(9999),
        };
        assert!(matches!(
            judge(&available, Some((&reference(), &gone)), 0),
            Verdict::Available(_)
        ));
        let unknown = Availability {
            status: "Unknown".into(),
            ..Availability::default()
        };
        assert!(matches!(
            judge(&unknown, Some((&reference(), &gone)), 0),
            Verdict::Unjudged(_)
        ));
        let timeless = Availability {
            for_seconds: None,
            ..unavailable("MissingEndpoints", "", 0)
        };
        assert!(matches!(
            judge(&timeless, Some((&reference(), &gone)), 0),
            Verdict::Unjudged(_)
        ));
    }

    #[test]
    fn the_available_condition_is_read_with_its_age() {
        let api: ApiService = serde_json::from_value(json!({
            "metadata": {"name": "v1.x.test"},
            "spec": {"group": "x.test", "version": "v1",
                     "service": {"namespace": "ns", "name": "svc", "port": 8443}},
            "status": {"conditions": [{"type": "Available", "status": "False",
                "reason": "ServiceNotFound", "message": "service/svc in \"ns\" is not present",
                "lastTransitionTime": "2026-12-06T10:00:00Z"}]}
        }))
        .unwrap();
        let now: Timestamp = "2026-12-06T10:20:00Z".parse().unwrap();
        let availability = Availability::of(&api, now);
        assert_eq!(availability.status, "False");
        assert_eq!(availability.reason, "ServiceNotFound");
        assert_eq!(availability.for_seconds, Some(1200));
        let bare: ApiService =
            serde_json::from_value(json!({"metadata": {"name": "v1."}})).unwrap();
        assert_eq!(Availability::of(&bare, now).status, "Unknown");
    }

    #[test]
    fn backup_file_is_an_appliable_manifest_without_status() {
        let dir = tempfile::tempdir().unwrap();
        let object = json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1.x.test", "uid": "1234-5678-9", "resourceVersion": "77"},
            "spec": {"group": "x.test", "version": "v1", "groupPriorityMinimum": 100,
                     "versionPriority": 10, "insecureSkipTLSVerify": true,
                     "service": {"namespace": "ns", "name": "svc", "port": 443}},
            "status": {"conditions": [{"type": "Available", "status": "False"}]}
        });
        let path = write_backup(dir.path(), "v1.x.test", "1234-5678-9", &object).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed["kind"], "APIService");
        assert_eq!(parsed["spec"]["groupPriorityMinimum"], 100);
        assert!(parsed.get("status").is_none());
        assert!(parsed["metadata"].get("uid").is_none());
    }
}
