//! calico_ipam: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.2.0";

pub(super) const EXAMPLES: &str = r"- name: See which Calico addresses and handles would be released, releasing none
  kubemend.microk8s.calico_ipam:
  check_mode: true
  register: calico_ipam

- name: Release leaked Calico addresses and orphaned IPAM handles, keeping a copy of each object
  kubemend.microk8s.calico_ipam:
    backup_dir: /var/backups/kubemend/calico-ipam

- name: After a node was removed for good, also release tunnel addresses nothing names
  kubemend.microk8s.calico_ipam:
    tunnel_addresses: true
    confirm_after: 2m
    backup_dir: /var/backups/kubemend/calico-ipam

- name: Clean up the incident's 838 stale handles in one run (reviewed in check mode first)
  kubemend.microk8s.calico_ipam:
    max_releases: 1000
    backup_dir: /var/backups/kubemend/calico-ipam
";
