//! SSH to the nodes through the system OpenSSH client: the options every SSH-using action
//! shares, their validation, and one multiplexed master connection per node.
//!
//! # Guarantees
//! - Remote commands are argument lists: every argument is shell-quoted before it reaches the
//!   remote shell, so nothing is ever pasted into a command line.
//! - Node names, hosts, users and service names are validated before any connection is made,
//!   naming the option.
//! - Host keys are checked strictly by default (`accept-new` only on request, never off).
//! - Authentication is whatever OpenSSH does: a key file option, the ssh_config's, or an
//!   ssh-agent (`SSH_AUTH_SOCK`, as an AWX Machine credential provides) with no option at all.
//!   `BatchMode` is always on: a password prompt fails instead of hanging.
//! - Every command is bounded in time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::k8s::names::quoted;

/// How long one remote command may take: kubemend stops waiting then, and the node's
/// `timeout` has ended the command [`REMOTE_MARGIN`] before (see [`Remote::run`]).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How much sooner than kubemend stops waiting the node's `timeout` sends TERM to a command,
/// and how long after TERM it sends KILL; so a command that hangs on the node ends there too
/// instead of running on after kubemend gave up on it.
const REMOTE_MARGIN: Duration = Duration::from_secs(5);

/// The most one stream of a remote command may print: past it, kubemend stops reading, ends
/// the command and fails the step (a node printing a gigabyte of journal must not take a
/// gigabyte here). Every command kubemend runs prints a few kilobytes.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// How long an idle master connection lives (see [`connect`]).
const MASTER_IDLE: std::num::NonZeroUsize = std::num::NonZeroUsize::new(3600).unwrap();

/// How long connecting (the master connection) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many nodes are connected to (or read) at once: each is an ssh process, and a cluster of
/// 150 nodes must not start 150 at a time.
pub const MAX_PARALLEL: usize = 8;

/// Runs `work` on every item, at most [`MAX_PARALLEL`] at a time; the results come in the
/// items' order.
pub async fn each_bounded<I, F, Fut>(items: I, work: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future,
{
    use futures::stream::StreamExt as _;
    futures::stream::iter(items)
        .map(work)
        .buffered(MAX_PARALLEL)
        .collect()
        .await
}

/// SSH options, shared by the actions that reach nodes over SSH.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, Args)]
pub struct SshArgs {
    /// An ssh_config file for the connections (Host entries, ProxyJump, IdentityFile, ...).
    /// Default: OpenSSH's own (~/.ssh/config, /etc/ssh/ssh_config).
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub ssh_config: Option<String>,

    /// Login user on the nodes, for nodes that do not name their own. Default: the
    /// ssh_config's, else the local user.
    #[arg(long, value_name = "USER")]
    #[serde(default)]
    pub ssh_user: Option<String>,

    /// SSH port, for nodes that do not name their own. Default: the ssh_config's, else 22.
    #[arg(long, value_name = "PORT")]
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535))]
    pub ssh_port: Option<u16>,

    /// Private key file. Without it, the ssh_config's IdentityFile or an ssh-agent
    /// (SSH_AUTH_SOCK, how an AWX Machine credential hands over its key) is used.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub ssh_private_key_file: Option<String>,

    /// known_hosts file to check host keys against. Default: the ssh_config's, else
    /// ~/.ssh/known_hosts.
    #[arg(long, value_name = "PATH")]
    #[serde(default)]
    pub known_hosts: Option<String>,

    /// Host key checking: strict (the key must be known) or accept-new (a host not yet in
    /// known_hosts is added; a changed key is still refused). There is no "off".
    #[arg(long, value_enum, value_name = "MODE")]
    #[serde(default)]
    pub host_key_checking: HostKeyChecking,

    /// Run the node commands with `sudo -n` (no password prompt).
    #[arg(long, value_name = "BOOL")]
    #[serde(default = "default_become", rename = "become")]
    pub r#become: bool,
}

fn default_become() -> bool {
    true
}

/// Host key checking mode.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema, ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyChecking {
    /// The host key must be in known_hosts (StrictHostKeyChecking=yes).
    #[default]
    Strict,
    /// Hosts not yet known are added; changed keys are refused (accept-new).
    AcceptNew,
}

/// Where and how to reach one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Kubernetes node name.
    pub node: String,
    /// Host to connect to (an ssh_config Host alias, a DNS name or an address).
    pub host: String,
    /// Port, if not the default.
    pub port: Option<u16>,
    /// Login user, if not the default.
    pub user: Option<String>,
}

/// Checks that `value` is 1 to `max` characters of letters, digits and `extra`, not starting
/// with `-` (which ssh or sudo would read as an option); `what` describes it in the error.
fn check_chars(option: &str, value: &str, max: usize, extra: &[char], what: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= max
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: option.to_owned(),
            problem: format!("{} {what}", quoted(value)),
        })
    }
}

/// Checks a host name or address: letters, digits, `.`, `-`, `_`, `:` (IPv6), at most 253
/// characters, not starting with `-`.
pub fn check_host(option: &str, host: &str) -> Result<()> {
    check_chars(
        option,
        host,
        253,
        &['.', '-', '_', ':'],
        "is not a host name or address (letters, digits, '.', '-', '_', ':')",
    )
}

/// Checks a login user or service name: letters, digits, `.`, `-`, `_`, `@`, at most 64
/// characters, not starting with `-`.
pub fn check_word(option: &str, word: &str) -> Result<()> {
    check_chars(
        option,
        word,
        64,
        &['.', '-', '_', '@'],
        "may hold only letters, digits, '.', '-', '_' and '@'",
    )
}

impl SshArgs {
    /// Checks the options that name things (no I/O).
    pub fn check(&self) -> Result<()> {
        if let Some(user) = &self.ssh_user {
            check_word("ssh_user", user)?;
        }
        if self.ssh_port == Some(0) {
            return Err(Error::InvalidOption {
                option: "ssh_port".into(),
                problem: "must be between 1 and 65535".into(),
            });
        }
        for (option, path) in [
            ("ssh_config", &self.ssh_config),
            ("ssh_private_key_file", &self.ssh_private_key_file),
            ("known_hosts", &self.known_hosts),
        ] {
            if path.as_deref().is_some_and(|p| p.trim().is_empty()) {
                return Err(Error::InvalidOption {
                    option: option.into(),
                    problem: "must not be empty".into(),
                });
            }
            if path.as_deref().is_some_and(|p| p.contains('"')) {
                return Err(Error::InvalidOption {
                    option: option.into(),
                    problem: "must not hold a double quote (ssh reads it as quoting)".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether any option that says where or how to connect is set (ssh_config, ssh_user,
    /// ssh_port, ssh_private_key_file, known_hosts).
    #[must_use]
    pub fn given(&self) -> bool {
        self.ssh_config.is_some()
            || self.ssh_user.is_some()
            || self.ssh_port.is_some()
            || self.ssh_private_key_file.is_some()
            || self.known_hosts.is_some()
    }

    /// The options that are set, for a finding's fix.
    #[must_use]
    pub fn given_options(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (key, value) in [
            ("ssh_config", &self.ssh_config),
            ("ssh_user", &self.ssh_user),
            ("ssh_private_key_file", &self.ssh_private_key_file),
            ("known_hosts", &self.known_hosts),
        ] {
            if let Some(value) = value {
                out.insert(key.into(), value.clone().into());
            }
        }
        if let Some(port) = self.ssh_port {
            out.insert("ssh_port".into(), port.into());
        }
        out
    }

    fn path(text: Option<&String>) -> Option<PathBuf> {
        text.map(|p| crate::client::expand_home(p))
    }
}

/// ssh's words about a configuration file it could not parse, without the file's own words:
/// `<file> line <N>: Bad configuration option: <word>` names a word of the file, and a file
/// given as ssh_config by mistake (a key, a token file) would be echoed into results and logs.
/// What remains names the file and the line.
fn without_config_text(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            let Some(at) = line.find(" line ") else {
                return line.to_owned();
            };
            let rest = &line[at + 6..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 || !rest[digits..].starts_with(':') {
                return line.to_owned();
            }
            format!(
                "{}: the text of that line is not shown (it may be secret): check that the file \
                 is an ssh_config",
                &line[..at + 6 + digits]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A path as ssh reads it in an option's value: ssh splits UserKnownHostsFile at whitespace
/// (it takes several files), so a path holding any is put in double quotes (the option checks
/// refuse a path with a double quote of its own).
fn ssh_quoted(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if text.contains(char::is_whitespace) {
        PathBuf::from(format!("\"{text}\""))
    } else {
        path.to_path_buf()
    }
}

/// A scratch known_hosts for one check-mode connection: the files ssh would check `target`
/// against (known_hosts, else what `ssh -G` says the ssh_config names, else
/// ~/.ssh/known_hosts), one after the other, so that known keys are still checked and a changed
/// one still refused.
async fn scratch_known_hosts(args: &SshArgs, target: &Target) -> Result<PathBuf> {
    let sources: Vec<PathBuf> = match SshArgs::path(args.known_hosts.as_ref()) {
        Some(path) => vec![path],
        None => {
            let mut command = tokio::process::Command::new("ssh");
            command.arg("-G");
            if let Some(config) = SshArgs::path(args.ssh_config.as_ref()) {
                command.arg("-F").arg(config);
            }
            let output = command
                .arg("--")
                .arg(&target.host)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| Error::Ssh {
                    node: target.node.clone(),
                    host: target.host.clone(),
                    step: "connect",
                    problem: format!("`ssh -G` to find the known_hosts files: {e}"),
                })?;
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("userknownhostsfile "))
                .map_or_else(
                    || vec![crate::client::expand_home("~/.ssh/known_hosts")],
                    |files| {
                        files
                            .split_whitespace()
                            .map(crate::client::expand_home)
                            .collect()
                    },
                )
        }
    };
    let mut known = Vec::new();
    for source in &sources {
        if let Ok(bytes) = std::fs::read(source) {
            known.extend_from_slice(&bytes);
            known.push(b'\n');
        }
    }
    let path = std::env::temp_dir().join(format!(
        "kubemend-known-hosts-{}-{}",
        std::process::id(),
        target.node
    ));
    std::fs::write(&path, known).map_err(|e| Error::Ssh {
        node: target.node.clone(),
        host: target.host.clone(),
        step: "connect",
        problem: format!("a scratch known_hosts at {}: {e}", path.display()),
    })?;
    Ok(path)
}

/// An open connection to one node.
#[derive(Debug)]
pub struct Remote {
    /// Which node.
    pub target: Target,
    session: Session,
    sudo: bool,
}

/// What a remote command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status (None: killed by a signal).
    pub status: Option<i32>,
    /// Standard output, as text.
    pub stdout: String,
    /// Standard error, as text.
    pub stderr: String,
}

impl Output {
    /// Whether it exited 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The last non-blank lines of stderr (else stdout), on one line joined by ` | `, for
    /// messages (a node's newlines never start a line of their own in a message).
    #[must_use]
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        last_lines(text, lines)
    }

    /// The last non-blank lines of stdout, then of stderr, as [`Self::tail`] joins them: for
    /// commands that tell what they do on stdout and why they failed on stderr (microk8s
    /// refresh-certs and the openssl it runs).
    #[must_use]
    pub fn tails(&self, lines: usize) -> String {
        [&self.stdout, &self.stderr]
            .into_iter()
            .map(|text| last_lines(text, lines))
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// The last `lines` non-blank lines of `text`, trimmed, joined by ` | `.
fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// What a node printed, made safe to parse and to show: every control character but newline
/// and tab (terminal escape sequences start with ESC or the C1 CSI, `\r` rewrites a line),
/// and the Unicode controls that reorder text on screen, become U+FFFD; `\r` is dropped. So
/// nothing a node prints can move the cursor, recolour or hide text in a message, a finding or
/// a terminal.
#[must_use]
pub fn printable(text: &str) -> String {
    text.chars()
        .filter(|&c| c != '\r')
        .map(|c| {
            let reorders = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n' && c != '\t') || reorders {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Checks the host that becomes ssh's destination argument. The openssh crate passes it as a
/// bare word after the options (no `--`) and reads `ssh://user@host:port` itself, so a host
/// starting with `-` would be an ssh option, and one holding `@`, `/` or (unless it is an IPv6
/// address) `:` would pick another user, host or port than the ones given.
fn check_destination(target: &Target) -> Result<()> {
    let host = target.host.as_str();
    let ipv6 = host.parse::<std::net::Ipv6Addr>().is_ok();
    let refused = host.is_empty()
        || host.starts_with('-')
        || host.contains(['@', '/'])
        || (host.contains(':') && !ipv6)
        || host.chars().any(|c| c.is_whitespace() || c.is_control());
    if refused {
        return Err(Error::Ssh {
            node: target.node.clone(),
            host: quoted(host),
            step: "connect",
            problem: "refusing this host: ssh would read it as an option or as \
                      user@host:port (it may not start with '-' nor hold '@', '/', or ':' \
                      other than in an IPv6 address)"
                .into(),
        });
    }
    Ok(())
}

/// Opens the master connection to `target`. In check mode a host that `accept-new` would add
/// is accepted into a scratch copy of the known_hosts files, never into them (check mode
/// writes nothing, here neither).
pub async fn connect(args: &SshArgs, target: &Target, check_mode: bool) -> Result<Remote> {
    check_destination(target)?;
    let scratch = if check_mode && args.host_key_checking == HostKeyChecking::AcceptNew {
        Some(scratch_known_hosts(args, target).await?)
    } else {
        None
    };
    let connected = open(args, target, scratch.as_deref()).await;
    if let Some(path) = scratch {
        let _ = std::fs::remove_file(path);
    }
    connected
}

async fn open(args: &SshArgs, target: &Target, known_hosts: Option<&Path>) -> Result<Remote> {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(match args.host_key_checking {
            HostKeyChecking::Strict => KnownHosts::Strict,
            HostKeyChecking::AcceptNew => KnownHosts::Add,
        })
        .connect_timeout(CONNECT_TIMEOUT)
        .server_alive_interval(Duration::from_secs(5))
        // A master outlives its run only so long: killed hard, kubemend cannot close it, and
        // an idle master then ends by itself (a run uses each of its connections at least
        // once a node, well within an hour, kubelite_restart's default timeout).
        .control_persist(ControlPersist::IdleFor(MASTER_IDLE))
        .control_directory(std::env::temp_dir());
    if let Some(config) = SshArgs::path(args.ssh_config.as_ref()) {
        builder.config_file(config);
    }
    if let Some(key) = SshArgs::path(args.ssh_private_key_file.as_ref()) {
        builder.keyfile(key);
    }
    if let Some(known) = known_hosts
        .map(Path::to_path_buf)
        .or_else(|| SshArgs::path(args.known_hosts.as_ref()))
    {
        builder.user_known_hosts_file(ssh_quoted(&known));
    }
    if let Some(user) = target.user.clone().or_else(|| args.ssh_user.clone()) {
        builder.user(user);
    }
    if let Some(port) = target.port.or(args.ssh_port) {
        builder.port(port);
    }
    let connecting = builder.connect(&target.host);
    let session = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(5), connecting)
        .await
        .map_err(|_| Error::Ssh {
            node: target.node.clone(),
            host: target.host.clone(),
            step: "connect",
            problem: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        })?
        .map_err(|err| Error::Ssh {
            node: target.node.clone(),
            host: target.host.clone(),
            step: "connect",
            problem: without_config_text(&crate::error::causes_text(&err)),
        })?;
    Ok(Remote {
        target: target.clone(),
        session,
        sudo: args.r#become,
    })
}

impl Remote {
    /// Runs `program args...` on the node (through `sudo -n` when `become` and `privileged`),
    /// each argument quoted for the remote shell, bounded by [`COMMAND_TIMEOUT`].
    pub async fn run(&self, privileged: bool, program: &str, args: &[&str]) -> Result<Output> {
        self.run_within(COMMAND_TIMEOUT, privileged, program, args)
            .await
    }

    /// [`Remote::run`] bounded by `limit`, on both ends: on the node the command runs under
    /// coreutils' `timeout` ([`REMOTE_MARGIN`] shorter, KILL after as long again), outside
    /// `sudo` so that sudoers rules still see the real program; here each stream is read as it
    /// comes and at most [`MAX_OUTPUT`] bytes of it kept (more fails the step, and the command
    /// is ended).
    pub async fn run_within(
        &self,
        limit: Duration,
        privileged: bool,
        program: &str,
        args: &[&str],
    ) -> Result<Output> {
        let on_node = limit
            .saturating_sub(REMOTE_MARGIN)
            .max(Duration::from_secs(1));
        let mut command = self.session.command("timeout");
        command
            .arg("-k")
            .arg(REMOTE_MARGIN.as_secs().to_string())
            .arg(on_node.as_secs().to_string());
        if privileged && self.sudo {
            command.arg("sudo").arg("-n");
        }
        command.arg(program);
        for arg in args {
            command.arg(arg);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        tracing::debug!(node = %self.target.node, command = %what, "ssh");
        let started = tokio::time::Instant::now();
        let run = async {
            let failed = |err: openssh::Error| {
                self.error(
                    "run",
                    format!("`{what}`: {}", crate::error::causes_text(&err)),
                )
            };
            let mut child = command.spawn().await.map_err(failed)?;
            let (stdout, stderr) = (child.stdout().take(), child.stderr().take());
            let (stdout, stderr) = match read_both(stdout, stderr).await {
                Ok(both) => both,
                Err(stream) => {
                    // The local end closes: the node's command gets SIGPIPE at its next
                    // write, and `timeout` ends it at the latest.
                    let _ = child.disconnect().await;
                    return Err(self.error(
                        "run",
                        format!(
                            "`{what}` printed more than {} MiB on {stream}: kubemend stopped \
                             reading and ended it (nothing kubemend runs prints that much: \
                             look at the node)",
                            MAX_OUTPUT / 1_048_576
                        ),
                    ));
                }
            };
            let status = child.wait().await.map_err(failed)?;
            Ok::<_, Error>(Output {
                status: status.code(),
                stdout: printable(&String::from_utf8_lossy(&stdout)),
                stderr: printable(&String::from_utf8_lossy(&stderr)),
            })
        };
        let output = tokio::time::timeout(limit, run).await.map_err(|_| {
            self.error(
                "run",
                format!("`{what}` took longer than {}s", limit.as_secs()),
            )
        })??;
        // 124: the node's `timeout` ended it (a command's own 124 comes sooner).
        if output.status == Some(124) && started.elapsed() >= on_node {
            return Err(self.error(
                "run",
                format!(
                    "`{what}` took longer than {}s and was ended on the node",
                    on_node.as_secs()
                ),
            ));
        }
        Ok(output)
    }

    /// An SSH error on this node.
    #[must_use]
    pub fn error(&self, step: &'static str, problem: String) -> Error {
        Error::Ssh {
            node: self.target.node.clone(),
            host: self.target.host.clone(),
            step,
            problem,
        }
    }

    /// Closes the master connection.
    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// Both streams of a remote command, each to its end; `Err` names the one that printed more
/// than [`MAX_OUTPUT`], as soon as it does (the other is not waited for: the command may be
/// blocked writing the one no longer read).
async fn read_both(
    stdout: Option<impl AsyncRead + Unpin>,
    stderr: Option<impl AsyncRead + Unpin>,
) -> std::result::Result<(Vec<u8>, Vec<u8>), &'static str> {
    let out = read_capped(stdout);
    let err = read_capped(stderr);
    tokio::pin!(out, err);
    tokio::select! {
        o = &mut out => {
            let o = o.ok_or("stdout")?;
            Ok((o, err.await.ok_or("stderr")?))
        }
        e = &mut err => {
            let e = e.ok_or("stderr")?;
            Ok((out.await.ok_or("stdout")?, e))
        }
    }
}

/// One stream read to its end, `None` past [`MAX_OUTPUT`] bytes (reading stops there).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>) -> Option<Vec<u8>> {
    let Some(stream) = stream else {
        return Some(Vec::new());
    };
    let mut kept = Vec::new();
    // One byte past the cap tells "exactly the cap" from "more".
    let mut limited = stream.take(MAX_OUTPUT as u64 + 1);
    // A read error ends the stream like EOF: the exit status tells what happened.
    let _ = limited.read_to_end(&mut kept).await;
    (kept.len() <= MAX_OUTPUT).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_users_and_services_that_could_inject_are_refused() {
        for bad in [
            "k8s01; reboot",
            "-oProxyCommand=x",
            "a b",
            "",
            "$(id)",
            "k8s01\n",
        ] {
            assert!(check_host("nodes[0].host", bad).is_err(), "{bad:?}");
            assert!(check_word("ssh_user", bad).is_err(), "{bad:?}");
        }
        for good in ["k8s01", "10.0.0.1", "fe80::1", "node-1.example.com"] {
            assert!(check_host("host", good).is_ok(), "{good}");
        }
        assert!(check_word("service", "microk8s.daemon-kubelite").is_ok());
    }

    #[tokio::test]
    async fn destinations_that_ssh_would_read_as_an_option_or_url_are_refused_before_ssh_runs() {
        let target = |host: &str| Target {
            node: "k8s01".into(),
            host: host.into(),
            port: None,
            user: None,
        };
        for bad in [
            "ssh://root@evil.example:2222",
            "root@evil.example",
            "-oProxyCommand=touch /tmp/x",
            "evil.example:2222",
            "a b",
            "",
        ] {
            let err = connect(&SshArgs::default(), &target(bad), false)
                .await
                .expect_err(bad)
                .to_string();
            assert!(err.contains("refusing this host"), "{bad:?}: {err}");
        }
        for good in ["k8s01", "10.0.0.1", "fe80::1", "node-1.example.com"] {
            assert!(check_destination(&target(good)).is_ok(), "{good}");
        }
    }

    #[tokio::test]
    async fn nodes_are_worked_on_at_most_max_parallel_at_a_time_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let results = each_bounded(0..150, |n| {
            let (running, most) = (&running, &most);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Let every other started future run before this one ends.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        })
        .await;
        assert_eq!(most.load(Ordering::SeqCst), MAX_PARALLEL);
        assert_eq!(results, (0..150).map(|n| n * 2).collect::<Vec<_>>());
    }

    #[test]
    fn ssh_config_parse_errors_name_the_line_but_never_its_words() {
        let text = "/run/awx/cfg line 1: Bad configuration option: -----begin\n\
                    /run/awx/cfg line 2: keyword s3cr3tw0rd extra arguments at end of line\n\
                    /run/awx/cfg: terminating, 2 bad configuration options";
        let shown = without_config_text(text);
        assert!(
            !shown.contains("s3cr3tw0rd") && !shown.contains("-----begin"),
            "{shown}"
        );
        assert!(shown.contains("/run/awx/cfg line 2:"), "{shown}");
        assert!(
            shown.contains("terminating, 2 bad configuration options"),
            "{shown}"
        );
        let other = "ssh: connect to host k8s01 port 22: Connection refused";
        assert_eq!(without_config_text(other), other);
    }

    #[test]
    fn a_known_hosts_path_with_a_space_stays_one_path() {
        assert_eq!(
            ssh_quoted(Path::new("/home/a b/known_hosts")),
            PathBuf::from("\"/home/a b/known_hosts\"")
        );
        assert_eq!(ssh_quoted(Path::new("/k/kh")), PathBuf::from("/k/kh"));
        let args = SshArgs {
            known_hosts: Some("/x\"y".into()),
            ..SshArgs::default()
        };
        assert!(
            args.check()
                .unwrap_err()
                .to_string()
                .contains("known_hosts")
        );
    }

    #[test]
    fn escape_sequences_and_newlines_from_a_node_never_reach_a_message() {
        let hostile = "active\r\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m\u{202e}evil\nNRestarts=1\n";
        let clean = printable(hostile);
        assert!(
            !clean
                .chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{clean:?}"
        );
        // Lines stay lines for the parsers.
        assert_eq!(clean.lines().nth(1), Some("NRestarts=1"));
        let output = Output {
            status: Some(1),
            stdout: String::new(),
            stderr: printable("error: one\n\n  two\r\nthree \u{1b}[1A\n"),
        };
        let tail = output.tail(6);
        assert_eq!(tail, "error: one | two | three \u{fffd}[1A");
        assert_eq!(output.tail(1), "three \u{fffd}[1A");
    }

    #[test]
    fn ssh_options_are_strict_by_default_and_have_no_off() {
        let args: SshArgs = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(args.host_key_checking, HostKeyChecking::Strict);
        assert!(args.r#become);
        for off in ["no", "off", "false"] {
            assert!(
                serde_json::from_value::<SshArgs>(serde_json::json!({"host_key_checking": off}))
                    .is_err()
            );
        }
    }
}
