//! stale_webhook: deletes admission webhook configurations whose backend is gone.
//!
//! Works on MutatingWebhookConfigurations and ValidatingWebhookConfigurations, one by `name` or
//! all of them with `detect: true` (minus `exclude`).
//!
//! A webhook is **stale only on evidence**: its Service does not exist, the Service lacks the
//! port the webhook calls, the Service has no ready endpoint in its EndpointSlices for that
//! port, or every certificate in its caBundle has expired. A webhook called by URL is reported
//! but never judged (kubemend cannot see behind a URL); neither is one whose Service is of type
//! ExternalName. A configuration is deleted when every webhook in it is stale; with `force:
//! true`, when at least one is.
//!
//! # Idempotency
//! A deleted configuration is gone, so a second run finds nothing and reports `changed: false`.
//!
//! # Safety
//! The delete carries a UID precondition, so an object re-created under the same name in the
//! meantime is never hit. Nothing is lost: the full object is returned in `deleted[].object`,
//! and with `backup_dir` written (before the delete) to a YAML file that `kubectl apply -f`
//! restores.
//!
//! # Check mode
//! Same evaluation; the delete is sent as a server-side dry run (nothing removed) and no backup
//! file is written.
//!
//! # Errors
//! Invalid names, `name` together with `detect`, or neither, fail before any API call. A failed
//! read or delete names the object; a backup that cannot be written stops before deleting.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
use crate::k8s::ownership::{self, Change, Ownership};
use crate::outcome::{Diff, Outcome};

/// Delete admission webhook configurations (mutating and validating) whose backend is gone, on
/// evidence only, with a UID precondition and a restorable backup.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Args)]
pub struct Options {
    #[serde(flatten)]
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented field by field in ClusterArgs")]
    pub cluster: ClusterArgs,

    /// Name of the webhook configuration to check, e.g.
    /// newrelic-bundle-nri-metadata-injection. Mutually exclusive with detect.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub name: Option<String>,

    /// Scan every webhook configuration of the selected kinds instead of one name.
    #[arg(long)]
    #[serde(default)]
    pub detect: bool,

    /// With detect: names of configurations to leave alone.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(default)]
    pub exclude: Vec<String>,

    /// Which configurations to consider: mutating, validating or both.
    #[arg(long, value_enum, value_name = "KIND")]
    #[serde(default)]
    pub kind: KindFilter,

    /// Also delete a configuration in which only some webhooks are stale (the others are live
    /// or cannot be judged, e.g. URL webhooks). Never deletes one without any stale webhook.
    #[arg(long)]
    #[serde(default)]
    pub force: bool,

    /// Directory for a YAML backup of each deleted configuration (created if missing),
    /// written before the delete; restore with `kubectl apply -f FILE`.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub backup_dir: Option<String>,
}

/// Which webhook configuration kinds to consider.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum KindFilter {
    /// MutatingWebhookConfigurations and ValidatingWebhookConfigurations.
    #[default]
    Both,
    /// MutatingWebhookConfigurations only.
    Mutating,
    /// ValidatingWebhookConfigurations only.
    Validating,
}

/// The two configuration kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// MutatingWebhookConfiguration.
    Mutating,
    /// ValidatingWebhookConfiguration.
    Validating,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Mutating => "MutatingWebhookConfiguration",
            Self::Validating => "ValidatingWebhookConfiguration",
        }
    }

    fn lower(self) -> &'static str {
        match self {
            Self::Mutating => "mutatingwebhookconfiguration",
            Self::Validating => "validatingwebhookconfiguration",
        }
    }
}

/// One webhook of a configuration, as far as staleness goes.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Webhook name.
    pub name: String,
    /// How the API server calls it.
    pub client_config: WebhookClientConfig,
    /// failurePolicy (Fail when unset, in admissionregistration/v1).
    pub failure_policy: String,
}

/// A configuration of either kind.
#[derive(Debug, Clone)]
pub struct Configuration {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// UID, for the delete precondition.
    pub uid: String,
    /// Its webhooks.
    pub webhooks: Vec<Webhook>,
    /// The whole object as read.
    pub object: Value,
}

impl Configuration {
    fn label(&self) -> String {
        format!("{} {:?}", self.kind.lower(), self.name)
    }

    fn from_mutating(object: &MutatingWebhookConfiguration) -> Self {
        let webhooks = object.webhooks.iter().flatten().map(|w| Webhook {
            name: w.name.clone(),
            client_config: w.client_config.clone(),
            failure_policy: w.failure_policy.clone().unwrap_or_else(|| "Fail".into()),
        });
        Self::new(Kind::Mutating, &object.metadata, webhooks, object)
    }

    fn from_validating(object: &ValidatingWebhookConfiguration) -> Self {
        let webhooks = object.webhooks.iter().flatten().map(|w| Webhook {
            name: w.name.clone(),
            client_config: w.client_config.clone(),
            failure_policy: w.failure_policy.clone().unwrap_or_else(|| "Fail".into()),
        });
        Self::new(Kind::Validating, &object.metadata, webhooks, object)
    }

    fn new(
        kind: Kind,
        metadata: &ObjectMeta,
        webhooks: impl Iterator<Item = Webhook>,
        object: &impl Serialize,
    ) -> Self {
        Self {
            kind,
            name: metadata.name.clone().unwrap_or_default(),
            uid: metadata.uid.clone().unwrap_or_default(),
            webhooks: webhooks.collect(),
            object: serde_json::to_value(object).unwrap_or(Value::Null),
        }
    }
}

/// The judgement on one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Evidence that its backend is gone.
    Stale(Vec<String>),
    /// Its backend is there.
    Live(String),
    /// Cannot be judged (URL webhook, ExternalName service).
    Unjudged(String),
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Self::Stale(_) => "stale",
            Self::Live(_) => "live",
            Self::Unjudged(_) => "not judged",
        }
    }

    fn reason(&self) -> String {
        match self {
            Self::Stale(evidence) => evidence.join("; "),
            Self::Live(reason) | Self::Unjudged(reason) => reason.clone(),
        }
    }
}

/// Whether a configuration with these verdicts is deleted.
#[must_use]
pub fn should_delete(verdicts: &[Verdict], force: bool) -> bool {
    let stale = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Stale(_)))
        .count();
    if force {
        stale > 0
    } else {
        stale > 0 && stale == verdicts.len()
    }
}

/// Evidence from a caBundle: every certificate in it expired before `now` (Unix seconds).
/// `None` when the bundle is empty, unreadable, or still holds a valid certificate.
#[must_use]
pub fn ca_bundle_expired(bundle: &[u8], now: i64) -> Option<String> {
    let mut latest: Option<i64> = None;
    for der in crate::x509::pem_certificates(bundle)? {
        let not_after = crate::x509::validity(&der)?.not_after;
        latest = Some(latest.map_or(not_after, |l| l.max(not_after)));
    }
    let latest = latest?;
    (latest < now).then(|| {
        let when = k8s_openapi::jiff::Timestamp::from_second(latest)
            .map_or_else(|_| latest.to_string(), |t| t.to_string());
        format!("its caBundle expired on {when}")
    })
}

/// The result keys.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Report {
    /// The webhook configurations deleted (in check mode, that would be deleted), each whole,
    /// so that it can be restored.
    ///
    /// Empty when nothing was deleted. On a failure, those deleted before it.
    pub deleted: Vec<Deleted>,
    /// Every configuration considered, with the verdict on each of its webhooks and what was
    /// done.
    pub configurations: Vec<ConfigurationReport>,
    /// Whether every deleted configuration was gone (or replaced by a new UID) afterwards.
    ///
    /// V(null) in check mode and when nothing was deleted.
    #[schemars(extend("x-sample" = true))]
    pub verified: Option<bool>,
}

/// A deleted configuration.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Deleted {
    /// C(MutatingWebhookConfiguration) or C(ValidatingWebhookConfiguration).
    #[schemars(extend("x-sample" = "MutatingWebhookConfiguration"))]
    pub kind: String,
    /// Name of the configuration.
    #[schemars(extend("x-sample" = "newrelic-bundle-nri-metadata-injection"))]
    pub name: String,
    /// UID of the configuration; the delete was made on the condition that it still matched.
    pub uid: String,
    /// The backup written before the delete; restore it with C(kubectl apply -f).
    ///
    /// V(null) without O(backup_dir) and in check mode.
    pub backup_file: Option<String>,
    /// Who manages it (Argo CD, Flux, Helm, C(kubectl apply)) and whether that brings it back.
    pub ownership: Ownership,
    /// The configuration as it was read, complete.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub object: Value,
}

/// One configuration considered.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConfigurationReport {
    /// C(MutatingWebhookConfiguration) or C(ValidatingWebhookConfiguration).
    pub kind: String,
    /// Name of the configuration.
    pub name: String,
    /// UID of the configuration.
    pub uid: String,
    /// Whether every webhook of the configuration is stale.
    pub stale: bool,
    /// One entry per webhook of the configuration.
    pub webhooks: Vec<WebhookReport>,
    /// What was done: C(deleted), C(would delete), or C(kept) with the reason for keeping it.
    #[schemars(extend(
        "x-sample" = "kept: some webhooks are live or cannot be judged (force: true deletes it anyway)"
    ))]
    pub action: String,
}

/// The verdict on one webhook.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookReport {
    /// Name of the webhook.
    pub name: String,
    /// Where the API server calls it, C(service namespace/name:port/path) or C(url URL).
    #[schemars(extend("x-sample" = "service newrelic/nri-metadata-injection:443/mutate"))]
    pub target: String,
    /// The webhook's failurePolicy (V(Fail) when unset).
    pub failure_policy: String,
    /// C(stale), C(live) or C(not judged) (URL webhooks, ExternalName Services).
    pub verdict: String,
    /// The evidence for the verdict, e.g. the Service missing or no ready endpoint.
    pub reason: String,
}

impl WebhookReport {
    /// Whether the verdict is stale (the typed question the report's text answers).
    #[must_use]
    pub fn is_stale(&self) -> bool {
        self.verdict == Verdict::Stale(Vec::new()).label()
    }
}

/// The read-only survey the runbook makes: every webhook configuration judged as `detect`
/// judges it, nothing deleted (the plan on a scratch outcome; `cx` should be in check mode).
pub async fn survey(cx: &Context) -> Result<Report> {
    let action = StaleWebhook {
        cluster: ClusterArgs::default(),
        target: Selection::Detect {
            exclude: Vec::new(),
        },
        kinds: vec![Kind::Mutating, Kind::Validating],
        force: false,
        backup_dir: None,
    };
    let mut scratch = Outcome::default();
    action.plan(cx, &mut scratch).await?;
    Ok(scratch.report)
}

/// The validated action.
#[derive(Debug, Clone)]
pub struct StaleWebhook {
    cluster: ClusterArgs,
    target: Selection,
    kinds: Vec<Kind>,
    force: bool,
    backup_dir: Option<PathBuf>,
}

/// What the plan found: every configuration in scope, judged, and which to delete.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The configurations in scope with their verdicts.
    pub judged: Vec<(Configuration, Vec<Verdict>)>,
}

impl Plan {
    /// The configurations to delete, with `force` as given.
    pub fn to_delete(&self, force: bool) -> impl Iterator<Item = &Configuration> {
        self.judged
            .iter()
            .filter(move |(_, verdicts)| should_delete(verdicts, force))
            .map(|(c, _)| c)
    }
}

impl Action for StaleWebhook {
    const NAME: &'static str = "stale_webhook";
    const ABOUT: &'static str =
        "Delete admission webhook configurations whose backend is gone, on evidence only";
    type Options = Options;
    type Plan = Plan;
    type Report = Report;

    fn validate(options: Options) -> Result<Self> {
        let target = Selection::from_options(
            options.name,
            options.detect,
            options.exclude,
            "a webhook configuration",
        )?;
        let backup_dir = super::backup_dir(options.backup_dir)?;
        let kinds = match options.kind {
            KindFilter::Both => vec![Kind::Mutating, Kind::Validating],
            KindFilter::Mutating => vec![Kind::Mutating],
            KindFilter::Validating => vec![Kind::Validating],
        };
        Ok(Self {
            cluster: options.cluster,
            target,
            kinds,
            force: options.force,
            backup_dir,
        })
    }

    fn cluster_args(&self) -> &ClusterArgs {
        &self.cluster
    }

    /// Reads the configurations in scope and judges each webhook on evidence.
    async fn plan(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<Plan> {
        let cluster = &cx.cluster;
        let configurations = self.observe(cluster).await?;
        let mut evidence = Evidence::new(cluster);
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let mut plan = Plan::default();
        for configuration in configurations {
            let mut verdicts = Vec::new();
            for webhook in &configuration.webhooks {
                verdicts.push(evidence.judge(webhook, now).await?);
            }
            let action = if should_delete(&verdicts, self.force) {
                if cx.check_mode {
                    "would delete"
                } else {
                    "deleted"
                }
            } else if verdicts.is_empty() {
                "kept: it has no webhooks, so there is no evidence"
            } else if verdicts.iter().any(|v| matches!(v, Verdict::Stale(_))) {
                "kept: some webhooks are live or cannot be judged (force: true deletes it anyway)"
            } else {
                "kept: no stale webhook"
            };
            out.report
                .configurations
                .push(configuration_report(&configuration, &verdicts, action));
            plan.judged.push((configuration, verdicts));
        }
        out.msg = self.message(plan.judged.len(), &[], cx.check_mode);
        Ok(plan)
    }

    /// Backs up and deletes each configuration to delete (dry runs in check mode), recording
    /// each delete as it is made.
    async fn apply(&self, cx: &Context, plan: Plan, out: &mut Outcome<Report>) -> Result<()> {
        for configuration in plan.to_delete(self.force) {
            let deleted = self.delete(cx, configuration, &mut out.warnings).await?;
            let Some(deleted) = deleted else {
                if let Some(entry) = out
                    .report
                    .configurations
                    .iter_mut()
                    .find(|c| c.uid == configuration.uid)
                {
                    "gone or replaced meanwhile; left alone".clone_into(&mut entry.action);
                }
                continue;
            };
            out.report.deleted.push(deleted);
            out.changed = true;
            out.diff.push(Diff::of(
                &format!("{}/{}", configuration.kind.lower(), configuration.name),
                Some(&configuration.object),
                None,
            ));
        }
        out.msg = self.message(plan.judged.len(), &out.report.deleted, cx.check_mode);
        Ok(())
    }

    /// Reads each deleted configuration back: gone, or replaced by one with a new UID.
    async fn verify(&self, cx: &Context, out: &mut Outcome<Report>) -> Result<()> {
        if out.report.deleted.is_empty() {
            return Ok(());
        }
        let mut still = Vec::new();
        for deleted in &out.report.deleted {
            let kind = if deleted.kind == Kind::Mutating.name() {
                Kind::Mutating
            } else {
                Kind::Validating
            };
            let label = format!("{} {:?}", kind.lower(), deleted.name);
            let found = match kind {
                Kind::Mutating => {
                    let api: Api<MutatingWebhookConfiguration> =
                        Api::all(cx.cluster.client.clone());
                    api.get_opt(&deleted.name)
                        .await
                        .map(|o| o.and_then(|o| o.metadata.uid))
                }
                Kind::Validating => {
                    let api: Api<ValidatingWebhookConfiguration> =
                        Api::all(cx.cluster.client.clone());
                    api.get_opt(&deleted.name)
                        .await
                        .map(|o| o.and_then(|o| o.metadata.uid))
                }
            }
            .map_err(cx.cluster.error("get", label.clone()))?;
            if found.as_deref() == Some(deleted.uid.as_str()) {
                still.push(label);
            }
        }
        out.report.verified = Some(still.is_empty());
        if still.is_empty() {
            Ok(())
        } else {
            Err(Error::NotVerified {
                what: format!("{} still there after the delete", still.join(", ")),
                hint: "a finalizer or an admission controller keeps it; check \
                       metadata.finalizers and metadata.deletionTimestamp"
                    .into(),
            })
        }
    }
}

fn configuration_report(
    configuration: &Configuration,
    verdicts: &[Verdict],
    action: &str,
) -> ConfigurationReport {
    ConfigurationReport {
        kind: configuration.kind.name().into(),
        name: configuration.name.clone(),
        uid: configuration.uid.clone(),
        stale: !verdicts.is_empty() && verdicts.iter().all(|v| matches!(v, Verdict::Stale(_))),
        webhooks: configuration
            .webhooks
            .iter()
            .zip(verdicts)
            .map(|(w, v)| WebhookReport {
                name: w.name.clone(),
                target: target_of(&w.client_config),
                failure_policy: w.failure_policy.clone(),
                verdict: v.label().into(),
                reason: v.reason(),
            })
            .collect(),
        action: action.into(),
    }
}

impl StaleWebhook {
    /// Reads the configurations in scope.
    async fn observe(&self, cluster: &Cluster) -> Result<Vec<Configuration>> {
        let mut out = Vec::new();
        for kind in &self.kinds {
            match kind {
                Kind::Mutating => {
                    let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
                    match &self.target {
                        Selection::Name(name) => {
                            let found = api.get_opt(name).await.map_err(
                                cluster.error("get", format!("{} {name:?}", kind.lower())),
                            )?;
                            out.extend(found.as_ref().map(Configuration::from_mutating));
                        }
                        Selection::Detect { .. } => {
                            let list = api
                                .list(&ListParams::default())
                                .await
                                .map_err(cluster.error("list", "mutatingwebhookconfigurations"))?;
                            out.extend(
                                list.items
                                    .iter()
                                    .map(Configuration::from_mutating)
                                    .filter(|c| !self.target.excludes(&c.name)),
                            );
                        }
                    }
                }
                Kind::Validating => {
                    let api: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client.clone());
                    match &self.target {
                        Selection::Name(name) => {
                            let found = api.get_opt(name).await.map_err(
                                cluster.error("get", format!("{} {name:?}", kind.lower())),
                            )?;
                            out.extend(found.as_ref().map(Configuration::from_validating));
                        }
                        Selection::Detect { .. } => {
                            let list = api.list(&ListParams::default()).await.map_err(
                                cluster.error("list", "validatingwebhookconfigurations"),
                            )?;
                            out.extend(
                                list.items
                                    .iter()
                                    .map(Configuration::from_validating)
                                    .filter(|c| !self.target.excludes(&c.name)),
                            );
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Backs up and deletes one configuration (dry run in check mode). `None` when it vanished
    /// or was replaced meanwhile.
    async fn delete(
        &self,
        cx: &Context,
        configuration: &Configuration,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Deleted>> {
        let backup_file = match (&self.backup_dir, cx.check_mode) {
            (Some(dir), false) => Some(write_backup(dir, configuration)?),
            _ => None,
        };
        let label = configuration.label();
        let options = DeleteOptions {
            dry_run: cx.check_mode,
            grace_period_seconds: None,
        };
        let (name, uid) = (&configuration.name, &configuration.uid);
        let client = cx.cluster.client.clone();
        let deletion = match configuration.kind {
            Kind::Mutating => {
                let api: Api<MutatingWebhookConfiguration> = Api::all(client);
                delete_uid(&api, name, uid, options, warnings, &cx.cluster, &label).await
            }
            Kind::Validating => {
                let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
                delete_uid(&api, name, uid, options, warnings, &cx.cluster, &label).await
            }
        }
        .map_err(cx.cluster.error("delete", label.clone()))?;
        if let Some(warning) = deletion.meanwhile(&label) {
            warnings.push(warning);
            return Ok(None);
        }
        let ownership = ownership::of_json(&label, &configuration.object, Change::Delete);
        if ownership.at_risk() {
            warnings.push(ownership.warning());
        }
        Ok(Some(Deleted {
            ownership,
            kind: configuration.kind.name().into(),
            name: configuration.name.clone(),
            uid: configuration.uid.clone(),
            backup_file: backup_file.map(|p| p.display().to_string()),
            object: configuration.object.clone(),
        }))
    }

    fn message(&self, considered: usize, deleted: &[Deleted], check: bool) -> String {
        let names: Vec<String> = deleted
            .iter()
            .map(|d| format!("{} {:?}", d.kind.to_ascii_lowercase(), d.name))
            .collect();
        self.target
            .message("webhook configuration", considered, &names, check)
    }
}

fn target_of(config: &WebhookClientConfig) -> String {
    match (&config.service, &config.url) {
        (Some(service), _) => format!(
            "service {}/{}:{}{}",
            service.namespace,
            service.name,
            service.port.unwrap_or(443),
            service.path.as_deref().unwrap_or("")
        ),
        (None, Some(url)) => format!("url {url}"),
        (None, None) => "none".into(),
    }
}

/// Writes the backup YAML and returns its path.
fn write_backup(dir: &Path, configuration: &Configuration) -> Result<PathBuf> {
    backup(
        dir,
        BackupOf {
            kind: configuration.kind.lower(),
            namespace: None,
            name: &configuration.name,
            uid: &configuration.uid,
            verb: "deleted",
        },
        &configuration.object,
    )
}

/// Judges webhooks on the backend evidence ([`Backends`]) and their caBundles.
struct Evidence<'a> {
    backends: Backends<'a>,
}

impl<'a> Evidence<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        Self {
            backends: Backends::new(cluster),
        }
    }

    async fn judge(&mut self, webhook: &Webhook, now: i64) -> Result<Verdict> {
        let config = &webhook.client_config;
        let Some(reference) = &config.service else {
            return Ok(Verdict::Unjudged(match &config.url {
                Some(url) => format!("called by URL ({url}); kubemend does not judge URL webhooks"),
                None => "no service and no URL".into(),
            }));
        };
        let mut evidence = Vec::new();
        if let Some(bundle) = &config.ca_bundle
            && let Some(expired) = ca_bundle_expired(&bundle.0, now)
        {
            evidence.push(expired);
        }
        let reference = ServiceRef {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
            port: reference.port.unwrap_or(443),
        };
        let backend = self.backends.read(&reference).await?;
        let described = backend.describe(&reference);
        Ok(match backend {
            Backend::ExternalName if evidence.is_empty() => Verdict::Unjudged(described),
            Backend::ExternalName => Verdict::Stale(evidence),
            gone if gone.gone() => {
                evidence.push(described);
                Verdict::Stale(evidence)
            }
            Backend::Endpoints(_) if evidence.is_empty() => Verdict::Live(described),
            _ => Verdict::Stale(evidence),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(value: Value) -> Result<StaleWebhook> {
        StaleWebhook::validate(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn a_configuration_is_named_or_found_by_a_scan() {
        assert!(validate(json!({})).is_err());
        assert!(validate(json!({"name": "x", "detect": true})).is_err());
        assert!(validate(json!({"name": "newrelic-bundle-nri-metadata-injection"})).is_ok());
        assert!(validate(json!({"detect": true, "exclude": ["cert-manager-webhook"]})).is_ok());
    }

    #[test]
    fn all_stale_deletes_some_stale_needs_force() {
        let stale = Verdict::Stale(vec!["service a/b does not exist".into()]);
        let live = Verdict::Live("ready".into());
        let url = Verdict::Unjudged("url".into());
        assert!(should_delete(std::slice::from_ref(&stale), false));
        assert!(should_delete(&[stale.clone(), stale.clone()], false));
        assert!(!should_delete(&[stale.clone(), live.clone()], false));
        assert!(!should_delete(&[stale.clone(), url.clone()], false));
        assert!(should_delete(&[stale.clone(), live.clone()], true));
        assert!(!should_delete(&[live.clone(), url.clone()], true));
        assert!(!should_delete(&[url], false));
        assert!(!should_delete(&[], true));
    }

    fn cert_pem(not_after_year: i32) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["webhook.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn ca_bundle_is_stale_only_when_every_certificate_expired() {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let old = cert_pem(2001);
        let fresh = cert_pem(2090);
        let expired = ca_bundle_expired(old.as_bytes(), now).unwrap();
        assert!(expired.contains("2001-01-01"), "{expired}");
        assert_eq!(ca_bundle_expired(fresh.as_bytes(), now), None);
        assert_eq!(
            ca_bundle_expired(format!("{old}{fresh}").as_bytes(), now),
            None
        );
        assert_eq!(ca_bundle_expired(b"", now), None);
        assert_eq!(ca_bundle_expired(b"not pem at all", now), None);
    }

    #[test]
    fn backup_file_is_an_appliable_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let configuration = Configuration::from_mutating(
            &serde_json::from_value(json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "nri", "uid": "1234-5678-9", "resourceVersion": "77"},
                "webhooks": [{
                    "name": "metadata-injection.newrelic.com",
                    "clientConfig": {"service": {"namespace": "newrelic", "name": "nri", "port": 443}},
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Ignore"
                }]
            }))
            .unwrap(),
        );
        let path = write_backup(dir.path(), &configuration).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed["kind"], "MutatingWebhookConfiguration");
        assert_eq!(parsed["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(parsed["metadata"]["name"], "nri");
        assert!(parsed["metadata"].get("uid").is_none());
        assert!(parsed["metadata"].get("resourceVersion").is_none());
        assert_eq!(parsed["webhooks"][0]["failurePolicy"], "Ignore");
    }
}
