//! Cluster access: the options every action shares, and how they become a kube client.
//!
//! As kubernetes.core (`module_utils/k8s/client.py`): each option falls back to its `K8S_AUTH_*`
//! variables (AWX's Kubernetes credential injects them). `host` with `api_key` (or with
//! `client_cert` and `client_key`) talks to that URL directly and reads no kubeconfig; else
//! `kubeconfig` or `context` loads that kubeconfig; else the in-cluster service account, then
//! `KUBECONFIG` or `~/.kube/config`. The options given then override what was loaded.
//!
//! Every request is bounded ([`crate::http_guard`]): a deadline, a few retries, a body limit.
//! Files are read with a size limit, and errors about them never quote their text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Options for reaching the Kubernetes API, shared by every action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Args)]
pub struct ClusterArgs {
    /// Path of a kubeconfig file (several may be joined with `:`). Falls back to
    /// K8S_AUTH_KUBECONFIG, then KUBECONFIG, then ~/.kube/config, then the in-cluster service
    /// account.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub kubeconfig: Option<String>,

    /// Context to use from the kubeconfig. Falls back to K8S_AUTH_CONTEXT, then the
    /// kubeconfig's current context.
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub context: Option<String>,

    /// URL of the API server, e.g. https://10.0.0.1:16443. Falls back to K8S_AUTH_HOST. With
    /// api_key (or client_cert and client_key), kubemend talks to this URL directly and loads no
    /// kubeconfig; otherwise it overrides the server of the kubeconfig or in-cluster config.
    #[arg(long, value_name = "URL")]
    #[serde(default)]
    #[schemars(extend("x-no-log-userinfo" = true))]
    pub host: Option<String>,

    /// Bearer token for the API server. Falls back to K8S_AUTH_API_KEY. Never shown in output;
    /// on the command line prefer the environment variable, which `ps` does not show.
    #[arg(long, value_name = "TOKEN")]
    #[serde(default)]
    #[schemars(extend("x-no-log" = true))]
    pub api_key: Option<String>,

    /// Path of a PEM file with the CA certificate(s) that signed the API server's certificate.
    /// Alias ssl_ca_cert. Falls back to K8S_AUTH_CA_CERT, then K8S_AUTH_SSL_CA_CERT.
    #[arg(long, value_name = "PATH", alias = "ssl-ca-cert")]
    #[serde(default, alias = "ssl_ca_cert")]
    #[schemars(extend("x-aliases" = ["ssl_ca_cert"]))]
    pub ca_cert: Option<String>,

    /// Path of a PEM client certificate for the API server (with client_key). Alias cert_file.
    /// Falls back to K8S_AUTH_CLIENT_CERT, then K8S_AUTH_CERT_FILE.
    #[arg(long, value_name = "PATH", alias = "cert-file")]
    #[serde(default, alias = "cert_file")]
    #[schemars(extend("x-aliases" = ["cert_file"]))]
    pub client_cert: Option<String>,

    /// Path of the PEM private key of client_cert. Alias key_file. Falls back to
    /// K8S_AUTH_CLIENT_KEY, then K8S_AUTH_KEY_FILE.
    #[arg(long, value_name = "PATH", alias = "key-file")]
    #[serde(default, alias = "key_file")]
    #[schemars(extend("x-aliases" = ["key_file"]))]
    pub client_key: Option<String>,

    /// Whether to verify the API server's TLS certificate. Alias verify_ssl. Falls back to
    /// K8S_AUTH_VALIDATE_CERTS, then K8S_AUTH_VERIFY_SSL ('True'/'False'), then to the
    /// kubeconfig (true unless it says insecure-skip-tls-verify).
    #[arg(long, value_name = "BOOL", alias = "verify-ssl")]
    #[serde(default, alias = "verify_ssl")]
    #[schemars(extend("x-aliases" = ["verify_ssl"]))]
    pub validate_certs: Option<bool>,

    /// Longest time the whole action may take, e.g. 90s, 5m or 1h30m; default 5m (10m for
    /// calico_rbac, whose restart_timeout waits on a rollout; 1h for kubelite_restart and
    /// cert_refresh, whose gates wait on restarts). A run that takes longer fails, naming
    /// the step it was in, with what it had already done. No single request to the API server
    /// waits longer than 30s for its answer.
    #[arg(long, value_name = "DURATION")]
    #[serde(default)]
    pub timeout: Option<crate::k8s::duration::Duration>,
}

/// Default of the `timeout` option: the bound on a whole action.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Longest wait for the answer to one request (one attempt), and between two reads of it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ClusterArgs {
    /// How long the whole action may take: option `timeout`, else `default` (the action's).
    /// The pipeline wraps the action's future in `tokio::time::timeout` with this.
    #[must_use]
    pub fn timeout_or(&self, default: Duration) -> Duration {
        self.timeout
            .as_ref()
            .map_or(default, crate::k8s::duration::Duration::std)
    }

    /// [`Self::timeout_or`] with [`DEFAULT_ACTION_TIMEOUT`].
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout_or(DEFAULT_ACTION_TIMEOUT)
    }

    /// How long one request may wait for its answer: [`DEFAULT_REQUEST_TIMEOUT`], or the
    /// action's timeout when that is shorter.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        // Not capped by `timeout`: the pipeline bounds the whole action with it, so that a
        // timeout names the step it stopped in rather than racing a request's own deadline.
        DEFAULT_REQUEST_TIMEOUT
    }
}

/// A connected client plus the endpoint it talks to, for error messages.
#[derive(Clone)]
pub struct Cluster {
    /// The kube client.
    pub client: kube::Client,
    /// The API server URL.
    pub endpoint: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Maps a kube error of a call `verb` on `object` to [`Error::Api`] or
    /// [`Error::Unreachable`].
    pub fn error(
        &self,
        verb: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error + '_ {
        let object = object.into();
        move |source| Error::api(&self.endpoint, verb, object, source)
    }
}

/// The access settings after merging options with the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Kubeconfig path(s).
    pub kubeconfig: Option<String>,
    /// Context name.
    pub context: Option<String>,
    /// API server URL and where it came from.
    pub host: Option<(String, &'static str)>,
    /// Bearer token.
    pub api_key: Option<String>,
    /// CA file.
    pub ca_cert: Option<String>,
    /// Client certificate file.
    pub client_cert: Option<String>,
    /// Client key file.
    pub client_key: Option<String>,
    /// Certificate verification.
    pub validate_certs: Option<bool>,
}

impl Access {
    /// Merges explicit options with `K8S_AUTH_*` variables read through `env`.
    pub fn resolve(args: &ClusterArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        // As kubernetes.core: K8S_AUTH_<option>, then K8S_AUTH_<kubernetes client name>.
        let either = |first: &'static str, second: &'static str| {
            env(first)
                .map(|v| (v, first))
                .or_else(|| env(second).map(|v| (v, second)))
        };
        let validate_certs = match args.validate_certs {
            Some(v) => Some(v),
            None => match either("K8S_AUTH_VALIDATE_CERTS", "K8S_AUTH_VERIFY_SSL") {
                Some((text, name)) => Some(
                    crate::protocol::coerce_bool(&serde_json::Value::String(text.clone()))
                        .ok_or_else(|| Error::InvalidOption {
                            option: name.into(),
                            problem: format!("expected True or False, got {text:?}"),
                        })?,
                ),
                None => None,
            },
        };
        let host = match &args.host {
            Some(host) => Some((host.clone(), "option host")),
            None => env("K8S_AUTH_HOST").map(|h| (h, "K8S_AUTH_HOST")),
        };
        Ok(Self {
            kubeconfig: args
                .kubeconfig
                .clone()
                .or_else(|| env("K8S_AUTH_KUBECONFIG")),
            context: args.context.clone().or_else(|| env("K8S_AUTH_CONTEXT")),
            host,
            api_key: match &args.api_key {
                Some(token) => Some(check_token(token, "api_key")?),
                None => env("K8S_AUTH_API_KEY")
                    .map(|token| check_token(&token, "K8S_AUTH_API_KEY"))
                    .transpose()?,
            },
            ca_cert: args
                .ca_cert
                .clone()
                .or_else(|| either("K8S_AUTH_CA_CERT", "K8S_AUTH_SSL_CA_CERT").map(|v| v.0)),
            client_cert: args
                .client_cert
                .clone()
                .or_else(|| either("K8S_AUTH_CLIENT_CERT", "K8S_AUTH_CERT_FILE").map(|v| v.0)),
            client_key: args
                .client_key
                .clone()
                .or_else(|| either("K8S_AUTH_CLIENT_KEY", "K8S_AUTH_KEY_FILE").map(|v| v.0)),
            validate_certs,
        })
    }

    /// Builds the kube configuration (reads files, no network).
    pub async fn config(&self) -> Result<kube::Config> {
        // As kubernetes.core: host with credentials needs nothing else (no kubeconfig is read,
        // even when one is named); kubeconfig or context loads that; with neither, in-cluster
        // first, then the default kubeconfig. Options then override what was loaded.
        // A bad host is reported before anything is loaded.
        let host = match &self.host {
            Some((host, origin)) => Some(parse_host(host, origin)?),
            None => None,
        };
        let direct = host.is_some()
            && (self.api_key.is_some()
                || (self.client_cert.is_some() && self.client_key.is_some()));
        let mut config = if let Some(host) = host.clone().filter(|_| direct) {
            kube::Config::new(host)
        } else if self.kubeconfig.is_some() || self.context.is_some() {
            let (kubeconfig, label) = match &self.kubeconfig {
                Some(paths) => (read_kubeconfigs(paths)?, paths.clone()),
                None => (read_default_kubeconfig()?, default_kubeconfig_label()),
            };
            let options = KubeConfigOptions {
                context: self.context.clone(),
                ..KubeConfigOptions::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| Error::LoadKubeconfig {
                    path: label,
                    source,
                })?
        } else {
            match (infer().await, &host) {
                // Nothing to load, but a host: talk to it without credentials (kubernetes.core
                // would fail here), as `kubectl --server` does.
                (Err(Error::NoClusterConfig { .. }), Some(host)) => kube::Config::new(host.clone()),
                (result, _) => result?,
            }
        };
        if !direct && let Some(host) = host {
            config.cluster_url = host;
        } else if !direct {
            // A kubeconfig's server gets the same checks as the host option.
            config.cluster_url =
                parse_host(&config.cluster_url.to_string(), "the kubeconfig's server")?;
        }
        if let Some(token) = &self.api_key {
            // The token replaces the loaded credentials; a client certificate stays.
            let loaded = std::mem::take(&mut config.auth_info);
            config.auth_info = AuthInfo {
                token: Some(token.clone().into()),
                client_certificate: loaded.client_certificate,
                client_certificate_data: loaded.client_certificate_data,
                client_key: loaded.client_key,
                client_key_data: loaded.client_key_data,
                ..AuthInfo::default()
            };
        }
        for (option, path, target) in [
            ("client_cert", &self.client_cert, 0),
            ("client_key", &self.client_key, 1),
        ] {
            let Some(path) = path else { continue };
            let expanded = expand_home(path);
            check_file_size(&expanded).map_err(|source| Error::ReadClientCert {
                option,
                path: expanded.clone(),
                source,
            })?;
            let name = expanded.to_string_lossy().into_owned();
            if target == 0 {
                config.auth_info.client_certificate = Some(name);
                config.auth_info.client_certificate_data = None;
            } else {
                config.auth_info.client_key = Some(name);
                config.auth_info.client_key_data = None;
            }
        }
        if let Some(path) = &self.ca_cert {
            let path = expand_home(path);
            config.root_cert = Some(read_ca_bundle(&path)?);
            config.root_cert_file = None;
        }
        if let Some(validate) = self.validate_certs {
            config.accept_invalid_certs = !validate;
        }
        // kube's own retry waits up to 1000 s and obeys any Retry-After: see http_guard.
        config.default_retry = false;
        Ok(config)
    }
}

/// Resolves options and environment and builds a client. No request is sent yet.
pub async fn connect(args: &ClusterArgs) -> Result<Cluster> {
    connect_server(args, None).await
}

/// Like [`connect`], with the same credentials and TLS settings, but to `server` (a URL like
/// `https://10.0.0.2:16443`) instead of the configured API server: one node's own apiserver,
/// for per-node health checks and for failing over while another node restarts.
pub async fn connect_server(args: &ClusterArgs, server: Option<&str>) -> Result<Cluster> {
    Ok(build(args, server, false).await?.0)
}

/// One node's own apiserver, at an address the API advertised for that node.
#[derive(Debug, Clone)]
pub struct NodeServer {
    /// The client: with the credentials when the server's certificate is verified, else with
    /// none.
    pub cluster: Cluster,
    /// Whether `cluster` sends the credentials.
    pub credentials: bool,
}

/// Like [`connect_server`] to `server`, an address a Node advertised, which whoever can write
/// Node objects (or answers in the API server's place) chooses: the credentials (bearer token,
/// client certificate, exec plugin) go with the requests only when the server's certificate is
/// verified (https and validate_certs not false), so that only a holder of a certificate the
/// CA signed can receive them. Otherwise the client sends none: enough for `/readyz`, not for
/// API calls.
pub async fn connect_node(args: &ClusterArgs, server: &str) -> Result<NodeServer> {
    let (cluster, credentials) = build(args, Some(server), true).await?;
    Ok(NodeServer {
        cluster,
        credentials,
    })
}

/// Builds the client to `server` (else the configured API server); with `only_if_verified`,
/// without any credentials unless the server's certificate is verified. Returns it and whether
/// it sends credentials.
async fn build(
    args: &ClusterArgs,
    server: Option<&str>,
    only_if_verified: bool,
) -> Result<(Cluster, bool)> {
    // Before anything is logged: the token as given and as sent.
    crate::secrets::register(
        [args.api_key.clone(), std::env::var("K8S_AUTH_API_KEY").ok()]
            .into_iter()
            .flatten()
            .flat_map(|t| [t.trim_end_matches(['\n', '\r']).to_owned(), t]),
    );
    let access = Access::resolve(args, |name| std::env::var(name).ok())?;
    let mut config = access.config().await?;
    if let Some(server) = server {
        config.cluster_url = server.parse().map_err(|_| Error::InvalidHost {
            host: server.to_owned(),
            origin: "the apiserver endpoints",
            problem: "is not a URL".into(),
        })?;
    }
    let verified = !config.accept_invalid_certs && config.cluster_url.scheme_str() == Some("https");
    let credentials = verified || !only_if_verified;
    if !credentials {
        config.auth_info = AuthInfo::default();
        config.headers.clear();
    }
    let request_timeout = args.request_timeout();
    // The read timeout counts from each write (the request), not from when a pooled
    // connection went idle; it bounds the wait for the headers and between reads of the body.
    // A little longer than the request timeout, whose message is the clearer one.
    config.read_timeout = Some(request_timeout + request_timeout / 4);
    config.reset_reader_on_write = true;
    config.connect_timeout = Some(
        config
            .connect_timeout
            .map_or(request_timeout, |t| t.min(request_timeout)),
    );
    config.write_timeout = Some(request_timeout);
    let endpoint = config.cluster_url.to_string();
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    tracing::debug!(%endpoint, "connecting");
    let builder =
        kube::client::ClientBuilder::try_from(config).map_err(|source| Error::BuildClient {
            endpoint: endpoint.clone(),
            source,
        })?;
    let client = crate::http_guard::build(
        builder,
        crate::http_guard::Limits {
            request_timeout,
            max_response_bytes: crate::http_guard::MAX_RESPONSE_BYTES,
        },
    );
    Ok((Cluster { client, endpoint }, credentials))
}

/// The API server URL, checked: http or https, a host, a port (when given) in 1..=65535, and no
/// `user:password@` (which would be echoed in messages; credentials go in api_key).
fn parse_host(host: &str, origin: &'static str) -> Result<http::Uri> {
    let invalid = |problem: &str| Error::InvalidHost {
        host: without_userinfo(host),
        origin,
        problem: problem.to_owned(),
    };
    let uri: http::Uri = host.trim().parse().map_err(|_| invalid("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("https" | "http")) {
        return Err(invalid("it must start with https:// (or http://)"));
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("it names no host"));
    };
    let text = authority.as_str();
    let host_port = match text.rsplit_once('@') {
        Some(_) => {
            return Err(invalid(
                "it must not hold a user name or password (user:password@); pass a token as \
                 api_key (K8S_AUTH_API_KEY)",
            ));
        }
        None => text,
    };
    let port = if let Some(rest) = host_port.strip_prefix('[') {
        match rest.split_once(']') {
            Some((_, after)) => after.strip_prefix(':'),
            None => return Err(invalid("its IPv6 address lacks the closing ]")),
        }
    } else {
        host_port.rsplit_once(':').map(|(_, port)| port)
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(invalid(&format!(
                "port {port:?} is not a number from 1 to 65535"
            )));
        }
    }
    Ok(uri)
}

/// `host` with any `user:password@` replaced by `***@`, for messages.
fn without_userinfo(host: &str) -> String {
    let (scheme, rest) = host.split_once("://").unwrap_or(("", host));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let prefix = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{prefix}***@{}", &rest[at + 1..])
        }
        None => host.to_owned(),
    }
}

/// A bearer token, checked: a trailing line break is removed (as kubectl does for token files,
/// and as a YAML `|` block leaves one); any other control character is refused, naming where
/// the token came from, never quoting it.
fn check_token(token: &str, origin: &str) -> Result<String> {
    let trimmed = token.trim_end_matches(['\n', '\r']);
    let problem = if trimmed.is_empty() {
        Some("is empty".to_owned())
    } else {
        trimmed
            .char_indices()
            .find(|(_, c)| c.is_control())
            .map(|(at, c)| {
                let what = match c {
                    '\n' | '\r' => "a line break",
                    '\t' => "a tab",
                    _ => "a control character",
                };
                format!(
                    "contains {what} at character {} (a token is one line of printable text)",
                    trimmed[..at].chars().count() + 1
                )
            })
    };
    match problem {
        Some(problem) => Err(Error::InvalidOption {
            option: origin.to_owned(),
            problem,
        }),
        None => Ok(trimmed.to_owned()),
    }
}

/// No option or variable names a cluster: the in-cluster service account first, then the
/// default kubeconfig (as kubernetes.core; kube's `Config::infer` tries them the other way
/// round).
async fn infer() -> Result<kube::Config> {
    let in_cluster = match kube::Config::incluster() {
        Ok(config) => return Ok(config),
        Err(err) => crate::error::causes_of(&err),
    };
    match read_default_kubeconfig() {
        Ok(kubeconfig) => {
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::LoadKubeconfig {
                    path: default_kubeconfig_label(),
                    source,
                })
        }
        Err(err) => Err(Error::NoClusterConfig {
            in_cluster,
            kubeconfig: err.message_with_causes(),
        }),
    }
}

fn default_kubeconfig_label() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into())
}

/// Largest kubeconfig, CA, client certificate or key file read. Real ones are a few KiB.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a whole file, refusing one larger than [`MAX_FILE_BYTES`] (also a pipe or device that
/// never ends).
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file is larger than the limit of {} MiB",
                MAX_FILE_BYTES / 1024 / 1024
            ),
        ));
    }
    Ok(bytes)
}

/// Refuses a file larger than [`MAX_FILE_BYTES`] that kube will read itself.
fn check_file_size(path: &Path) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_file() && metadata.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the file is larger than the limit of {} MiB",
                MAX_FILE_BYTES / 1024 / 1024
            ),
        ));
    }
    Ok(())
}

/// Reads `KUBECONFIG` (`:`-separated) or `~/.kube/config`.
fn read_default_kubeconfig() -> Result<Kubeconfig> {
    match std::env::var("KUBECONFIG") {
        Ok(paths) if !paths.is_empty() => read_kubeconfigs(&paths),
        _ => read_kubeconfigs("~/.kube/config"),
    }
}

/// Reads one or more `:`-separated kubeconfig files and merges them, first wins.
fn read_kubeconfigs(paths: &str) -> Result<Kubeconfig> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths.split(':').filter(|p| !p.is_empty()) {
        let next = read_kubeconfig(path)?;
        merged = Some(match merged {
            None => next,
            Some(current) => current
                .merge(next)
                .map_err(|source| Error::LoadKubeconfig {
                    path: paths.to_owned(),
                    source,
                })?,
        });
    }
    merged.ok_or_else(|| Error::InvalidOption {
        option: "kubeconfig".into(),
        problem: "is empty".into(),
    })
}

/// Reads one kubeconfig file (bounded), with relative file names made absolute as kubectl does.
fn read_kubeconfig(path: &str) -> Result<Kubeconfig> {
    let expanded = expand_home(path);
    let bytes = read_bounded(&expanded).map_err(|source| Error::ReadKubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| Error::ReadKubeconfig {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"),
    })?;
    let mut kubeconfig = parse_kubeconfig(&text, path)?;
    if let Some(dir) = expanded.parent() {
        let absolute = |file: &mut Option<String>| {
            if let Some(name) = file.as_deref()
                && Path::new(name).is_relative()
                && let Some(joined) = dir.join(name).to_str()
            {
                *file = Some(joined.to_owned());
            }
        };
        for named in &mut kubeconfig.clusters {
            if let Some(cluster) = &mut named.cluster {
                absolute(&mut cluster.certificate_authority);
            }
        }
        for named in &mut kubeconfig.auth_infos {
            if let Some(user) = &mut named.auth_info {
                absolute(&mut user.client_certificate);
                absolute(&mut user.client_key);
                absolute(&mut user.token_file);
            }
        }
    }
    Ok(kubeconfig)
}

/// Parses kubeconfig YAML (several documents are merged). Errors give a position or a field
/// path, never the text around it: a kubeconfig holds tokens and keys.
fn parse_kubeconfig(text: &str, label: &str) -> Result<Kubeconfig> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|err| Error::KubeconfigSyntax {
            path: label.to_owned(),
            location: err
                .location()
                .map(|l| format!("line {}, column {}", l.line(), l.column())),
        })?;
    let mut merged = Kubeconfig::default();
    for document in documents {
        crate::secrets::register(kubeconfig_secrets(&document));
        let next = kubeconfig_from_value(document, label)?;
        merged = merged.merge(next).map_err(|source| Error::LoadKubeconfig {
            path: label.to_owned(),
            source,
        })?;
    }
    Ok(merged)
}

/// The credentials in a kubeconfig document: the string values of the fields kubernetes.core
/// treats as sensitive, wherever they are.
#[must_use]
pub fn kubeconfig_secrets(document: &serde_json::Value) -> Vec<String> {
    const SENSITIVE: &[&str] = &[
        "token",
        "password",
        "secret",
        "client-key-data",
        "client-certificate-data",
        "certificate-authority-data",
        "api_key",
        "access-token",
        "refresh-token",
        "id-token",
        "client-secret",
    ];
    let mut found = Vec::new();
    let mut stack = vec![document];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        serde_json::Value::String(s) if SENSITIVE.contains(&key.as_str()) => {
                            found.push(s.clone());
                        }
                        other => stack.push(other),
                    }
                }
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found.retain(|s| !s.is_empty());
    found
}

/// A kubeconfig from an already parsed mapping (a file's document, or the option given as one).
fn kubeconfig_from_value(value: serde_json::Value, label: &str) -> Result<Kubeconfig> {
    serde_path_to_error::deserialize(value).map_err(|err| Error::KubeconfigInvalid {
        path: label.to_owned(),
        field: err.path().to_string(),
    })
}

/// Reads the DER certificates out of a PEM file.
fn read_ca_bundle(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = read_bounded(path).map_err(|source| Error::ReadCaCert {
        path: path.to_owned(),
        source,
    })?;
    let certs = crate::x509::pem_certificates(&bytes).unwrap_or_default();
    if certs.is_empty() {
        return Err(Error::ReadCaCert {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no PEM CERTIFICATE block found",
            ),
        });
    }
    Ok(certs)
}

/// A path option expanded as Ansible's `path` type does (`expanduser(expandvars(value))`):
/// `$NAME` and `${NAME}` become the variable's value (unset ones are left as written), then `~`
/// and `~/x` become the home directory, `~user/x` that user's (from /etc/passwd).
#[must_use]
pub fn expand_home(path: &str) -> PathBuf {
    expand_path(path, &|name| std::env::var(name).ok(), &home_of_user)
}

fn expand_path(
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    home_of: &dyn Fn(&str) -> Option<String>,
) -> PathBuf {
    let path = expand_vars(path, env);
    let Some(rest) = path.strip_prefix('~') else {
        return PathBuf::from(path);
    };
    let (user, tail) = rest.split_once('/').map_or((rest, ""), |(u, t)| (u, t));
    let home = if user.is_empty() {
        env("HOME").or_else(|| {
            env("USER")
                .or_else(|| env("LOGNAME"))
                .and_then(|name| home_of(&name))
        })
    } else {
        home_of(user)
    };
    match home {
        Some(home) if tail.is_empty() => PathBuf::from(home),
        Some(home) => PathBuf::from(home).join(tail),
        None => PathBuf::from(path),
    }
}

/// Python's `os.path.expandvars`: `$NAME` (letters, digits, `_`) and `${NAME}`; unknown ones stay.
fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match (!name.is_empty()).then(|| env(name)).flatten() {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[at..at + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// A user's home directory from /etc/passwd (users only a directory service knows stay `~user`).
fn home_of_user(user: &str) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[0] == user && !fields[5].is_empty())
            .then(|| fields[5].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn timeout_option_bounds_the_action_and_each_request() {
        let default = ClusterArgs::default();
        assert_eq!(default.timeout(), DEFAULT_ACTION_TIMEOUT);
        assert_eq!(default.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        let short: ClusterArgs =
            serde_json::from_value(serde_json::json!({"timeout": "2s"})).unwrap();
        assert_eq!(short.timeout(), Duration::from_secs(2));
        assert_eq!(short.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(
            serde_json::to_value(&short).unwrap()["timeout"],
            serde_json::json!("2s")
        );
        let err = serde_json::from_value::<ClusterArgs>(serde_json::json!({"timeout": "soon"}))
            .unwrap_err();
        assert!(err.to_string().contains("90s"), "{err}");
    }

    #[test]
    fn options_win_over_environment() {
        let args = ClusterArgs {
            host: Some("https://a:6443".into()),
            validate_certs: Some(true),
            ..ClusterArgs::default()
        };
        let access = Access::resolve(
            &args,
            env_of(&[
                ("K8S_AUTH_HOST", "https://b:6443"),
                ("K8S_AUTH_API_KEY", "tok"),
                ("K8S_AUTH_VERIFY_SSL", "False"),
            ]),
        )
        .unwrap();
        assert_eq!(access.host, Some(("https://a:6443".into(), "option host")));
        assert_eq!(access.api_key.as_deref(), Some("tok"));
        assert_eq!(access.validate_certs, Some(true));
    }

    #[test]
    fn awx_credential_variables_are_read() {
        let access = Access::resolve(
            &ClusterArgs::default(),
            env_of(&[
                ("K8S_AUTH_HOST", "https://b:6443"),
                ("K8S_AUTH_VERIFY_SSL", "False"),
                ("K8S_AUTH_SSL_CA_CERT", "/ca.pem"),
                ("K8S_AUTH_CONTEXT", "k8s02"),
            ]),
        )
        .unwrap();
        assert_eq!(
            access.host,
            Some(("https://b:6443".into(), "K8S_AUTH_HOST"))
        );
        assert_eq!(access.validate_certs, Some(false));
        assert_eq!(access.ca_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(access.context.as_deref(), Some("k8s02"));
    }

    #[test]
    fn unreadable_verify_ssl_is_an_error() {
        let err = Access::resolve(
            &ClusterArgs::default(),
            env_of(&[("K8S_AUTH_VERIFY_SSL", "maybe")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("K8S_AUTH_VERIFY_SSL"), "{err}");
    }

    /// A loopback server answering `ok` to `requests` requests; sends each request head.
    fn recording_server(requests: usize) -> (String, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (heads, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut data = Vec::new();
                let mut buf = [0_u8; 4096];
                while !data.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    data.extend_from_slice(&buf[..n]);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                heads
                    .send(String::from_utf8_lossy(&data).to_lowercase())
                    .unwrap();
            }
        });
        (url, received)
    }

    #[tokio::test]
    async fn credentials_never_go_to_a_node_address_unless_its_certificate_is_verified() {
        let (url, heads) = recording_server(2);
        let args = ClusterArgs {
            host: Some(url.clone()),
            api_key: Some("node-test-secret".into()),
            validate_certs: Some(false),
            ..ClusterArgs::default()
        };
        let readyz = || http::Request::get("/readyz").body(Vec::new()).unwrap();
        let node = connect_node(&args, &url).await.unwrap();
        assert!(!node.credentials);
        assert_eq!(
            node.cluster.client.request_text(readyz()).await.unwrap(),
            "ok"
        );
        let head = heads.recv().unwrap();
        assert!(head.starts_with("get /readyz"), "{head}");
        assert!(!head.contains("authorization"), "{head}");
        assert!(!head.contains("node-test-secret"), "{head}");
        // The configured API server itself gets them, as before.
        let configured = connect_server(&args, None).await.unwrap();
        configured.client.request_text(readyz()).await.unwrap();
        assert!(
            heads
                .recv()
                .unwrap()
                .contains("authorization: bearer node-test-secret")
        );
    }

    #[tokio::test]
    async fn node_addresses_keep_the_credentials_when_certificates_are_verified() {
        let args = ClusterArgs {
            host: Some("https://10.0.0.1:16443".into()),
            // (registered as a secret to mask, for the whole test process: a distinctive one)
            api_key: Some("node-verified-test-secret".into()),
            validate_certs: Some(true),
            ..ClusterArgs::default()
        };
        assert!(
            connect_node(&args, "https://10.0.0.2:16443")
                .await
                .unwrap()
                .credentials
        );
        let unverified = ClusterArgs {
            validate_certs: Some(false),
            ..args
        };
        assert!(
            !connect_node(&unverified, "https://10.0.0.2:16443")
                .await
                .unwrap()
                .credentials
        );
    }

    #[tokio::test]
    async fn host_without_kubeconfig_is_used_directly() {
        let access = Access {
            host: Some(("https://10.0.0.1:16443".into(), "option host")),
            api_key: Some("tok".into()),
            validate_certs: Some(false),
            ..Access::default()
        };
        let config = access.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.0.0.1:16443/");
        assert!(config.accept_invalid_certs);
        assert!(config.auth_info.token.is_some());
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused_naming_the_option() {
        for bad in [
            "https://host:99999",
            "https://host:65536",
            "https://host:",
            "https://host:0",
            "https://[::1]:70000",
        ] {
            let err = parse_host(bad, "K8S_AUTH_HOST").unwrap_err();
            let text = err.to_string();
            assert!(text.contains("K8S_AUTH_HOST"), "{text}");
            assert!(text.contains("not a number from 1 to 65535"), "{text}");
        }
        for good in [
            "https://10.0.0.1:16443",
            "https://host",
            "http://[::1]:6443/",
            "https://[fe80::1]",
            "https://host:65535/prefix",
        ] {
            assert!(parse_host(good, "option host").is_ok(), "{good}");
        }
        let err = parse_host("ftp://host", "option host").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn userinfo_in_host_is_refused_and_not_echoed() {
        let err = parse_host("https://admin:hunter2@10.0.0.1:16443/", "option host").unwrap_err();
        let text = err.message_with_causes();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("admin"), "{text}");
        assert!(text.contains("https://***@10.0.0.1:16443/"), "{text}");
        assert!(text.contains("api_key"), "{text}");
    }

    #[test]
    fn token_loses_a_trailing_newline_and_other_control_characters_are_refused() {
        assert_eq!(check_token("s3cret\n", "api_key").unwrap(), "s3cret");
        assert_eq!(check_token("s3cret\r\n", "api_key").unwrap(), "s3cret");
        for (bad, what) in [
            ("s3c\nret", "line break"),
            ("s3c\tret", "tab"),
            ("\u{7}x", "control"),
        ] {
            let err = check_token(bad, "K8S_AUTH_API_KEY").unwrap_err();
            let text = err.to_string();
            assert!(text.contains("K8S_AUTH_API_KEY"), "{text}");
            assert!(text.contains(what), "{text}");
            assert!(!text.contains("s3c"), "{text}");
        }
        let access = Access::resolve(
            &ClusterArgs::default(),
            env_of(&[("K8S_AUTH_API_KEY", "tok\n")]),
        )
        .unwrap();
        assert_eq!(access.api_key.as_deref(), Some("tok"));
        let args = ClusterArgs {
            api_key: Some("a\nb".into()),
            ..ClusterArgs::default()
        };
        let err = Access::resolve(&args, env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("\"api_key\""), "{err}");
    }

    #[test]
    fn paths_expand_variables_and_home_directories_like_ansible() {
        let env = |name: &str| match name {
            "HOME" => Some("/home/me".to_owned()),
            "DATA" => Some("/srv/data".to_owned()),
            _ => None,
        };
        let home_of = |user: &str| (user == "awx").then(|| "/var/lib/awx".to_owned());
        let expand = |p: &str| expand_path(p, &env, &home_of);
        assert_eq!(expand("~/x"), PathBuf::from("/home/me/x"));
        assert_eq!(expand("~"), PathBuf::from("/home/me"));
        assert_eq!(expand("$HOME/x"), PathBuf::from("/home/me/x"));
        assert_eq!(
            expand("${DATA}/backups"),
            PathBuf::from("/srv/data/backups")
        );
        assert_eq!(
            expand("~awx/kubeconfig"),
            PathBuf::from("/var/lib/awx/kubeconfig")
        );
        assert_eq!(expand("~nobody-here/x"), PathBuf::from("~nobody-here/x"));
        assert_eq!(expand("$UNSET/x"), PathBuf::from("$UNSET/x"));
        assert_eq!(expand("/a/$/b${"), PathBuf::from("/a/$/b${"));
        assert_eq!(expand("/plain/path"), PathBuf::from("/plain/path"));
        assert_eq!(home_of_user("root").as_deref(), Some("/root"));
    }

    #[test]
    fn kubeconfig_syntax_error_gives_a_position_not_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: s3cr3t-t0ken\n   bad: [\n",
        )
        .unwrap();
        let err = read_kubeconfigs(path.to_str().unwrap()).unwrap_err();
        let text = err.message_with_causes();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("line "), "{text}");
        std::fs::write(
            &path,
            "users:\n- name: u\n  user:\n    token: [s3cr3t-t0ken]\n",
        )
        .unwrap();
        let text = read_kubeconfigs(path.to_str().unwrap())
            .unwrap_err()
            .message_with_causes();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(text.contains("users[0].user.token"), "{text}");
    }

    #[test]
    fn huge_kubeconfig_and_ca_files_are_refused_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = read_kubeconfigs(big.to_str().unwrap()).unwrap_err();
        assert!(
            err.message_with_causes().contains("larger than the limit"),
            "{err}"
        );
        let err = read_ca_bundle(&big).unwrap_err();
        assert!(
            err.message_with_causes().contains("larger than the limit"),
            "{err}"
        );
    }

    #[test]
    fn kubeconfig_relative_files_are_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://a:6443\n    certificate-authority: ca.crt\n",
        )
        .unwrap();
        let kubeconfig = read_kubeconfigs(path.to_str().unwrap()).unwrap();
        let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            dir.path().join("ca.crt").to_str()
        );
    }

    #[test]
    fn kubernetes_core_variable_names_are_read_too() {
        let access = Access::resolve(
            &ClusterArgs::default(),
            env_of(&[
                ("K8S_AUTH_VALIDATE_CERTS", "no"),
                ("K8S_AUTH_VERIFY_SSL", "yes"),
                ("K8S_AUTH_CA_CERT", "/first.pem"),
                ("K8S_AUTH_SSL_CA_CERT", "/second.pem"),
                ("K8S_AUTH_CERT_FILE", "/c.pem"),
                ("K8S_AUTH_CLIENT_KEY", "/k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(access.validate_certs, Some(false));
        assert_eq!(access.ca_cert.as_deref(), Some("/first.pem"));
        assert_eq!(access.client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(access.client_key.as_deref(), Some("/k.pem"));
        let err = Access::resolve(
            &ClusterArgs::default(),
            env_of(&[("K8S_AUTH_VALIDATE_CERTS", "maybe")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("K8S_AUTH_VALIDATE_CERTS"), "{err}");
    }

    #[test]
    fn aliases_of_kubernetes_core_are_accepted() {
        let args: ClusterArgs = serde_json::from_value(serde_json::json!({
            "verify_ssl": false,
            "ssl_ca_cert": "/ca.pem",
            "cert_file": "/c.pem",
            "key_file": "/k.pem"
        }))
        .unwrap();
        assert_eq!(args.validate_certs, Some(false));
        assert_eq!(args.ca_cert.as_deref(), Some("/ca.pem"));
        assert_eq!(args.client_cert.as_deref(), Some("/c.pem"));
        assert_eq!(args.client_key.as_deref(), Some("/k.pem"));
    }

    #[tokio::test]
    async fn host_and_api_key_never_load_a_kubeconfig() {
        let access = Access {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: Some("nowhere".into()),
            host: Some(("https://10.0.0.1:16443".into(), "option host")),
            api_key: Some("tok".into()),
            ..Access::default()
        };
        let config = access.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://10.0.0.1:16443/");
    }

    #[tokio::test]
    async fn host_alone_overrides_the_kubeconfig_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://a:6443\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: from-kubeconfig\n",
        )
        .unwrap();
        let access = Access {
            kubeconfig: Some(path.to_string_lossy().into_owned()),
            host: Some(("https://b:7443".into(), "option host")),
            ..Access::default()
        };
        let config = access.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://b:7443/");
        assert!(config.auth_info.token.is_some());
    }

    #[tokio::test]
    async fn invalid_host_is_refused() {
        let access = Access {
            host: Some(("not a url".into(), "K8S_AUTH_HOST")),
            ..Access::default()
        };
        let err = access.config().await.unwrap_err();
        assert!(err.to_string().contains("K8S_AUTH_HOST"), "{err}");
    }
}
