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
    datastore: kubernetes
    enabled_controllers:
      - node

- name: Ensure the ClusterRole grants what Calico needs; restart the controller in a later window
  # By default the Deployment is restarted after rules were added (added RBAC does not revive
  # a running controller) and the run waits for a new Ready pod.
  kubemend.microk8s.calico_rbac:
    restart_controller: false

- name: Ensure the ClusterRole grants what Calico needs, allowing a slow rollout
  kubemend.microk8s.calico_rbac:
    restart_timeout: 10m
    timeout: 15m

- name: Ensure the ClusterRole also lets the controllers read ConfigMaps
  kubemend.microk8s.calico_rbac:
    extra_rules:
      - api_groups: [""]
        resources: [configmaps]
        verbs: [get, list, watch]

- name: Ensure the ClusterRole matches the incident review's hand-applied role exactly
  # The derived rules add pods list/watch; the review also granted the workloadendpoints CRD,
  # which the Kubernetes datastore does not use. For a GitOps copy that must match the review:
  kubemend.microk8s.calico_rbac:
    extra_rules:
      - api_groups: [""]
        resources: [pods]
        verbs: [watch, list, get]
      - api_groups: [crd.projectcalico.org]
        resources: [workloadendpoints]
        verbs: [watch, list, get, create, update, delete]

- name: Repair Calico RBAC with a bearer token, as an AWX Kubernetes credential provides
  kubemend.microk8s.calico_rbac:
    host: https://10.0.0.1:16443
    api_key: "{{ kubemend_api_token }}"
    ca_cert: /etc/kubemend/ca.crt
  register: calico_rbac_result
"#;
