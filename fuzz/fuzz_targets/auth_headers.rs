//! The two authentication headers: `Authorization` as the gateway reads it on every request
//! (Basic and Bearer), and `WWW-Authenticate` as the load tool's client reads a registry's
//! Bearer challenge. The whole input is tried as each; its lines are also the realm, service
//! and scope of a challenge built the way the gateway writes one, and the first line is the
//! repository name of a request path the gateway answers with a challenge.
//!
//! Properties: never panics; Basic credentials re-encode to a header that reads the same (the
//! user holds no `:`), a Bearer token is trimmed and non-empty and reads back the same, and
//! refusals explain themselves; challenge keys are lowercase and trimmed; a challenge of
//! quoted values without quotes in them reads back exactly; whatever a client puts in a path,
//! the gateway's challenge names its own realm and service and nothing but a scope besides.
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use cluster_api::fake::MemMeta;
use gateway::fuzzing::{authorization, Challenges, Presented};
use libfuzzer_sys::fuzz_target;
use load::parse_challenge;

fn challenges() -> &'static Challenges {
    static CHALLENGES: OnceLock<Challenges> = OnceLock::new();
    CHALLENGES.get_or_init(|| Challenges::new(Arc::new(MemMeta::new())))
}

fuzz_target!(|data: &[u8]| {
    check_authorization(data);
    let text = String::from_utf8_lossy(data);
    let challenge = parse_challenge(&text);
    for key in challenge.keys() {
        assert_eq!(key, &key.trim().to_ascii_lowercase());
    }
    let mut lines = text.split('\n');
    let (realm, service, scope) = (lines.next(), lines.next(), lines.next());
    if let (Some(realm), Some(service), Some(scope)) = (realm, service, scope) {
        check_challenge(realm, service, scope);
    }
    if let Some(name) = text.split('\n').next() {
        check_gateway_challenge(name, data.len() % 2 == 1);
    }
});

/// What the gateway answers an anonymous request on repository `name` (the path's, decoded).
fn check_gateway_challenge(name: &str, push: bool) {
    let Some(challenge) = challenges().repository(name, push) else {
        return;
    };
    let params = challenge
        .strip_prefix("Bearer ")
        .map(parse_challenge)
        .expect("a Bearer challenge");
    assert_eq!(
        params.get("realm").map(String::as_str),
        Some("http://localhost/auth/token"),
        "{challenge}"
    );
    assert_eq!(
        params.get("service").map(String::as_str),
        Some("wharf"),
        "{challenge}"
    );
    for key in params.keys() {
        assert!(
            ["realm", "service", "scope"].contains(&key.as_str()),
            "{key:?} in {challenge}"
        );
    }
}

fn check_authorization(value: &[u8]) {
    assert_eq!(authorization(None), Some(Ok(Presented::None)));
    let Some(presented) = authorization(Some(value)) else {
        return;
    };
    match presented {
        Ok(Presented::None) => panic!("a sent Authorization header is not absent"),
        Ok(Presented::Basic { user, secret }) => {
            assert!(!user.contains(':'));
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{secret}").as_bytes());
            let again = authorization(Some(format!("Basic {encoded}").as_bytes()));
            assert_eq!(again, Some(Ok(Presented::Basic { user, secret })));
        }
        Ok(Presented::Bearer(token)) => {
            assert!(!token.is_empty());
            assert_eq!(token, token.trim());
            let again = authorization(Some(format!("Bearer {token}").as_bytes()));
            assert_eq!(again, Some(Ok(Presented::Bearer(token))));
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// `Bearer realm="..",service="..",scope=".."` as `AuthGate::unauthorized` writes it.
fn check_challenge(realm: &str, service: &str, scope: &str) {
    if [realm, service, scope]
        .iter()
        .any(|value| value.contains('"'))
    {
        return;
    }
    let header = format!("Bearer realm=\"{realm}\",service=\"{service}\",scope=\"{scope}\"");
    let params = header
        .strip_prefix("Bearer ")
        .map(parse_challenge)
        .expect("a Bearer challenge");
    assert_eq!(params.get("realm").map(String::as_str), Some(realm));
    assert_eq!(params.get("service").map(String::as_str), Some(service));
    assert_eq!(params.get("scope").map(String::as_str), Some(scope));
}
