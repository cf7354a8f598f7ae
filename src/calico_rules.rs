//! Which RBAC rules the `calico-kube-controllers` ClusterRole needs, per Calico release,
//! datastore and set of enabled controllers, with the upstream source of every rule.
//!
//! Contract:
//!
//! - The table is data, `calico_rules.yaml`, embedded at build time. It is made of bands: runs of
//!   Calico releases (v3.6.0 to v3.32.1) whose upstream ClusterRole grants the same
//!   (api group, resource, verb) triples, one list of bands per datastore. Every band names its
//!   first and last release, every release it covers, and the upstream file and tag (or commit)
//!   its rules were read from; `tests/fixtures/calico/` holds that ClusterRole verbatim and the
//!   unit tests below check the table against it.
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

/// The table, as embedded in the binary.
const TABLE_YAML: &str = include_str!("calico_rules.yaml");

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
            .get_or_init(|| Self::parse(TABLE_YAML))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn parse(text: &str) -> Result<Self, TableError> {
        let data: Data = serde_saphyr::from_str(text).map_err(|error| TableError::Data {
            message: error.to_string(),
        })?;
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
