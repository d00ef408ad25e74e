//! Just enough DER reading to say which certificate was loaded (serial, subject common name,
//! expiry) in a log line, without a full X.509 parser. Anything unexpected gives `None`; rustls
//! and webpki do the real validation.

use std::fmt;

/// What the logs say about a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertSummary {
    /// The serial number in hex.
    pub serial: String,
    /// The subject's common name, or empty when it has none.
    pub subject: String,
    /// The end of validity, `YYYY-MM-DDTHH:MM:SSZ`.
    pub not_after: String,
}

impl CertSummary {
    /// Reads the summary from a DER certificate; `None` when the DER is not shaped as expected.
    pub fn of(der: &[u8]) -> Option<CertSummary> {
        let (_, certificate, _) = expect(der, SEQUENCE)?;
        let (_, tbs, _) = expect(certificate, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&EXPLICIT_VERSION) {
            rest = tlv(rest)?.2;
        }
        let (_, serial, rest) = expect(rest, INTEGER)?;
        let (_, _signature, rest) = expect(rest, SEQUENCE)?;
        let (_, _issuer, rest) = expect(rest, SEQUENCE)?;
        let (_, validity, rest) = expect(rest, SEQUENCE)?;
        let (_, subject, _) = expect(rest, SEQUENCE)?;
        let (_, _, after_not_before) = tlv(validity)?;
        let (time_tag, not_after, _) = tlv(after_not_before)?;
        Some(CertSummary {
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            subject: common_name(subject).unwrap_or_default(),
            not_after: time(time_tag, not_after)?,
        })
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CN={:?} serial={} expires {}",
            self.subject, self.serial, self.not_after
        )
    }
}

const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// One DER element: (tag, content, what follows). Single-byte tags only (all X.509 needs here).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (content, rest) = input.split_at(len);
    Some((tag, content, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    tlv(input).filter(|(found, _, _)| *found == tag)
}

/// The first commonName attribute of an RDNSequence.
fn common_name(mut rdns: &[u8]) -> Option<String> {
    while !rdns.is_empty() {
        let (_, set, rest) = expect(rdns, SET)?;
        rdns = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (_, attribute, rest) = expect(attributes, SEQUENCE)?;
            attributes = rest;
            let (_, oid, value) = expect(attribute, OID)?;
            if oid == COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as `YYYY-MM-DDTHH:MM:SSZ`.
fn time(tag: u8, content: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(content).ok()?;
    let full = match tag {
        UTC_TIME if text.len() == 13 => {
            let year: u32 = text.get(..2)?.parse().ok()?;
            let century = if year >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        GENERALIZED_TIME if text.len() == 15 => text.to_owned(),
        _ => return None,
    };
    if !full.is_char_boundary(14) || !full[..14].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn summary_of_a_generated_certificate() {
        let (_, cert, _) = crate::load::tests::test_pki(&["localhost"], "wharf node");
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let summary = CertSummary::of(&der).expect("summary");
        assert_eq!(summary.subject, "wharf node");
        assert!(!summary.serial.is_empty());
        // rcgen's default validity ends in 4096 (GeneralizedTime).
        assert_eq!(summary.not_after, "4096-01-01T00:00:00Z");
        assert!(CertSummary::of(b"\x30\x03\x02\x01").is_none());
    }
}
