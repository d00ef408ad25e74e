//! Access control at the gateway: [`AuthGate`] keeps the accounts, policies and keys of the meta
//! state in memory (polled by version, refreshed at once after a failed login), authenticates
//! each request (Bearer token, Basic, or none) and decides whether it may do what its route
//! needs. Nothing here calls meta on the request path; a Basic login costs one argon2id
//! verification, remembered per (account, generation).
//!
//! Answers follow the Docker token flow: no or bad credentials, or a token whose scope is too
//! narrow for something the account may do, get 401 with a `WWW-Authenticate: Bearer` challenge
//! naming the scope to ask for; an account that may not do it gets 403 DENIED.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth::{ActionSet, Authorizer, Claims, FailureLimiter, Principal, TokenKeys, TokenUse};
use axum::http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::HeaderMap;
use base64::Engine;
use cluster_api::{Account, AuthChange, AuthState, MetaApi, MetaError};
use oci_model::{ErrorCode, RepositoryName};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::ApiError;

/// The access-control state of one version, ready to use.
pub(crate) struct Snapshot {
    pub state: AuthState,
    pub authorizer: Authorizer,
    pub keys: TokenKeys,
}

impl Snapshot {
    pub fn new(state: AuthState) -> Snapshot {
        let (authorizer, problems) = Authorizer::new(&state);
        for problem in problems {
            tracing::warn!(%problem, "a policy grants nothing");
        }
        let keys = TokenKeys::new(&state.keys);
        Snapshot {
            state,
            authorizer,
            keys,
        }
    }
}

/// Who made a request, and what their credentials allow.
pub(crate) struct Caller {
    pub principal: Principal,
    /// The access token's claims, when the caller presented one: grants are then limited to it.
    pub token: Option<Claims>,
    pub snapshot: Arc<Snapshot>,
}

impl Caller {
    /// What the caller may do on `repo` now: the policies' grant, narrowed to the token's.
    /// Nothing for a name that is not a valid repository name.
    pub fn allowed(&self, repo: &str) -> ActionSet {
        if RepositoryName::parse(repo).is_err() {
            return ActionSet::NONE;
        }
        let policy = self.snapshot.authorizer.allowed(&self.principal, repo);
        match &self.token {
            Some(claims) => policy.intersection(claims.granted("repository", repo)),
            None => policy,
        }
    }

    /// Whether `repo` is in this caller's catalog: its account's policy lets it pull there.
    /// The token's per-repository grants do not narrow it: a catalog token
    /// (`registry:catalog:*`) names no repository, and what it grants is listing the names the
    /// account may see.
    pub fn lists(&self, repo: &str) -> bool {
        RepositoryName::parse(repo).is_ok()
            && self
                .snapshot
                .authorizer
                .allowed(&self.principal, repo)
                .contains(ActionSet::PULL)
    }

    pub fn is_account(&self) -> bool {
        matches!(self.principal, Principal::Account { .. })
    }
}

/// What a route needs.
pub(crate) enum Need {
    /// `GET /v2/`: any valid credentials (an anonymous token included).
    Login,
    /// `/v2/_catalog`.
    Catalog,
    /// Actions on one repository (the name as it came in the path).
    Repository { name: String, actions: ActionSet },
}

/// Presented credentials.
pub(crate) enum Credentials {
    None,
    Basic { user: String, secret: String },
    Bearer(String),
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Reads the `Authorization` header. An unknown scheme or a malformed value is a 401.
pub(crate) fn credentials(headers: &HeaderMap) -> Result<Credentials, String> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text".to_owned())?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Credentials::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| "the Basic credentials are not base64 of user:password".to_owned())?;
        let (user, secret) = decoded
            .split_once(':')
            .ok_or_else(|| "the Basic credentials are not user:password".to_owned())?;
        return Ok(Credentials::Basic {
            user: user.to_owned(),
            secret: secret.to_owned(),
        });
    }
    Err("unsupported Authorization scheme (use Bearer or Basic)".to_owned())
}

/// The gateway's access control; present only when auth is enabled.
pub(crate) struct AuthGate {
    pub config: AuthConfig,
    meta: Arc<dyn MetaApi>,
    current: RwLock<Option<Arc<Snapshot>>>,
    limiter: FailureLimiter,
    /// sha256(name, NUL, secret) -> generation it was verified at: argon2 runs once per login.
    verified: Mutex<std::collections::HashMap<[u8; 32], (String, u64)>>,
    last_forced_refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Bounds concurrent argon2 checks: each holds 19 MiB and a core for tens of milliseconds,
    /// so a flood of logins (from many addresses, past the limiter) queues instead of exhausting
    /// memory and the blocking pool.
    password_checks: tokio::sync::Semaphore,
}

/// Concurrent password checks per gateway.
const PASSWORD_CHECKS: usize = 4;

/// Logins remembered at most (then forgotten all at once; each costs one more argon2 run).
const MAX_VERIFIED: usize = 10_000;

impl AuthGate {
    pub fn new(config: AuthConfig, meta: Arc<dyn MetaApi>) -> AuthGate {
        let limiter = FailureLimiter::new(
            config.login_burst,
            Duration::from_secs(config.login_refill_secs),
        );
        AuthGate {
            config,
            meta,
            current: RwLock::new(None),
            limiter,
            verified: Mutex::new(std::collections::HashMap::new()),
            last_forced_refresh: tokio::sync::Mutex::new(None),
            password_checks: tokio::sync::Semaphore::new(PASSWORD_CHECKS),
        }
    }

    /// Keeps the snapshot fresh until the gate is dropped.
    pub fn spawn_refresher(gate: &Arc<AuthGate>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: access-control state will load on first use");
            return;
        };
        let weak = Arc::downgrade(gate);
        let interval = Duration::from_millis(gate.config.refresh_interval_ms);
        runtime.spawn(async move {
            loop {
                let Some(gate) = weak.upgrade() else { break };
                if let Err(error) = gate.refresh().await {
                    tracing::warn!(%error, "could not refresh the access-control state");
                }
                drop(gate);
                tokio::time::sleep(interval).await;
            }
        });
    }

    pub fn meta(&self) -> &dyn MetaApi {
        &*self.meta
    }

    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.read().clone()
    }

    /// Fetches the state if its version moved; creates the first signing key when there is none.
    pub async fn refresh(&self) -> Result<(), MetaError> {
        let known = self.snapshot().map(|snapshot| snapshot.state.version);
        if let Some(state) = self.meta.auth_state(known).await? {
            let needs_key = state.keys.is_empty();
            tracing::debug!(version = state.version, "access-control state loaded");
            *self.current.write() = Some(Arc::new(Snapshot::new(state)));
            if needs_key {
                let key = auth::generate_signing_key(now_unix());
                let change = AuthChange::AddSigningKey {
                    key,
                    only_if_none: true,
                };
                self.meta.change_auth(change).await?;
                if let Some(state) = self.meta.auth_state(None).await? {
                    *self.current.write() = Some(Arc::new(Snapshot::new(state)));
                }
                tracing::info!("created the first token signing key");
            }
        }
        Ok(())
    }

    /// A refresh on demand (an unknown account or a wrong secret may be a change this gateway
    /// has not seen yet), at most once a second.
    async fn refresh_now(&self) -> Option<Arc<Snapshot>> {
        let mut last = self.last_forced_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return self.snapshot();
        }
        *last = Some(Instant::now());
        if let Err(error) = self.refresh().await {
            tracing::warn!(%error, "could not refresh the access-control state");
        }
        self.snapshot()
    }

    async fn loaded(&self) -> Result<Arc<Snapshot>, ApiError> {
        match self.snapshot() {
            Some(snapshot) => Ok(snapshot),
            None => self
                .refresh_now()
                .await
                .ok_or_else(|| ApiError::unavailable("access-control state is not loaded yet")),
        }
    }

    /// Authenticates a request. `client` keys the failed-login limiter.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        let snapshot = self.loaded().await?;
        let credentials = credentials(headers).map_err(|message| {
            self.unauthorized(headers, &message, None, Some("invalid_request"))
        })?;
        match credentials {
            Credentials::None => Ok(Caller {
                principal: Principal::Anonymous,
                token: None,
                snapshot,
            }),
            Credentials::Bearer(token) => {
                let claims = snapshot
                    .keys
                    .verify(
                        &token,
                        &self.config.issuer,
                        &self.config.service,
                        TokenUse::Access,
                        now_unix(),
                    )
                    .map_err(|error| {
                        self.unauthorized(headers, &error.to_string(), None, Some("invalid_token"))
                    })?;
                let principal = self
                    .token_principal(&snapshot, &claims)
                    .map_err(|message| {
                        self.unauthorized(headers, &message, None, Some("invalid_token"))
                    })?;
                Ok(Caller {
                    principal,
                    token: Some(claims),
                    snapshot,
                })
            }
            Credentials::Basic { user, secret } => {
                let (principal, snapshot) = self
                    .login(&user, &secret, client)
                    .await
                    .map_err(|failure| failure.into_api_error(self, headers))?;
                Ok(Caller {
                    principal,
                    token: None,
                    snapshot,
                })
            }
        }
    }

    /// The principal a verified token speaks for, if its account still exists, has not expired
    /// and has not changed its secret since.
    pub fn token_principal(
        &self,
        snapshot: &Snapshot,
        claims: &Claims,
    ) -> Result<Principal, String> {
        if claims.sub == Principal::Anonymous.name() {
            return Ok(Principal::Anonymous);
        }
        let account = snapshot
            .state
            .account(&claims.sub)
            .ok_or_else(|| format!("account {} no longer exists", claims.sub))?;
        if account.generation != claims.gen {
            return Err("the account's credentials changed since this token was issued".into());
        }
        if !account.active_at(now_unix()) {
            return Err(format!("account {} has expired", account.name));
        }
        Ok(principal_of(account))
    }

    /// Checks a name and secret, rate-limited by client address and account.
    pub async fn login(
        &self,
        user: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<(Principal, Arc<Snapshot>), LoginFailure> {
        let keys = limiter_keys(user, client);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        if let Some(wait) = self.limiter.blocked(&keys, Instant::now()) {
            return Err(LoginFailure::Throttled(wait));
        }
        let snapshot = self.loaded().await.map_err(LoginFailure::Unavailable)?;
        if let Some(principal) = self.check_secret(&snapshot, user, secret).await {
            return Ok((principal, snapshot));
        }
        // Perhaps the account or its new secret has not reached this gateway yet.
        if let Some(fresh) = self.refresh_now().await {
            if fresh.state.version != snapshot.state.version {
                if let Some(principal) = self.check_secret(&fresh, user, secret).await {
                    return Ok((principal, fresh));
                }
            }
        }
        self.limiter.failed(&keys, Instant::now());
        Err(LoginFailure::Invalid)
    }

    async fn check_secret(
        &self,
        snapshot: &Snapshot,
        user: &str,
        secret: &str,
    ) -> Option<Principal> {
        let Some(account) = snapshot.state.account(user) else {
            // As slow as a real check, so response times do not tell which names exist.
            let _permit = self.password_checks.acquire().await.ok()?;
            let presented = secret.to_owned();
            let _ = tokio::task::spawn_blocking(move || {
                auth::verify_secret(unknown_account(), &presented)
            })
            .await;
            return None;
        };
        if !account.active_at(now_unix()) {
            return None;
        }
        let key = verified_key(user, secret);
        let known = self.verified.lock().get(&key).cloned();
        if known.is_some_and(|(name, generation)| {
            name == account.name && generation == account.generation
        }) {
            return Some(principal_of(account));
        }
        let record = account.clone();
        let presented = secret.to_owned();
        let permit = self.password_checks.acquire().await.ok()?;
        let ok = tokio::task::spawn_blocking(move || auth::verify_secret(&record, &presented))
            .await
            .unwrap_or(false);
        drop(permit);
        if !ok {
            return None;
        }
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_VERIFIED {
            verified.clear();
        }
        verified.insert(key, (account.name.clone(), account.generation));
        Some(principal_of(account))
    }

    /// Decides whether `caller` may do what `need` asks.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
        need: &Need,
    ) -> Result<(), ApiError> {
        match need {
            Need::Login => {
                if caller.token.is_some() || caller.is_account() {
                    Ok(())
                } else {
                    Err(self.unauthorized(headers, "authentication required", None, None))
                }
            }
            Need::Catalog => {
                let scope = "registry:catalog:*";
                let granted = match &caller.token {
                    Some(claims) => !claims.granted("registry", "catalog").is_empty(),
                    None => caller.is_account(),
                };
                if granted && caller.is_account() {
                    Ok(())
                } else if caller.is_account() {
                    Err(self.unauthorized(
                        headers,
                        "the token does not cover the catalog",
                        Some(scope.to_owned()),
                        Some("insufficient_scope"),
                    ))
                } else {
                    Err(self.unauthorized(
                        headers,
                        "authentication required",
                        Some(scope.to_owned()),
                        None,
                    ))
                }
            }
            Need::Repository { name, actions } => {
                if caller.allowed(name).contains(*actions) {
                    return Ok(());
                }
                let mut wanted = *actions;
                if wanted.contains(ActionSet::PUSH) {
                    wanted = wanted.union(ActionSet::PULL);
                }
                let valid_name = RepositoryName::parse(name).is_ok();
                // The name is the path's, not validated yet: in the challenge only when valid,
                // since a quote or comma in it would add parameters (a realm) a client obeys.
                let scope =
                    valid_name.then(|| format!("repository:{name}:{}", wanted.names().join(",")));
                let policy = if valid_name {
                    caller.snapshot.authorizer.allowed(&caller.principal, name)
                } else {
                    ActionSet::NONE
                };
                if caller.token.is_some() && policy.contains(*actions) {
                    return Err(self.unauthorized(
                        headers,
                        "the token's scope does not cover this request",
                        scope,
                        Some("insufficient_scope"),
                    ));
                }
                if !caller.is_account() {
                    return Err(self.unauthorized(headers, "authentication required", scope, None));
                }
                Err(denied(name, *actions))
            }
        }
    }

    /// 401 UNAUTHORIZED with the Bearer challenge (and the scope to ask for, when known).
    pub fn unauthorized(
        &self,
        headers: &HeaderMap,
        message: &str,
        scope: Option<String>,
        error: Option<&str>,
    ) -> ApiError {
        let mut challenge = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            self.config.service
        );
        if let Some(scope) = &scope {
            challenge.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        let mut api_error = ApiError::new(ErrorCode::Unauthorized, message)
            .with_header(WWW_AUTHENTICATE, &challenge);
        if let Some(scope) = scope {
            api_error = api_error.with_detail(json!({ "scope": scope }));
        }
        api_error
    }

    /// The token endpoint's URL.
    pub fn realm(&self, headers: &HeaderMap) -> String {
        if let Some(realm) = &self.config.realm {
            return realm.clone();
        }
        let host = headers
            .get(HOST)
            .and_then(|host| host.to_str().ok())
            .filter(|host| {
                host.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let scheme = if self.config.https { "https" } else { "http" };
        format!("{scheme}://{host}/auth/token")
    }
}

/// 403 DENIED for an authenticated caller without the needed actions.
pub(crate) fn denied(name: &str, actions: ActionSet) -> ApiError {
    ApiError::new(
        ErrorCode::Denied,
        format!(
            "requested access to the resource is denied ({} on {name})",
            actions.names().join(",")
        ),
    )
}

/// Why a login failed.
pub(crate) enum LoginFailure {
    Invalid,
    Throttled(Duration),
    Unavailable(ApiError),
}

impl LoginFailure {
    pub fn into_api_error(self, gate: &AuthGate, headers: &HeaderMap) -> ApiError {
        match self {
            LoginFailure::Invalid => {
                gate.unauthorized(headers, "invalid username or password", None, None)
            }
            LoginFailure::Throttled(wait) => ApiError::new(
                ErrorCode::TooManyRequests,
                "too many failed logins; try again later",
            )
            .with_header(RETRY_AFTER, &wait.as_secs().max(1).to_string()),
            LoginFailure::Unavailable(error) => error,
        }
    }
}

/// A user record no password matches, checked for names that do not exist.
fn unknown_account() -> &'static Account {
    static UNKNOWN: std::sync::OnceLock<Account> = std::sync::OnceLock::new();
    UNKNOWN.get_or_init(|| Account {
        name: String::new(),
        kind: cluster_api::AccountKind::User,
        secret_hash: auth::hash_password(&auth::generate_robot_secret()).unwrap_or_default(),
        admin: false,
        created_at: 0,
        expires_at: None,
        generation: 0,
        description: String::new(),
    })
}

fn principal_of(account: &Account) -> Principal {
    Principal::Account {
        name: account.name.clone(),
        admin: account.admin,
    }
}

fn limiter_keys(user: &str, client: Option<IpAddr>) -> Vec<String> {
    let mut keys = vec![format!(
        "account:{}",
        user.chars().take(64).collect::<String>()
    )];
    if let Some(client) = client {
        keys.push(format!("client:{client}"));
    }
    keys
}

fn verified_key(user: &str, secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(user.as_bytes());
    hasher.update([0]);
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use cluster_api::fake::MemMeta;

    use super::*;

    fn headers(pairs: &[(axum::http::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn authorization_headers_parse_or_are_refused() {
        assert!(matches!(credentials(&headers(&[])), Ok(Credentials::None)));
        let basic = headers(&[(AUTHORIZATION, "Basic Y2k6czpl")]); // "ci:s:e"
        match credentials(&basic) {
            Ok(Credentials::Basic { user, secret }) => {
                assert_eq!((user.as_str(), secret.as_str()), ("ci", "s:e"))
            }
            _ => panic!("basic credentials"),
        }
        assert!(matches!(
            credentials(&headers(&[(AUTHORIZATION, "bearer abc")])),
            Ok(Credentials::Bearer(token)) if token == "abc"
        ));
        for bad in ["Basic !!!", "Basic Y2k=", "Digest x", "Bearer", "Bearer   "] {
            assert!(
                credentials(&headers(&[(AUTHORIZATION, bad)])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn realms_come_from_config_or_a_sane_host() {
        let meta: Arc<dyn MetaApi> = Arc::new(MemMeta::new());
        let mut config = AuthConfig::default();
        let gate = AuthGate::new(config.clone(), meta.clone());
        let host = |value: &str| headers(&[(HOST, value)]);
        assert_eq!(
            gate.realm(&host("reg.example:5000")),
            "http://reg.example:5000/auth/token"
        );
        // A Host that could inject into the challenge header falls back.
        assert_eq!(
            gate.realm(&host("evil\",x=\"y")),
            "http://localhost/auth/token"
        );
        config.https = true;
        let gate = AuthGate::new(config.clone(), meta.clone());
        assert_eq!(
            gate.realm(&host("[::1]:443")),
            "https://[::1]:443/auth/token"
        );
        config.realm = Some("https://auth.example/token".into());
        let gate = AuthGate::new(config, meta);
        assert_eq!(gate.realm(&host("x")), "https://auth.example/token");
    }

    /// Found by the fuzz target `auth_headers` (fuzz/regressions/auth_headers/): a repository
    /// name from the path went into the challenge unvalidated, so `a",realm="http://evil...`
    /// gave the challenge a second realm, which a client's parser keeps.
    #[test]
    fn a_name_from_the_path_cannot_add_to_the_challenge() {
        let gate = AuthGate::new(AuthConfig::default(), Arc::new(MemMeta::new()));
        let anonymous = Caller {
            principal: Principal::Anonymous,
            token: None,
            snapshot: Arc::new(Snapshot::new(AuthState::default())),
        };
        let challenge = |name: &str| {
            let need = Need::Repository {
                name: name.to_owned(),
                actions: ActionSet::PULL,
            };
            let refusal = gate.authorize(&HeaderMap::new(), &anonymous, &need);
            let response = axum::response::IntoResponse::into_response(refusal.unwrap_err());
            response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            challenge("a\",realm=\"http://evil.example/token"),
            "Bearer realm=\"http://localhost/auth/token\",service=\"wharf\""
        );
        assert_eq!(
            challenge("team/app"),
            "Bearer realm=\"http://localhost/auth/token\",service=\"wharf\",\
             scope=\"repository:team/app:pull\""
        );
    }

    #[tokio::test]
    async fn the_first_refresh_creates_one_signing_key() {
        let meta: Arc<dyn MetaApi> = Arc::new(MemMeta::new());
        let first = AuthGate::new(AuthConfig::default(), meta.clone());
        let second = AuthGate::new(AuthConfig::default(), meta.clone());
        first.refresh().await.unwrap();
        second.refresh().await.unwrap();
        let state = meta.auth_state(None).await.unwrap().unwrap();
        assert_eq!(state.keys.len(), 1, "two gateways agree on one key");
        assert!(first.snapshot().unwrap().keys.can_sign());
        assert!(second.snapshot().unwrap().keys.can_sign());
    }
}
