//! Secrets at rest: a user's password as an argon2id PHC string, a robot's random secret as
//! `sha256:<hex>` (it has 256 bits of entropy, so a slow hash adds nothing and a fast one keeps
//! basic auth from CI cheap). Both comparisons are constant-time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use cluster_api::{Account, AccountKind};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Robot secrets start with this, so that a leaked one is recognisable (secret scanners).
const ROBOT_SECRET_PREFIX: &str = "wharf_";

/// Passwords longer than this are refused (argon2 would accept them; nobody needs them, and a
/// megabyte "password" is a cheap way to burn a gateway's CPU).
pub const MAX_SECRET_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a password must be 8 to {MAX_SECRET_LEN} characters")]
    BadLength,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// argon2id with OWASP's baseline (19 MiB, 2 passes, 1 lane): about 20-40 ms here.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    if password.chars().count() < 8 || password.len() > MAX_SECRET_LEN {
        return Err(SecretError::BadLength);
    }
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| SecretError::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// A new robot secret: 32 random bytes, URL-safe base64, with a recognisable prefix.
pub fn generate_robot_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{ROBOT_SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What a robot's record stores of its secret.
pub fn hash_robot_secret(secret: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret.as_bytes())))
}

/// Whether `presented` is `account`'s secret. Never panics on a malformed record: that is a
/// failed login.
pub fn verify_secret(account: &Account, presented: &str) -> bool {
    if presented.is_empty() || presented.len() > MAX_SECRET_LEN {
        return false;
    }
    match account.kind {
        AccountKind::Robot => {
            let computed = hash_robot_secret(presented);
            computed
                .as_bytes()
                .ct_eq(account.secret_hash.as_bytes())
                .into()
        }
        AccountKind::User => match PasswordHash::new(&account.secret_hash) {
            // The argon2 crate compares the computed hash with the stored one in constant time.
            Ok(hash) => argon2()
                .verify_password(presented.as_bytes(), &hash)
                .is_ok(),
            Err(_) => false,
        },
    }
}

/// A new user record for `name` with `password` (hashed here), created at `now`.
pub fn new_user(name: &str, password: &str, admin: bool, now: u64) -> Result<Account, String> {
    cluster_api::validate_account_name(name).map_err(|e| e.to_string())?;
    let secret_hash = hash_password(password).map_err(|e| e.to_string())?;
    Ok(Account {
        name: name.to_owned(),
        kind: AccountKind::User,
        secret_hash,
        admin,
        created_at: now,
        expires_at: None,
        generation: 0,
        description: String::new(),
    })
}

/// A new robot record for `name` and its secret, which only the caller ever sees.
pub fn new_robot(
    name: &str,
    expires_at: Option<u64>,
    description: &str,
    now: u64,
) -> Result<(Account, String), String> {
    cluster_api::validate_account_name(name).map_err(|e| e.to_string())?;
    let secret = generate_robot_secret();
    let account = Account {
        name: name.to_owned(),
        kind: AccountKind::Robot,
        secret_hash: hash_robot_secret(&secret),
        admin: false,
        created_at: now,
        expires_at,
        generation: 0,
        description: description.to_owned(),
    };
    Ok((account, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_8_to_max_characters_and_hashed_with_owasps_argon2id() {
        assert!(matches!(
            hash_password("1234567"),
            Err(SecretError::BadLength)
        ));
        let hash = hash_password("12345678").unwrap();
        // OWASP's baseline: 19 MiB, 2 passes, 1 lane.
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        // Characters, not bytes, count toward the least; bytes toward the most.
        assert!(hash_password("ééééééé").is_err());
        assert!(hash_password("éééééééé").is_ok());
        assert!(hash_password(&"a".repeat(MAX_SECRET_LEN)).is_ok());
        assert!(matches!(
            hash_password(&"a".repeat(MAX_SECRET_LEN + 1)),
            Err(SecretError::BadLength)
        ));
    }

    fn account(kind: AccountKind, secret_hash: String) -> Account {
        Account {
            name: "a".into(),
            kind,
            secret_hash,
            admin: false,
            created_at: 0,
            expires_at: None,
            generation: 1,
            description: String::new(),
        }
    }

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let user = account(AccountKind::User, hash.clone());
        assert!(verify_secret(&user, "correct horse"));
        assert!(!verify_secret(&user, "correct horsE"));
        assert!(!verify_secret(&user, ""));
        // The longest secret is checked; one byte more is refused without hashing.
        let longest = "a".repeat(MAX_SECRET_LEN);
        let user = account(AccountKind::User, hash_password(&longest).unwrap());
        assert!(verify_secret(&user, &longest));
        let robot = account(AccountKind::Robot, hash_robot_secret(&longest));
        assert!(verify_secret(&robot, &longest));
        let too_long = "a".repeat(MAX_SECRET_LEN + 1);
        let robot = account(AccountKind::Robot, hash_robot_secret(&too_long));
        assert!(!verify_secret(&robot, &too_long));
        assert_ne!(hash_password("correct horse").unwrap(), hash, "salted");
        assert!(hash_password("short").is_err());
    }

    #[test]
    fn robot_secrets_verify_only_themselves() {
        let secret = generate_robot_secret();
        assert!(secret.starts_with("wharf_") && secret.len() > 40);
        let robot = account(AccountKind::Robot, hash_robot_secret(&secret));
        assert!(verify_secret(&robot, &secret));
        assert!(!verify_secret(&robot, &generate_robot_secret()));
        // A user's PHC string presented as a robot secret, or a garbage record, never matches.
        let garbage = account(AccountKind::User, "not a phc string".into());
        assert!(!verify_secret(&garbage, "whatever1"));
    }
}
