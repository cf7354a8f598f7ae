//! kubelite_restart: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.2.0";

pub(super) const EXAMPLES: &str = r#"- name: Restart kubelite on every control-plane node, one at a time, leaders last
  kubemend.microk8s.kubelite_restart:
    ssh_user: ubuntu

- name: Show the order and every pre-flight result, without restarting anything
  kubemend.microk8s.kubelite_restart:
    ssh_user: ubuntu
  check_mode: true
  register: kubelite_plan

- name: Restart the inventory's microk8s nodes, skipping those restarted in the last hour
  kubemend.microk8s.kubelite_restart:
    nodes: "{{ groups['microk8s'] }}"
    restarted_within: 1h

- name: Restart two nodes in this order, with their SSH addresses
  kubemend.microk8s.kubelite_restart:
    order: given
    nodes:
      - name: k8s02
        host: 10.0.0.12
        user: ubuntu
      - name: k8s03
        host: 10.0.0.13
        user: ubuntu
    gate_timeout: 5m
    settle: 30s
"#;
