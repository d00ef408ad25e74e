//! What operators see of the access-control state, shared by the admin HTTP API and
//! `wharf admin`: accounts without their secrets, policies and immutable-tag rules as JSON, and
//! the ids given to rules added without one.

use cluster_api::{Account, ImmutableTagRule, Policy};
use serde_json::{json, Value};

/// An account without its secret hash or generation.
pub fn account_view(account: &Account) -> Value {
    json!({
        "name": account.name,
        "kind": account.kind.as_str(),
        "admin": account.admin,
        "created_at": account.created_at,
        "expires_at": account.expires_at,
        "description": account.description,
    })
}

pub fn policy_view(policy: &Policy) -> Value {
    json!({
        "id": policy.id,
        "subject": policy.subject.to_string(),
        "repositories": policy.repositories,
        "actions": policy.actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    })
}

pub fn immutable_rule_view(rule: &ImmutableTagRule) -> Value {
    json!({
        "id": rule.id,
        "repositories": rule.repositories,
        "tags": rule.tags,
    })
}

/// A readable id from a rule's parts: `ci` on `ci/**` is `ci.ci.all`, `anonymous` on
/// `*/public/**` is `anonymous.any.public.all`; at most 64 characters.
pub fn rule_id(parts: &[&str]) -> String {
    let mut id = parts
        .join(".")
        .replace("**", "all")
        .replace('*', "any")
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' => c,
            _ => '_',
        })
        .collect::<String>();
    id.truncate(64);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_readable_and_valid() {
        assert_eq!(rule_id(&["ci", "ci/**"]), "ci.ci.all");
        assert_eq!(
            rule_id(&["anonymous", "*/public/**"]),
            "anonymous.any.public.all"
        );
        assert_eq!(rule_id(&["prod/**", "v?"]), "prod.all.v_");
        assert_eq!(rule_id(&["x"; 40]).len(), 64);
    }
}
