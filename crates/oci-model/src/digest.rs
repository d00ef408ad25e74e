//! Content digests (`algorithm:encoded`), per the OCI image-spec descriptor grammar:
//! `digest ::= algorithm ":" encoded`, with `sha256` (64 lowercase hex) and `sha512` (128 lowercase hex)
//! as the registered algorithms that Wharf verifies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A digest algorithm Wharf can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded part.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form algorithm:encoded")]
    Syntax(String),
    #[error("digest algorithm {0:?} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} has an encoded part of the wrong length or alphabet")]
    Encoding(String),
}

/// A validated digest. Always canonical: lowercase hex of the right length for its algorithm.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = text
            .split_once(':')
            .ok_or_else(|| DigestError::Syntax(text.to_owned()))?;
        if !is_algorithm_grammar(algorithm) || encoded.is_empty() {
            return Err(DigestError::Syntax(text.to_owned()));
        }
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return Err(DigestError::Encoding(text.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: encoded.to_owned(),
        })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut digester = Digester::new(Algorithm::Sha256);
        digester.update(data);
        digester.finish()
    }

    /// The digest of `data` computed with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut digester = Digester::new(algorithm);
        digester.update(data);
        digester.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// True when `data` hashes to this digest.
    pub fn verifies(&self, data: &[u8]) -> bool {
        Digest::of(self.algorithm, data) == *self
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`, the image-spec algorithm grammar.
fn is_algorithm_grammar(text: &str) -> bool {
    let mut previous_separator = true;
    for b in text.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => previous_separator = false,
            b'+' | b'.' | b'_' | b'-' if !previous_separator => previous_separator = true,
            _ => return false,
        }
    }
    !previous_separator
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher for one algorithm. Uses the SHA-NI path where the CPU has it.
#[derive(Clone)]
pub enum Digester {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Digester {
    pub fn new(algorithm: Algorithm) -> Digester {
        match algorithm {
            Algorithm::Sha256 => Digester::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Digester::Sha256(_) => Algorithm::Sha256,
            Digester::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(hasher) => hasher.update(data),
            Digester::Sha512(hasher) => hasher.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Digester::Sha256(hasher) => (Algorithm::Sha256, hex::encode(hasher.finalize())),
            Digester::Sha512(hasher) => (Algorithm::Sha512, hex::encode(hasher.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_round_trips() {
        let digest = Digest::parse(EMPTY_SHA256).unwrap();
        assert_eq!(digest.algorithm(), Algorithm::Sha256);
        assert_eq!(digest.to_string(), EMPTY_SHA256);
        // Debug prints the digest as written (logs and assertion messages show it so).
        assert_eq!(format!("{digest:?}"), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), digest);
        assert!(digest.verifies(b""));
        assert!(!digest.verifies(b"x"));
    }

    #[test]
    fn sha512_is_supported() {
        let digest = Digest::of(Algorithm::Sha512, b"abc");
        assert_eq!(digest.hex().len(), 128);
        assert_eq!(Digest::parse(&digest.to_string()).unwrap(), digest);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:zzb0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256+:abc",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(matches!(
            Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    /// The algorithm's grammar (`[a-z0-9]+([+._-][a-z0-9]+)*`) is checked before whether the
    /// algorithm is supported: a well-formed unknown one is `UnsupportedAlgorithm`, a malformed
    /// one `Syntax`.
    #[test]
    fn the_algorithm_grammar_comes_before_support() {
        for unsupported in ["md5", "sha256+b64u", "multihash+base58", "a.b_c-d", "x9"] {
            assert!(
                matches!(
                    Digest::parse(&format!("{unsupported}:abc")),
                    Err(DigestError::UnsupportedAlgorithm(ref name)) if name == unsupported
                ),
                "{unsupported:?}"
            );
        }
        // An empty encoded part is a syntax error too, whatever the algorithm.
        for empty in ["sha256:", "md5:"] {
            assert!(
                matches!(Digest::parse(empty), Err(DigestError::Syntax(_))),
                "{empty:?}"
            );
        }
        for malformed in [
            "sha256+", "+sha256", "sha..256", "sha+-256", "-", "Sha256", "sha 256",
        ] {
            assert!(
                matches!(
                    Digest::parse(&format!("{malformed}:abc")),
                    Err(DigestError::Syntax(_))
                ),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut digester = Digester::new(Algorithm::Sha256);
        digester.update(b"hello ");
        digester.update(b"world");
        assert_eq!(digester.finish(), Digest::sha256_of(b"hello world"));
    }
}
