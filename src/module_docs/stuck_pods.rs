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

pub(super) const RETURN: &str = r"deleted:
  description:
    - The pods force-deleted (in check mode, that would be), each with the evidence and its
      whole manifest.
    - Empty when nothing was deleted.
  type: list
  elements: dict
  returned: success
  contains:
    namespace:
      description: Namespace of the pod.
      type: str
    name:
      description: Name of the pod.
      type: str
    uid:
      description: UID of the pod; the delete was made on the condition that it still matched.
      type: str
    owner:
      description: Its controller as C(Kind/name); V(null) for a bare pod.
      type: str
      sample: ReplicaSet/web-7d9f8
    kind:
      description: How it was stuck, C(terminating) or C(pending).
      type: str
    node:
      description: The node it is bound to; V(null) when it was never scheduled.
      type: str
    node_state:
      description: C(Ready), C(NotReady), C(Unknown), C(NoReadyCondition), C(gone) (no such Node) or C(none) (never scheduled).
      type: str
    node_lease_age_seconds:
      description: Seconds since the node's Lease was renewed, if it has one.
      type: int
    scheduler:
      description: The schedulerName of a Pending pod.
      type: str
    scheduler_lease:
      description: Who holds that scheduler's lease, as text.
      type: str
      sample: lease kube-system/kube-scheduler held by k8s01_5f0e, renewed 2s ago
    reason:
      description: The evidence that it is stuck.
      type: str
    age:
      description: Its age, e.g. C(2h5m).
      type: str
    age_seconds:
      description: Its age in seconds.
      type: int
    stuck_seconds:
      description: Seconds past its deletion deadline (Terminating), or Pending.
      type: int
    finalizers:
      description: Its finalizers.
      type: list
      elements: str
    scanned_at:
      description: When it was judged (RFC 3339).
      type: str
    manifest:
      description: The pod as it was read, complete.
      type: dict
    backup_file:
      description:
        - The manifest written before the first delete.
        - V(null) without O(backup_dir) and in check mode.
      type: str
    finalizers_removed:
      description: Whether its finalizers were removed (O(remove_finalizers)).
      type: bool
    gone:
      description: Whether the pod was gone after the delete; V(null) in check mode.
      type: bool
left_alone:
  description:
    - Stuck pods that were not deleted, with why (bare pod, StatefulSet pod on a live node,
      excluded namespace, finalizers, re-created meanwhile, ...).
    - Each entry has the fields of a RV(deleted) entry but the manifest and what the delete
      did; RV(left_alone[].reason) says why it was left alone.
    - At most 100 entries; a warning gives the total.
  type: list
  elements: dict
  returned: success
  contains:
    namespace:
      description: Namespace of the pod.
      type: str
    name:
      description: Name of the pod.
      type: str
    uid:
      description: UID of the pod.
      type: str
    stuck_reason:
      description: The evidence that it is stuck.
      type: str
    reason:
      description: Why it was left alone.
      type: str
seen_by_scheduler:
  description:
    - Pending pods the scheduler did look at (PodScheduled condition, a FailedScheduling event,
      scheduling gates). They are not stuck and are left alone.
    - At most 100 entries; a warning gives the total.
  type: list
  elements: dict
  returned: success
  contains:
    namespace:
      description: Namespace of the pod.
      type: str
    name:
      description: Name of the pod.
      type: str
    uid:
      description: UID of the pod.
      type: str
    owner:
      description: Its controller as C(Kind/name); V(null) for a bare pod.
      type: str
    age:
      description: Its age, e.g. C(12m).
      type: str
    scheduler:
      description: Its schedulerName.
      type: str
    evidence:
      description: What shows that the scheduler saw it.
      type: str
schedulers:
  description: The schedulerNames that stuck Pending pods ask for, and whether one holds its lease.
  type: list
  elements: dict
  returned: success
  contains:
    name:
      description: The schedulerName.
      type: str
      sample: default-scheduler
    lease:
      description: The Lease found, as C(namespace/name); V(null) when there is none.
      type: str
    holder:
      description: The Lease's holder identity.
      type: str
    renewed_seconds_ago:
      description: Seconds since the Lease was renewed.
      type: int
    holds_lease:
      description: Whether a holder renewed the Lease within its duration.
      type: bool
    stuck_pods:
      description: How many stuck Pending pods ask for this scheduler.
      type: int
counts:
  description: What the scan found, in numbers.
  type: dict
  returned: success
  contains:
    scanned:
      description: Pods looked at.
      type: int
    terminating_stuck:
      description: Pods stuck Terminating past O(terminating_grace).
      type: int
    terminating_within_grace:
      description: Terminating pods still within O(terminating_grace).
      type: int
    pending_stuck:
      description: Pending pods the scheduler never saw, older than O(pending_age).
      type: int
    pending_within_age:
      description: Pending pods on no node, younger than O(pending_age).
      type: int
    seen_by_scheduler:
      description: Pending pods the scheduler saw.
      type: int
    qualifying:
      description: Stuck pods that qualify for a force delete.
      type: int
    left_alone:
      description: Stuck pods left alone.
      type: int
verified:
  description:
    - Whether every deleted pod was gone afterwards (a pod of the same name with a new UID
      counts as gone).
    - V(null) in check mode and when nothing was deleted.
  type: bool
  returned: success
  sample: true
";
