//! Cluster access: the options every action shares, and how they become a kube client.
//!
//! Order, as in kubernetes.core: explicit options first, then the `K8S_AUTH_*` variables that
//! AWX's Kubernetes credential injects, then `KUBECONFIG` or `~/.kube/config`, then the
//! in-cluster service account. `host` given without `kubeconfig`/`context` talks to that URL
//! directly (with `api_key`, `ca_cert`, `validate_certs`); otherwise the kubeconfig is loaded
//! and `host`, `api_key`, `ca_cert`, `validate_certs` override what it says.

use std::fmt::Write as _;
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

    /// URL of the API server, e.g. https://10.0.0.1:16443. Falls back to K8S_AUTH_HOST. Without
    /// kubeconfig or context, kubemend talks to this URL directly with api_key.
    #[arg(long, value_name = "URL")]
    #[serde(default)]
    pub host: Option<String>,

    /// Bearer token for the API server. Falls back to K8S_AUTH_API_KEY. Never shown in output;
    /// on the command line prefer the environment variable, which `ps` does not show.
    #[arg(long, value_name = "TOKEN")]
    #[serde(default)]
    #[schemars(extend("x-no-log" = true))]
    pub api_key: Option<String>,

    /// Path of a PEM file with the CA certificate(s) that signed the API server's certificate.
    /// Falls back to K8S_AUTH_SSL_CA_CERT.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub ca_cert: Option<String>,

    /// Whether to verify the API server's TLS certificate. Falls back to K8S_AUTH_VERIFY_SSL
    /// ('True'/'False'), then to the kubeconfig (true unless it says insecure-skip-tls-verify).
    #[arg(long, value_name = "BOOL")]
    #[serde(default)]
    pub validate_certs: Option<bool>,

    /// Longest time the whole action may take, e.g. 90s, 5m or 1h30m (a bare number is
    /// seconds); default 5m. No single request to the API server waits longer than 30s (or
    /// this, when shorter) for its answer.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    #[serde(default, with = "duration_text")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// Default of the `timeout` option: the bound on a whole action.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Longest wait for the answer to one request (one attempt), and between two reads of it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ClusterArgs {
    /// How long the whole action may take: option `timeout`, else [`DEFAULT_ACTION_TIMEOUT`].
    /// The pipeline wraps the action's future in `tokio::time::timeout` with this.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_ACTION_TIMEOUT)
    }

    /// How long one request may wait for its answer: [`DEFAULT_REQUEST_TIMEOUT`], or the
    /// action's timeout when that is shorter.
    #[must_use]
    pub fn request_timeout(&self) -> Duration {
        self.timeout().min(DEFAULT_REQUEST_TIMEOUT)
    }
}

/// Parses a duration written like `90s`, `5m`, `1h30m`, `250ms` or `120` (seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("expected a duration like 90s, 5m or 1h30m, got an empty string".into());
    }
    let bad = || format!("expected a duration like 90s, 5m or 1h30m, got {text:?}");
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || unit_len == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match &rest[digits..digits + unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    if total.is_zero() {
        return Err(format!("must be longer than zero, got {text:?}"));
    }
    Ok(total)
}

fn parse_duration_arg(text: &str) -> std::result::Result<Duration, String> {
    parse_duration(text)
}

/// A duration for people: `5m`, `1h30m`, `90s` stays `1m30s`, `250ms`.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.subsec_millis();
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s"), (u64::from(millis), "ms")] {
        if value > 0 {
            let _ = write!(out, "{value}{unit}");
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// `timeout` as text in options and results (`"5m"`), a [`Duration`] in the struct.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    #[allow(clippy::ref_option, reason = "the signature serde's `with` requires")]
    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&super::format_duration(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        // The validator has turned numbers into strings already; accept both anyway.
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => super::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(serde_json::Value::Number(n)) => super::parse_duration(&n.to_string())
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!(
                "expected a duration like 90s or 5m, got {}",
                crate::protocol::json_kind(&other)
            ))),
        }
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
    /// Certificate verification.
    pub validate_certs: Option<bool>,
}

impl Access {
    /// Merges explicit options with `K8S_AUTH_*` variables read through `env`.
    pub fn resolve(args: &ClusterArgs, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let validate_certs = match args.validate_certs {
            Some(v) => Some(v),
            None => match env("K8S_AUTH_VERIFY_SSL") {
                Some(text) => Some(
                    crate::protocol::coerce_bool(&serde_json::Value::String(text.clone()))
                        .ok_or_else(|| Error::InvalidOption {
                            option: "K8S_AUTH_VERIFY_SSL".into(),
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
            api_key: args.api_key.clone().or_else(|| env("K8S_AUTH_API_KEY")),
            ca_cert: args.ca_cert.clone().or_else(|| env("K8S_AUTH_SSL_CA_CERT")),
            validate_certs,
        })
    }

    /// Builds the kube configuration (reads files, no network).
    pub async fn config(&self) -> Result<kube::Config> {
        let direct = self.host.is_some() && self.kubeconfig.is_none() && self.context.is_none();
        let mut config = if direct {
            let (host, origin) = self.host.clone().unwrap_or_default();
            kube::Config::new(parse_host(&host, origin)?)
        } else if self.kubeconfig.is_some() || self.context.is_some() {
            let (kubeconfig, label) = match &self.kubeconfig {
                Some(paths) => (read_kubeconfigs(paths)?, paths.clone()),
                None => (
                    Kubeconfig::read().map_err(|source| Error::LoadKubeconfig {
                        path: default_kubeconfig_label(),
                        source,
                    })?,
                    default_kubeconfig_label(),
                ),
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
            kube::Config::infer()
                .await
                .map_err(|source| Error::NoClusterConfig { source })?
        };
        if !direct && let Some((host, origin)) = &self.host {
            config.cluster_url = parse_host(host, origin)?;
        }
        if let Some(token) = &self.api_key {
            config.auth_info = AuthInfo {
                token: Some(token.clone().into()),
                ..AuthInfo::default()
            };
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
    let access = Access::resolve(args, |name| std::env::var(name).ok())?;
    let mut config = access.config().await?;
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
    Ok(Cluster { client, endpoint })
}

fn parse_host(host: &str, origin: &'static str) -> Result<http::Uri> {
    let invalid = || Error::InvalidHost {
        host: host.to_owned(),
        origin,
    };
    let uri: http::Uri = host.parse().map_err(|_| invalid())?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(invalid());
    }
    Ok(uri)
}

fn default_kubeconfig_label() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into())
}

/// Reads one or more `:`-separated kubeconfig files and merges them, first wins.
fn read_kubeconfigs(paths: &str) -> Result<Kubeconfig> {
    let mut merged: Option<Kubeconfig> = None;
    for path in paths.split(':').filter(|p| !p.is_empty()) {
        let expanded = expand_home(path);
        let next = Kubeconfig::read_from(&expanded).map_err(|source| Error::LoadKubeconfig {
            path: path.to_owned(),
            source,
        })?;
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

/// Reads the DER certificates out of a PEM file.
fn read_ca_bundle(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadCaCert {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(&bytes)
        .filter_map(std::result::Result::ok)
        .filter(|pem| pem.label == "CERTIFICATE")
        .map(|pem| pem.contents)
        .collect();
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

/// `~/x` → `$HOME/x`, as Ansible's path type does.
#[must_use]
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
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
    fn durations_are_parsed_like_90s_and_5m() {
        for (text, want) in [
            ("90s", 90),
            ("5m", 300),
            ("1h30m", 5400),
            ("120", 120),
            (" 2m10s ", 130),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(want)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5s",
            "1.5m",
            "0s",
            "5 m",
            "99999999999h",
        ] {
            if bad == "5" {
                continue;
            }
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn timeout_option_bounds_the_action_and_each_request() {
        let default = ClusterArgs::default();
        assert_eq!(default.timeout(), DEFAULT_ACTION_TIMEOUT);
        assert_eq!(default.request_timeout(), DEFAULT_REQUEST_TIMEOUT);
        let short: ClusterArgs =
            serde_json::from_value(serde_json::json!({"timeout": "2s"})).unwrap();
        assert_eq!(short.timeout(), Duration::from_secs(2));
        assert_eq!(short.request_timeout(), Duration::from_secs(2));
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
