//! The token endpoint's request (`/auth/token`): the form of a `GET` query or an OAuth2 `POST`
//! body, its `scope` values, and what is granted for them (`gateway::fuzzing`, the code the
//! endpoint runs) under a fixed set of policies. The first byte picks who asks: anonymous, a
//! user with policies, one without, or an administrator.
//!
//! Properties: never panics; the form's pairs survive being encoded again; each scope writes
//! back to text that parses to itself; a grant names only valid repositories that were asked
//! for, with no action that was not both asked for and allowed, each resource once, the
//! catalog only for accounts that asked for it; asking twice grants the same.
#![no_main]

use std::sync::OnceLock;

use auth::{policy_from_parts, ActionSet, Principal, ResourceAccess, Scope};
use cluster_api::AuthState;
use gateway::fuzzing::{token_form, TokenGrants};
use libfuzzer_sys::fuzz_target;
use oci_model::RepositoryName;

fn grants() -> &'static TokenGrants {
    static GRANTS: OnceLock<TokenGrants> = OnceLock::new();
    GRANTS.get_or_init(|| {
        let policy = |subject: &str, repositories: &str, actions: &str| {
            policy_from_parts(None, subject, repositories, &[actions.to_owned()])
                .expect("a valid policy")
        };
        TokenGrants::new(AuthState {
            policies: vec![
                policy("anonymous", "public/**", "pull"),
                policy("authenticated", "shared/*", "pull"),
                policy("ci", "ci/**", "pull,push"),
                policy("ci", "ci/scratch/*", "delete"),
            ],
            ..AuthState::default()
        })
    })
}

fn principal(selector: u8) -> Principal {
    let account = |name: &str, admin| Principal::Account {
        name: name.to_owned(),
        admin,
    };
    match selector % 4 {
        0 => Principal::Anonymous,
        1 => account("ci", false),
        2 => account("nobody", false),
        _ => account("root", true),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, form)) = data.split_first() else {
        return;
    };
    let pairs = token_form(form);
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    assert_eq!(token_form(encoded.as_bytes()), pairs, "form round trip");

    let scopes = Scope::parse_all(
        pairs
            .iter()
            .filter(|(name, _)| name == "scope")
            .map(|(_, value)| value.as_str()),
    );
    for scope in &scopes {
        assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Ok(scope));
    }
    let principal = principal(selector);
    let access = grants().grant(&principal, &scopes);
    check_grant(&principal, &scopes, &access);
    let twice: Vec<Scope> = scopes.iter().chain(&scopes).cloned().collect();
    assert_eq!(grants().grant(&principal, &twice), access, "asking twice");
});

fn check_grant(principal: &Principal, scopes: &[Scope], access: &[ResourceAccess]) {
    for (index, entry) in access.iter().enumerate() {
        assert!(
            !access[..index]
                .iter()
                .any(|earlier| earlier.resource_type == entry.resource_type
                    && earlier.name == entry.name),
            "{entry:?} granted twice"
        );
        match entry.resource_type.as_str() {
            "repository" => {
                assert!(RepositoryName::parse(&entry.name).is_ok());
                let requested = ActionSet::parse_docker_all(
                    scopes
                        .iter()
                        .filter(|scope| {
                            scope.resource_type == "repository" && scope.name == entry.name
                        })
                        .flat_map(|scope| scope.actions.iter().map(String::as_str)),
                );
                let granted = ActionSet::parse_docker_all(entry.actions.iter().map(String::as_str));
                assert!(!granted.is_empty());
                assert!(requested.contains(granted), "{entry:?} was not asked for");
                let allowed = grants_allowed(principal, &entry.name);
                assert!(allowed.contains(granted), "{entry:?} is not allowed");
                assert_eq!(entry.actions, granted.names(), "canonical action names");
            }
            "registry" => {
                assert_eq!(entry.name, "catalog");
                assert_eq!(entry.actions, ["*"]);
                assert!(matches!(principal, Principal::Account { .. }));
                assert!(scopes.iter().any(|scope| scope.resource_type == "registry"
                    && scope.name == "catalog"
                    && scope.actions.iter().any(|action| action == "*")));
            }
            other => panic!("granted a {other:?} resource"),
        }
    }
}

/// What the fixed policies allow, written out independently of the authorizer.
fn grants_allowed(principal: &Principal, repo: &str) -> ActionSet {
    let under = |prefix: &str| repo.starts_with(prefix);
    let shared = repo
        .strip_prefix("shared/")
        .is_some_and(|rest| !rest.contains('/'));
    let scratch = repo
        .strip_prefix("ci/scratch/")
        .is_some_and(|rest| !rest.contains('/'));
    let mut allowed = ActionSet::NONE;
    if under("public/") {
        allowed = allowed.union(ActionSet::PULL);
    }
    match principal {
        Principal::Anonymous => {}
        Principal::Account { admin: true, .. } => allowed = ActionSet::ALL,
        Principal::Account { name, .. } => {
            if shared {
                allowed = allowed.union(ActionSet::PULL);
            }
            if name == "ci" && under("ci/") {
                allowed = allowed.union(ActionSet::PULL).union(ActionSet::PUSH);
            }
            if name == "ci" && scratch {
                allowed = allowed.union(ActionSet::DELETE);
            }
        }
    }
    allowed
}
