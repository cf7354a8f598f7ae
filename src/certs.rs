//! The certificates of a microk8s node, as diagnose's `certs` check and the `cert_refresh` action
//! read them: the files under [`CERTS_DIR`] and dqlite's [`DQLITE_CERT`] over SSH, the
//! certificate an apiserver serves through a TLS handshake of its own, and the node's clock.
//!
//! Every node read is one remote command given as an argument list ([`Remote::run`]); its
//! output is parsed here, in plain functions with unit tests ([`parse_node_certs`],
//! [`parse_clock`]), as in [`crate::microk8s`].
//!
//! # Guarantees
//! - Only `.crt` files are read: never a key.
//! - [`served_cert`] accepts any certificate to read it, and trusts none: nothing is sent over
//!   that connection but `GET /livez` without credentials, for the server's clock.
//! - `days_left` counts as microk8s does (`microk8s refresh-certs -c` prints Python's
//!   `timedelta.days`: whole days, rounded down, negative once expired).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;

use crate::error::Result;
use crate::ssh::Remote;
use crate::x509;

/// Where microk8s keeps its certificates (the CA, the apiserver's, the front proxy's, the
/// components' client certificates).
pub const CERTS_DIR: &str = "/var/snap/microk8s/current/certs";
/// dqlite's own certificate, shared by every node of the cluster.
pub const DQLITE_CERT: &str = "/var/snap/microk8s/current/var/kubernetes/backend/cluster.crt";
/// The certificates `microk8s refresh-certs -e` renews and cert_refresh renews, in its order.
pub const RENEWABLE: [&str; 2] = ["server.crt", "front-proxy-client.crt"];

/// The largest certificate file read (a certificate is one or two kB).
const MAX_FILE: usize = 65_536;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// What kubemend reads of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertInfo {
    /// The subject, e.g. C(C=GB, ST=Canonical, L=Canonical, O=Canonical, OU=Canonical,
    /// CN=127.0.0.1): attributes in the certificate's order, as C(openssl x509 -subject) prints
    /// them without the spaces around C(=).
    pub subject: String,
    /// The issuer, written the same way, e.g. C(CN=10.152.183.1).
    pub issuer: String,
    /// notBefore, RFC 3339 in UTC.
    pub not_before: String,
    /// notAfter, RFC 3339 in UTC.
    pub not_after: String,
    /// Whole days until notAfter, rounded down: negative once expired (as C(microk8s
    /// refresh-certs -c) counts).
    pub days_left: i64,
}

/// Whole days from `now` until `not_after` (Unix seconds), rounded down.
#[must_use]
pub fn days_left(not_after: i64, now: i64) -> i64 {
    not_after.saturating_sub(now).div_euclid(DAY)
}

/// What the DER certificate `der` says, its days counted from `now`; `None` when it is not a
/// certificate.
#[must_use]
pub fn cert_info(der: &[u8], now: Timestamp) -> Option<CertInfo> {
    let fields = x509::fields(der)?;
    let rfc3339 = |seconds: i64| Timestamp::from_second(seconds).ok().map(|t| t.to_string());
    Some(CertInfo {
        subject: fields.subject,
        issuer: fields.issuer,
        not_before: rfc3339(fields.validity.not_before)?,
        not_after: rfc3339(fields.validity.not_after)?,
        days_left: days_left(fields.validity.not_after, now.as_second()),
    })
}

/// How close a certificate is to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expiry {
    /// `warning_days` or more left.
    Valid,
    /// Fewer than `warning_days` left.
    Warning,
    /// Fewer than `critical_days` left.
    Critical,
    /// Expired (notAfter has passed).
    Expired,
}

/// How close a certificate with `days_left` is to its end: fewer days than `warning_days` is a
/// warning, fewer than `critical_days` critical, below zero expired.
#[must_use]
pub fn severity(days_left: i64, warning_days: u32, critical_days: u32) -> Expiry {
    if days_left < 0 {
        Expiry::Expired
    } else if days_left < i64::from(critical_days) {
        Expiry::Critical
    } else if days_left < i64::from(warning_days) {
        Expiry::Warning
    } else {
        Expiry::Valid
    }
}

/// One certificate file of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeCert {
    /// Its path on the node.
    pub path: String,
    /// Its file name, e.g. C(server.crt); C(cluster.crt) for dqlite's.
    pub name: String,
    /// What it says (V(null) when it could not be read).
    pub info: Option<CertInfo>,
    /// Why it could not be read: unreadable, or not a certificate.
    pub problem: Option<String>,
}

/// Lists, on the node, every `*.crt` of `$1` (not its subdirectories: certs-backup is left
/// out) and the file `$2` when it exists: a line each, `file<TAB>path<TAB>` and its first
/// [`MAX_FILE`] bytes in base64, or `unreadable<TAB>path<TAB>`; `nodir<TAB>$1` when there is
/// no such directory, `unlisted<TAB>$1` when it cannot be listed.
const READ_CERTS: &str = "if [ ! -d \"$1\" ]; then printf 'nodir\\t%s\\t\\n' \"$1\"; exit 0; fi; \
     if [ ! -r \"$1\" ] || [ ! -x \"$1\" ]; then printf 'unlisted\\t%s\\t\\n' \"$1\"; exit 0; fi; \
     for f in \"$1\"/*.crt \"$2\"; do \
       [ -e \"$f\" ] || continue; \
       if [ -f \"$f\" ] && [ -r \"$f\" ]; then \
         printf 'file\\t%s\\t' \"$f\"; head -c \"$3\" -- \"$f\" | base64 | tr -d '\\n'; printf '\\n'; \
       else printf 'unreadable\\t%s\\t\\n' \"$f\"; fi; \
     done";

/// [`READ_CERTS`]'s output as certificates, their days counted from `now`, in the order
/// listed. Err(why) when the directory is missing or cannot be listed.
pub fn parse_node_certs(
    output: &str,
    now: Timestamp,
) -> std::result::Result<Vec<NodeCert>, String> {
    use base64::Engine as _;
    let mut certs = Vec::new();
    for line in output.lines() {
        let mut parts = line.splitn(3, '\t');
        let (Some(kind), Some(path), payload) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path).to_owned();
        let (info, problem) = match kind {
            "nodir" => {
                return Err(format!(
                    "there is no {path} on the node: is microk8s installed (snap microk8s)?"
                ));
            }
            "unlisted" => {
                return Err(format!(
                    "{path} cannot be listed by the login user (become: true reads it with sudo)"
                ));
            }
            "unreadable" => (
                None,
                Some("not readable by the login user (become: true reads it with sudo)".into()),
            ),
            "file" => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload.unwrap_or_default().trim())
                    .unwrap_or_default();
                match x509::pem_certificates(&bytes).and_then(|c| c.into_iter().next()) {
                    None => (None, Some("not a PEM certificate".into())),
                    Some(der) => match cert_info(&der, now) {
                        Some(info) => (Some(info), None),
                        None => (None, Some("not an X.509 certificate".into())),
                    },
                }
            }
            _ => continue,
        };
        certs.push(NodeCert {
            path: path.to_owned(),
            name,
            info,
            problem,
        });
    }
    Ok(certs)
}

/// Every `*.crt` under [`CERTS_DIR`] (not certs-backup) and [`DQLITE_CERT`] on the node, read
/// with one command (through sudo when `become`: microk8s's files are root's), days counted
/// from this host's clock.
pub async fn node_certs(remote: &Remote) -> Result<Vec<NodeCert>> {
    let limit = MAX_FILE.to_string();
    let output = remote
        .run(
            true,
            "sh",
            &["-c", READ_CERTS, "sh", CERTS_DIR, DQLITE_CERT, &limit],
        )
        .await?;
    if !output.success() {
        return Err(remote.error(
            "read the certificates",
            format!("listing {CERTS_DIR}: {}", output.tail(3)),
        ));
    }
    parse_node_certs(&output.stdout, Timestamp::now())
        .map_err(|why| remote.error("read the certificates", why))
}

/// `date +%s.%N`'s answer as a time; a `date` without `%N` (it prints `N` or `%N`) gives
/// whole seconds.
#[must_use]
pub fn parse_clock(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = seconds.parse().ok()?;
    let digits: String = fraction.chars().take(9).collect();
    let nanos = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("{digits:0<9}").parse().ok()?
    } else {
        0
    };
    Timestamp::new(seconds, nanos).ok()
}

/// The node's clock, now: `date` over SSH, taken to have been read halfway through the round
/// trip, plus the half that followed.
pub async fn node_clock(remote: &Remote) -> Result<Timestamp> {
    let sent = std::time::Instant::now();
    let output = remote.run(false, "date", &["+%s.%N"]).await?;
    let half = SignedDuration::try_from(sent.elapsed() / 2).unwrap_or_default();
    if !output.success() {
        return Err(remote.error("read the clock", format!("date: {}", output.tail(2))));
    }
    parse_clock(&output.stdout)
        .and_then(|clock| clock.checked_add(half).ok())
        .ok_or_else(|| {
            remote.error(
                "read the clock",
                format!("`date +%s.%N` printed {:?}", output.stdout.trim()),
            )
        })
}

/// The difference between two clocks, each read at a known local time: how far `clock` is
/// ahead of `reference` (negative: behind), in seconds.
#[must_use]
pub fn skew_seconds(clock: (Timestamp, Timestamp), reference: (Timestamp, Timestamp)) -> f64 {
    let offset = |(read, local): (Timestamp, Timestamp)| read.duration_since(local);
    (offset(clock) - offset(reference)).as_secs_f64()
}

/// What an apiserver serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Its certificate (the first of the chain it sent), days counted from this host's clock.
    pub info: CertInfo,
    /// Its clock: the HTTP Date header of its answer to `GET /livez` (whole seconds), if it
    /// answered.
    pub server_time: Option<Timestamp>,
    /// This host's clock when that answer came.
    pub received: Timestamp,
}

/// The longest answer head read for the Date header.
const MAX_HEAD: usize = 16_384;

/// The certificate the apiserver at `addr` serves (a TLS handshake that accepts any
/// certificate: this reads it, never trusts it; the chain is not sent anywhere), and its clock:
/// after the handshake `GET /livez`, without credentials, and the Date header of the answer
/// (401 or 200, either has one). Bounded by `timeout`. Err(text) names what failed.
pub async fn served_cert(
    addr: SocketAddr,
    timeout: Duration,
) -> std::result::Result<Served, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let late = |what: &str| format!("{what} {addr}: no answer within {}s", timeout.as_secs());
    let tcp = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| late("connecting to"))?
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = connector.connect(addr.ip().into(), tcp);
    let mut tls = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| late("TLS handshake with"))?
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| format!("{addr} sent no certificate"))?;
    let info = cert_info(&der, Timestamp::now())
        .ok_or_else(|| format!("{addr} sent a certificate that is not X.509"))?;
    let head = tokio::time::timeout_at(deadline, livez_head(&mut tls, addr))
        .await
        .ok()
        .and_then(std::result::Result::ok);
    let received = Timestamp::now();
    let _ = tokio::time::timeout_at(deadline, tls.shutdown()).await;
    Ok(Served {
        info,
        server_time: head.as_deref().and_then(date_header),
        received,
    })
}

/// `GET /livez` over `stream` and the head of the answer (up to its blank line, at most
/// [`MAX_HEAD`] bytes).
async fn livez_head<S>(stream: &mut S, addr: SocketAddr) -> std::io::Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET /livez HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kubemend\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while head.len() < MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The Date header of an HTTP answer's head (RFC 9110's IMF-fixdate, `Sun, 06 Nov 1994
/// 08:49:37 GMT`).
#[must_use]
pub fn date_header(head: &str) -> Option<Timestamp> {
    static PARSER: k8s_openapi::jiff::fmt::rfc2822::DateTimeParser =
        k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new();
    let value = head
        .split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("date").then_some(value)
        })?;
    PARSER.parse_timestamp(value.trim()).ok()
}

/// A certificate verifier that accepts any certificate, so that it can be read: the handshake's
/// signatures are still checked (the server holds the certificate's key), nothing else.
#[derive(Debug)]
struct ReadOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/certs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn listed(kind: &str, path: &str, bytes: &[u8]) -> String {
        format!(
            "{kind}\t{path}\t{}\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    #[test]
    fn days_left_rounds_down_as_microk8s_counts_and_is_negative_once_expired() {
        let end = ts("2027-12-06T11:06:07Z").as_second();
        assert_eq!(days_left(end, end - 5 * DAY), 5);
        assert_eq!(days_left(end, end - 5 * DAY + 1), 4);
        assert_eq!(days_left(end, end - 1), 0);
        assert_eq!(days_left(end, end), 0);
        assert_eq!(days_left(end, end + 1), -1);
        assert_eq!(days_left(end, end + DAY + 1), -2);
    }

    #[test]
    fn severity_is_a_warning_under_warning_days_critical_under_critical_days() {
        assert_eq!(severity(30, 30, 7), Expiry::Valid);
        assert_eq!(severity(29, 30, 7), Expiry::Warning);
        assert_eq!(severity(7, 30, 7), Expiry::Warning);
        assert_eq!(severity(6, 30, 7), Expiry::Critical);
        assert_eq!(severity(0, 30, 7), Expiry::Critical);
        assert_eq!(severity(-1, 30, 7), Expiry::Expired);
    }

    #[test]
    fn a_nodes_certificates_are_read_with_subject_issuer_and_days_left() {
        let now = ts("2027-12-01T11:06:07Z");
        let output = [
            listed("file", &format!("{CERTS_DIR}/ca.crt"), &fixture("ca.crt")),
            listed(
                "file",
                &format!("{CERTS_DIR}/server.crt"),
                &fixture("server.crt"),
            ),
            listed(
                "file",
                &format!("{CERTS_DIR}/broken.crt"),
                b"not a certificate",
            ),
            "unreadable\t/var/snap/microk8s/current/certs/x.crt\t\n".to_owned(),
            listed("file", DQLITE_CERT, &fixture("generalized-time.crt")),
        ]
        .concat();
        let certs = parse_node_certs(&output, now).unwrap();
        let names: Vec<&str> = certs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["ca.crt", "server.crt", "broken.crt", "x.crt", "cluster.crt"]
        );
        let server = certs[1].info.as_ref().unwrap();
        assert_eq!(
            server,
            &CertInfo {
                subject: "C=GB, ST=Canonical, L=Canonical, O=Canonical, OU=Canonical, \
                          CN=127.0.0.1"
                    .into(),
                issuer: "CN=10.152.183.1".into(),
                not_before: "2026-12-06T11:06:07Z".into(),
                not_after: "2027-12-06T11:06:07Z".into(),
                days_left: 5,
            }
        );
        assert_eq!(certs[2].problem.as_deref(), Some("not a PEM certificate"));
        assert!(certs[3].problem.as_deref().unwrap().contains("become"));
        assert_eq!(certs[4].path, DQLITE_CERT);
        assert_eq!(
            certs[4].info.as_ref().map(|i| i.not_after.as_str()),
            Some("2054-04-23T11:06:07Z")
        );
    }

    #[test]
    fn a_node_without_the_certificate_directory_is_an_error_not_an_empty_list() {
        let now = ts("2027-12-01T00:00:00Z");
        let err = parse_node_certs(&format!("nodir\t{CERTS_DIR}\t\n"), now).unwrap_err();
        assert!(err.contains("is microk8s installed"), "{err}");
        let err = parse_node_certs(&format!("unlisted\t{CERTS_DIR}\t\n"), now).unwrap_err();
        assert!(err.contains("become"), "{err}");
        assert_eq!(parse_node_certs("", now), Ok(vec![]));
    }

    #[test]
    fn the_node_clock_is_read_to_the_nanosecond_or_the_second() {
        assert_eq!(
            parse_clock("1796555167.250000000\n"),
            Some(ts("2026-12-06T11:06:07.25Z"))
        );
        assert_eq!(
            parse_clock("1796555167.N"),
            Some(ts("2026-12-06T11:06:07Z"))
        );
        assert_eq!(
            parse_clock("1796555167.25"),
            Some(ts("2026-12-06T11:06:07.25Z"))
        );
        assert_eq!(parse_clock("date: invalid"), None);
    }

    #[test]
    fn skew_compares_each_clock_with_the_local_time_it_was_read_at() {
        let local = ts("2026-12-06T11:00:00Z");
        let later = ts("2026-12-06T11:00:10Z");
        // The node reads 45 s ahead; the apiserver, read 10 s later, is on time.
        let node = (ts("2026-12-06T11:00:45Z"), local);
        let api = (later, later);
        assert!((skew_seconds(node, api) - 45.0).abs() < 1e-9);
        assert!((skew_seconds(api, node) + 45.0).abs() < 1e-9);
    }

    #[test]
    fn the_date_header_is_the_server_clock() {
        let head = "HTTP/1.1 401 Unauthorized\r\nAudit-Id: x\r\ndate: Sun, 06 Dec 2026 11:06:07 \
                    GMT\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(date_header(head), Some(ts("2026-12-06T11:06:07Z")));
        assert_eq!(date_header("HTTP/1.1 200 OK\r\n\r\nDate: x"), None);
    }

    /// One TLS answer on a loopback port: `cert`, then `answer` to the first request.
    async fn serve_once(answer: &'static str) -> (SocketAddr, String) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "127.0.0.1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Canonical");
        params.not_after = rcgen::date_time_ymd(2049, 1, 2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let expected_subject = x509::fields(cert.der()).unwrap().subject;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = tls.read(&mut buffer).await;
            tls.write_all(answer.as_bytes()).await.unwrap();
            let _ = tls.shutdown().await;
        });
        (addr, expected_subject)
    }

    #[tokio::test]
    async fn the_served_certificate_and_the_server_clock_are_read_without_trusting_it() {
        let (addr, subject) = serve_once(
            "HTTP/1.1 401 Unauthorized\r\nDate: Sun, 06 Dec 2026 11:06:07 GMT\r\n\
             Content-Length: 0\r\n\r\n",
        )
        .await;
        let served = served_cert(addr, Duration::from_secs(5)).await.unwrap();
        assert_eq!(served.info.subject, subject);
        assert!(served.info.subject.contains("CN=127.0.0.1"), "{subject}");
        assert_eq!(served.info.not_after, "2049-01-02T00:00:00Z");
        assert_eq!(served.server_time, Some(ts("2026-12-06T11:06:07Z")));
        // An answer without a Date still gives the certificate.
        let (addr, _) = serve_once("HTTP/1.1 200 OK\r\n\r\n").await;
        let served = served_cert(addr, Duration::from_secs(5)).await.unwrap();
        assert_eq!(served.server_time, None);
    }

    #[tokio::test]
    async fn a_port_that_does_not_answer_tls_fails_naming_the_step() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, never answers: the handshake runs into the timeout.
        let _hold = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(held);
        });
        let err = served_cert(addr, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(err.starts_with("TLS handshake with 127.0.0.1:"), "{err}");
    }

    /// A loopback address nothing listens on (any more).
    fn listener_closed() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_fails_at_connecting() {
        let err = served_cert(listener_closed(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.starts_with("connecting to 127.0.0.1:"), "{err}");
    }
}
