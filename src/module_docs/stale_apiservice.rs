//! stale_apiservice: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.2.0";

pub(super) const EXAMPLES: &str = r"- name: Ensure the APIService of the removed metrics server is gone
  kubemend.microk8s.stale_apiservice:
    name: v1beta1.metrics.k8s.io
    backup_dir: /var/backups/kubemend/apiservices

- name: Find every APIService whose backend is gone, without deleting any
  kubemend.microk8s.stale_apiservice:
    detect: true
  check_mode: true
  register: stale_apiservices

- name: Remove stale APIServices unavailable for an hour, except the custom metrics adapter's
  kubemend.microk8s.stale_apiservice:
    detect: true
    min_age: 1h
    exclude:
      - v1beta1.custom.metrics.k8s.io
    backup_dir: /var/backups/kubemend/apiservices
";
