//! Repository names, tags and manifest references, per the distribution-spec grammar:
//!
//! ```text
//! name      = component *("/" component)
//! component = [a-z0-9]+ *(separator [a-z0-9]+)
//! separator = "." / "_" / "__" / 1*"-"
//! tag       = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! reference = tag / digest
//! ```
//!
//! Names are limited to 255 characters, the limit Docker and Distribution enforce.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestError};

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must not be empty")]
    EmptyName,
    #[error("repository name is {0} characters long, over the limit of 255")]
    NameTooLong(usize),
    #[error("repository name {0:?} does not match the distribution-spec grammar")]
    InvalidName(String),
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
}

/// A validated repository name such as `library/alpine` or `team-a/app`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(text: &str) -> Result<RepositoryName, NameError> {
        if text.is_empty() {
            return Err(NameError::EmptyName);
        }
        if text.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong(text.len()));
        }
        if !text.split('/').all(is_component) {
            return Err(NameError::InvalidName(text.to_owned()));
        }
        Ok(RepositoryName(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+ *(separator [a-z0-9]+)` with separator `.`, `_`, `__` or one or more `-`.
fn is_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let mut i = 0;
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A validated tag.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(text: &str) -> Result<Tag, NameError> {
        let bytes = text.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
        let rest_ok = bytes[1.min(bytes.len())..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !first_ok || !rest_ok || bytes.len() > MAX_TAG_LEN {
            return Err(NameError::InvalidTag(text.to_owned()));
        }
        Ok(Tag(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a tag.
    pub fn parse(text: &str) -> Result<Reference, NameError> {
        if text.contains(':') {
            Ok(Reference::Digest(Digest::parse(text)?))
        } else {
            Ok(Reference::Tag(Tag::parse(text)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag.as_str()),
            Reference::Digest(digest) => fmt::Display::fmt(digest, f),
        }
    }
}

macro_rules! string_newtype_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::parse(s)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $ty::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype_impls!(RepositoryName);
string_newtype_impls!(Tag);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_spec_names() {
        for good in [
            "a",
            "library/alpine",
            "team-a/app",
            "a.b/c__d/e---f",
            "0/1/2/3",
            "my_repo",
        ] {
            let name = RepositoryName::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(name.as_str(), good);
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "Upper",
            "a//b",
            "/a",
            "a/",
            "..",
            "a/../b",
            "a/./b",
            "a___b",
            "-a",
            "a-",
            "a_",
            "a__",
            "a.",
            ".a",
            "a b",
            "a%2fb",
            long.as_str(),
        ] {
            assert!(
                RepositoryName::parse(bad).is_err(),
                "{bad:?} must be rejected"
            );
        }
        assert!(RepositoryName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("_v1.2-rc.3").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".x", "-x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        let digest = Digest::sha256_of(b"x").to_string();
        assert!(matches!(
            Reference::parse(&digest),
            Ok(Reference::Digest(_))
        ));
        assert!(Reference::parse("sha256:nothex").is_err());
    }

    #[test]
    fn references_round_trip_through_their_text() {
        let digest = Digest::sha256_of(b"x").to_string();
        for text in ["v1", "_v1.2-rc.3", digest.as_str()] {
            let reference = Reference::parse(text).unwrap();
            assert_eq!(reference.to_string(), text);
            if let Reference::Tag(tag) = &reference {
                assert_eq!(tag.as_str(), text);
                assert_eq!(tag.to_string(), text);
            }
        }
        assert_eq!(
            Reference::parse("v1").unwrap(),
            Reference::Tag(Tag::parse("v1").unwrap())
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,300}") {
            let _ = RepositoryName::parse(&text);
            let _ = Reference::parse(&text);
        }

        #[test]
        fn generated_names_parse(name in "[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,3}(/[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,2}){0,3}") {
            prop_assert!(RepositoryName::parse(&name).is_ok());
        }
    }
}
