//! Misbehaving stand-ins for an API server, on loopback, for the tests of cluster access.
//!
//! Each [`FakeApi`] listens on `127.0.0.1:<free port>` and answers every request the same way
//! ([`Behaviour`]). Everything is bounded: a connection lives at most [`MAX_LIFETIME`], a giant
//! body stops at [`GIANT_BODY_BYTES`], and dropping the server stops its threads.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of the support module"
)]
#![allow(
    unreachable_pub,
    reason = "pub items of a test-only module shared by several test crates"
)]
#![allow(
    clippy::missing_panics_doc,
    reason = "test support panics with a message on purpose"
)]

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest time any connection of a fake server is kept.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// Size at which a giant body stops (far above kubemend's limit, far below a machine's memory).
pub const GIANT_BODY_BYTES: usize = 160 * 1024 * 1024;

/// How a fake server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepts, reads the request, never answers.
    Silent,
    /// `503 Service Unavailable` with `Retry-After: 100000`, on every request.
    Unavailable,
    /// `200 OK` and a JSON list that never ends (until [`GIANT_BODY_BYTES`]).
    Giant,
    /// `401` with a plain-text body that echoes the request's `Authorization` header.
    EchoAuthorization,
    /// An L4 pass-through to `to` (a real API server) that closes its first `hang_ups`
    /// connections as soon as the client speaks (mid TLS handshake), as a virtual IP without
    /// health checks does while the apiserver behind it shuts down. Counts connections.
    HangUpThenForward {
        /// Connections closed before forwarding starts.
        hang_ups: usize,
        /// Where the later connections go.
        to: SocketAddr,
    },
}

/// A running fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeApi {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// Starts a server that answers with `behaviour`.
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let acceptor = {
            let stop = Arc::clone(&stop);
            let requests = Arc::clone(&requests);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let stop = Arc::clone(&stop);
                    let requests = Arc::clone(&requests);
                    std::thread::spawn(move || serve(stream, behaviour, &stop, &requests));
                }
            })
        };
        Self {
            addr,
            stop,
            requests,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:<port>`: the server does not speak TLS, so the handshake never ends.
    #[must_use]
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// How many requests have been read so far.
    #[must_use]
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads one request head (and its body, by Content-Length); `None` when the peer is gone, the
/// server stops, or the connection is too old.
fn read_request(stream: &mut TcpStream, stop: &AtomicBool, born: Instant) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = data.len() - end - 4;
            while body < length {
                match stream.read(&mut buf) {
                    Ok(0) => return None,
                    Ok(n) => body += n,
                    Err(e) if is_timeout(&e) && alive(stop, born) => {}
                    Err(_) => return None,
                }
            }
            return Some(head);
        }
        if data.len() > 1024 * 1024 {
            return None;
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) && alive(stop, born) => {}
            Err(_) => return None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_timeout(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn alive(stop: &AtomicBool, born: Instant) -> bool {
    !stop.load(Ordering::SeqCst) && born.elapsed() < MAX_LIFETIME
}

fn serve(mut stream: TcpStream, behaviour: Behaviour, stop: &AtomicBool, requests: &AtomicUsize) {
    let born = Instant::now();
    // Short read timeouts only so that the loops notice `stop`; they are not waits.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    if let Behaviour::HangUpThenForward { hang_ups, to } = behaviour {
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0_u8; 4096];
        if n < hang_ups {
            // Let the client hello arrive, then hang up.
            let _ = peek_any(&mut stream, &mut buf, stop, born);
            return;
        }
        forward(stream, to);
        return;
    }
    if behaviour == Behaviour::Silent {
        // Read whatever comes (a request, or a TLS hello), answer nothing.
        let mut buf = [0_u8; 4096];
        if let Some(_head) = peek_any(&mut stream, &mut buf, stop, born) {
            requests.fetch_add(1, Ordering::SeqCst);
        }
        while alive(stop, born) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
        return;
    }
    while let Some(head) = read_request(&mut stream, stop, born) {
        requests.fetch_add(1, Ordering::SeqCst);
        let ok = match behaviour {
            Behaviour::Silent | Behaviour::HangUpThenForward { .. } => {
                unreachable!("handled above")
            }
            Behaviour::Unavailable => {
                let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server is currently unable to handle the request","reason":"ServiceUnavailable","code":503}"#;
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    &[
                        ("Retry-After", "100000"),
                        ("Content-Type", "application/json"),
                    ],
                    body,
                )
            }
            Behaviour::EchoAuthorization => {
                let auth = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization")
                            .then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default();
                let body = format!("not accepted: you sent Authorization: {auth}\n");
                respond(
                    &mut stream,
                    "401 Unauthorized",
                    &[("Content-Type", "text/plain")],
                    &body,
                )
            }
            Behaviour::Giant => {
                giant(&mut stream, stop, born);
                false
            }
        };
        if !ok {
            return;
        }
    }
}

/// Copies bytes both ways between `client` and a new connection to `to` until either side
/// closes.
fn forward(client: TcpStream, to: SocketAddr) {
    let _ = client.set_read_timeout(None);
    let Ok(upstream) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
        return;
    };
    let (Ok(mut client_w), Ok(mut upstream_r)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_r, &mut client_w);
        let _ = client_w.shutdown(std::net::Shutdown::Both);
    });
    let (mut client_r, mut upstream_w) = (client, upstream);
    let _ = std::io::copy(&mut client_r, &mut upstream_w);
    let _ = upstream_w.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
}

fn peek_any(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stop: &AtomicBool,
    born: Instant,
) -> Option<usize> {
    while alive(stop, born) {
        match stream.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
    None
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &str) -> bool {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        let _ = write!(text, "{name}: {value}\r\n");
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes()).is_ok()
}

/// A list that ignores `limit`: items until the client hangs up or the size cap is reached.
fn giant(stream: &mut TcpStream, stop: &AtomicBool, born: Instant) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n\
                {\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{},\"items\":[";
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let item = r#"{"metadata":{"name":"p","namespace":"default"}},"#;
    let chunk: String = item.repeat(64 * 1024 / item.len());
    let mut sent = 0;
    while sent < GIANT_BODY_BYTES && alive(stop, born) {
        if stream.write_all(chunk.as_bytes()).is_err() {
            return;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(br#"{"metadata":{"name":"last"}}]}"#);
}

/// Runs `command` with its output captured and kills it if it has not exited after `limit`.
/// Returns the output and whether it exited by itself.
pub fn run_bounded(command: Command, limit: Duration) -> (Output, bool) {
    let (output, finished, _) = run_measured(command, limit);
    (output, finished)
}

/// [`run_bounded`], also returning the command's peak resident memory in KiB (its
/// `VmHWM`, read at every poll while it runs).
pub fn run_measured(mut command: Command, limit: Duration) -> (Output, bool, u64) {
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out_thread = read_all(Box::new(stdout));
    let err_thread = read_all(Box::new(stderr));
    let start = Instant::now();
    let (status, finished) = loop {
        // The high-water mark only grows while it runs; an exited process has none.
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait for the command") {
            break (status, true);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait for the killed command"), false);
        }
        // Polls the child's state; the output threads keep the pipes drained meanwhile.
        std::thread::park_timeout(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    };
    (output, finished, peak_kib)
}

/// `VmHWM:   1234 kB` of a /proc/PID/status.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
