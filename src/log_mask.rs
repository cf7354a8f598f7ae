//! The log writer: every log event goes to stderr with known secrets masked and its size bounded.
//!
//! kube logs what the server sent back (at debug, and at warn when a body does not parse), so a
//! server that echoes the `Authorization` header would put the token on stderr, and a huge body
//! would be written whole. Secrets are registered here as soon as they are known (the token and
//! the kubeconfig's credentials, by [`crate::client`]); each event is masked as results are,
//! `Bearer <anything>` is masked whatever the token, and an event longer than
//! [`MAX_EVENT_BYTES`] is cut.

use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

use crate::secrets;

/// Longest log event written; the rest is replaced by a note of its size.
pub const MAX_EVENT_BYTES: usize = 4096;

/// Most bytes of one event kept for masking; what lies beyond is never shown anyway.
const MAX_BUFFERED_BYTES: usize = 64 * 1024;

/// `tracing_subscriber` writer factory: one [`EventWriter`] per event, to stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskedStderr;

impl<'a> MakeWriter<'a> for MaskedStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter::default()
    }
}

/// Collects one event and writes it, masked and bounded, when dropped.
#[derive(Debug, Default)]
pub struct EventWriter {
    buffer: Vec<u8>,
    dropped: usize,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = MAX_BUFFERED_BYTES.saturating_sub(self.buffer.len());
        let kept = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..kept]);
        self.dropped += bytes.len() - kept;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let line = render(&text, self.dropped, &secrets::registered());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// One event as written: secrets masked, then cut at [`MAX_EVENT_BYTES`].
#[must_use]
pub fn render(text: &str, dropped: usize, secrets: &[String]) -> String {
    let masked = secrets::mask_bearer(&secrets::mask_text(text, secrets));
    let newline = masked.ends_with('\n');
    let body = masked.trim_end_matches('\n');
    let hidden = body.len().saturating_sub(MAX_EVENT_BYTES) + dropped;
    let mut out = if hidden > 0 {
        let mut cut = MAX_EVENT_BYTES.min(body.len());
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}... ({hidden} more bytes not logged)", &body[..cut])
    } else {
        body.to_owned()
    };
    if newline || hidden > 0 {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_bearer_tokens_are_masked() {
        let secrets = vec!["s3cr3t-t0ken".to_owned(), "kc-pass".to_owned()];
        let line = "DEBUG Unsuccessful: you sent Authorization: Bearer s3cr3t-t0ken; kc-pass\n";
        assert_eq!(
            render(line, 0, &secrets),
            "DEBUG Unsuccessful: you sent Authorization: Bearer ********; ********\n"
        );
        assert_eq!(
            render("header \"authorization: BEARER abc.def\"\n", 0, &[]),
            "header \"authorization: BEARER ********\"\n"
        );
        assert_eq!(render("no secret here\n", 0, &secrets), "no secret here\n");
    }

    #[test]
    fn long_events_are_cut_with_a_note() {
        let line = format!("WARN {}\n", "x".repeat(100_000));
        let out = render(&line, 5, &[]);
        assert!(out.len() < MAX_EVENT_BYTES + 100, "{}", out.len());
        assert!(out.ends_with("more bytes not logged)\n"), "{out}");
        assert!(out.contains(&format!("({} more bytes", 100_005 + 5 - MAX_EVENT_BYTES)));
        let multibyte = "é".repeat(MAX_EVENT_BYTES);
        assert!(render(&multibyte, 0, &[]).contains("more bytes not logged"));
    }

    #[test]
    fn writer_buffers_a_bounded_amount() {
        let mut writer = EventWriter::default();
        writer
            .write_all(&vec![b'a'; MAX_BUFFERED_BYTES + 10])
            .unwrap();
        assert_eq!(writer.buffer.len(), MAX_BUFFERED_BYTES);
        assert_eq!(writer.dropped, 10);
        writer.buffer.clear();
    }
}
