//! Which RBAC rules the `calico-kube-controllers` ClusterRole needs, per Calico release,
//! datastore and set of enabled controllers, with the upstream source of every rule.
//!
//! Contract:
//!
//! - The table is data, `calico_rules.yaml`, embedded at build time (as JSON, by build.rs). It
//!   is made of bands: runs of Calico releases (v3.6.0 to v3.32.1) whose upstream ClusterRole
//!   grants the same (api group, resource, verb) triples, one list of bands per datastore. Every
//!   band names its first and last release, every release it covers, and the upstream file and
//!   tag (or commit) its rules were read from; `tests/fixtures/calico/` holds that ClusterRole
//!   verbatim and the unit tests below check the table against it.
//! - A version is looked up exactly. A release the table does not list is an error
//!   ([`TableError::NewerThanTable`], [`TableError::OlderThanTable`] or
//!   [`TableError::UnknownRelease`]); there is never a fallback to a neighbouring band.
//! - Controller names are checked the way kube-controllers of that release checks
//!   `ENABLED_CONTROLLERS`: split on `,`, each piece compared exactly (case-sensitive, no
//!   trimming), unknown names are an error because kube-controllers exits on them. `profile` is
//!   an alias of `namespace`; `loadbalancer` exists from v3.30.0; `flannelmigration` from v3.9.0,
//!   and from v3.14.0 it must be alone.
//! - [`required_rules`] returns the rules every listed controller needs plus the `base` rules
//!   kube-controllers needs whatever runs, and, where upstream's own ClusterRole was short of
//!   what a controller needs, the table's extra rules (flagged [`SourcedRule::extra`]).
//!   Controllers that only work with etcd (`workloadendpoint`, `policy`, `namespace`,
//!   `serviceaccount`) get no rules with the Kubernetes datastore; [`warnings`] says so.
//!
//! The module depends on no other kubemend module.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};

/// The table as reviewed and edited: src/calico_rules.yaml.
#[cfg(test)]
const TABLE_YAML: &str = include_str!("calico_rules.yaml");

/// The table as embedded in the binary: the same data, converted to JSON by build.rs (YAML
/// parsing cost every run about 5 ms).
const TABLE_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/calico_rules.json"));

/// Pseudo-controller of rules kube-controllers needs whatever `ENABLED_CONTROLLERS` says.
pub const BASE: &str = "base";

/// Alias kube-controllers accepts for the namespace controller.
const PROFILE_ALIAS: &str = "profile";

/// Name of the flannel migration controller, which has special parsing rules.
const FLANNEL_MIGRATION: &str = "flannelmigration";

/// What went wrong looking something up in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The text is not a Calico version `vX.Y.Z` or `X.Y.Z`.
    #[error("`{text}` is not a Calico version (expected vX.Y.Z or X.Y.Z)")]
    InvalidVersion { text: String },
    /// The text is not a DATASTORE_TYPE kube-controllers accepts.
    #[error(
        "DATASTORE_TYPE `{text}` is not one calico-kube-controllers accepts (kubernetes, etcdv3)"
    )]
    InvalidDatastore { text: String },
    /// The version is newer than the table's last release.
    #[error(
        "Calico {version} is newer than the rule table, whose last band ends at {last}; \
         its ClusterRole needs have not been checked"
    )]
    NewerThanTable {
        version: CalicoVersion,
        last: CalicoVersion,
    },
    /// The version is older than the table's first release.
    #[error("Calico {version} is older than the rule table, whose first band starts at {first}")]
    OlderThanTable {
        version: CalicoVersion,
        first: CalicoVersion,
    },
    /// The version is inside the table's range but is not a release it lists.
    #[error("Calico {version} is not a release the rule table knows (it lists {first} to {last})")]
    UnknownRelease {
        version: CalicoVersion,
        first: CalicoVersion,
        last: CalicoVersion,
    },
    /// kube-controllers of this release exits on this controller name.
    #[error("calico-kube-controllers {version} exits on the controller name `{name}`")]
    UnknownController {
        version: CalicoVersion,
        name: String,
    },
    /// kube-controllers of this release exits because flannelmigration is not alone.
    #[error(
        "calico-kube-controllers {version} exits: flannelmigration must be the only controller \
         (ENABLED_CONTROLLERS is `{text}`)"
    )]
    FlannelMigrationNotAlone {
        version: CalicoVersion,
        text: String,
    },
    /// The table does not cover this controller's rules.
    #[error("the rule table does not cover `{controller}` in Calico {version}: {why}")]
    NotCovered {
        version: CalicoVersion,
        controller: String,
        why: &'static str,
    },
    /// The embedded table itself is invalid (a build defect, caught by the unit tests).
    #[error("the embedded Calico rule table is invalid: {message}")]
    Data { message: String },
}

/// A Calico release number, `vMAJOR.MINOR.PATCH`. Ordered numerically; displayed with the `v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalicoVersion {
    /// Major number (3 for every release in the table).
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// Patch number.
    pub patch: u32,
}

impl CalicoVersion {
    /// A version from its three numbers.
    #[must_use]
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `v3.13.2` or `3.13.2`: exactly three dot-separated decimal numbers, nothing else
    /// (no pre-release suffix, no whitespace, no sign).
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let invalid = || TableError::InvalidVersion {
            text: text.to_owned(),
        };
        let digits = text.strip_prefix('v').unwrap_or(text);
        let mut parts = digits.split('.');
        let mut number = || -> Result<u32, TableError> {
            let part = parts.next().ok_or_else(invalid)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            part.parse().map_err(|_| invalid())
        };
        let version = Self::new(number()?, number()?, number()?);
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(version)
    }
}

impl FromStr for CalicoVersion {
    type Err = TableError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for CalicoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl<'de> Deserialize<'de> for CalicoVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The datastore kube-controllers talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datastore {
    /// `DATASTORE_TYPE=kubernetes`: Calico resources are CRDs in the Kubernetes API.
    Kubernetes,
    /// `DATASTORE_TYPE=etcdv3`: Calico resources live in etcd.
    Etcdv3,
}

impl Datastore {
    /// Parses an explicit DATASTORE_TYPE value: exactly `kubernetes` or `etcdv3`.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        match text {
            "kubernetes" => Ok(Self::Kubernetes),
            "etcdv3" => Ok(Self::Etcdv3),
            _ => Err(TableError::InvalidDatastore {
                text: text.to_owned(),
            }),
        }
    }

    /// The datastore kube-controllers of `version` connects to, given the DATASTORE_TYPE and
    /// ETCD_ENDPOINTS environment variables of its container (`None` when unset).
    ///
    /// An explicit value wins. Unset, releases before v3.17.0 use etcdv3; from v3.17.0 an unset
    /// or empty DATASTORE_TYPE means etcdv3 when ETCD_ENDPOINTS is non-empty and kubernetes
    /// otherwise (see `datastore_type_unset` in the table).
    pub fn from_env(
        version: CalicoVersion,
        datastore_type: Option<&str>,
        etcd_endpoints: Option<&str>,
    ) -> Result<Self, TableError> {
        let table = Table::get()?;
        table.known_release(version)?;
        let era = table
            .data
            .datastore_type_unset
            .iter()
            .find(|era| era.first <= version && version <= era.last)
            .ok_or_else(|| TableError::Data {
                message: format!("no datastore_type_unset entry covers {version}"),
            })?;
        match (datastore_type, era.rule) {
            (Some(text), UnsetRule::Etcdv3) => Self::parse(text),
            (Some(text), UnsetRule::DetectFromEtcdEndpoints) if !text.is_empty() => {
                Self::parse(text)
            }
            (None, UnsetRule::Etcdv3) => Ok(Self::Etcdv3),
            (_, UnsetRule::DetectFromEtcdEndpoints) => {
                if etcd_endpoints.is_some_and(|endpoints| !endpoints.is_empty()) {
                    Ok(Self::Etcdv3)
                } else {
                    Ok(Self::Kubernetes)
                }
            }
        }
    }

    /// The DATASTORE_TYPE spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::Etcdv3 => "etcdv3",
        }
    }
}

impl fmt::Display for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Datastore of the band.
    pub datastore: Datastore,
    /// First release of the band.
    pub first: CalicoVersion,
    /// Last release of the band.
    pub last: CalicoVersion,
    /// Upstream repository, `owner/name`.
    pub repo: String,
    /// Release tag, or commit where the tag is missing or wrong.
    pub reference: String,
    /// Path of the upstream file in that repository.
    pub path: String,
    /// How the upstream file was read: the rendered manifest, or the Helm template rendered
    /// for this datastore.
    pub form: String,
    /// The fixture in this repository holding that upstream ClusterRole.
    pub fixture: String,
    /// Why the band is split from its neighbour although upstream's ClusterRole is the same.
    pub band_note: Option<String>,
    /// The release asked about.
    pub release: CalicoVersion,
    /// Where the release's ClusterRole was read from a commit instead of its tag: the commit
    /// and why.
    pub release_source: Option<(String, String)>,
}

/// One rule of the ClusterRole, with why it is needed and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcedRule {
    /// API group, `""` for the core group.
    pub api_group: String,
    /// Resources (and subresources such as `services/status`).
    pub resources: Vec<String>,
    /// Verbs.
    pub verbs: Vec<String>,
    /// Every controller that needs the rule, or `base`.
    pub needed_by: Vec<String>,
    /// The requested controller (or `base`) that made this rule required.
    pub controller: String,
    /// Why the rule is needed.
    pub why: String,
    /// True when upstream's ClusterRole for this band does not grant the rule but the
    /// controller needs it (see `extra_rules` in the table).
    pub extra: bool,
    /// The band and upstream file the rule was taken from.
    pub provenance: Provenance,
}

impl SourcedRule {
    /// The (api group, resource, verb) triples the rule grants.
    #[must_use]
    pub fn triples(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for resource in &self.resources {
            for verb in &self.verbs {
                out.push((self.api_group.clone(), resource.clone(), verb.clone()));
            }
        }
        out
    }
}

/// Parses an `ENABLED_CONTROLLERS` value exactly as kube-controllers of `version` does, and
/// returns the controllers it runs, canonical names (`profile` becomes `namespace`), each once,
/// in order of first mention. An error is what makes kube-controllers exit.
pub fn parse_enabled_controllers(
    version: CalicoVersion,
    text: &str,
) -> Result<Vec<String>, TableError> {
    let table = Table::get()?;
    let era = table.controller_era(version)?;
    if era.flannelmigration == FlannelMode::Exclusive && text.contains(FLANNEL_MIGRATION) {
        // main.go: strings.Trim(v, " ,") must be exactly "flannelmigration".
        if text.trim_matches([' ', ',']) == FLANNEL_MIGRATION {
            return Ok(vec![FLANNEL_MIGRATION.to_owned()]);
        }
        return Err(TableError::FlannelMigrationNotAlone {
            version,
            text: text.to_owned(),
        });
    }
    let mut out: Vec<String> = Vec::new();
    for name in text.split(',') {
        let canonical = era.canonical(version, name)?;
        if !out.iter().any(|known| known == canonical) {
            out.push(canonical.to_owned());
        }
    }
    Ok(out)
}

/// The controllers kube-controllers of `version` runs when `ENABLED_CONTROLLERS` is unset and
/// no KubeControllersConfiguration `default` exists yet. Upstream does not vary this by
/// datastore; the parameter is there so callers need not know that.
pub fn default_controllers(
    version: CalicoVersion,
    datastore: Datastore,
) -> Result<Vec<String>, TableError> {
    let table = Table::get()?;
    table.band(version, datastore)?;
    Ok(table.controller_era(version)?.defaults_when_unset.clone())
}

/// The controllers the upstream manifest of `version` for `datastore` enables through
/// `ENABLED_CONTROLLERS` (`manifests/calico.yaml` or `manifests/calico-etcd.yaml`).
pub fn manifest_controllers(
    version: CalicoVersion,
    datastore: Datastore,
) -> Result<Vec<String>, TableError> {
    let table = Table::get()?;
    table.band(version, datastore)?;
    let era = table.controller_era(version)?;
    let text = match datastore {
        Datastore::Kubernetes => &era.manifest_enabled_controllers.kubernetes,
        Datastore::Etcdv3 => &era.manifest_enabled_controllers.etcdv3,
    };
    parse_enabled_controllers(version, text)
}

/// The rules the ClusterRole needs for kube-controllers `version` on `datastore` running
/// `controllers` (names as [`parse_enabled_controllers`] returns them; `profile` is accepted).
/// `base` rules are always included. Each rule appears once, attributed to the first of the
/// requested controllers (or `base`) that needs it, in table order.
pub fn required_rules<S: AsRef<str>>(
    version: CalicoVersion,
    datastore: Datastore,
    controllers: &[S],
) -> Result<Vec<SourcedRule>, TableError> {
    let table = Table::get()?;
    let band = table.band(version, datastore)?;
    let era = table.controller_era(version)?;
    let mut wanted: Vec<&str> = vec![BASE];
    for name in controllers {
        let canonical = era.canonical(version, name.as_ref())?;
        if canonical == FLANNEL_MIGRATION {
            return Err(TableError::NotCovered {
                version,
                controller: canonical.to_owned(),
                why: "the flannel migration controller is deployed by its own upstream manifest \
                      with its own ClusterRole, not by calico.yaml",
            });
        }
        if !wanted.contains(&canonical) {
            wanted.push(canonical);
        }
    }
    let provenance = band.provenance(version, &table.data.release_sources);
    let rules = band
        .rules
        .iter()
        .map(|rule| (rule, false))
        .chain(band.extra_rules.iter().map(|rule| (rule, true)));
    let mut out = Vec::new();
    for (rule, extra) in rules {
        let Some(controller) = wanted
            .iter()
            .find(|name| rule.needed_by.iter().any(|needed| needed == *name))
        else {
            continue;
        };
        out.push(SourcedRule {
            api_group: rule.api_group.clone(),
            resources: rule.resources.clone(),
            verbs: rule.verbs.clone(),
            needed_by: rule.needed_by.clone(),
            controller: (*controller).to_owned(),
            why: rule.why.clone(),
            extra,
            provenance: provenance.clone(),
        });
    }
    Ok(out)
}

/// Warnings about running `controllers` with kube-controllers `version` on `datastore`, such as
/// an etcd-only controller on the Kubernetes datastore. Unknown names are errors, as in
/// [`required_rules`].
pub fn warnings<S: AsRef<str>>(
    version: CalicoVersion,
    datastore: Datastore,
    controllers: &[S],
) -> Result<Vec<String>, TableError> {
    let table = Table::get()?;
    table.band(version, datastore)?;
    let era = table.controller_era(version)?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for name in controllers {
        let given = name.as_ref();
        let canonical = era.canonical(version, given)?;
        if !seen.insert(canonical) {
            continue;
        }
        if datastore == Datastore::Kubernetes
            && table
                .data
                .etcd_only_controllers
                .iter()
                .any(|c| c == canonical)
        {
            out.push(format!(
                "{given} is an etcd-only controller: with the Kubernetes datastore it has nothing \
                 to do, and the upstream Calico {version} manifest grants it no rules"
            ));
        }
    }
    Ok(out)
}

/// What kube-controllers of one release accepts in `ENABLED_CONTROLLERS`, and where that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    /// First release with these rules.
    pub first: CalicoVersion,
    /// Last release with these rules.
    pub last: CalicoVersion,
    /// Every name kube-controllers accepts, exactly as spelled (aliases included).
    pub names: Vec<String>,
    /// Alias and the controller it stands for (`profile` → `namespace`).
    pub aliases: Vec<(String, String)>,
    /// How `flannelmigration` is treated.
    pub flannelmigration: String,
    /// Controllers run when `ENABLED_CONTROLLERS` is unset and no KubeControllersConfiguration
    /// `default` exists (the same for both datastores).
    pub defaults_when_unset: Vec<String>,
    /// Why those are the defaults.
    pub defaults_why: String,
    /// Controllers that only make sense with the etcdv3 datastore.
    pub etcd_only: Vec<String>,
    /// Upstream repository, reference and paths this was read from.
    pub source: String,
}

/// Controller knowledge for kube-controllers `version`.
pub fn controller_info(version: CalicoVersion) -> Result<ControllerInfo, TableError> {
    let table = Table::get()?;
    let era = table.controller_era(version)?;
    Ok(ControllerInfo {
        first: era.first,
        last: era.last,
        names: era.names.clone(),
        aliases: vec![(PROFILE_ALIAS.to_owned(), era.aliases.profile.clone())],
        flannelmigration: era.flannelmigration_why.clone(),
        defaults_when_unset: era.defaults_when_unset.clone(),
        defaults_why: era.defaults_when_unset_why.clone(),
        etcd_only: table.data.etcd_only_controllers.clone(),
        source: format!(
            "{} {} {}",
            era.source.repo,
            era.source.reference,
            era.source.paths.as_deref().unwrap_or_default()
        ),
    })
}

/// First and last release the table covers for `datastore`.
pub fn covered_range(datastore: Datastore) -> Result<(CalicoVersion, CalicoVersion), TableError> {
    Table::get()?.range(datastore)
}

// ---- the data -------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Data {
    schema: u32,
    release_sources: Vec<ReleaseSource>,
    datastore_type_unset: Vec<UnsetEra>,
    etcd_only_controllers: Vec<String>,
    controller_eras: Vec<ControllerEra>,
    bands: Vec<Band>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseSource {
    release: CalicoVersion,
    commit: String,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    paths: Option<String>,
    #[serde(default)]
    form: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum UnsetRule {
    #[serde(rename = "etcdv3")]
    Etcdv3,
    #[serde(rename = "etcdv3_if_etcd_endpoints_else_kubernetes")]
    DetectFromEtcdEndpoints,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    dead_code,
    reason = "source and why are provenance for readers of the data; deny_unknown_fields keeps them spelled right"
)]
struct UnsetEra {
    first: CalicoVersion,
    last: CalicoVersion,
    rule: UnsetRule,
    source: Source,
    why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FlannelMode {
    /// Not a controller name.
    Invalid,
    /// An ordinary name.
    Combinable,
    /// Must be the only controller.
    Exclusive,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestControllers {
    kubernetes: String,
    etcdv3: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Aliases {
    profile: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControllerEra {
    first: CalicoVersion,
    last: CalicoVersion,
    source: Source,
    names: Vec<String>,
    aliases: Aliases,
    flannelmigration: FlannelMode,
    flannelmigration_why: String,
    defaults_when_unset: Vec<String>,
    defaults_when_unset_why: String,
    manifest_enabled_controllers: ManifestControllers,
}

impl ControllerEra {
    /// The canonical name of `name`, or the error kube-controllers exits with.
    fn canonical<'a>(&'a self, version: CalicoVersion, name: &str) -> Result<&'a str, TableError> {
        let known = self
            .names
            .iter()
            .find(|known| *known == name)
            .ok_or_else(|| TableError::UnknownController {
                version,
                name: name.to_owned(),
            })?;
        if known == PROFILE_ALIAS {
            return Ok(self.aliases.profile.as_str());
        }
        Ok(known.as_str())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    api_group: String,
    resources: Vec<String>,
    verbs: Vec<String>,
    needed_by: Vec<String>,
    why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Band {
    datastore: Datastore,
    first: CalicoVersion,
    last: CalicoVersion,
    releases: Vec<CalicoVersion>,
    source: Source,
    fixture: String,
    #[serde(default)]
    split_why: Option<String>,
    rules: Vec<Rule>,
    #[serde(default)]
    extra_rules: Vec<Rule>,
}

impl Band {
    fn provenance(&self, release: CalicoVersion, sources: &[ReleaseSource]) -> Provenance {
        Provenance {
            datastore: self.datastore,
            first: self.first,
            last: self.last,
            repo: self.source.repo.clone(),
            reference: self.source.reference.clone(),
            path: self.source.path.clone().unwrap_or_default(),
            form: self.source.form.clone().unwrap_or_default(),
            fixture: self.fixture.clone(),
            band_note: self.split_why.clone(),
            release,
            release_source: sources
                .iter()
                .find(|source| source.release == release)
                .map(|source| (source.commit.clone(), source.why.clone())),
        }
    }
}

#[derive(Debug)]
struct Table {
    data: Data,
}

impl Table {
    /// The embedded table, parsed and checked once.
    fn get() -> Result<&'static Self, TableError> {
        static TABLE: OnceLock<Result<Table, TableError>> = OnceLock::new();
        TABLE
            .get_or_init(|| Self::parse(TABLE_JSON))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Reads the embedded JSON (a test reads YAML through [`Self::parse_yaml`]).
    fn parse(json: &str) -> Result<Self, TableError> {
        let data: Data = serde_json::from_str(json).map_err(|error| TableError::Data {
            message: error.to_string(),
        })?;
        Self::checked(data)
    }

    #[cfg(test)]
    fn parse_yaml(text: &str) -> Result<Self, TableError> {
        let data: Data = serde_saphyr::from_str(text).map_err(|error| TableError::Data {
            message: error.to_string(),
        })?;
        Self::checked(data)
    }

    fn checked(data: Data) -> Result<Self, TableError> {
        let table = Self { data };
        table.check()?;
        Ok(table)
    }

    /// Structural checks: schema, band order and contents, controller names in rules.
    fn check(&self) -> Result<(), TableError> {
        let fail = |message: String| Err(TableError::Data { message });
        if self.data.schema != 1 {
            return fail(format!("schema {} is not 1", self.data.schema));
        }
        for datastore in [Datastore::Kubernetes, Datastore::Etcdv3] {
            let mut previous: Option<&Band> = None;
            for band in self.data.bands.iter().filter(|b| b.datastore == datastore) {
                let releases_ordered = band.releases.windows(2).all(|w| w[0] < w[1]);
                if band.releases.first() != Some(&band.first)
                    || band.releases.last() != Some(&band.last)
                    || !releases_ordered
                {
                    return fail(format!(
                        "{datastore} band {}..{}: releases must run in order from first to last",
                        band.first, band.last
                    ));
                }
                if previous.is_some_and(|p| p.last >= band.first) {
                    return fail(format!(
                        "{datastore} band {} overlaps the previous",
                        band.first
                    ));
                }
                for rule in band.rules.iter().chain(&band.extra_rules) {
                    for needed in &rule.needed_by {
                        let known = needed == BASE
                            || band.releases.iter().all(|&release| {
                                self.controller_era(release)
                                    .is_ok_and(|era| era.names.contains(needed))
                            });
                        if !known {
                            return fail(format!(
                                "{datastore} band {}: `{needed}` is not a controller of every \
                                 release of the band",
                                band.first
                            ));
                        }
                    }
                }
                previous = Some(band);
            }
            if previous.is_none() {
                return fail(format!("no band for {datastore}"));
            }
        }
        let kubernetes: Vec<_> = self.releases(Datastore::Kubernetes).collect();
        let etcd: Vec<_> = self.releases(Datastore::Etcdv3).collect();
        if kubernetes != etcd {
            return fail("the two datastores' bands must list the same releases".to_owned());
        }
        Ok(())
    }

    fn releases(&self, datastore: Datastore) -> impl Iterator<Item = CalicoVersion> + '_ {
        self.data
            .bands
            .iter()
            .filter(move |band| band.datastore == datastore)
            .flat_map(|band| band.releases.iter().copied())
    }

    fn range(&self, datastore: Datastore) -> Result<(CalicoVersion, CalicoVersion), TableError> {
        let mut releases = self.releases(datastore);
        let first = releases.next();
        match (first, releases.last().or(first)) {
            (Some(first), Some(last)) => Ok((first, last)),
            _ => Err(TableError::Data {
                message: format!("no band for {datastore}"),
            }),
        }
    }

    /// Ok when the table lists `version` as a release; otherwise says how it falls outside.
    fn known_release(&self, version: CalicoVersion) -> Result<(), TableError> {
        self.band(version, Datastore::Kubernetes).map(|_| ())
    }

    fn band(&self, version: CalicoVersion, datastore: Datastore) -> Result<&Band, TableError> {
        if let Some(band) = self
            .data
            .bands
            .iter()
            .find(|band| band.datastore == datastore && band.releases.contains(&version))
        {
            return Ok(band);
        }
        let (first, last) = self.range(datastore)?;
        Err(if version > last {
            TableError::NewerThanTable { version, last }
        } else if version < first {
            TableError::OlderThanTable { version, first }
        } else {
            TableError::UnknownRelease {
                version,
                first,
                last,
            }
        })
    }

    fn controller_era(&self, version: CalicoVersion) -> Result<&ControllerEra, TableError> {
        self.known_release(version)?;
        self.data
            .controller_eras
            .iter()
            .find(|era| era.first <= version && version <= era.last)
            .ok_or_else(|| TableError::Data {
                message: format!("no controller era covers {version}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Triple = (String, String, String);

    fn v(text: &str) -> CalicoVersion {
        CalicoVersion::parse(text).unwrap()
    }

    fn t(group: &str, resource: &str, verb: &str) -> Triple {
        (group.to_owned(), resource.to_owned(), verb.to_owned())
    }

    #[test]
    fn embedded_json_reads_as_the_yaml_table() {
        let from_yaml = Table::parse_yaml(TABLE_YAML).unwrap();
        let from_json = Table::get().unwrap();
        assert!(!from_yaml.data.bands.is_empty());
        // Debug shows every field of every row: equal text, equal tables.
        assert_eq!(
            format!("{:?}", from_yaml.data),
            format!("{:?}", from_json.data)
        );
    }

    fn triples_of(rules: &[SourcedRule]) -> BTreeSet<Triple> {
        rules.iter().flat_map(SourcedRule::triples).collect()
    }

    fn required(version: &str, datastore: Datastore, controllers: &[&str]) -> BTreeSet<Triple> {
        triples_of(&required_rules(v(version), datastore, controllers).unwrap())
    }

    /// Rules of one controller alone, without the base rules.
    fn needed_only_by(version: &str, datastore: Datastore, controller: &str) -> BTreeSet<Triple> {
        let base = required(version, datastore, &[]);
        required(version, datastore, &[controller])
            .difference(&base)
            .cloned()
            .collect()
    }

    #[derive(Debug, Deserialize)]
    struct Meta {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct PolicyRule {
        #[serde(default)]
        api_groups: Vec<String>,
        #[serde(default)]
        resources: Vec<String>,
        verbs: Vec<String>,
    }

    #[derive(Debug, Deserialize)]
    struct ClusterRole {
        kind: String,
        metadata: Meta,
        rules: Vec<PolicyRule>,
    }

    fn fixture_triples(path: &str) -> BTreeSet<Triple> {
        let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap();
        assert!(
            text.starts_with("# Upstream: projectcalico/calico, "),
            "{path} must open naming its upstream source"
        );
        let role: ClusterRole = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(role.kind, "ClusterRole", "{path}");
        assert_eq!(role.metadata.name, "calico-kube-controllers", "{path}");
        let mut out = BTreeSet::new();
        for rule in &role.rules {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        out.insert(t(group, resource, verb));
                    }
                }
            }
        }
        out
    }

    fn band_triples(rules: &[Rule]) -> BTreeSet<Triple> {
        let mut out = BTreeSet::new();
        for rule in rules {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    out.insert(t(&rule.api_group, resource, verb));
                }
            }
        }
        out
    }

    // ---- the table against the upstream fixtures --------------------------------------------

    #[test]
    fn embedded_table_parses_and_passes_its_checks() {
        Table::get().unwrap();
    }

    #[test]
    fn every_band_with_the_manifest_controllers_grants_exactly_its_fixture_plus_listed_extras() {
        let table = Table::get().unwrap();
        for band in &table.data.bands {
            let fixture = fixture_triples(&band.fixture);
            let controllers = manifest_controllers(band.first, band.datastore).unwrap();
            let rules = required_rules(band.first, band.datastore, &controllers).unwrap();
            let (extra, upstream): (Vec<_>, Vec<_>) = rules.into_iter().partition(|r| r.extra);
            let name = format!("{} {}..{}", band.datastore, band.first, band.last);
            let upstream = triples_of(&upstream);
            let missing: Vec<_> = fixture.difference(&upstream).collect();
            let surplus: Vec<_> = upstream.difference(&fixture).collect();
            assert!(missing.is_empty(), "{name}: table misses {missing:?}");
            assert!(
                surplus.is_empty(),
                "{name}: table adds unlisted {surplus:?}"
            );
            let extra = triples_of(&extra);
            assert_eq!(
                extra,
                band_triples(&band.extra_rules),
                "{name}: extras required"
            );
            assert!(
                extra.is_disjoint(&fixture),
                "{name}: an extra rule is already granted upstream"
            );
            for rule in &band.extra_rules {
                assert!(!rule.why.is_empty(), "{name}: every extra rule says why");
            }
        }
    }

    #[test]
    fn every_band_rule_set_is_its_fixture_whatever_the_controllers() {
        let table = Table::get().unwrap();
        for band in &table.data.bands {
            assert_eq!(
                band_triples(&band.rules),
                fixture_triples(&band.fixture),
                "{} {}",
                band.datastore,
                band.first
            );
        }
    }

    #[test]
    fn every_band_fixture_is_named_after_its_first_release_and_datastore() {
        let table = Table::get().unwrap();
        for band in &table.data.bands {
            assert_eq!(
                band.fixture,
                format!(
                    "tests/fixtures/calico/{}-{}.yaml",
                    band.first, band.datastore
                )
            );
            assert_eq!(band.source.repo, "projectcalico/calico");
        }
    }

    #[test]
    fn every_listed_release_resolves_to_its_own_band() {
        let table = Table::get().unwrap();
        for band in &table.data.bands {
            for &release in &band.releases {
                let rules = required_rules(release, band.datastore, &[BASE; 0]).unwrap();
                for rule in rules {
                    assert_eq!(rule.provenance.first, band.first, "{release}");
                    assert_eq!(rule.provenance.release, release);
                }
            }
        }
    }

    #[test]
    fn bands_cover_v3_6_0_to_v3_32_1_for_both_datastores() {
        for datastore in [Datastore::Kubernetes, Datastore::Etcdv3] {
            assert_eq!(
                covered_range(datastore).unwrap(),
                (v("v3.6.0"), v("v3.32.1"))
            );
        }
    }

    #[test]
    fn band_list_is_split_by_patch_release_where_upstream_changed() {
        let table = Table::get().unwrap();
        let firsts = |datastore| -> Vec<String> {
            table
                .data
                .bands
                .iter()
                .filter(|b| b.datastore == datastore)
                .map(|b| b.first.to_string())
                .collect()
        };
        assert_eq!(
            firsts(Datastore::Kubernetes),
            [
                "v3.6.0", "v3.14.0", "v3.18.0", "v3.20.0", "v3.21.0", "v3.23.0", "v3.28.3",
                "v3.29.0", "v3.29.2", "v3.30.0", "v3.31.0", "v3.32.0", "v3.32.1"
            ]
        );
        assert_eq!(
            firsts(Datastore::Etcdv3),
            [
                "v3.6.0", "v3.13.0", "v3.30.0", "v3.30.3", "v3.31.0", "v3.32.0"
            ]
        );
    }

    // ---- per release ------------------------------------------------------------------------

    #[test]
    fn v3_13_2_kubernetes_datastore_node_controller_needs_pods_get_but_not_list_or_watch() {
        let node = needed_only_by("v3.13.2", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("", "pods", "get")));
        assert!(!node.contains(&t("", "pods", "list")));
        assert!(!node.contains(&t("", "pods", "watch")));
        assert!(node.contains(&t("crd.projectcalico.org", "ipamblocks", "delete")));
        assert!(!node.contains(&t("crd.projectcalico.org", "ipamblocks", "watch")));
    }

    #[test]
    fn v3_13_2_is_read_from_the_release_v3_13_branch_for_lack_of_a_tag() {
        let rules = required_rules(v("v3.13.2"), Datastore::Kubernetes, &["node"]).unwrap();
        let (commit, _) = rules[0].provenance.release_source.clone().unwrap();
        assert!(commit.starts_with("2499bb01a2"));
    }

    #[test]
    fn v3_13_2_kubernetes_datastore_has_no_kubecontrollersconfigurations_rules() {
        let all = required("v3.13.2", Datastore::Kubernetes, &["node"]);
        assert!(
            !all.iter()
                .any(|(_, r, _)| r == "kubecontrollersconfigurations")
        );
    }

    #[test]
    fn v3_14_0_kubernetes_datastore_base_needs_kubecontrollersconfigurations_without_list() {
        let base = required("v3.14.0", Datastore::Kubernetes, &[]);
        let g = "crd.projectcalico.org";
        for verb in ["get", "create", "update", "watch"] {
            assert!(
                base.contains(&t(g, "kubecontrollersconfigurations", verb)),
                "{verb}"
            );
        }
        assert!(!base.contains(&t(g, "kubecontrollersconfigurations", "list")));
    }

    #[test]
    fn v3_14_0_kubernetes_datastore_node_controller_needs_hostendpoints() {
        let node = needed_only_by("v3.14.0", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("crd.projectcalico.org", "hostendpoints", "create")));
    }

    #[test]
    fn v3_17_5_kubernetes_datastore_is_the_release_branch_role_without_pods_watch() {
        // The v3.17.5 tag sits on a master commit with v3.20-era docs; release-v3.17 is what
        // shipped, and it has the v3.14 rules.
        let rules = required_rules(v("v3.17.5"), Datastore::Kubernetes, &["node"]).unwrap();
        assert_eq!(rules[0].provenance.first, v("v3.14.0"));
        assert!(rules[0].provenance.release_source.is_some());
        let node = triples_of(&rules);
        assert!(!node.contains(&t("", "pods", "watch")));
        assert!(!node.contains(&t("crd.projectcalico.org", "ipamblocks", "watch")));
    }

    #[test]
    fn v3_18_0_kubernetes_datastore_node_controller_needs_ipam_watch_but_not_pods_watch() {
        let node = needed_only_by("v3.18.0", Datastore::Kubernetes, "node");
        for resource in ["blockaffinities", "ipamblocks", "ipamhandles"] {
            assert!(node.contains(&t("crd.projectcalico.org", resource, "watch")));
        }
        assert!(!node.contains(&t("", "pods", "watch")));
        let v3_18_5 = needed_only_by("v3.18.5", Datastore::Kubernetes, "node");
        assert_eq!(node, v3_18_5, "v3.18.5 as released is the v3.18.0 role");
    }

    #[test]
    fn v3_20_0_kubernetes_datastore_node_controller_needs_pods_list_and_watch() {
        let node = needed_only_by("v3.20.0", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("", "pods", "list")));
        assert!(node.contains(&t("", "pods", "watch")));
        assert!(!node.contains(&t("crd.projectcalico.org", "ipreservations", "list")));
    }

    #[test]
    fn v3_21_0_kubernetes_datastore_node_controller_needs_ipreservations_list() {
        let node = needed_only_by("v3.21.0", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("crd.projectcalico.org", "ipreservations", "list")));
    }

    #[test]
    fn v3_23_0_kubernetes_datastore_node_controller_watches_ippools_and_clusterinformations() {
        let node = needed_only_by("v3.23.0", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("crd.projectcalico.org", "ippools", "watch")));
        assert!(node.contains(&t("crd.projectcalico.org", "clusterinformations", "watch")));
    }

    #[test]
    fn kubecontrollersconfigurations_list_is_granted_from_v3_28_3_and_v3_29_2_only() {
        let list = t(
            "crd.projectcalico.org",
            "kubecontrollersconfigurations",
            "list",
        );
        for (release, granted) in [
            ("v3.28.2", false),
            ("v3.28.3", true),
            ("v3.28.5", true),
            ("v3.29.0", false),
            ("v3.29.1", false),
            ("v3.29.2", true),
            ("v3.32.1", true),
        ] {
            let base = required(release, Datastore::Kubernetes, &[]);
            assert_eq!(base.contains(&list), granted, "{release}");
        }
    }

    #[test]
    fn v3_29_0_kubernetes_datastore_base_needs_tiers_for_the_default_tier() {
        let base = required("v3.29.0", Datastore::Kubernetes, &[]);
        assert!(base.contains(&t("crd.projectcalico.org", "tiers", "create")));
    }

    #[test]
    fn v3_30_0_kubernetes_datastore_loadbalancer_needs_services_and_ipam() {
        let lb = needed_only_by("v3.30.0", Datastore::Kubernetes, "loadbalancer");
        assert!(lb.contains(&t("", "services/status", "update")));
        assert!(lb.contains(&t("crd.projectcalico.org", "ipamblocks", "create")));
        assert!(lb.contains(&t("crd.projectcalico.org", "ipamconfigs", "get")));
        assert!(!lb.contains(&t("", "namespaces", "watch")));
    }

    #[test]
    fn v3_31_0_kubernetes_datastore_loadbalancer_also_watches_namespaces() {
        let lb = needed_only_by("v3.31.0", Datastore::Kubernetes, "loadbalancer");
        assert!(lb.contains(&t("", "namespaces", "watch")));
        let node = needed_only_by("v3.31.0", Datastore::Kubernetes, "node");
        assert!(!node.contains(&t("", "namespaces", "watch")));
    }

    #[test]
    fn v3_32_0_kubernetes_datastore_needs_150_more_triples_than_v3_31_7() {
        let manifest = |release: &str| {
            let controllers = manifest_controllers(v(release), Datastore::Kubernetes).unwrap();
            required(
                release,
                Datastore::Kubernetes,
                &controllers.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        };
        let old = manifest("v3.31.7");
        let new = manifest("v3.32.0");
        assert!(old.is_subset(&new));
        assert_eq!(new.len() - old.len(), 150);
        assert_eq!(new.len(), 216);
    }

    #[test]
    fn v3_32_0_kubernetes_datastore_base_covers_projectcalico_org_and_the_migrators() {
        let base = required("v3.32.0", Datastore::Kubernetes, &[]);
        for triple in [
            t("projectcalico.org", "kubecontrollersconfigurations", "get"),
            t(
                "crd.projectcalico.org",
                "kubecontrollersconfigurations/status",
                "update",
            ),
            t("projectcalico.org", "globalnetworkpolicies", "update"),
            t("apps", "daemonsets", "watch"),
            t(
                "migration.projectcalico.org",
                "datastoremigrations/status",
                "patch",
            ),
            t(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "delete",
            ),
            t("apiregistration.k8s.io", "apiservices", "create"),
            t("projectcalico.org", "*", "delete"),
            t("crd.projectcalico.org", "*", "list"),
        ] {
            assert!(base.contains(&triple), "{triple:?}");
        }
        let node = needed_only_by("v3.32.0", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("projectcalico.org", "ipamblocks", "delete")));
    }

    #[test]
    fn v3_32_1_kubernetes_datastore_node_controller_needs_kubevirt_informers() {
        let node = needed_only_by("v3.32.1", Datastore::Kubernetes, "node");
        assert!(node.contains(&t("kubevirt.io", "virtualmachineinstances", "watch")));
        let v3_32_0 = needed_only_by("v3.32.0", Datastore::Kubernetes, "node");
        assert!(!v3_32_0.contains(&t("kubevirt.io", "virtualmachineinstances", "watch")));
    }

    #[test]
    fn v3_6_0_etcdv3_datastore_rules_are_per_controller_and_read_only() {
        let e = Datastore::Etcdv3;
        assert!(
            required("v3.6.0", e, &[]).is_empty(),
            "etcd keeps no base rules in v3.6"
        );
        assert_eq!(
            required("v3.6.0", e, &["policy"]),
            [
                t("networking.k8s.io", "networkpolicies", "list"),
                t("networking.k8s.io", "networkpolicies", "watch")
            ]
            .into()
        );
        assert_eq!(
            required("v3.6.0", e, &["serviceaccount"]),
            [
                t("", "serviceaccounts", "list"),
                t("", "serviceaccounts", "watch")
            ]
            .into()
        );
        assert_eq!(
            required("v3.6.0", e, &["profile"]),
            [t("", "namespaces", "list"), t("", "namespaces", "watch")].into()
        );
        assert!(!required("v3.6.0", e, &["node"]).contains(&t("", "pods", "list")));
    }

    #[test]
    fn v3_13_0_etcdv3_datastore_adds_get_and_the_node_controller_reads_pods() {
        let node = required("v3.13.0", Datastore::Etcdv3, &["node"]);
        assert!(node.contains(&t("", "nodes", "get")));
        assert!(node.contains(&t("", "pods", "get")));
    }

    #[test]
    fn etcdv3_datastore_has_no_calico_crd_rules_before_v3_32_0() {
        for release in ["v3.6.0", "v3.13.0", "v3.29.7", "v3.30.3", "v3.31.7"] {
            let controllers = manifest_controllers(v(release), Datastore::Etcdv3).unwrap();
            let all =
                triples_of(&required_rules(v(release), Datastore::Etcdv3, &controllers).unwrap());
            assert!(
                all.iter()
                    .all(|(g, _, _)| g.is_empty() || g == "networking.k8s.io"),
                "{release}"
            );
        }
    }

    #[test]
    fn v3_32_0_etcdv3_datastore_base_has_policy_name_migrator_rules_under_both_groups() {
        let base = required("v3.32.0", Datastore::Etcdv3, &[]);
        assert!(base.contains(&t("crd.projectcalico.org", "networkpolicies", "delete")));
        assert!(base.contains(&t(
            "projectcalico.org",
            "stagedglobalnetworkpolicies",
            "create"
        )));
        assert!(base.contains(&t("apps", "deployments", "get")));
    }

    #[test]
    fn v3_30_0_etcdv3_datastore_loadbalancer_needs_services_beyond_the_upstream_role() {
        let rules = required_rules(v("v3.30.0"), Datastore::Etcdv3, &["loadbalancer"]).unwrap();
        let extra: Vec<_> = rules.iter().filter(|r| r.extra).collect();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].resources, ["services", "services/status"]);
        assert!(extra[0].why.contains("v3.30.3"));
        let upstream = fixture_triples("tests/fixtures/calico/v3.30.0-etcdv3.yaml");
        assert!(!upstream.contains(&t("", "services", "watch")));
    }

    #[test]
    fn v3_30_3_etcdv3_datastore_grants_services_upstream() {
        let rules = required_rules(v("v3.30.3"), Datastore::Etcdv3, &["loadbalancer"]).unwrap();
        assert!(rules.iter().all(|r| !r.extra));
        assert!(triples_of(&rules).contains(&t("", "services/status", "update")));
    }

    #[test]
    fn v3_31_0_etcdv3_datastore_loadbalancer_needs_namespaces() {
        assert!(
            required("v3.31.0", Datastore::Etcdv3, &["loadbalancer"]).contains(&t(
                "",
                "namespaces",
                "watch"
            ))
        );
        assert!(
            !required("v3.30.7", Datastore::Etcdv3, &["loadbalancer"]).contains(&t(
                "",
                "namespaces",
                "watch"
            ))
        );
    }

    #[test]
    fn kubernetes_datastore_etcd_only_controllers_get_no_rules_and_a_warning() {
        let k = Datastore::Kubernetes;
        for release in ["v3.6.0", "v3.20.0", "v3.32.1"] {
            let base = required(release, k, &[]);
            for controller in [
                "workloadendpoint",
                "policy",
                "namespace",
                "serviceaccount",
                "profile",
            ] {
                assert_eq!(
                    required(release, k, &[controller]),
                    base,
                    "{release} {controller}"
                );
            }
        }
        let warned = warnings(v("v3.20.0"), k, &["node", "workloadendpoint", "profile"]).unwrap();
        assert_eq!(warned.len(), 2);
        assert!(warned[0].starts_with("workloadendpoint is an etcd-only controller"));
        assert!(warned[1].starts_with("profile is an etcd-only controller"));
        assert!(
            warnings(v("v3.20.0"), Datastore::Etcdv3, &["workloadendpoint"])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn required_rules_refuse_names_the_release_exits_on_and_flannelmigration() {
        let err =
            required_rules(v("v3.29.7"), Datastore::Kubernetes, &["loadbalancer"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calico-kube-controllers v3.29.7 exits on the controller name `loadbalancer`"
        );
        let err =
            required_rules(v("v3.20.0"), Datastore::Kubernetes, &["flannelmigration"]).unwrap_err();
        assert!(matches!(err, TableError::NotCovered { .. }), "{err}");
    }

    #[test]
    fn every_rule_carries_its_band_source_and_controller() {
        let rules = required_rules(v("v3.20.3"), Datastore::Kubernetes, &["node"]).unwrap();
        let pods = rules.iter().find(|r| r.resources == ["pods"]).unwrap();
        assert_eq!(pods.controller, "node");
        assert_eq!(pods.provenance.first, v("v3.20.0"));
        assert_eq!(pods.provenance.last, v("v3.20.6"));
        assert_eq!(pods.provenance.reference, "v3.20.0");
        assert_eq!(
            pods.provenance.path,
            "_includes/charts/calico/templates/calico-kube-controllers-rbac.yaml"
        );
        let base = rules
            .iter()
            .find(|r| r.resources == ["clusterinformations"])
            .unwrap();
        assert_eq!(base.controller, BASE);
    }

    #[test]
    fn v3_30_0_kubernetes_datastore_loadbalancer_shares_the_node_controllers_datastore_feed() {
        let lb = needed_only_by("v3.30.0", Datastore::Kubernetes, "loadbalancer");
        let g = "crd.projectcalico.org";
        for triple in [
            t("", "nodes", "watch"),
            t(g, "clusterinformations", "watch"),
            t(g, "ippools", "watch"),
            t(g, "ipamblocks", "watch"),
            t(g, "hostendpoints", "watch"),
        ] {
            assert!(lb.contains(&triple), "{triple:?}");
        }
        assert!(!lb.contains(&t(g, "hostendpoints", "create")));
    }

    // ---- versions and datastores ------------------------------------------------------------

    #[test]
    fn versions_parse_with_or_without_v_and_refuse_anything_else() {
        assert_eq!(v("v3.13.2"), CalicoVersion::new(3, 13, 2));
        assert_eq!(v("3.13.2"), CalicoVersion::new(3, 13, 2));
        assert_eq!(v("3.13.2").to_string(), "v3.13.2");
        for bad in [
            "",
            "v",
            "v3",
            "v3.13",
            "v3.13.2.1",
            "v3.13.2-rc1",
            " v3.13.2",
            "v3.13.2 ",
            "V3.13.2",
            "vv3.13.2",
            "v3..2",
            "v3.+13.2",
            "v3.-1.2",
            "latest",
            "v3.x.0",
            "v3.13.99999999999",
        ] {
            assert!(
                matches!(
                    CalicoVersion::parse(bad),
                    Err(TableError::InvalidVersion { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(v("v3.9.0") < v("v3.10.0"));
    }

    #[test]
    fn versions_outside_the_table_are_errors_not_fallbacks() {
        let k = Datastore::Kubernetes;
        let err = required_rules(v("v3.33.0"), k, &["node"]).unwrap_err();
        assert!(matches!(err, TableError::NewerThanTable { .. }));
        assert!(
            err.to_string().contains("newer than the rule table"),
            "{err}"
        );
        assert!(err.to_string().contains("v3.32.1"), "{err}");
        assert!(matches!(
            required_rules(v("v3.32.2"), k, &["node"]),
            Err(TableError::NewerThanTable { .. })
        ));
        assert!(matches!(
            required_rules(v("v3.5.8"), Datastore::Etcdv3, &["node"]),
            Err(TableError::OlderThanTable { .. })
        ));
        assert!(matches!(
            required_rules(v("v3.13.9"), k, &["node"]),
            Err(TableError::UnknownRelease { .. })
        ));
        assert!(matches!(
            parse_enabled_controllers(v("v3.33.0"), "node"),
            Err(TableError::NewerThanTable { .. })
        ));
        assert!(default_controllers(v("v4.0.0"), k).is_err());
    }

    #[test]
    fn datastore_parses_exactly_kubernetes_and_etcdv3() {
        assert_eq!(
            Datastore::parse("kubernetes").unwrap(),
            Datastore::Kubernetes
        );
        assert_eq!(Datastore::parse("etcdv3").unwrap(), Datastore::Etcdv3);
        for bad in ["Kubernetes", "kdd", "etcd", "etcdv2", " kubernetes", ""] {
            assert!(Datastore::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unset_datastore_type_is_etcdv3_before_v3_17_and_detected_from_etcd_endpoints_after() {
        let from = |release: &str, dst: Option<&str>, endpoints: Option<&str>| {
            Datastore::from_env(v(release), dst, endpoints)
        };
        assert_eq!(from("v3.16.10", None, None).unwrap(), Datastore::Etcdv3);
        assert!(from("v3.16.10", Some(""), None).is_err());
        assert_eq!(from("v3.17.0", None, None).unwrap(), Datastore::Kubernetes);
        assert_eq!(
            from("v3.17.0", Some(""), None).unwrap(),
            Datastore::Kubernetes
        );
        assert_eq!(
            from("v3.30.0", None, Some("https://10.0.0.1:2379")).unwrap(),
            Datastore::Etcdv3
        );
        assert_eq!(
            from("v3.30.0", None, Some("")).unwrap(),
            Datastore::Kubernetes
        );
        assert_eq!(
            from("v3.6.0", Some("kubernetes"), None).unwrap(),
            Datastore::Kubernetes
        );
        assert_eq!(
            from("v3.32.1", Some("etcdv3"), None).unwrap(),
            Datastore::Etcdv3
        );
        assert!(from("v3.32.1", Some("etcd"), None).is_err());
        assert!(from("v3.33.0", None, None).is_err());
    }

    // ---- ENABLED_CONTROLLERS ----------------------------------------------------------------

    fn parsed(release: &str, text: &str) -> Result<Vec<String>, TableError> {
        parse_enabled_controllers(v(release), text)
    }

    #[test]
    fn enabled_controllers_rejects_case_whitespace_and_empty_names() {
        for (text, name) in [
            ("Node", "Node"),
            (" node", " node"),
            ("node ", "node "),
            ("node,", ""),
            (",node", ""),
            ("node,,policy", ""),
            ("", ""),
            ("node, policy", " policy"),
            ("nodes", "nodes"),
        ] {
            let err = parsed("v3.13.2", text).unwrap_err();
            assert_eq!(
                err,
                TableError::UnknownController {
                    version: v("v3.13.2"),
                    name: name.to_owned()
                },
                "{text:?}"
            );
        }
        assert_eq!(
            parsed("v3.13.2", "Node").unwrap_err().to_string(),
            "calico-kube-controllers v3.13.2 exits on the controller name `Node`"
        );
    }

    #[test]
    fn enabled_controllers_accepts_profile_as_namespace_and_dedups() {
        assert_eq!(parsed("v3.13.2", "profile").unwrap(), ["namespace"]);
        assert_eq!(
            parsed("v3.20.0", "node,profile,namespace,node").unwrap(),
            ["node", "namespace"]
        );
        assert_eq!(
            parsed(
                "v3.6.0",
                "policy,namespace,serviceaccount,workloadendpoint,node"
            )
            .unwrap(),
            [
                "policy",
                "namespace",
                "serviceaccount",
                "workloadendpoint",
                "node"
            ]
        );
    }

    #[test]
    fn loadbalancer_is_a_controller_name_from_v3_30_0_only() {
        for release in ["v3.6.0", "v3.14.0", "v3.29.7"] {
            assert!(
                matches!(parsed(release, "node,loadbalancer"), Err(TableError::UnknownController { ref name, .. }) if name == "loadbalancer"),
                "{release}"
            );
        }
        assert_eq!(
            parsed("v3.30.0", "node,loadbalancer").unwrap(),
            ["node", "loadbalancer"]
        );
        assert_eq!(parsed("v3.32.1", "loadbalancer").unwrap(), ["loadbalancer"]);
    }

    #[test]
    fn flannelmigration_is_unknown_before_v3_9_combinable_until_v3_13_and_alone_from_v3_14() {
        assert!(matches!(
            parsed("v3.8.9", "flannelmigration"),
            Err(TableError::UnknownController { .. })
        ));
        assert_eq!(
            parsed("v3.9.0", "node,flannelmigration").unwrap(),
            ["node", "flannelmigration"]
        );
        assert!(matches!(
            parsed("v3.13.5", "flannelmigration,"),
            Err(TableError::UnknownController { ref name, .. }) if name.is_empty()
        ));
        assert_eq!(
            parsed("v3.14.0", "flannelmigration").unwrap(),
            ["flannelmigration"]
        );
        assert_eq!(
            parsed("v3.14.0", " ,flannelmigration, ").unwrap(),
            ["flannelmigration"]
        );
        for text in [
            "node,flannelmigration",
            "flannelmigrations",
            "Flannelmigration,flannelmigration",
        ] {
            assert!(
                matches!(
                    parsed("v3.32.1", text),
                    Err(TableError::FlannelMigrationNotAlone { .. })
                ),
                "{text:?}"
            );
        }
    }

    // ---- defaults -----------------------------------------------------------------------------

    #[test]
    fn defaults_when_unset_are_the_five_controllers_until_v3_29_and_add_loadbalancer_from_v3_30() {
        let five = [
            "node",
            "policy",
            "namespace",
            "workloadendpoint",
            "serviceaccount",
        ];
        for datastore in [Datastore::Kubernetes, Datastore::Etcdv3] {
            let mut got = default_controllers(v("v3.13.2"), datastore).unwrap();
            got.sort();
            let mut want = five.map(str::to_owned).to_vec();
            want.sort();
            assert_eq!(got, want, "{datastore}");
            let mut got = default_controllers(v("v3.29.7"), datastore).unwrap();
            got.sort();
            assert_eq!(got, want, "{datastore}");
            let got = default_controllers(v("v3.30.0"), datastore).unwrap();
            assert_eq!(got.len(), 6);
            assert!(got.contains(&"loadbalancer".to_owned()));
        }
    }

    #[test]
    fn upstream_manifests_enable_node_for_kubernetes_and_all_etcd_controllers_for_etcdv3() {
        assert_eq!(
            manifest_controllers(v("v3.6.0"), Datastore::Kubernetes).unwrap(),
            ["node"]
        );
        assert_eq!(
            manifest_controllers(v("v3.30.0"), Datastore::Kubernetes).unwrap(),
            ["node", "loadbalancer"]
        );
        assert_eq!(
            manifest_controllers(v("v3.29.7"), Datastore::Etcdv3).unwrap(),
            [
                "policy",
                "namespace",
                "serviceaccount",
                "workloadendpoint",
                "node"
            ]
        );
    }

    #[test]
    fn controller_info_names_its_source_and_etcd_only_controllers() {
        let info = controller_info(v("v3.30.0")).unwrap();
        assert!(info.names.contains(&"loadbalancer".to_owned()));
        assert_eq!(
            info.aliases,
            [("profile".to_owned(), "namespace".to_owned())]
        );
        assert_eq!(
            info.etcd_only,
            ["workloadendpoint", "policy", "namespace", "serviceaccount"]
        );
        assert!(info.source.contains("runconfig.go"));
    }
}
