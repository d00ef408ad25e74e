//! Registry tokens: JWTs signed with Ed25519 (`alg: EdDSA`), in the shape of the Docker token
//! spec (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`, `access`), plus `use` (access or
//! refresh) and `gen` (the account's generation, so a changed password or a re-created robot
//! invalidates older tokens).
//!
//! Verification admits only EdDSA with a known key id, and checks issuer, audience, use and
//! time itself against the caller's `now`; `alg: none`, HMAC tricks and unknown keys fail.

use std::collections::HashMap;

use cluster_api::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::ActionSet;

/// Clock skew tolerated between the gateway that issued a token and the one checking it.
pub const LEEWAY_SECS: u64 = 30;

/// What a token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// Presented as `Authorization: Bearer` to the registry API.
    Access,
    /// Presented to the token endpoint (`grant_type=refresh_token`) for new access tokens.
    Refresh,
}

/// One `access` entry: actions granted on one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account name, or `anonymous`.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    #[serde(default)]
    pub gen: u64,
}

impl Claims {
    /// New claims valid from `now` for `ttl_secs`, with a random id.
    pub fn new(
        issuer: &str,
        subject: &str,
        audience: &str,
        now: u64,
        ttl_secs: u64,
        token_use: TokenUse,
    ) -> Claims {
        Claims {
            iss: issuer.to_owned(),
            sub: subject.to_owned(),
            aud: audience.to_owned(),
            exp: now + ttl_secs,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access: Vec::new(),
            token_use,
            gen: 0,
        }
    }

    /// The actions granted on `resource_type` `name` (none when it is not listed).
    pub fn granted(&self, resource_type: &str, name: &str) -> ActionSet {
        ActionSet::parse_docker_all(
            self.access
                .iter()
                .filter(|entry| entry.resource_type == resource_type && entry.name == name)
                .flat_map(|entry| entry.actions.iter().map(String::as_str)),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is not signed with EdDSA")]
    WrongAlgorithm,
    #[error("the token was signed with an unknown key")]
    UnknownKey,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another registry")]
    WrongAudience,
    #[error("the token is not of the expected kind")]
    WrongUse,
    #[error("no signing key is available yet")]
    NoSigningKey,
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

/// The signing key and every verifying key of one state version.
pub struct TokenKeys {
    signer: Option<(String, EncodingKey)>,
    verifiers: HashMap<String, DecodingKey>,
}

impl TokenKeys {
    /// Keys of `keys` (newest first: the first signs). Malformed keys are skipped.
    pub fn new(keys: &[SigningKey]) -> TokenKeys {
        let mut verifiers = HashMap::new();
        let mut signer = None;
        for key in keys {
            // A public key must be exactly 32 bytes, and the private one must match it.
            let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key.pkcs8) else {
                continue;
            };
            if key.public.len() != 32 || pair.public_key().as_ref() != key.public.as_slice() {
                continue;
            }
            if signer.is_none() {
                signer = Some((key.kid.clone(), EncodingKey::from_ed_der(&key.pkcs8)));
            }
            verifiers.insert(key.kid.clone(), DecodingKey::from_ed_der(&key.public));
        }
        TokenKeys { signer, verifiers }
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let (kid, key) = self.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// The claims of `token` if it is a valid `token_use` token of `issuer` for `audience` at
    /// `now` (unix seconds).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        token_use: TokenUse,
        now: u64,
    ) -> Result<Claims, TokenError> {
        if token.len() > 16 * 1024 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifiers.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time, issuer and audience are checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.iss != issuer || claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.token_use != token_use {
            return Err(TokenError::WrongUse);
        }
        if now >= claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// A fresh Ed25519 signing key, created at `now`.
pub fn generate_signing_key(now: u64) -> SigningKey {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("the system random source works");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring parses its own key");
    let public = pair.public_key().as_ref().to_vec();
    let kid = hex::encode(&Sha256::digest(&public)[..8]);
    SigningKey {
        kid,
        pkcs8: pkcs8.as_ref().to_vec(),
        public,
        created_at: now,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn claims(ttl: u64) -> Claims {
        let mut claims = Claims::new("wharf", "ci", "registry", NOW, ttl, TokenUse::Access);
        claims.access.push(ResourceAccess {
            resource_type: "repository".into(),
            name: "ci/app".into(),
            actions: vec!["pull".into()],
        });
        claims
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn signed_tokens_verify_with_their_claims() {
        let keys = TokenKeys::new(&[generate_signing_key(NOW)]);
        let token = keys.sign(&claims(300)).unwrap();
        let back = keys
            .verify(&token, "wharf", "registry", TokenUse::Access, NOW + 10)
            .unwrap();
        assert_eq!(back, claims(300).clone_with_jti(&back.jti));
        assert_eq!(back.granted("repository", "ci/app"), ActionSet::PULL);
        assert_eq!(back.granted("repository", "prod/app"), ActionSet::NONE);
    }

    impl Claims {
        fn clone_with_jti(mut self, jti: &str) -> Claims {
            self.jti = jti.to_owned();
            self
        }
    }

    #[test]
    fn keys_sign_only_with_a_usable_key_and_tokens_have_a_size_limit() {
        let keys = TokenKeys::new(&[generate_signing_key(NOW)]);
        assert!(keys.can_sign());
        let none = TokenKeys::new(&[]);
        assert!(!none.can_sign());
        assert_eq!(none.sign(&claims(300)), Err(TokenError::NoSigningKey));
        // A token up to 16 KiB is read; past that it is refused unread.
        let mut big = claims(300);
        big.access[0].actions = vec!["x".repeat(10 * 1024)];
        let token = keys.sign(&big).unwrap();
        assert!(
            token.len() > 10 * 1024 && token.len() <= 16 * 1024,
            "{}",
            token.len()
        );
        assert!(keys
            .verify(&token, "wharf", "registry", TokenUse::Access, NOW)
            .is_ok());
        let mut bigger = claims(300);
        bigger.access[0].actions = vec!["x".repeat(16 * 1024)];
        let token = keys.sign(&bigger).unwrap();
        assert_eq!(
            keys.verify(&token, "wharf", "registry", TokenUse::Access, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn rotated_keys_still_verify_and_unknown_keys_do_not() {
        let old = generate_signing_key(NOW);
        let new = generate_signing_key(NOW);
        let old_token = TokenKeys::new(std::slice::from_ref(&old))
            .sign(&claims(300))
            .unwrap();
        let rotated = TokenKeys::new(&[new.clone(), old]);
        assert!(rotated
            .verify(&old_token, "wharf", "registry", TokenUse::Access, NOW)
            .is_ok());
        let only_new = TokenKeys::new(&[new]);
        assert_eq!(
            only_new.verify(&old_token, "wharf", "registry", TokenUse::Access, NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn time_audience_and_use_are_enforced() {
        let keys = TokenKeys::new(&[generate_signing_key(NOW)]);
        let token = keys.sign(&claims(300)).unwrap();
        let verify = |aud: &str, token_use, now| keys.verify(&token, "wharf", aud, token_use, now);
        assert_eq!(
            verify("registry", TokenUse::Access, NOW + 300 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify("registry", TokenUse::Access, NOW - LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verify("other", TokenUse::Access, NOW),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            verify("registry", TokenUse::Refresh, NOW),
            Err(TokenError::WrongUse)
        );
    }

    #[test]
    fn forged_tokens_fail() {
        let key = generate_signing_key(NOW);
        let keys = TokenKeys::new(std::slice::from_ref(&key));
        let token = keys.sign(&claims(300)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let verify = |token: &str| keys.verify(token, "wharf", "registry", TokenUse::Access, NOW);

        // alg: none, with and without a signature.
        let none = b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, key.kid).as_bytes());
        assert!(verify(&format!("{none}.{}.", parts[1])).is_err());
        assert!(verify(&format!("{none}.{}.{}", parts[1], parts[2])).is_err());
        // HS256 with the public key as the HMAC secret (the classic confusion attack).
        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some(key.kid.clone()),
                ..Header::new(Algorithm::HS256)
            },
            &claims(300),
            &EncodingKey::from_secret(&key.public),
        )
        .unwrap();
        assert_eq!(verify(&hs), Err(TokenError::WrongAlgorithm));
        // Claims changed after signing (more actions).
        let mut wider = claims(300);
        wider.access[0].actions.push("push".into());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&wider).unwrap()),
            parts[2]
        );
        assert_eq!(verify(&forged), Err(TokenError::BadSignature));
        // Signed by another key under the same kid.
        let mut impostor = generate_signing_key(NOW);
        impostor.kid = key.kid.clone();
        let other = TokenKeys::new(&[impostor]).sign(&claims(300)).unwrap();
        assert_eq!(verify(&other), Err(TokenError::BadSignature));
        for junk in ["", "a.b.c", "....", "x"] {
            assert!(verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn malformed_keys_are_skipped() {
        let mut bad = generate_signing_key(NOW);
        bad.public.truncate(5);
        let keys = TokenKeys::new(&[bad]);
        assert!(!keys.can_sign());
    }
}
