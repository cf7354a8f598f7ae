//! GitOps-aware fixes on the test bed: calico_rbac names who manages the ClusterRole and what
//! will happen to its fix, and hands the fix to the repository in three forms. Argo CD and Flux
//! cannot run here; what they do to an object is reproduced with the real apiserver and the test
//! bed's kubectl: `kubectl apply` (Argo CD's legacy sync, microk8s' add-on manifests) and
//! `kubectl apply --server-side --force-conflicts` under kustomize-controller's field manager
//! (Flux, Argo CD's server-side apply).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::{REAP_LABEL, Reaper};

/// The incident's ClusterRole document (upstream v3.13.2, as microk8s' calico.yaml has it),
/// named `name` and labelled for the reaper.
fn unfixed_manifest(name: &str, reaper: &Reaper) -> String {
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/seed/incident.yaml"),
    )
    .expect("the incident seed");
    let doc = seed
        .split("\n---\n")
        .find(|d| d.contains("\nkind: ClusterRole\n"))
        .expect("the ClusterRole document of the seed");
    let doc = doc.replacen(
        "metadata:\n  name: calico-kube-controllers\n",
        &format!(
            "metadata:\n  name: {name}\n  labels:\n    {REAP_LABEL}: {}\n",
            reaper.id
        ),
        1,
    );
    assert!(doc.contains(&format!("name: {name}")), "{doc}");
    format!("---\n{doc}\n")
}

/// What calico-kube-controllers v3.13.2 with the workloadendpoint controller lacks there.
fn rules() -> Value {
    json!([{"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
}

fn kubectl(args: &[&str], dir: &Path) -> Output {
    let mut all = vec!["kubectl"];
    all.extend_from_slice(args);
    let out = Command::new(support::testcluster_path())
        .args(&all)
        .current_dir(dir)
        .output()
        .expect("testcluster kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn live_rules(name: &str) -> Value {
    let role = Api::<ClusterRole>::all(support::client().await)
        .get(name)
        .await
        .expect("the role");
    serde_json::to_value(role.rules).expect("rules as JSON")
}

/// The rules of the ClusterRole document in YAML `text`.
fn rules_in(text: &str, name: &str) -> Value {
    let (doc, _, _) = kubemend::gitops::find_document(text, "ClusterRole", name)
        .unwrap_or_else(|| panic!("no ClusterRole {name} in:\n{text}"));
    doc["rules"].clone()
}

fn calico_rbac(args: &Value) -> Value {
    let (code, result) = support::run_module("calico_rbac", args);
    assert_eq!(code, 0, "{result}");
    result
}

/// `kubectl kustomize` of `resource` (in `dir`) with the emitted patch (`gitops`: the result's
/// gitops key) as its kustomization says: the manifest the repository would then render.
fn overlay(dir: &Path, resource: &str, gitops: &Value) -> String {
    std::fs::write(
        dir.join("calico-kube-controllers-rbac-patch.yaml"),
        gitops["content"].as_str().expect("the patch"),
    )
    .expect("test setup");
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources:\n  - {resource}\n{}",
            gitops["kustomization"]
                .as_str()
                .expect("the kustomization entry")
        ),
    )
    .expect("test setup");
    String::from_utf8(kubectl(&["kustomize", "."], dir).stdout).expect("test setup")
}

/// ClusterRoles with each owner's traces: written with those annotations and labels, or by
/// the tools themselves (kubectl apply, a server-side apply under Flux's field manager). Each
/// with the owner, application and consequence calico_rbac must state.
async fn seed_owners(
    reaper: &Reaper,
    dir: &Path,
) -> Vec<(String, &'static str, Option<&'static str>, &'static str)> {
    let roles: Api<ClusterRole> = Api::all(support::client().await);
    let id = &reaper.id;
    let marked = [
        (
            "argo",
            json!({}),
            json!({"argocd.argoproj.io/tracking-id": format!("calico:rbac.authorization.k8s.io/ClusterRole:/{id}-argo")}),
        ),
        (
            "flux",
            json!({"kustomize.toolkit.fluxcd.io/name": "infra", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}),
            json!({}),
        ),
        (
            "helm",
            json!({"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "calico"}),
            json!({"meta.helm.sh/release-name": "calico", "meta.helm.sh/release-namespace": "tigera-operator"}),
        ),
        ("none", json!({}), json!({})),
    ];
    for (suffix, labels, annotations) in marked {
        let mut all = reaper.labels();
        all.as_object_mut()
            .expect("test setup")
            .extend(labels.as_object().expect("test setup").clone());
        let role = json!({"metadata": {"name": format!("{id}-{suffix}"), "labels": all, "annotations": annotations},
                          "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]});
        roles
            .create(&PostParams::default(), &support::from_json(role))
            .await
            .expect("role created");
    }
    std::fs::write(
        dir.join("applied.yaml"),
        unfixed_manifest(&format!("{id}-applied"), reaper),
    )
    .expect("test setup");
    kubectl(&["apply", "-f", "applied.yaml"], dir);
    std::fs::write(
        dir.join("ssa.yaml"),
        unfixed_manifest(&format!("{id}-ssa"), reaper),
    )
    .expect("test setup");
    kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=kustomize-controller",
            "-f",
            "ssa.yaml",
        ],
        dir,
    );
    vec![
        (
            format!("{id}-argo"),
            "argo_cd",
            Some("calico"),
            "at the latest when Git changes it",
        ),
        (
            format!("{id}-flux"),
            "flux",
            Some("Kustomization flux-system/infra"),
            "reverted within",
        ),
        (
            format!("{id}-helm"),
            "helm",
            Some("tigera-operator/calico"),
            "next upgrade",
        ),
        (
            format!("{id}-applied"),
            "kubectl_apply",
            None,
            "sets these fields back to the manifest's",
        ),
        (format!("{id}-ssa"), "flux", None, "reverted within"),
        (format!("{id}-none"), "none", None, "lasts"),
    ]
}

#[tokio::test]
async fn calico_rbac_names_each_owner_of_the_role_and_what_happens_to_its_fix() {
    let reaper = Reaper::new("owners");
    let dir = tempfile::tempdir().unwrap();
    let cases = seed_owners(&reaper, dir.path()).await;
    for (name, owner, owned_by, consequence) in &cases {
        let result = calico_rbac(&json!({
            "name": name, "rules": rules(), "restart_controller": false,
            "_ansible_check_mode": true
        }));
        let ownership = &result["ownership"];
        assert_eq!(ownership["owner"], *owner, "{name}: {result}");
        assert_eq!(ownership["owned_by"], json!(owned_by), "{name}: {result}");
        let said = ownership["consequence"].as_str().unwrap();
        assert!(said.contains(consequence), "{name}: {said}");
        let warned = result["warnings"].to_string().contains(consequence);
        assert_eq!(warned, *owner != "none", "{name}: {result}");
    }
    let (applied, ssa) = (&cases[3].0, &cases[4].0);
    let ssa_result =
        calico_rbac(&json!({"name": ssa, "rules": rules(), "_ansible_check_mode": true}));
    assert!(
        ssa_result["ownership"]["managers"]
            .to_string()
            .contains("kustomize-controller (Apply)"),
        "{ssa_result}"
    );
    // Recorded the way kubectl apply records it, the fix would be reverted by the next apply.
    let recorded = calico_rbac(&json!({
        "name": applied, "rules": rules(), "record_last_applied": true, "_ansible_check_mode": true
    }));
    assert!(
        recorded["ownership"]["consequence"]
            .as_str()
            .unwrap()
            .contains("reverts it"),
        "{recorded}"
    );
}

#[tokio::test]
async fn the_emitted_patch_manifest_and_file_diff_each_give_exactly_the_fixed_roles_rules() {
    let reaper = Reaper::new("gitops-forms");
    let name = format!("{}-role", reaper.id);
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("role.yaml"),
        unfixed_manifest(&name, &reaper),
    )
    .unwrap();
    kubectl(&["apply", "-f", "role.yaml"], repo.path());

    // The fix in the cluster, with the patch and the diff of the checkout's file (the CLI, run
    // in the checkout, so that the diff's paths are relative to it).
    let output = support::kubemend()
        .current_dir(repo.path())
        .args([
            "calico-rbac",
            "--name",
            &name,
            "--restart-controller",
            "false",
            "--output",
            "json",
        ])
        .args([
            "--rules",
            r#"{api_groups: [""], resources: [pods], verbs: [get, list, watch]}"#,
        ])
        .args(["--gitops", "patch", "--repo-file", "role.yaml", "--diff"])
        .output()
        .unwrap();
    let (code, result) = support::result_of(&output);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["changed"], json!(true), "{result}");
    let fixed = live_rules(&name).await;
    assert_eq!(
        fixed[5],
        json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]})
    );
    let gitops = &result["gitops"];
    assert_eq!(gitops["based_on"], "repo_file role.yaml", "{result}");

    // (a) the kustomize patch over the unfixed manifest.
    let kustomized = tempfile::tempdir().unwrap();
    std::fs::write(
        kustomized.path().join("role.yaml"),
        unfixed_manifest(&name, &reaper),
    )
    .unwrap();
    let built = overlay(kustomized.path(), "role.yaml", gitops);
    assert_eq!(rules_in(&built, &name), fixed, "{built}");
    assert!(
        gitops["content"]
            .as_str()
            .unwrap()
            .contains("# kubemend: given in option rules")
    );

    // (c) the diff, applied with patch to a copy of the checkout.
    let copy = tempfile::tempdir().unwrap();
    std::fs::write(
        copy.path().join("role.yaml"),
        unfixed_manifest(&name, &reaper),
    )
    .unwrap();
    std::fs::write(
        copy.path().join("fix.diff"),
        gitops["diff"].as_str().unwrap(),
    )
    .unwrap();
    let patched = Command::new("patch")
        .args(["-p0", "-i", "fix.diff"])
        .current_dir(copy.path())
        .output()
        .expect("patch (apt-get install patch)");
    assert!(
        patched.status.success(),
        "{}",
        String::from_utf8_lossy(&patched.stdout)
    );
    let text = std::fs::read_to_string(copy.path().join("role.yaml")).unwrap();
    assert_eq!(rules_in(&text, &name), fixed, "{text}");
    assert!(
        result["diff"].to_string().contains("role.yaml (after)"),
        "{result}"
    );

    // (b) the whole manifest: nothing left to change in the cluster, but the manifest the role
    // was last applied from still lacks the rule.
    let again = calico_rbac(&json!({"name": name, "rules": rules(), "gitops": "manifest"}));
    assert_eq!(again["changed"], json!(false), "{again}");
    assert_eq!(
        again["gitops"]["based_on"], "last-applied-configuration",
        "{again}"
    );
    let manifest = again["gitops"]["content"].as_str().unwrap();
    assert_eq!(rules_in(manifest, &name), fixed, "{manifest}");
    assert!(
        !manifest.contains("last-applied-configuration"),
        "{manifest}"
    );
}

#[tokio::test]
async fn later_applies_revert_the_fix_as_the_report_said_and_a_fixed_manifest_keeps_it() {
    let reaper = Reaper::new("gitops-revert");
    let dir = tempfile::tempdir().unwrap();
    let apply = |name: &str, file: &str| {
        std::fs::write(dir.path().join(file), unfixed_manifest(name, &reaper)).unwrap();
        kubectl(&["apply", "-f", file], dir.path());
    };
    let unfixed_len = 5;

    // kubemend's own update leaves last-applied alone, yet applying the unfixed manifest again
    // sets the rules back (a three-way merge sets what the manifest names), and so does a
    // server-side apply that forces its rules (Flux, Argo CD with SSA), as the report says.
    let plain = format!("{}-plain", reaper.id);
    apply(&plain, "plain.yaml");
    let fix = json!({"name": plain, "rules": rules(), "restart_controller": false});
    let fixed = calico_rbac(&fix);
    let said = fixed["ownership"]["consequence"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        said.contains("sets these fields back to the manifest's"),
        "{said}"
    );
    assert!(said.contains("--force-conflicts"), "{said}");
    let rule_count = |rules: Value| rules.as_array().map_or(0, Vec::len);
    assert_eq!(rule_count(live_rules(&plain).await), unfixed_len + 1);
    kubectl(&["apply", "-f", "plain.yaml"], dir.path());
    assert_eq!(rule_count(live_rules(&plain).await), unfixed_len);
    assert_eq!(calico_rbac(&fix)["changed"], json!(true));
    assert_eq!(rule_count(live_rules(&plain).await), unfixed_len + 1);
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kustomize-controller",
            "-f",
            "plain.yaml",
        ],
        dir.path(),
    );
    assert_eq!(rule_count(live_rules(&plain).await), unfixed_len);

    // Recorded as kubectl apply records it: applying the unfixed manifest reverts it.
    let recorded = format!("{}-recorded", reaper.id);
    apply(&recorded, "recorded.yaml");
    let result = calico_rbac(&json!({
        "name": recorded, "rules": rules(), "restart_controller": false,
        "record_last_applied": true, "gitops": "patch"
    }));
    let said = result["ownership"]["consequence"].as_str().unwrap();
    assert!(
        said.contains("applying the unfixed manifest again reverts it"),
        "{said}"
    );
    assert_eq!(
        live_rules(&recorded).await.as_array().unwrap().len(),
        unfixed_len + 1
    );
    kubectl(&["apply", "-f", "recorded.yaml"], dir.path());
    assert_eq!(
        live_rules(&recorded).await.as_array().unwrap().len(),
        unfixed_len
    );

    // With the emitted patch in the repository, neither kind of apply reverts the fix.
    let again =
        calico_rbac(&json!({"name": recorded, "rules": rules(), "restart_controller": false}));
    assert_eq!(again["changed"], json!(true), "{again}");
    let built = overlay(dir.path(), "recorded.yaml", &result["gitops"]);
    std::fs::write(dir.path().join("built.yaml"), built).unwrap();
    kubectl(&["apply", "-f", "built.yaml"], dir.path());
    assert_eq!(
        live_rules(&recorded).await.as_array().unwrap().len(),
        unfixed_len + 1
    );
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kustomize-controller",
            "-f",
            "built.yaml",
        ],
        dir.path(),
    );
    let kept = live_rules(&recorded).await;
    assert_eq!(kept.as_array().unwrap().len(), unfixed_len + 1, "{kept}");
    assert_eq!(kept[5]["resources"], json!(["pods"]));
}

#[tokio::test]
async fn a_stale_webhook_managed_by_argo_cd_is_said_to_come_back_with_the_next_sync() {
    let reaper = Reaper::new("gitops-webhook");
    let name = format!("{}-vwc", reaper.id);
    let mut labels = reaper.labels();
    labels["app.kubernetes.io/instance"] = json!("newrelic");
    let object = json!({
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"argocd.argoproj.io/tracking-id":
                         format!("newrelic:admissionregistration.k8s.io/MutatingWebhookConfiguration:/{name}")}},
        "webhooks": [{
            "name": "inject.kubemend.test",
            "clientConfig": {"service": {"namespace": "default", "name": format!("{name}-gone"), "port": 443}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"], "scope": "Namespaced"}],
            "objectSelector": {"matchLabels": {"kubemend.test/never": "true"}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore"
        }]
    });
    let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(support::client().await);
    api.create(&PostParams::default(), &support::from_json(object))
        .await
        .unwrap();
    let (code, result) = support::run_module(
        "stale_webhook",
        &json!({"name": name, "_ansible_check_mode": true}),
    );
    assert_eq!(code, 0, "{result}");
    let ownership = &result["deleted"][0]["ownership"];
    assert_eq!(ownership["owner"], "argo_cd", "{result}");
    assert_eq!(ownership["owned_by"], "newrelic", "{result}");
    assert!(
        result["warnings"]
            .to_string()
            .contains("the next sync (at once with selfHeal) creates it again"),
        "{result}"
    );
    // Check mode: it is still there.
    assert!(api.get_opt(&name).await.unwrap().is_some());
}
