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

pub(super) const RETURN: &str = r#"deleted:
  description:
    - The webhook configurations deleted (in check mode, that would be deleted), each whole,
      so that it can be restored.
    - Empty when nothing was deleted.
  type: list
  elements: dict
  returned: success
  contains:
    kind:
      description: C(MutatingWebhookConfiguration) or C(ValidatingWebhookConfiguration).
      type: str
      sample: MutatingWebhookConfiguration
    name:
      description: Name of the configuration.
      type: str
      sample: newrelic-bundle-nri-metadata-injection
    uid:
      description: UID of the configuration; the delete was made on the condition that it still matched.
      type: str
    backup_file:
      description:
        - The backup written before the delete; restore it with C(kubectl apply -f).
        - V(null) without O(backup_dir) and in check mode.
      type: str
    object:
      description: The configuration as it was read, complete.
      type: dict
configurations:
  description: Every configuration considered, with the verdict on each of its webhooks and what was done.
  type: list
  elements: dict
  returned: success
  contains:
    kind:
      description: C(MutatingWebhookConfiguration) or C(ValidatingWebhookConfiguration).
      type: str
    name:
      description: Name of the configuration.
      type: str
    uid:
      description: UID of the configuration.
      type: str
    stale:
      description: Whether every webhook of the configuration is stale.
      type: bool
    action:
      description:
        - "What was done: C(deleted), C(would delete), or C(kept) with the reason for keeping it."
      type: str
      sample: "kept: some webhooks are live or cannot be judged (force: true deletes it anyway)"
    webhooks:
      description: One entry per webhook of the configuration.
      type: list
      elements: dict
      contains:
        name:
          description: Name of the webhook.
          type: str
        target:
          description: Where the API server calls it, C(service namespace/name:port/path) or C(url URL).
          type: str
          sample: service newrelic/nri-metadata-injection:443/mutate
        failure_policy:
          description: The webhook's failurePolicy (V(Fail) when unset).
          type: str
        verdict:
          description: C(stale), C(live) or C(not judged) (URL webhooks, ExternalName Services).
          type: str
        reason:
          description: The evidence for the verdict, e.g. the Service missing or no ready endpoint.
          type: str
"#;
