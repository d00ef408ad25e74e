//! Conversions of the access-control types (`auth.proto`). Decoding checks every enum and
//! action, like `convert` does for the rest.

use cluster_api::{
    Account, AccountKind, Action, AuthChange, AuthState, ImmutableTagRule, Policy, SigningKey,
    Subject,
};

use crate::convert::DecodeError;
use crate::pb;

fn bad(field: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError {
        field,
        reason: reason.to_string(),
    }
}

pub fn account_to_pb(account: &Account) -> pb::Account {
    let kind = match account.kind {
        AccountKind::User => pb::AccountKind::User,
        AccountKind::Robot => pb::AccountKind::Robot,
    };
    pb::Account {
        name: account.name.clone(),
        kind: kind.into(),
        secret_hash: account.secret_hash.clone(),
        admin: account.admin,
        created_at: account.created_at,
        expires_at: account.expires_at,
        generation: account.generation,
        description: account.description.clone(),
    }
}

pub fn account_from_pb(account: pb::Account) -> Result<Account, DecodeError> {
    let kind = match pb::AccountKind::try_from(account.kind) {
        Ok(pb::AccountKind::User) => AccountKind::User,
        Ok(pb::AccountKind::Robot) => AccountKind::Robot,
        _ => {
            return Err(bad(
                "kind",
                format!("{} is not an account kind", account.kind),
            ))
        }
    };
    Ok(Account {
        name: account.name,
        kind,
        secret_hash: account.secret_hash,
        admin: account.admin,
        created_at: account.created_at,
        expires_at: account.expires_at,
        generation: account.generation,
        description: account.description,
    })
}

pub fn policy_to_pb(policy: &Policy) -> pb::Policy {
    pb::Policy {
        id: policy.id.clone(),
        subject: policy.subject.to_string(),
        repositories: policy.repositories.clone(),
        actions: policy
            .actions
            .iter()
            .map(|action| action.as_str().to_owned())
            .collect(),
    }
}

pub fn policy_from_pb(policy: pb::Policy) -> Result<Policy, DecodeError> {
    let subject = Subject::parse(&policy.subject).map_err(|e| bad("subject", e))?;
    let actions = policy
        .actions
        .iter()
        .map(|text| {
            Action::parse(text).ok_or_else(|| bad("actions", format!("{text:?} is not an action")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Policy {
        id: policy.id,
        subject,
        repositories: policy.repositories,
        actions,
    })
}

pub fn key_to_pb(key: &SigningKey) -> pb::SigningKey {
    pb::SigningKey {
        kid: key.kid.clone(),
        pkcs8: key.pkcs8.clone(),
        public: key.public.clone(),
        created_at: key.created_at,
    }
}

pub fn key_from_pb(key: pb::SigningKey) -> SigningKey {
    SigningKey {
        kid: key.kid,
        pkcs8: key.pkcs8,
        public: key.public,
        created_at: key.created_at,
    }
}

fn rule_to_pb(rule: &ImmutableTagRule) -> pb::ImmutableTagRule {
    pb::ImmutableTagRule {
        id: rule.id.clone(),
        repositories: rule.repositories.clone(),
        tags: rule.tags.clone(),
    }
}

fn rule_from_pb(rule: pb::ImmutableTagRule) -> ImmutableTagRule {
    ImmutableTagRule {
        id: rule.id,
        repositories: rule.repositories,
        tags: rule.tags,
    }
}

pub fn auth_state_to_pb(state: &AuthState) -> pb::AuthState {
    pb::AuthState {
        version: state.version,
        accounts: state.accounts.iter().map(account_to_pb).collect(),
        policies: state.policies.iter().map(policy_to_pb).collect(),
        keys: state.keys.iter().map(key_to_pb).collect(),
        immutable_tags: state.immutable_tags.iter().map(rule_to_pb).collect(),
    }
}

pub fn auth_state_from_pb(state: pb::AuthState) -> Result<AuthState, DecodeError> {
    Ok(AuthState {
        version: state.version,
        accounts: state
            .accounts
            .into_iter()
            .map(account_from_pb)
            .collect::<Result<_, _>>()?,
        policies: state
            .policies
            .into_iter()
            .map(policy_from_pb)
            .collect::<Result<_, _>>()?,
        keys: state.keys.into_iter().map(key_from_pb).collect(),
        immutable_tags: state.immutable_tags.into_iter().map(rule_from_pb).collect(),
    })
}

pub fn auth_change_to_pb(change: &AuthChange) -> pb::AuthChange {
    use pb::auth_change::Change;
    let change = match change {
        AuthChange::PutAccount { account, replace } => Change::PutAccount(pb::PutAccount {
            account: Some(account_to_pb(account)),
            replace: *replace,
        }),
        AuthChange::DeleteAccount { name } => Change::DeleteAccount(name.clone()),
        AuthChange::PutPolicy(policy) => Change::PutPolicy(policy_to_pb(policy)),
        AuthChange::DeletePolicy { id } => Change::DeletePolicy(id.clone()),
        AuthChange::AddSigningKey { key, only_if_none } => {
            Change::AddSigningKey(pb::AddSigningKey {
                key: Some(key_to_pb(key)),
                only_if_none: *only_if_none,
            })
        }
        AuthChange::PutImmutableTagRule(rule) => Change::PutImmutableTagRule(rule_to_pb(rule)),
        AuthChange::DeleteImmutableTagRule { id } => Change::DeleteImmutableTagRule(id.clone()),
    };
    pb::AuthChange {
        change: Some(change),
    }
}

pub fn auth_change_from_pb(change: pb::AuthChange) -> Result<AuthChange, DecodeError> {
    use pb::auth_change::Change;
    match change.change {
        Some(Change::PutAccount(put)) => Ok(AuthChange::PutAccount {
            account: account_from_pb(put.account.ok_or_else(|| bad("account", "missing"))?)?,
            replace: put.replace,
        }),
        Some(Change::DeleteAccount(name)) => Ok(AuthChange::DeleteAccount { name }),
        Some(Change::PutPolicy(policy)) => Ok(AuthChange::PutPolicy(policy_from_pb(policy)?)),
        Some(Change::DeletePolicy(id)) => Ok(AuthChange::DeletePolicy { id }),
        Some(Change::AddSigningKey(add)) => Ok(AuthChange::AddSigningKey {
            key: key_from_pb(add.key.ok_or_else(|| bad("key", "missing"))?),
            only_if_none: add.only_if_none,
        }),
        Some(Change::PutImmutableTagRule(rule)) => {
            Ok(AuthChange::PutImmutableTagRule(rule_from_pb(rule)))
        }
        Some(Change::DeleteImmutableTagRule(id)) => Ok(AuthChange::DeleteImmutableTagRule { id }),
        None => Err(bad("change", "missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_changes_round_trip() {
        let state = AuthState {
            version: 7,
            accounts: vec![Account {
                name: "ci".into(),
                kind: AccountKind::Robot,
                secret_hash: "sha256:00".into(),
                admin: false,
                created_at: 1,
                expires_at: Some(9),
                generation: 2,
                description: "builds".into(),
            }],
            policies: vec![Policy {
                id: "ci-push".into(),
                subject: Subject::Account("ci".into()),
                repositories: "ci/**".into(),
                actions: vec![Action::Pull, Action::Push],
            }],
            keys: vec![SigningKey {
                kid: "k".into(),
                pkcs8: vec![1, 2],
                public: vec![3],
                created_at: 4,
            }],
            immutable_tags: vec![ImmutableTagRule {
                id: "releases".into(),
                repositories: "prod/**".into(),
                tags: "v*".into(),
            }],
        };
        assert_eq!(auth_state_from_pb(auth_state_to_pb(&state)).unwrap(), state);
        let change = AuthChange::PutPolicy(state.policies[0].clone());
        assert_eq!(
            auth_change_from_pb(auth_change_to_pb(&change)).unwrap(),
            change
        );
        let mut bad_policy = policy_to_pb(&state.policies[0]);
        bad_policy.actions.push("fly".into());
        assert!(policy_from_pb(bad_policy).is_err());
        assert!(auth_change_from_pb(pb::AuthChange { change: None }).is_err());
    }
}
