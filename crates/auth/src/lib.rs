//! Wharf's access control, as pure functions and small data structures (no I/O, no clock: the
//! caller passes `now`):
//!
//! ```text
//! secret    argon2id password hashes, robot secrets (random, stored as SHA-256), verification in
//!           constant time
//! policy    `Authorizer`: what a principal may do on a repository, from the policies' globs
//! scope     the Docker token scope grammar (`repository:team/app:pull,push`)
//! token     Ed25519 (EdDSA) JWTs: access tokens with `access` claims, refresh tokens; signing
//!           keys from the meta state, verification that admits nothing but EdDSA
//! limiter   failed-login throttling by client address and by account
//! views     accounts (without secrets), policies and rules as operators see them
//! ```
//!
//! The gateway puts these together; meta only stores the state (`cluster_api::AuthState`).

mod limiter;
mod policy;
mod scope;
mod secret;
mod token;
mod views;

pub use limiter::FailureLimiter;
pub use policy::{compile_glob, policy_from_parts, ActionSet, Authorizer, Principal};
pub use scope::{Scope, ScopeError};
pub use secret::{
    generate_robot_secret, hash_password, hash_robot_secret, new_robot, new_user, verify_secret,
    SecretError,
};
pub use token::{generate_signing_key, Claims, ResourceAccess, TokenError, TokenKeys, TokenUse};
pub use views::{account_view, immutable_rule_view, policy_view, rule_id};
