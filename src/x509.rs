//! The certificates kubemend reads: PEM bundles (with the `pem` crate kube-client already
//! uses) and, from each certificate's DER, its validity, issuer and subject (RFC 5280 §4.1:
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
//! signature, issuer, validity SEQUENCE { notBefore, notAfter }, subject, … }, … }).
//!
//! Only those are read, by walking DER's tag-length-value encoding down to them: a full X.509
//! parser (x509-parser and its ASN.1 stack) took about 100 kB of a binary that must stay under
//! 8 MB, for two timestamps and two names. Nothing here verifies a certificate; rustls does
//! that.

use std::fmt::Write as _;

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
    Some(fields(der)?.validity)
}

/// What kubemend reads of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// The subject, as [`name_text`] writes it.
    pub subject: String,
    /// The issuer, the same way.
    pub issuer: String,
    /// The validity.
    pub validity: Validity,
}

/// The subject, issuer and validity of the DER certificate `der`; `None` when it is not one.
#[must_use]
pub fn fields(der: &[u8]) -> Option<Fields> {
    let (tag, certificate, _) = element(der)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, tbs, _) = element(certificate)?;
    (tag == SEQUENCE).then_some(())?;
    // [0] version (optional), serialNumber, signature, then issuer, validity, subject.
    let (tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        rest = element(rest)?.2;
    }
    rest = element(rest)?.2;
    let (tag, issuer, rest) = element(rest)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, validity, rest) = element(rest)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, subject, _) = element(rest)?;
    (tag == SEQUENCE).then_some(())?;
    let (tag, not_before, rest) = element(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = element(rest)?;
    let not_after = time(tag, not_after)?;
    Some(Fields {
        subject: name_text(subject)?,
        issuer: name_text(issuer)?,
        validity: Validity {
            not_before,
            not_after,
        },
    })
}

/// A Name's content (RFC 5280 §4.1.2.4: a SEQUENCE of RelativeDistinguishedName, each a SET of
/// AttributeTypeAndValue { type OID, value }) as text, in the certificate's order, the way
/// `openssl x509 -subject` prints it less its spaces around `=`: `C=GB, ST=Canonical, L=Canonical,
/// O=Canonical, OU=Canonical, CN=127.0.0.1` (microk8s's server.crt). Known attributes by their
/// short name, others by their dotted OID; several attributes of one RDN joined by `+`; a value
/// that is no string as `#` and its DER in hex; control characters as U+FFFD (a name is shown
/// to people). An empty Name is the empty string. `None` when it is not a Name.
#[must_use]
pub fn name_text(mut name: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (tag, mut set, rest) = element(name)?;
        (tag == SET).then_some(())?;
        name = rest;
        let mut attributes = Vec::new();
        while !set.is_empty() {
            let (tag, attribute, rest) = element(set)?;
            (tag == SEQUENCE).then_some(())?;
            set = rest;
            let (tag, oid, value) = element(attribute)?;
            (tag == OID).then_some(())?;
            attributes.push(format!("{}={}", attribute_name(oid)?, value_text(value)?));
        }
        parts.push(attributes.join("+"));
    }
    Some(parts.join(", "))
}

/// The CN of a name as [`name_text`] writes it, if it has one (the last, as TLS clients take
/// it).
#[must_use]
pub fn common_name(name: &str) -> Option<&str> {
    name.split(", ")
        .flat_map(|rdn| rdn.split('+'))
        .filter_map(|a| a.strip_prefix("CN="))
        .last()
}

/// An attribute type's short name (RFC 4519, and PKCS #9's emailAddress), else its dotted OID.
fn attribute_name(oid: &[u8]) -> Option<String> {
    let known = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x04] => "SN",
        [0x55, 0x04, 0x05] => "serialNumber",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x09] => "street",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x55, 0x04, 0x0c] => "title",
        [0x55, 0x04, 0x2a] => "GN",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        _ => return dotted(oid),
    };
    Some(known.to_owned())
}

/// An OID's content as dotted decimal.
fn dotted(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut arcs = vec![u64::from(first / 40).min(2), 0];
    arcs[1] = u64::from(first) - arcs[0] * 40;
    let mut arc: u64 = 0;
    for (i, &byte) in rest.iter().enumerate() {
        arc = arc.checked_mul(128)? | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        } else if i + 1 == rest.len() {
            return None;
        }
    }
    Some(
        arcs.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

/// An attribute value: the directory string types as text, anything else as `#` and hex.
fn value_text(value: &[u8]) -> Option<String> {
    let (tag, content, _) = element(value)?;
    let text = match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING | T61_STRING | NUMERIC_STRING => {
            String::from_utf8_lossy(content).into_owned()
        }
        BMP_STRING => {
            let units: Vec<u16> = content
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => {
            let der = &value[..value.len() - element(value)?.2.len()];
            let mut hex = String::from("#");
            for b in der {
                let _ = write!(hex, "{b:02x}");
            }
            return Some(hex);
        }
    };
    Some(
        text.chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect(),
    )
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;
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

    /// A certificate of tests/fixtures/certs (made with openssl, see the README there).
    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"));
        pem_certificates(&std::fs::read(path).unwrap())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn microk8s_server_certificate_shows_its_subject_and_ca_in_certificate_order() {
        let server = fields(&fixture("server.crt")).unwrap();
        assert_eq!(
            server.subject,
            "C=GB, ST=Canonical, L=Canonical, O=Canonical, OU=Canonical, CN=127.0.0.1"
        );
        assert_eq!(server.issuer, "CN=10.152.183.1");
        assert_eq!(common_name(&server.subject), Some("127.0.0.1"));
        assert_eq!(
            server.validity,
            Validity {
                not_before: unix("2026-12-06T11:06:07Z"),
                not_after: unix("2027-12-06T11:06:07Z"),
            }
        );
        let ca = fields(&fixture("ca.crt")).unwrap();
        assert_eq!(
            (ca.subject.as_str(), ca.issuer.as_str()),
            ("CN=10.152.183.1", "CN=10.152.183.1")
        );
        assert_eq!(ca.validity.not_after, unix("2036-12-03T11:06:07Z"));
    }

    #[test]
    fn a_validity_past_2049_is_read_from_generalized_time() {
        let cert = fields(&fixture("generalized-time.crt")).unwrap();
        assert_eq!(cert.subject, "CN=front-proxy-ca");
        assert_eq!(cert.validity.not_before, unix("2026-12-06T11:06:07Z"));
        assert_eq!(cert.validity.not_after, unix("2054-04-23T11:06:07Z"));
    }

    #[test]
    fn names_show_unknown_attributes_by_oid_and_never_a_control_character() {
        // SET { SEQUENCE { 1.2.3.4, UTF8String "a\x1bb" } }, SET { SEQUENCE { CN, BMPString "é" },
        // SEQUENCE { O, INTEGER 5 } }.
        let name = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x2a, 0x03, 0x04, 0x0c, 0x03, b'a', 0x1b, b'b',
            0x31, 0x15, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x1e, 0x02, 0x00, 0xe9, 0x30,
            0x08, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x02, 0x01, 0x05,
        ];
        assert_eq!(
            name_text(&name).as_deref(),
            Some("1.2.3.4=a\u{fffd}b, CN=\u{e9}+O=#020105")
        );
        assert_eq!(common_name("CN=\u{e9}+O=#020105"), Some("\u{e9}"));
        assert_eq!(name_text(&[]).as_deref(), Some(""));
        assert_eq!(name_text(&[0x30, 0x00]), None);
        assert_eq!(common_name("O=Canonical"), None);
    }
}
