//! Registry tokens (EdDSA JWTs) as `auth::TokenKeys::verify` checks every `Bearer` credential
//! and every refresh token. The first byte picks the mode:
//! - even: the rest is the token text, as a client sends it;
//! - odd: the rest is a JOSE header and a claims set (JSON, split at the first newline), signed
//!   here with the verifier's own key, so claims and header fields a forger could not produce
//!   still reach the claim checks.
//!
//! Properties: never panics; an accepted token is of the asked issuer, audience and use and
//! valid at `now` within the leeway, and only ever from the known key with `alg: EdDSA`;
//! tokens the keys sign themselves verify to the claims signed.
#![no_main]

use std::sync::OnceLock;

use auth::{Claims, TokenKeys, TokenUse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cluster_api::SigningKey;
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};

const ISSUER: &str = "wharf";
const AUDIENCE: &str = "registry";
const NOW: u64 = 1_800_000_000;
const KID: &str = "fuzzkey";
/// `auth`'s clock-skew allowance (`token::LEEWAY_SECS`).
const LEEWAY_SECS: u64 = 30;
const SEED: [u8; 32] = *b"wharf fuzz ed25519 token seed...";
/// PKCS#8 v1 of an Ed25519 private key, before its 32-byte seed (RFC 8410).
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

struct Fixture {
    keys: TokenKeys,
    pair: Ed25519KeyPair,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pair = Ed25519KeyPair::from_seed_unchecked(&SEED).expect("a 32-byte seed");
        let key = SigningKey {
            kid: KID.to_owned(),
            pkcs8: [&PKCS8_V1_PREFIX[..], &SEED[..]].concat(),
            public: pair.public_key().as_ref().to_vec(),
            created_at: 0,
        };
        let keys = TokenKeys::new(&[key]);
        assert!(keys.can_sign(), "the fixed key loads");
        Fixture { keys, pair }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    if mode & 1 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            check(fixture, token);
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &rest[..0]),
    };
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = fixture.pair.sign(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    check(fixture, &token);
});

fn check(fixture: &Fixture, token: &str) {
    for token_use in [TokenUse::Access, TokenUse::Refresh] {
        let Ok(claims) = fixture.keys.verify(token, ISSUER, AUDIENCE, token_use, NOW) else {
            continue;
        };
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert_eq!(claims.token_use, token_use);
        assert!(NOW < claims.exp.saturating_add(LEEWAY_SECS));
        assert!(claims.nbf <= NOW + LEEWAY_SECS);
        let header = jsonwebtoken::decode_header(token).expect("an accepted header decodes");
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(KID));
        resigned_verifies(fixture, &claims);
    }
}

/// The claims signed by the keys themselves verify to the same claims.
fn resigned_verifies(fixture: &Fixture, claims: &Claims) {
    let token = fixture.keys.sign(claims).expect("the fixed key signs");
    let back = fixture
        .keys
        .verify(&token, ISSUER, AUDIENCE, claims.token_use, NOW)
        .expect("a token the keys signed verifies");
    assert_eq!(&back, claims);
}
