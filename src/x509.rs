//! The certificates kubemend reads: PEM bundles (with the `pem` crate kube-client already
//! uses) and, from each certificate's DER, its validity (RFC 5280 §4.1: Certificate ::=
//! SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
//! validity SEQUENCE { notBefore, notAfter }, … }, … }).
//!
//! Only the validity is read, by walking DER's tag-length-value encoding down to it: a full
//! X.509 parser (x509-parser and its ASN.1 stack) took about 100 kB of a binary that must stay
//! under 8 MB, for two timestamps. Nothing here verifies a certificate; rustls does that.

use k8s_openapi::jiff::civil::DateTime;
use k8s_openapi::jiff::tz::TimeZone;

/// The DER of every `CERTIFICATE` block of a PEM bundle, in order; `None` when the bundle does
/// not parse as PEM.
#[must_use]
pub fn pem_certificates(bundle: &[u8]) -> Option<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(bundle).ok()?;
    Some(
        blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect(),
    )
}

/// A certificate's validity, as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

/// The validity of the DER certificate `der`; `None` when it is not one.
#[must_use]
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (tag, certificate, _) = element(der)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, mut tbs, _) = element(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, rest) = element(tbs)?;
    let skip = if tag == VERSION { 4 } else { 3 };
    tbs = rest;
    for _ in 1..skip {
        tbs = element(tbs)?.2;
    }
    let (tag, validity, _) = element(tbs)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, not_before, rest) = element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    let not_after = time(tag, not_after)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The first element of `input`: its tag, its content and what follows it. Definite lengths
/// only, as DER requires.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// `s` when it is all ASCII digits.
fn digits(s: &str) -> Option<&str> {
    s.bytes().all(|b| b.is_ascii_digit()).then_some(s)
}

/// A Time (RFC 5280 §4.1.2.5): UTCTime `YYMMDDHHMMSSZ` (years 1950 to 2049) or
/// GeneralizedTime `YYYYMMDDHHMMSSZ`, in UTC.
fn time(tag: u8, content: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(content).ok()?.strip_suffix('Z')?;
    let full = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let year: u32 = digits(&text[..2])?.parse().ok()?;
            let century = if year >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        (GENERALIZED_TIME, 14) => text.to_owned(),
        _ => return None,
    };
    let full = digits(&full)?;
    let iso = format!(
        "{}-{}-{}T{}:{}:{}",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    let civil: DateTime = iso.parse().ok()?;
    Some(civil.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["webhook.test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn unix(text: &str) -> i64 {
        text.parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    }

    #[test]
    fn the_validity_is_read_in_both_time_encodings() {
        // Before 2050 RFC 5280 encodes UTCTime, from 2050 GeneralizedTime.
        let pem = certificate((2024, 1, 2), (2051, 3, 4));
        let der = &pem_certificates(pem.as_bytes()).unwrap()[0];
        assert_eq!(
            validity(der),
            Some(Validity {
                not_before: unix("2024-01-02T00:00:00Z"),
                not_after: unix("2051-03-04T00:00:00Z"),
            })
        );
    }

    #[test]
    fn a_bundle_yields_each_certificate_and_skips_other_blocks() {
        let bundle = format!(
            "{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            certificate((2020, 1, 1), (2021, 1, 1)),
            certificate((2020, 1, 1), (2030, 1, 1))
        );
        let certificates = pem_certificates(bundle.as_bytes()).unwrap();
        assert_eq!(certificates.len(), 2);
        assert_eq!(
            validity(&certificates[1]).map(|v| v.not_after),
            Some(unix("2030-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn what_is_not_a_certificate_has_no_validity() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x03, 0x02, 0x01, 0x01]), None);
        assert_eq!(
            pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n"),
            Some(vec![])
        );
        let garbled = b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(garbled), None);
        assert_eq!(time(UTC_TIME, b"2401020000Z"), None);
        assert_eq!(time(UTC_TIME, b"49010200000aZ"), None);
        assert_eq!(
            time(UTC_TIME, b"490102000000Z"),
            Some(unix("2049-01-02T00:00:00Z"))
        );
        assert_eq!(
            time(UTC_TIME, b"500102000000Z"),
            Some(unix("1950-01-02T00:00:00Z"))
        );
    }
}
