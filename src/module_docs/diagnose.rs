//! diagnose: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.1.0";

pub(super) const EXAMPLES: &str = r#"- name: Run the runbook read-only and show what needs fixing, and with which module
  block:
    - name: Diagnose the cluster
      kubemend.microk8s.diagnose:
      register: diagnosis

    - name: Show the warnings and critical findings with their fix
      ansible.builtin.debug:
        msg: "{{ item.severity }} {{ item.object }}: {{ item.evidence }}; {{ item.hint }}"
      loop: "{{ diagnosis.findings | rejectattr('severity', 'equalto', 'info') | list }}"

- name: Fail the job when something critical was found
  kubemend.microk8s.diagnose:
    fail_on: critical
  register: diagnosis
  failed_when: diagnosis.fail_on_reached

- name: Only the pod checks, in the AWX namespace, with shorter thresholds
  kubemend.microk8s.diagnose:
    checks:
      - stuck_pods
    namespaces:
      - ci
    pending_age: 5m
    terminating_grace: 2m

- name: Also check kubelite and dqlite on the control-plane nodes over SSH
  kubemend.microk8s.diagnose:
    checks:
      - kubelite
    ssh_user: "{{ ansible_user }}"
    window: 30m
"#;
