//! stale_webhook: the parts of its sidecar docs that the options cannot give.

pub(super) const VERSION_ADDED: &str = "0.1.0";

pub(super) const EXAMPLES: &str = r"- name: Ensure the webhook configuration of the removed New Relic agent is gone
  kubemend.microk8s.stale_webhook:
    name: newrelic-bundle-nri-metadata-injection
    backup_dir: /var/backups/kubemend/webhooks

- name: Find every webhook configuration whose backend is gone, without deleting any
  kubemend.microk8s.stale_webhook:
    detect: true
  check_mode: true
  register: stale_webhooks

- name: Remove stale validating webhook configurations, except the policy engine's
  kubemend.microk8s.stale_webhook:
    detect: true
    kind: validating
    exclude:
      - gatekeeper-validating-webhook-configuration
    backup_dir: /var/backups/kubemend/webhooks

- name: Remove a configuration even though only some of its webhooks are stale
  kubemend.microk8s.stale_webhook:
    name: legacy-admission-hooks
    force: true
    backup_dir: /var/backups/kubemend/webhooks
";
