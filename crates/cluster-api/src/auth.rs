//! Identities, access policies and token signing keys: the access-control state meta keeps in
//! Raft, and [`AuthState::apply`], the one deterministic function that changes it (the state
//! machine and the fake share it).
//!
//! Secrets never appear here in the clear: a user's password is an argon2id PHC string, a robot's
//! secret a SHA-256 digest, both computed by whoever proposes the change. Signing keys are kept
//! whole (meta is their home, gateways sign with them), so this state travels only between
//! cluster members and never to clients.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use globset::GlobMatcher;
use serde::{Deserialize, Serialize};

use crate::MetaError;

/// Names that are subjects of their own and can never be account names.
pub const RESERVED_NAMES: [&str; 2] = ["anonymous", "authenticated"];

/// How many signing keys are kept: the one that signs and the previous ones, which still verify
/// tokens issued before a rotation.
pub const KEPT_SIGNING_KEYS: usize = 3;

/// A person (password) or a robot (a random secret shown once, for CI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    User,
    Robot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        }
    }
}

/// One identity. Users and robots share one namespace of names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    /// A user's argon2id PHC string, or a robot's `sha256:<hex>` of its secret.
    pub secret_hash: String,
    /// A registry administrator: every action on every repository, and the admin API.
    pub admin: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which the account can no longer authenticate (robots).
    pub expires_at: Option<u64>,
    /// Bumped by the state machine whenever the secret changes: tokens carry it, so a changed
    /// password or a re-created robot invalidates every token issued before.
    pub generation: u64,
    pub description: String,
}

impl Account {
    /// Whether the account may authenticate at `now` (unix seconds).
    pub fn active_at(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|expires| now < expires)
    }
}

/// What a policy grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Every repository action (pull, push, delete) on the matched repositories.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
    }
}

/// Who a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// Requests without credentials.
    Anonymous,
    /// Any account that authenticated.
    Authenticated,
    /// One account, user or robot, by name.
    Account(String),
}

impl Subject {
    /// `anonymous`, `authenticated`, or an account name.
    pub fn parse(text: &str) -> Result<Subject, MetaError> {
        match text {
            "anonymous" => Ok(Subject::Anonymous),
            "authenticated" => Ok(Subject::Authenticated),
            name => validate_account_name(name).map(|()| Subject::Account(name.to_owned())),
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Anonymous => f.write_str("anonymous"),
            Subject::Authenticated => f.write_str("authenticated"),
            Subject::Account(name) => f.write_str(name),
        }
    }
}

/// A rule: `subject` may do `actions` on the repositories matching `repositories`, a glob where
/// `*` matches within one path segment and `**` across segments (`team-a/*`, `*/public/**`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub subject: Subject,
    pub repositories: String,
    pub actions: Vec<Action>,
}

/// An immutable-tag rule: in repositories matching `repositories`, a tag matching `tags` (same
/// glob syntax; `*` alone is every tag), once it exists, can neither move to another manifest nor
/// be deleted. Decided inside the state machine, so two pushers cannot race past it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutableTagRule {
    pub id: String,
    pub repositories: String,
    pub tags: String,
}

impl ImmutableTagRule {
    /// Whether the rule protects `tag` in `repo`. A pattern that does not compile protects
    /// nothing (patterns are checked when a rule is added).
    pub fn protects(&self, repo: &str, tag: &str) -> bool {
        glob_matches(&self.repositories, repo) && glob_matches(&self.tags, tag)
    }
}

/// A token signing key (Ed25519).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id, carried in each token's header.
    pub kid: String,
    /// The private key, PKCS#8 DER.
    pub pkcs8: Vec<u8>,
    /// The raw 32-byte public key.
    pub public: Vec<u8>,
    /// Unix seconds.
    pub created_at: u64,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The whole access-control state. `version` grows with every change, so a gateway can ask for
/// it only when it moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub version: u64,
    /// By name.
    pub accounts: Vec<Account>,
    /// By id.
    pub policies: Vec<Policy>,
    /// Newest first: the first one signs, all of them verify.
    pub keys: Vec<SigningKey>,
    /// By id.
    #[serde(default)]
    pub immutable_tags: Vec<ImmutableTagRule>,
}

/// One change to the [`AuthState`], proposed as one Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    /// Adds an account, or replaces one when `replace` (keeping nothing of the old but bumping
    /// `generation`). Without `replace`, an existing name is `Invalid`.
    PutAccount { account: Account, replace: bool },
    /// Removes an account (revokes a robot) and every policy naming it; `Invalid` if unknown.
    DeleteAccount { name: String },
    /// Adds or replaces the policy with this id.
    PutPolicy(Policy),
    /// Removes a policy; `Invalid` if unknown.
    DeletePolicy { id: String },
    /// Makes `key` the signing key (older ones keep verifying, up to [`KEPT_SIGNING_KEYS`]). With
    /// `only_if_none`, does nothing when a key exists: how gateways create the first key without
    /// racing each other.
    AddSigningKey { key: SigningKey, only_if_none: bool },
    /// Adds or replaces the immutable-tag rule with this id.
    PutImmutableTagRule(ImmutableTagRule),
    /// Removes an immutable-tag rule; `Invalid` if unknown.
    DeleteImmutableTagRule { id: String },
}

/// Account names: lowercase letters, digits, `.`, `_`, `-`; 1 to 64 characters, starting with a
/// letter or digit; never a reserved subject name.
pub fn validate_account_name(name: &str) -> Result<(), MetaError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    if !valid {
        return Err(MetaError::Invalid(format!(
            "account name {name:?} must be 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(MetaError::Invalid(format!(
            "{name:?} is reserved as a policy subject"
        )));
    }
    Ok(())
}

/// Whether `text` matches the glob `pattern` (`*` within a path segment, `**` across); a
/// pattern that does not compile matches nothing (patterns are checked when they are stored).
///
/// Compiling a glob costs about 10 us (a regex) where matching it costs well under one, and the
/// same few patterns are matched all the time (placement rules on every blob stat, commit and
/// repair page, immutable-tag rules on every tagged push), so compiled ones are kept: at most
/// [`MAX_COMPILED_GLOBS`], the whole set dropped when full.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    static COMPILED: OnceLock<Mutex<HashMap<String, Option<GlobMatcher>>>> = OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if !compiled.contains_key(pattern) {
        if compiled.len() >= MAX_COMPILED_GLOBS {
            compiled.clear();
        }
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .ok()
            .map(|glob| glob.compile_matcher());
        compiled.insert(pattern.to_owned(), matcher);
    }
    compiled
        .get(pattern)
        .is_some_and(|matcher| matcher.as_ref().is_some_and(|m| m.is_match(text)))
}

/// How many compiled globs [`glob_matches`] keeps.
const MAX_COMPILED_GLOBS: usize = 1_024;

pub(crate) fn validate_glob(pattern: &str) -> Result<(), MetaError> {
    let compiles = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .is_ok();
    if pattern.is_empty() || pattern.len() > 255 || !compiles {
        return Err(MetaError::Invalid(format!(
            "pattern {pattern:?} is not a valid glob"
        )));
    }
    Ok(())
}

pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), MetaError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MetaError::Invalid(format!(
            "{what} id {id:?} must be 1-64 characters of letters, digits, '.', '_', '-'"
        )))
    }
}

fn validate_rule(rule: &ImmutableTagRule) -> Result<(), MetaError> {
    validate_id("rule", &rule.id)?;
    for pattern in [&rule.repositories, &rule.tags] {
        validate_glob(pattern)?;
    }
    Ok(())
}

fn validate_policy(policy: &Policy) -> Result<(), MetaError> {
    let id_ok = !policy.id.is_empty()
        && policy.id.len() <= 64
        && policy
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !id_ok {
        return Err(MetaError::Invalid(format!(
            "policy id {:?} must be 1-64 characters of letters, digits, '.', '_', '-'",
            policy.id
        )));
    }
    if policy.actions.is_empty() {
        return Err(MetaError::Invalid(
            "a policy needs at least one action".into(),
        ));
    }
    let glob = &policy.repositories;
    let glob_ok = !glob.is_empty()
        && glob.len() <= 255
        && glob.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'_' | b'-' | b'/' | b'*' | b'?')
        });
    if !glob_ok {
        return Err(MetaError::Invalid(format!(
            "repository pattern {glob:?} may hold only a-z, 0-9, '.', '_', '-', '/', '*', '?'"
        )));
    }
    Ok(())
}

impl AuthState {
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts
            .binary_search_by(|account| account.name.as_str().cmp(name))
            .ok()
            .map(|index| &self.accounts[index])
    }

    /// Applies `change`, bumping `version`; on error nothing changes.
    pub fn apply(&mut self, change: AuthChange) -> Result<(), MetaError> {
        match change {
            AuthChange::PutAccount {
                mut account,
                replace,
            } => {
                validate_account_name(&account.name)?;
                match self
                    .accounts
                    .binary_search_by(|a| a.name.cmp(&account.name))
                {
                    Ok(index) if replace => {
                        account.generation = self.accounts[index].generation + 1;
                        self.accounts[index] = account;
                    }
                    Ok(_) => {
                        return Err(MetaError::Invalid(format!(
                            "account {} already exists",
                            account.name
                        )))
                    }
                    Err(index) => {
                        account.generation = 1;
                        self.accounts.insert(index, account);
                    }
                }
            }
            AuthChange::DeleteAccount { name } => {
                let index = self
                    .accounts
                    .binary_search_by(|a| a.name.as_str().cmp(&name))
                    .map_err(|_| MetaError::Invalid(format!("account {name} does not exist")))?;
                self.accounts.remove(index);
                let subject = Subject::Account(name);
                self.policies.retain(|policy| policy.subject != subject);
            }
            AuthChange::PutPolicy(policy) => {
                validate_policy(&policy)?;
                if let Subject::Account(name) = &policy.subject {
                    if self.account(name).is_none() {
                        return Err(MetaError::Invalid(format!("account {name} does not exist")));
                    }
                }
                match self.policies.binary_search_by(|p| p.id.cmp(&policy.id)) {
                    Ok(index) => self.policies[index] = policy,
                    Err(index) => self.policies.insert(index, policy),
                }
            }
            AuthChange::DeletePolicy { id } => {
                let index = self
                    .policies
                    .binary_search_by(|p| p.id.as_str().cmp(&id))
                    .map_err(|_| MetaError::Invalid(format!("policy {id} does not exist")))?;
                self.policies.remove(index);
            }
            AuthChange::PutImmutableTagRule(rule) => {
                validate_rule(&rule)?;
                match self.immutable_tags.binary_search_by(|r| r.id.cmp(&rule.id)) {
                    Ok(index) => self.immutable_tags[index] = rule,
                    Err(index) => self.immutable_tags.insert(index, rule),
                }
            }
            AuthChange::DeleteImmutableTagRule { id } => {
                let index = self
                    .immutable_tags
                    .binary_search_by(|r| r.id.as_str().cmp(&id))
                    .map_err(|_| MetaError::Invalid(format!("rule {id} does not exist")))?;
                self.immutable_tags.remove(index);
            }
            AuthChange::AddSigningKey { key, only_if_none } => {
                if only_if_none && !self.keys.is_empty() {
                    return Ok(());
                }
                if self.keys.iter().any(|k| k.kid == key.kid) {
                    return Err(MetaError::Invalid(format!(
                        "key {} already exists",
                        key.kid
                    )));
                }
                self.keys.insert(0, key);
                self.keys.truncate(KEPT_SIGNING_KEYS);
            }
        }
        self.version += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Account {
        Account {
            name: name.into(),
            kind: AccountKind::User,
            secret_hash: "x".into(),
            admin: false,
            created_at: 1,
            expires_at: None,
            generation: 0,
            description: String::new(),
        }
    }

    fn policy(id: &str, subject: Subject) -> Policy {
        Policy {
            id: id.into(),
            subject,
            repositories: "team/*".into(),
            actions: vec![Action::Pull],
        }
    }

    #[test]
    fn accounts_are_unique_sorted_and_replacing_bumps_generation() {
        let mut state = AuthState::default();
        state
            .apply(AuthChange::PutAccount {
                account: user("bob"),
                replace: false,
            })
            .unwrap();
        state
            .apply(AuthChange::PutAccount {
                account: user("alice"),
                replace: false,
            })
            .unwrap();
        let again = state.apply(AuthChange::PutAccount {
            account: user("bob"),
            replace: false,
        });
        assert!(matches!(again, Err(MetaError::Invalid(_))));
        assert_eq!(state.version, 2);
        assert_eq!(state.accounts[0].name, "alice");
        assert_eq!(state.account("bob").unwrap().generation, 1);
        state
            .apply(AuthChange::PutAccount {
                account: user("bob"),
                replace: true,
            })
            .unwrap();
        assert_eq!(state.account("bob").unwrap().generation, 2);
    }

    #[test]
    fn deleting_an_account_drops_its_policies() {
        let mut state = AuthState::default();
        state
            .apply(AuthChange::PutAccount {
                account: user("ci"),
                replace: false,
            })
            .unwrap();
        state
            .apply(AuthChange::PutPolicy(policy(
                "a",
                Subject::Account("ci".into()),
            )))
            .unwrap();
        state
            .apply(AuthChange::PutPolicy(policy("b", Subject::Anonymous)))
            .unwrap();
        state
            .apply(AuthChange::DeleteAccount { name: "ci".into() })
            .unwrap();
        assert_eq!(state.policies.len(), 1);
        assert_eq!(state.policies[0].id, "b");
    }

    #[test]
    fn bad_names_policies_and_unknown_subjects_are_refused() {
        let mut state = AuthState::default();
        for name in ["", "Alice", "-x", "anonymous", "a/b", "a:b"] {
            let result = state.apply(AuthChange::PutAccount {
                account: user(name),
                replace: false,
            });
            assert!(result.is_err(), "{name:?}");
        }
        let unknown = state.apply(AuthChange::PutPolicy(policy(
            "p",
            Subject::Account("ghost".into()),
        )));
        assert!(unknown.is_err());
        let mut bad = policy("p", Subject::Anonymous);
        bad.repositories = "team/{a,b}".into();
        assert!(state.apply(AuthChange::PutPolicy(bad)).is_err());
        assert_eq!(state.version, 0);
    }

    #[test]
    fn compiled_globs_match_as_compiled_ones_and_are_dropped_when_full() {
        for i in 0..MAX_COMPILED_GLOBS + 10 {
            let pattern = format!("ns{i}/*");
            assert!(glob_matches(&pattern, &format!("ns{i}/app")));
            assert!(!glob_matches(&pattern, &format!("ns{i}/app/deep")));
        }
        assert!(
            glob_matches("ns1/*", "ns1/app"),
            "compiled again after the drop"
        );
        assert!(
            !glob_matches("eu/[", "eu/["),
            "a pattern that does not compile matches nothing"
        );
    }

    #[test]
    fn immutable_rules_match_repositories_and_tags() {
        let rule = ImmutableTagRule {
            id: "releases".into(),
            repositories: "prod/**".into(),
            tags: "v*".into(),
        };
        assert!(rule.protects("prod/app", "v1.2"));
        assert!(rule.protects("prod/a/b", "v1"));
        assert!(!rule.protects("prod/app", "latest"));
        assert!(!rule.protects("dev/app", "v1"));
        let mut state = AuthState::default();
        state
            .apply(AuthChange::PutImmutableTagRule(rule.clone()))
            .unwrap();
        let bad = ImmutableTagRule {
            tags: "v[".into(),
            ..rule
        };
        assert!(state.apply(AuthChange::PutImmutableTagRule(bad)).is_err());
        state
            .apply(AuthChange::DeleteImmutableTagRule {
                id: "releases".into(),
            })
            .unwrap();
        assert!(state.immutable_tags.is_empty());
    }

    #[test]
    fn signing_keys_rotate_and_only_if_none_does_not_race() {
        let key = |kid: &str| SigningKey {
            kid: kid.into(),
            pkcs8: vec![1],
            public: vec![2],
            created_at: 0,
        };
        let mut state = AuthState::default();
        for kid in ["k1", "k2", "k3", "k4"] {
            state
                .apply(AuthChange::AddSigningKey {
                    key: key(kid),
                    only_if_none: false,
                })
                .unwrap();
        }
        state
            .apply(AuthChange::AddSigningKey {
                key: key("k5"),
                only_if_none: true,
            })
            .unwrap();
        let kids: Vec<_> = state.keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, ["k4", "k3", "k2"]);
    }
}
