//! cert_refresh: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.2.0";

pub(super) const EXAMPLES: &str = r#"- name: Renew what expires within 30 days, one control-plane node at a time
  kubemend.microk8s.cert_refresh:
    ssh_user: ubuntu

- name: Show every node's certificates and what would be renewed, without renewing anything
  kubemend.microk8s.cert_refresh:
    ssh_user: ubuntu
  check_mode: true
  register: cert_plan

- name: Renew the apiserver certificate of the inventory's nodes when it has under 60 days
  kubemend.microk8s.cert_refresh:
    nodes: "{{ groups['microk8s'] }}"
    renew_before: 60
    certificates: [server.crt]
"#;
