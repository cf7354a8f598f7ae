//! stuck_pods: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.1.0";

pub(super) const EXAMPLES: &str = r"- name: Force-delete pods stuck Terminating or never seen by the scheduler
  kubemend.microk8s.stuck_pods:
    backup_dir: /var/backups/kubemend/pods

- name: List the stuck pods of the AWX namespace, without deleting any
  kubemend.microk8s.stuck_pods:
    namespaces:
      - awx
  check_mode: true
  register: stuck_awx_pods

- name: Force-delete pods stuck Terminating for 30 minutes, StatefulSet pods of dead nodes too
  kubemend.microk8s.stuck_pods:
    kinds:
      - terminating
    terminating_grace: 30m
    allow_statefulset: true
    remove_finalizers: true
    backup_dir: /var/backups/kubemend/pods

- name: Force-delete the AWX job pods that never got scheduled, at most five
  kubemend.microk8s.stuck_pods:
    kinds:
      - pending
    pending_age: 15m
    namespaces:
      - awx
    label_selector: ansible-awx-job-id
    include_bare_pods: true
    max_pods: 5
";
