//! The one error type of kubemend.
//!
//! Every variant names the step that failed and the object it failed on, keeps the underlying
//! cause as `#[source]` (never interpolated into its own message, so the renderer prints the chain
//! once), and [`Error::hint`] says what the operator can do about it.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can make a kubemend run fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module was started without exactly one args file argument.
    #[error("expected exactly one argument, the path of the module's JSON args file")]
    ModuleUsage,

    /// argv[0] or `kubemend module NAME` named no known module.
    #[error("unknown module {name:?}")]
    UnknownModule {
        /// The name given.
        name: String,
        /// The module names kubemend answers to, joined for the hint.
        known: String,
    },

    /// The args file (module mode) or params file (CLI) could not be read.
    #[error("failed to read {what} {path:?}")]
    ReadInput {
        /// "args file" or "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The input file exceeds [`crate::protocol::MAX_ARGS_BYTES`].
    #[error("{what} {path:?} is larger than the limit of {limit} bytes")]
    InputTooLarge {
        /// "args file" or "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },

    /// The input file is empty (or only whitespace).
    #[error("{what} {path:?} is empty")]
    InputEmpty {
        /// "args file" or "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
    },

    /// The input file is not valid UTF-8.
    #[error("{what} {path:?} is not valid UTF-8")]
    InputNotUtf8 {
        /// "args file" or "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
    },

    /// The args file is not valid JSON.
    #[error("{what} {path:?} is not valid JSON")]
    InputNotJson {
        /// "args file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
        /// The parser's complaint, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// The params file is neither JSON nor YAML. Only the position is given: the file may hold
    /// secrets (api_key), which the parser's message would quote.
    #[error(
        "{what} {path:?} is neither valid JSON nor valid YAML{}",
        location.as_ref().map(|l| format!(" (YAML error at {l})")).unwrap_or_default()
    )]
    InputNotYaml {
        /// "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
        /// `line L, column C`, when the parser knows.
        location: Option<String>,
    },

    /// The input parsed but is not a JSON object.
    #[error("{what} {path:?} must hold a JSON object of options, but holds {found}")]
    InputNotObject {
        /// "args file" or "params file".
        what: &'static str,
        /// Path as given.
        path: PathBuf,
        /// What it holds instead ("an array", "a string", ...).
        found: &'static str,
    },

    /// Options the module does not know.
    #[error(
        "unsupported option(s) for module {module}: {}; supported options are: {}",
        unknown.join(", "),
        supported.join(", ")
    )]
    UnknownOptions {
        /// Module name.
        module: String,
        /// The unknown option names (dotted paths for nested ones).
        unknown: Vec<String>,
        /// All valid option names at that level.
        supported: Vec<String>,
    },

    /// Required options that were not given.
    #[error("missing required option(s) for module {module}: {}", missing.join(", "))]
    MissingOptions {
        /// Module name.
        module: String,
        /// The missing option names.
        missing: Vec<String>,
    },

    /// An option has a value of the wrong type or an invalid value.
    #[error("invalid value for option {option:?}: {problem}")]
    InvalidOption {
        /// Option name (dotted path for nested ones, e.g. `extra_rules[0].verbs`).
        option: String,
        /// What is wrong, in words.
        problem: String,
    },

    /// A kubeconfig file could not be loaded or used.
    #[error("failed to load kubeconfig {path:?}")]
    LoadKubeconfig {
        /// Path(s) of the kubeconfig.
        path: String,
        /// kube's error.
        #[source]
        source: kube::config::KubeconfigError,
    },

    /// No way to reach a cluster was configured.
    #[error(
        "failed to find a Kubernetes API to talk to: no usable kubeconfig ({kubeconfig}), and \
         not in a cluster ({in_cluster})"
    )]
    NoClusterConfig {
        /// Why the in-cluster service account could not be used.
        in_cluster: String,
        /// Why the default kubeconfig could not be used.
        kubeconfig: String,
    },

    /// A kubeconfig file could not be read.
    #[error("failed to read kubeconfig {path:?}")]
    ReadKubeconfig {
        /// Path as given.
        path: String,
        /// The I/O error (or: too large, not UTF-8).
        #[source]
        source: std::io::Error,
    },

    /// A kubeconfig is not valid YAML. Only the position is given: the text may hold secrets.
    #[error(
        "kubeconfig {path:?} is not valid YAML{}",
        location.as_ref().map(|l| format!(" (error at {l})")).unwrap_or_default()
    )]
    KubeconfigSyntax {
        /// Path as given.
        path: String,
        /// `line L, column C`, when known.
        location: Option<String>,
    },

    /// A kubeconfig is YAML but not a kubeconfig. Only the field is named, never its value.
    #[error("kubeconfig {path:?} has an invalid value at {field}")]
    KubeconfigInvalid {
        /// Path as given.
        path: String,
        /// Path of the field, e.g. `users[0].user.token`.
        field: String,
    },

    /// The CA certificate file given by `ca_cert` could not be used.
    #[error("failed to read CA certificate file {path:?}")]
    ReadCaCert {
        /// Path as given.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },

    /// The client certificate or key file could not be used.
    #[error("failed to read {option} file {path:?}")]
    ReadClientCert {
        /// `client_cert` or `client_key`.
        option: &'static str,
        /// Path, expanded.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },

    /// The API server URL given by `host` is not a valid URL.
    #[error("invalid API server URL {host:?} (from {origin}): {problem}")]
    InvalidHost {
        /// The URL as given, any `user:password@` masked.
        host: String,
        /// Where it came from (option or environment variable).
        origin: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// The kube client could not be built from the configuration.
    #[error("failed to set up the Kubernetes client for {endpoint}")]
    BuildClient {
        /// API server URL.
        endpoint: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },

    /// The API server could not be reached at all (connection, TLS or DNS failure).
    #[error("cannot reach the Kubernetes API at {endpoint} (while trying to {verb} {object})")]
    Unreachable {
        /// API server URL.
        endpoint: String,
        /// The verb being attempted.
        verb: &'static str,
        /// The object it was attempted on.
        object: String,
        /// The transport error.
        #[source]
        source: kube::Error,
    },

    /// An API call returned an error.
    #[error("failed to {verb} {object}")]
    Api {
        /// The verb ("get", "update", "create", "delete", "list", ...).
        verb: &'static str,
        /// The object, e.g. `clusterrole "calico-kube-controllers"`.
        object: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },

    /// An optimistic-concurrency update kept conflicting.
    #[error("failed to update {object}: it kept changing under us ({attempts} attempts)")]
    ConflictRetriesExhausted {
        /// The object.
        object: String,
        /// How many read-plan-write rounds were tried.
        attempts: u32,
    },

    /// A ClusterRole is aggregated, so its rules are written by a controller.
    #[error(
        "clusterrole {name:?} has an aggregationRule: its rules are managed by the clusterrole \
         aggregation controller, which would overwrite any rule added here"
    )]
    AggregatedClusterRole {
        /// ClusterRole name.
        name: String,
        /// Its clusterRoleSelectors as text.
        selectors: String,
    },

    /// The object that an action inspects to derive its plan does not exist.
    #[error("{object} not found")]
    NotFound {
        /// The object.
        object: String,
        /// What would make the action work without it.
        hint: String,
    },

    /// An SSH connection or remote command failed.
    #[error("ssh to node {node:?} ({host}) failed to {step}: {problem}")]
    Ssh {
        /// The Kubernetes node.
        node: String,
        /// The host connected to.
        host: String,
        /// What was being done: connect, run.
        step: &'static str,
        /// What went wrong, with the ssh client's words.
        problem: String,
    },

    /// A gate of a rolling restart did not pass in time (or a check before a node's restart
    /// failed).
    #[error("node {node:?}: gate {gate:?} did not pass {after}: {observed}")]
    GateFailed {
        /// The node being restarted (or checked).
        node: String,
        /// The gate.
        gate: String,
        /// When it was judged: `within 10m (gate_timeout)`, `before its restart`.
        after: String,
        /// The last state observed.
        observed: String,
        /// What to do.
        hint: String,
    },

    /// Another run holds the cluster-wide lock.
    #[error("lease {lease} is held by run {holder} since {since}{done}")]
    LockHeld {
        /// namespace/name of the Lease.
        lease: String,
        /// The holder's run id.
        holder: String,
        /// When it was taken.
        since: String,
        /// The nodes that run has done, as text.
        done: String,
    },

    /// Another client wrote the lock's Lease between this run's read and its write, and it is
    /// not held now (deleted, released, or left expired).
    #[error("lease {lease} changed while this run was taking it: it is now {now}")]
    LockChanged {
        /// namespace/name of the Lease.
        lease: String,
        /// What it is now, for people.
        now: String,
    },

    /// The whole action took longer than its `timeout`.
    #[error("timed out after {after} (option timeout) while in step {step}")]
    TimedOut {
        /// The pipeline step it was in.
        step: &'static str,
        /// The limit, as a duration.
        after: String,
    },

    /// A rolling restart was stopped between or during its steps: a signal (an AWX job
    /// cancelled), or the `timeout` option about to run out.
    #[error("stopped by {by} while {doing}")]
    Interrupted {
        /// `SIGTERM`, `SIGINT`, or the timeout.
        by: String,
        /// What the run was doing.
        doing: String,
        /// What to do.
        hint: String,
    },

    /// The action acted, but its check afterwards did not find the effect.
    #[error("the change could not be verified: {what}")]
    NotVerified {
        /// What was found instead of the effect.
        what: String,
        /// Where to look.
        hint: String,
    },

    /// Something about the observed cluster state prevents planning.
    #[error("cannot plan {action}: {problem}")]
    CannotPlan {
        /// Action (module) name.
        action: &'static str,
        /// What is wrong.
        problem: String,
        /// What to do.
        hint: String,
    },

    /// The API server answered something kubemend refuses to act on: a node name that is no
    /// DNS subdomain, a list that never ends. A real apiserver never does; a proxy, a
    /// compromised apiserver or something that is not an apiserver may.
    #[error("refusing what the API server said of {object}: {problem}")]
    UntrustedAnswer {
        /// The object or list, e.g. `node "ssh://x"`, `list of nodes`.
        object: String,
        /// What is wrong with the answer.
        problem: String,
        /// What to do.
        hint: String,
    },

    /// A backup file could not be written.
    #[error("failed to write backup file {path:?}")]
    WriteBackup {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A force delete (or finalizer removal) failed part-way through a run; the pods deleted
    /// before it are listed.
    #[error(
        "failed to {verb} {object}{}",
        if deleted.is_empty() {
            String::new()
        } else {
            format!(" (already deleted: {})", deleted.join(", "))
        }
    )]
    ForceDelete {
        /// The step ("delete", "remove the finalizers of").
        verb: &'static str,
        /// The pod.
        object: String,
        /// Pods deleted earlier in the run.
        deleted: Vec<String>,
        /// kube's error.
        #[source]
        source: kube::Error,
    },

    /// A generated file (schema) could not be written or checked.
    #[error("failed to write {path:?}")]
    WriteFile {
        /// Path of the file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The tokio runtime could not start.
    #[error("failed to start the async runtime")]
    Runtime {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A bug: kubemend panicked. Reported instead of crashing.
    #[error("internal error (a bug in kubemend): {message}")]
    Internal {
        /// The panic message.
        message: String,
    },
}

impl Error {
    /// Builds the error for a failed API call: [`Error::Unreachable`] when the server could not
    /// be reached at all, [`Error::Api`] otherwise.
    #[must_use]
    pub fn api(endpoint: &str, verb: &'static str, object: String, source: kube::Error) -> Self {
        // A body over the size limit arrives as a transport error, but the server was reached.
        if is_transport_error(&source) && !crate::http_guard::is_response_too_large(&source) {
            Self::Unreachable {
                endpoint: endpoint.to_owned(),
                verb,
                object,
                source,
            }
        } else {
            Self::Api {
                verb,
                object,
                source,
            }
        }
    }

    /// The HTTP status of the underlying API error, if there is one.
    #[must_use]
    pub fn api_status(&self) -> Option<u16> {
        match self {
            Self::Api {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// What the operator can do about it, when there is something to say.
    #[must_use]
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::ModuleUsage => Some(
                "run as an Ansible module, or `kubemend module NAME ARGS_FILE`; see `kubemend --help`"
                    .into(),
            ),
            Self::UnknownModule { known, .. } => Some(format!("known modules: {known}")),
            Self::InputTooLarge { .. } => {
                Some("module options are small; check that the right file was passed".into())
            }
            Self::InputNotObject { .. } | Self::InputNotJson { .. } | Self::InputNotYaml { .. } => {
                Some("pass options as a mapping, e.g. {\"name\": \"calico-kube-controllers\"}".into())
            }
            Self::UnknownOptions { .. } => {
                Some("check the spelling; `kubemend <action> --help` lists every option".into())
            }
            Self::LoadKubeconfig { .. }
            | Self::ReadKubeconfig { .. }
            | Self::KubeconfigSyntax { .. }
            | Self::KubeconfigInvalid { .. } => Some(
                "check the kubeconfig path (option kubeconfig, K8S_AUTH_KUBECONFIG or KUBECONFIG) \
                 and that the context exists"
                    .into(),
            ),
            Self::NoClusterConfig { .. } => Some(
                "pass kubeconfig/context or host/api_key, set K8S_AUTH_HOST and K8S_AUTH_API_KEY, \
                 or KUBECONFIG"
                    .into(),
            ),
            Self::InvalidHost { .. } => Some("use a URL like https://10.0.0.1:16443".into()),
            Self::Unreachable { source, .. } => Some(unreachable_hint(source)),
            Self::Api { verb, object, source } => api_hint(verb, object, source).or_else(|| {
                crate::http_guard::is_response_too_large(source).then(|| {
                    "the API server sent far more than was asked for; check that host or the \
                     kubeconfig points at a Kubernetes API server"
                        .into()
                })
            }),
            Self::ConflictRetriesExhausted { .. } => Some(
                "another client is changing the object continuously; find it (check managedFields) \
                 and run again"
                    .into(),
            ),
            Self::AggregatedClusterRole { selectors, .. } => Some(format!(
                "put the missing rules in a separate ClusterRole whose labels match the \
                 aggregation selectors ({selectors}), or point option name at a non-aggregated role"
            )),
            Self::Ssh { .. } => Some(
                "check the node is reachable (`ssh <host>` with the same user, port, key and \
                 ssh_config), that its host key is in known_hosts (host_key_checking: accept-new \
                 adds new hosts) and that sudo -n works for the user"
                    .into(),
            ),
            Self::LockHeld { .. } => Some(
                "wait for that run to finish; a run that died leaves the lock until its TTL \
                 expires, after which the next run takes it over and resumes"
                    .into(),
            ),
            Self::LockChanged { .. } => Some(
                "another run took or released the lock at the same moment; run again (the next \
                 run reads it afresh and resumes after any record it holds)"
                    .into(),
            ),
            Self::TimedOut { .. } => Some(
                "the API server answers too slowly or not at all (an apiserver behind a locked \
                 datastore does this): check its /readyz and its datastore, or raise timeout; \
                 what was done before the timeout is in the result"
                    .into(),
            ),
            Self::NotFound { hint, .. }
            | Self::CannotPlan { hint, .. }
            | Self::UntrustedAnswer { hint, .. }
            | Self::NotVerified { hint, .. }
            | Self::Interrupted { hint, .. }
            | Self::GateFailed { hint, .. } => Some(hint.clone()),
            Self::WriteBackup { .. } => Some(
                "check that backup_dir is writable; nothing was deleted because the backup failed"
                    .into(),
            ),
            Self::ForceDelete {
                object, source, ..
            } => Some(
                api_hint("delete", object, source)
                    .map_or_else(String::new, |hint| format!("{hint}; "))
                    + "pods already deleted stay deleted; run again to continue",
            ),
            Self::Internal { .. } => {
                Some("please report this with the command or task that triggered it".into())
            }
            _ => None,
        }
    }

    /// The message and the causes, each once, on one line: `top: cause: deeper cause`.
    #[must_use]
    pub fn message_with_causes(&self) -> String {
        let mut out = self.to_string();
        for cause in causes(self) {
            let _ = write!(out, ": {cause}");
        }
        out
    }
}

/// An error and its causes on one line, for errors from other crates.
#[must_use]
pub fn causes_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    for cause in causes(err) {
        let _ = write!(out, ": {cause}");
    }
    out
}

/// The chain of causes below `err`, rendered for people: kube API errors as their Status
/// message, transport errors as their root cause, and no text repeated.
#[must_use]
pub fn causes(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let Some(first) = err.source() else {
        return Vec::new();
    };
    if let Some(kube_err) = first.downcast_ref::<kube::Error>() {
        return vec![kube_cause(kube_err)];
    }
    let mut chain: Vec<String> = Vec::new();
    let mut next = Some(first);
    while let Some(cause) = next {
        let text = cause.to_string();
        // Many libraries interpolate their source into their own message; print such text once.
        if !chain.last().is_some_and(|prev| prev.contains(&text)) && !text.is_empty() {
            chain.push(text);
        }
        next = cause.source();
    }
    chain
}

/// The message of `err` and its causes on one line, each once.
#[must_use]
pub fn causes_of(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    for cause in causes(err) {
        if !out.contains(&cause) {
            let _ = write!(out, ": {cause}");
        }
    }
    out
}

/// One line describing a kube error.
fn kube_cause(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            let mut text = if status.message.is_empty() {
                "the API server refused the request".to_owned()
            } else {
                // A body that was not a Status (an HTML page, an echo) becomes the message whole.
                bounded(&status.message, MAX_STATUS_MESSAGE_CHARS)
            };
            if !status.reason.is_empty() || status.code != 0 {
                let _ = write!(text, " ({}, HTTP {})", status.reason, status.code);
            }
            text
        }
        other => root_cause(other),
    }
}

/// Longest API status message quoted in an error.
const MAX_STATUS_MESSAGE_CHARS: usize = 500;

/// `text`, cut at `max` characters with a note of how much was left out.
fn bounded(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}... ({} more characters)", count - max)
}

/// The deepest cause's text, which for connection problems is the useful one ("Connection
/// refused", "invalid peer certificate: UnknownIssuer").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Whether a kube error means the server was not reached (as opposed to an API status).
fn is_transport_error(err: &kube::Error) -> bool {
    matches!(
        err,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_)
    )
}

fn unreachable_hint(source: &kube::Error) -> String {
    let cause = root_cause(source).to_lowercase();
    if cause.contains("handshake eof") || cause.contains("connection reset") {
        "the connection was closed before the API server answered (asked again a few times): \
         is the apiserver behind this address shutting down or restarting (microk8s: \
         `systemctl status snap.microk8s.daemon-kubelite`), or is something other than an API \
         server listening there?"
            .into()
    } else if cause.contains("certificate") || cause.contains("tls") || cause.contains("issuer") {
        "the server's certificate was not accepted: pass ca_cert (K8S_AUTH_SSL_CA_CERT), or \
         validate_certs: false for a test cluster"
            .into()
    } else if cause.contains("dns") || cause.contains("lookup") {
        "the host name does not resolve: check host (K8S_AUTH_HOST) or the kubeconfig's server"
            .into()
    } else {
        "check that the API server is running and reachable from here (microk8s: \
         `systemctl status snap.microk8s.daemon-kubelite`), and that host or the kubeconfig \
         points at it"
            .into()
    }
}

fn api_hint(verb: &str, object: &str, source: &kube::Error) -> Option<String> {
    let kube::Error::Api(status) = source else {
        return None;
    };
    match status.code {
        401 => Some(
            "the API server did not accept the credentials: check api_key (K8S_AUTH_API_KEY) or \
             the kubeconfig user"
                .into(),
        ),
        403 => Some(format!(
            "the credentials in use are not allowed to {verb} {object}: use a context with that \
             permission (check with `kubectl auth can-i {verb} ...`)"
        )),
        404 => Some(format!("{object} does not exist (any more)")),
        409 => Some("the object changed while kubemend was working on it; run again".into()),
        422 => Some("the API server rejected the object as invalid; see the message".into()),
        500..=599 => Some(
            "the API server failed internally; on microk8s check the datastore \
             (`journalctl -u snap.microk8s.daemon-k8s-dqlite`)"
                .into(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lists_each_cause_once() {
        let err = Error::ReadInput {
            what: "args file",
            path: PathBuf::from("/nonexistent"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory"),
        };
        assert_eq!(
            err.message_with_causes(),
            "failed to read args file \"/nonexistent\": No such file or directory"
        );
    }

    #[test]
    fn huge_status_message_is_cut() {
        let status =
            kube::core::Status::failure(&"x".repeat(100_000), "Failed to parse error data")
                .with_code(502);
        let err = Error::api(
            "https://127.0.0.1:6443",
            "get",
            "pod \"p\"".into(),
            kube::Error::Api(status.boxed()),
        );
        let text = err.message_with_causes();
        assert!(text.len() < 1000, "{}", text.len());
        assert!(text.contains("99500 more characters"), "{text}");
    }

    #[test]
    fn api_error_is_rendered_from_its_status() {
        let status = kube::core::Status::failure("clusterroles \"x\" is forbidden", "Forbidden")
            .with_code(403);
        let err = Error::api(
            "https://127.0.0.1:6443",
            "update",
            "clusterrole \"x\"".into(),
            kube::Error::Api(status.boxed()),
        );
        assert_eq!(
            err.message_with_causes(),
            "failed to update clusterrole \"x\": clusterroles \"x\" is forbidden (Forbidden, HTTP 403)"
        );
        assert!(err.hint().unwrap().contains("not allowed to update"));
        assert_eq!(err.api_status(), Some(403));
    }
}
