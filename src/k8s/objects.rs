//! Slim typed views of the built-in objects kubemend reads (Pod, Deployment, ReplicaSet, Node,
//! Service, Namespace, APIService): the fields it uses, under k8s-openapi's names and types, and nothing else.
//!
//! k8s-openapi's own types model every field of the API, and their generated (de)serializers
//! (a Pod's volumes alone are 90 kB) took 524 kB of the static binary, which has to stay under
//! 8 MB. A view reads the same JSON and ignores the fields it does not name; metadata is
//! k8s-openapi's `ObjectMeta`, and small objects (Lease, Event, webhook configurations) stay
//! k8s-openapi's.
//!
//! An object an action returns or backs up whole (a force-deleted pod's manifest) is read as
//! [`Whole`]: the view plus the JSON exactly as the API server sent it, so fields the view does
//! not name, or that a newer Kubernetes release added, are kept.

use std::ops::Deref;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Implements k8s-openapi's `Resource` and `Metadata` for a view, which gives it kube's
/// `Resource` (so `Api<View>` lists, gets, watches and deletes it).
macro_rules! resource {
    ($ty:ty, $group:literal, $version:literal, $kind:literal, $plural:literal, $scope:ty) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = if $group.is_empty() {
                $version
            } else {
                concat!($group, "/", $version)
            };
            const GROUP: &'static str = $group;
            const KIND: &'static str = $kind;
            const VERSION: &'static str = $version;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Pod: where it runs, who schedules it, what holds it back, and its phase and conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}
resource!(
    Pod,
    "",
    "v1",
    "Pod",
    "pods",
    k8s_openapi::NamespaceResourceScope
);

/// The fields of a pod spec kubemend reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub node_name: Option<String>,
    pub scheduler_name: Option<String>,
    pub scheduling_gates: Option<Vec<PodSchedulingGate>>,
    pub service_account_name: Option<String>,
}

/// A container: its name, image and environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    pub env: Option<Vec<EnvVar>>,
}

/// An environment variable: a value, or a reference kubemend does not resolve.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    /// Present when the value comes from a reference (its content is not read).
    pub value_from: Option<IgnoredAny>,
}

/// A scheduling gate: the pod waits on purpose until it is removed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodSchedulingGate {
    pub name: String,
}

/// A pod's phase and conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodStatus {
    pub phase: Option<String>,
    pub conditions: Option<Vec<Condition>>,
}

/// A condition of a pod, node, namespace or APIService.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Time>,
}

/// A Deployment: its replicas, its pod template and its rollout status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Deployment {
    pub metadata: ObjectMeta,
    pub spec: Option<DeploymentSpec>,
    pub status: Option<DeploymentStatus>,
}
resource!(
    Deployment,
    "apps",
    "v1",
    "Deployment",
    "deployments",
    k8s_openapi::NamespaceResourceScope
);

/// The fields of a Deployment's spec kubemend reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeploymentSpec {
    pub replicas: Option<i32>,
    pub template: PodTemplateSpec,
}

/// A pod template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodTemplateSpec {
    pub metadata: Option<ObjectMeta>,
    pub spec: Option<PodSpec>,
}

/// What the deployment controller says of a rollout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub observed_generation: Option<i64>,
    pub updated_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
}

/// A ReplicaSet: its metadata (owner, revision and pod-template-hash) is all kubemend reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReplicaSet {
    pub metadata: ObjectMeta,
}
resource!(
    ReplicaSet,
    "apps",
    "v1",
    "ReplicaSet",
    "replicasets",
    k8s_openapi::NamespaceResourceScope
);

/// A Node: its conditions and addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Node {
    pub metadata: ObjectMeta,
    pub status: Option<NodeStatus>,
}
resource!(
    Node,
    "",
    "v1",
    "Node",
    "nodes",
    k8s_openapi::ClusterResourceScope
);

/// A Node's conditions and addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    pub conditions: Option<Vec<Condition>>,
    pub addresses: Option<Vec<NodeAddress>>,
}

/// An address a Node advertises (`InternalIP`, `Hostname`, …).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

/// A Service: its type and ports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub metadata: ObjectMeta,
    pub spec: Option<ServiceSpec>,
}
resource!(
    Service,
    "",
    "v1",
    "Service",
    "services",
    k8s_openapi::NamespaceResourceScope
);

/// A Service's type and ports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub ports: Option<Vec<ServicePort>>,
}

/// A port a Service exposes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: i32,
}

/// A Namespace: its phase and conditions (what the namespace controller says of its deletion).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: ObjectMeta,
    pub status: Option<NamespaceStatus>,
}
resource!(
    Namespace,
    "",
    "v1",
    "Namespace",
    "namespaces",
    k8s_openapi::ClusterResourceScope
);

/// A Namespace's phase and conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NamespaceStatus {
    pub phase: Option<String>,
    pub conditions: Option<Vec<Condition>>,
}

/// An APIService (`apiregistration.k8s.io/v1`): the group and version it serves, the Service
/// behind it (none: served by the API server itself) and its Available condition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiService {
    pub metadata: ObjectMeta,
    pub spec: ApiServiceSpec,
    pub status: Option<ApiServiceStatus>,
}
resource!(
    ApiService,
    "apiregistration.k8s.io",
    "v1",
    "APIService",
    "apiservices",
    k8s_openapi::ClusterResourceScope
);

/// The fields of an APIService's spec kubemend reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiServiceSpec {
    pub group: String,
    pub version: String,
    pub service: Option<ApiServiceReference>,
}

/// The Service an aggregated API is served behind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiServiceReference {
    pub namespace: String,
    pub name: String,
    /// 443 when unset (apiregistration/v1's default).
    pub port: Option<i32>,
}

/// An APIService's conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ApiServiceStatus {
    pub conditions: Option<Vec<Condition>>,
}

/// An object as the API server sent it, whole, with its typed view `V` (reached through
/// `Deref`). It serializes as the JSON that was read, unchanged; [`k8s_openapi::Metadata::
/// metadata_mut`] changes the view alone (kubemend never writes a `Whole` back).
#[derive(Debug, Clone)]
pub struct Whole<V> {
    view: V,
    raw: Value,
}

impl<V> Whole<V> {
    /// The object as the API server sent it.
    #[must_use]
    pub fn raw(&self) -> &Value {
        &self.raw
    }
}

impl<V> Deref for Whole<V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.view
    }
}

impl<'de, V: DeserializeOwned + k8s_openapi::Resource> Deserialize<'de> for Whole<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut raw = Value::deserialize(deserializer)?;
        let view = V::deserialize(&raw).map_err(serde::de::Error::custom)?;
        // The items of a list come without apiVersion and kind; a manifest needs them first.
        if let Value::Object(fields) = &mut raw
            && !(fields.contains_key("apiVersion") && fields.contains_key("kind"))
        {
            let mut whole = serde_json::Map::new();
            whole.insert("apiVersion".into(), V::API_VERSION.into());
            whole.insert("kind".into(), V::KIND.into());
            for (key, value) in std::mem::take(fields) {
                if key != "apiVersion" && key != "kind" {
                    whole.insert(key, value);
                }
            }
            *fields = whole;
        }
        Ok(Self { view, raw })
    }
}

impl<V> Serialize for Whole<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<V: k8s_openapi::Resource> k8s_openapi::Resource for Whole<V> {
    const API_VERSION: &'static str = V::API_VERSION;
    const GROUP: &'static str = V::GROUP;
    const KIND: &'static str = V::KIND;
    const VERSION: &'static str = V::VERSION;
    const URL_PATH_SEGMENT: &'static str = V::URL_PATH_SEGMENT;
    type Scope = V::Scope;
}

impl<V: k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata for Whole<V> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        self.view.metadata()
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        self.view.metadata_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_whole_pod_keeps_every_field_the_view_does_not_name() {
        let sent = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ci", "uid": "u1"},
            "spec": {"nodeName": "k8s02", "containers": [{"name": "c", "image": "i",
                "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "someFieldOfALaterRelease": {"x": 1}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}
        });
        let pod: Whole<Pod> = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("k8s02"));
        assert_eq!(spec.containers[0].image.as_deref(), Some("i"));
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.conditions.as_ref().unwrap()[0].type_, "PodScheduled");
        assert_eq!(serde_json::to_value(&pod).unwrap(), sent);
    }

    #[test]
    fn a_list_item_gets_the_api_version_and_kind_a_manifest_needs_first() {
        let item = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let pod: Whole<Pod> = serde_json::from_value(item).unwrap();
        let keys: Vec<&String> = pod.raw().as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(pod.raw()["apiVersion"], "v1");
        assert_eq!(pod.raw()["kind"], "Pod");
    }

    #[test]
    fn views_name_the_api_paths_of_their_kinds() {
        use kube::Resource as _;
        assert_eq!(Pod::url_path(&(), Some("ci")), "/api/v1/namespaces/ci/pods");
        assert_eq!(
            Whole::<Pod>::url_path(&(), Some("ci")),
            "/api/v1/namespaces/ci/pods"
        );
        assert_eq!(
            Deployment::url_path(&(), Some("kube-system")),
            "/apis/apps/v1/namespaces/kube-system/deployments"
        );
        assert_eq!(
            ReplicaSet::url_path(&(), Some("kube-system")),
            "/apis/apps/v1/namespaces/kube-system/replicasets"
        );
        assert_eq!(Node::url_path(&(), None), "/api/v1/nodes");
        assert_eq!(
            Service::url_path(&(), Some("x")),
            "/api/v1/namespaces/x/services"
        );
        assert_eq!(
            ApiService::url_path(&(), None),
            "/apis/apiregistration.k8s.io/v1/apiservices"
        );
        assert_eq!(Namespace::url_path(&(), None), "/api/v1/namespaces");
        assert_eq!(Deployment::api_version(&()), "apps/v1");
        assert_eq!(Node::api_version(&()), "v1");
    }

    #[test]
    fn an_env_var_from_a_reference_is_seen_as_one() {
        let var: EnvVar = serde_json::from_value(json!({
            "name": "DATASTORE_TYPE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}
        }))
        .unwrap();
        assert!(var.value.is_none());
        assert!(var.value_from.is_some());
    }
}
