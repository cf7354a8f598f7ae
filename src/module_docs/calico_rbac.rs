//! calico_rbac: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.1.0";

pub(super) const EXAMPLES: &str = r#"- name: Ensure the calico-kube-controllers ClusterRole grants what the running Calico needs
  kubemend.microk8s.calico_rbac:
    kubeconfig: /var/snap/microk8s/current/credentials/client.config

- name: Report what the ClusterRole lacks, without changing it
  kubemend.microk8s.calico_rbac:
    kubeconfig: /var/snap/microk8s/current/credentials/client.config
  check_mode: true
  diff: true
  register: calico_rbac_plan

- name: Ensure the ClusterRole grants what Calico v3.13.2 needs while its Deployment is down
  kubemend.microk8s.calico_rbac:
    calico_version: v3.13.2
    enabled_controllers:
      - node
      - workloadendpoint

- name: Ensure the ClusterRole also lets the controllers read ConfigMaps
  kubemend.microk8s.calico_rbac:
    extra_rules:
      - api_groups: [""]
        resources: [configmaps]
        verbs: [get, list, watch]

- name: Repair Calico RBAC with a bearer token, as an AWX Kubernetes credential provides
  kubemend.microk8s.calico_rbac:
    host: https://10.0.0.1:16443
    api_key: "{{ kubemend_api_token }}"
    ca_cert: /etc/kubemend/ca.crt
  register: calico_rbac_result
"#;

pub(super) const RETURN: &str = r#"clusterrole:
  description: Name of the ClusterRole checked.
  type: str
  returned: success
  sample: calico-kube-controllers
calico_version:
  description:
    - The Calico version the rules were derived for, from O(calico_version) or the
      Deployment's image tag.
    - V(null) when O(rules) replaces the derivation.
  type: str
  returned: success
  sample: v3.13.2
enabled_controllers:
  description:
    - The controllers the rules were derived for, from O(enabled_controllers), the
      Deployment's ENABLED_CONTROLLERS or the version's defaults.
    - Empty when O(rules) replaces the derivation.
  type: list
  elements: str
  returned: success
  sample: [node, workloadendpoint]
required_rules:
  description: Every rule the role must grant, derived ones and O(extra_rules).
  type: list
  elements: dict
  returned: success
  # The fields of a rule, as in the options rules and extra_rules.
  contains: &rule
    api_groups:
      description: API groups; V("") is the core group.
      type: list
      elements: str
    resources:
      description: Resources, possibly with a subresource (V(pods/status)).
      type: list
      elements: str
    verbs:
      description: Verbs.
      type: list
      elements: str
  sample:
    - api_groups: [""]
      resources: [pods]
      verbs: [get, list, watch]
missing_before:
  description:
    - The required permissions the role did not grant when it was read, grouped into rules.
    - Empty when the role already grants everything.
  type: list
  elements: dict
  returned: success
  contains: *rule
  sample:
    - api_groups: [crd.projectcalico.org]
      resources: [workloadendpoints]
      verbs: [create, delete, get, list, update, watch]
added_rules:
  description:
    - The rules appended to the role (in check mode, that would be appended). Existing rules
      are never changed.
    - Empty when nothing was missing.
  type: list
  elements: dict
  returned: success
  contains: *rule
created:
  description: Whether the ClusterRole did not exist and was (in check mode, would be) created.
  type: bool
  returned: success
  sample: false
service_accounts:
  description:
    - The ServiceAccounts, as C(namespace/name), whose permissions were checked with
      SubjectAccessReviews (O(service_account), else the Deployment's, else those bound to
      the role).
  type: list
  elements: str
  returned: success
  sample: [kube-system/calico-kube-controllers]
verified:
  description:
    - Whether a SubjectAccessReview allowed every required permission to every ServiceAccount
      after the change.
    - V(null) when no review was made, in check mode with a change pending, with no
      ServiceAccount to review, or when the reviews failed (a warning says why).
  type: bool
  returned: success
  sample: true
denied:
  description:
    - "The permissions still denied after the change, as C(namespace/name: verb resource.group)."
    - Empty unless RV(verified) is V(false).
  type: list
  elements: str
  returned: success
  sample: []
"#;
