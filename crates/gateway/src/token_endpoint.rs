//! `/auth/token`: the Docker token endpoint.
//!
//! - `GET` with Basic credentials (or none, for an anonymous token): `scope` (repeatable),
//!   `service`, `offline_token=true` for a refresh token too. What docker and podman do at login.
//! - `POST` with an OAuth2 form: `grant_type=password` (`username`, `password`) or
//!   `grant_type=refresh_token` (`refresh_token`), `scope` (space-separated), `access_type=offline`
//!   for a refresh token. What docker does with a stored login.
//!
//! A token's `access` lists exactly what was asked for and is allowed: each requested action
//! that the policies grant the account on that repository, nothing more (a request for more is
//! not an error, as the spec says; the registry then answers the call that needs it with 401 or
//! 403). `registry:catalog:*` is granted to any account.

use std::net::IpAddr;

use auth::{ActionSet, Claims, Principal, ResourceAccess, Scope, TokenUse};
use axum::body::{to_bytes, Body};
use axum::http::request::Parts;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oci_model::{ErrorCode, RepositoryName};
use serde_json::json;

use crate::access::{credentials, now_unix, AuthGate, Credentials, Snapshot};
use crate::audit::Event;
use crate::error::ApiError;
use crate::Gateway;

/// Largest OAuth2 form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub(crate) async fn handle(
    gateway: &Gateway,
    gate: &AuthGate,
    parts: &Parts,
    body: Body,
    client: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let (method, headers) = (&parts.method, &parts.headers);
    let form: Vec<(String, String)> = match *method {
        Method::GET => parse_form(parts.uri.query().unwrap_or("").as_bytes()),
        Method::POST => {
            let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
                bad_request(format!(
                    "the token request form exceeds {MAX_FORM_BYTES} bytes"
                ))
            })?;
            parse_form(&bytes)
        }
        _ => {
            return Err(ApiError::method_not_allowed(method.as_str(), "GET, POST"));
        }
    };
    let get = |key: &str| {
        form.iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    };
    let scopes = Scope::parse_all(
        form.iter()
            .filter(|(name, _)| name == "scope")
            .map(|(_, value)| value.as_str()),
    );
    let audit = |principal: &str, outcome: &str| {
        gateway.audit.record(Event {
            actor: principal,
            client,
            action: "login",
            repository: "",
            target: outcome,
            status: 0,
        });
    };

    let (principal, snapshot, offline, presented_refresh) = if *method == Method::POST {
        match get("grant_type") {
            Some("password") => {
                let user = get("username").unwrap_or("");
                let password = get("password").unwrap_or("");
                match gate.login(user, password, client).await {
                    Ok((principal, snapshot)) => (
                        principal,
                        snapshot,
                        get("access_type") == Some("offline"),
                        None,
                    ),
                    Err(failure) => {
                        audit(user, "failed");
                        return Err(failure.into_api_error(gate, headers));
                    }
                }
            }
            Some("refresh_token") => {
                let token = get("refresh_token").unwrap_or("");
                let snapshot = gate.snapshot().ok_or_else(|| {
                    ApiError::unavailable("access-control state is not loaded yet")
                })?;
                let principal = refresh_principal(gate, &snapshot, token).map_err(|message| {
                    audit("unknown", "refresh refused");
                    ApiError::new(ErrorCode::Unauthorized, message)
                })?;
                (principal, snapshot, false, Some(token.to_owned()))
            }
            other => {
                return Err(bad_request(format!(
                    "grant_type must be password or refresh_token, not {:?}",
                    other.unwrap_or("")
                )))
            }
        }
    } else {
        let offline = get("offline_token") == Some("true");
        match credentials(headers)
            .map_err(|message| gate.unauthorized(headers, &message, None, None))?
        {
            Credentials::None => {
                let snapshot = gate.snapshot().ok_or_else(|| {
                    ApiError::unavailable("access-control state is not loaded yet")
                })?;
                (Principal::Anonymous, snapshot, false, None)
            }
            Credentials::Basic { user, secret } => match gate.login(&user, &secret, client).await {
                Ok((principal, snapshot)) => (principal, snapshot, offline, None),
                Err(failure) => {
                    audit(&user, "failed");
                    return Err(failure.into_api_error(gate, headers));
                }
            },
            Credentials::Bearer(_) => {
                return Err(gate.unauthorized(
                    headers,
                    "the token endpoint takes Basic credentials or an OAuth2 form",
                    None,
                    None,
                ))
            }
        }
    };

    let access = grant(&snapshot, &principal, &scopes);
    let now = now_unix();
    let config = &gate.config;
    let generation = match &principal {
        Principal::Account { name, .. } => snapshot
            .state
            .account(name)
            .map_or(0, |account| account.generation),
        Principal::Anonymous => 0,
    };
    let mut claims = Claims::new(
        &config.issuer,
        principal.name(),
        &config.service,
        now,
        config.token_ttl_secs,
        TokenUse::Access,
    );
    claims.access = access;
    claims.gen = generation;
    let token = snapshot.keys.sign(&claims).map_err(ApiError::internal)?;
    let granted_scope = claims
        .access
        .iter()
        .map(|entry| {
            format!(
                "{}:{}:{}",
                entry.resource_type,
                entry.name,
                entry.actions.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut body = json!({
        "token": token,
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": config.token_ttl_secs,
        "issued_at": rfc3339(now),
        "scope": granted_scope,
    });
    let refresh = match (presented_refresh, offline, &principal) {
        (Some(presented), _, _) => Some(presented),
        (None, true, Principal::Account { .. }) => {
            let mut refresh = Claims::new(
                &config.issuer,
                principal.name(),
                &config.service,
                now,
                config.refresh_token_ttl_secs,
                TokenUse::Refresh,
            );
            refresh.gen = generation;
            Some(snapshot.keys.sign(&refresh).map_err(ApiError::internal)?)
        }
        _ => None,
    };
    if let Some(refresh) = refresh {
        body["refresh_token"] = json!(refresh);
    }
    audit(principal.name(), "token issued");
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The principal of a valid refresh token whose account is unchanged.
fn refresh_principal(
    gate: &AuthGate,
    snapshot: &Snapshot,
    token: &str,
) -> Result<Principal, String> {
    let claims = snapshot
        .keys
        .verify(
            token,
            &gate.config.issuer,
            &gate.config.service,
            TokenUse::Refresh,
            now_unix(),
        )
        .map_err(|error| format!("refresh token refused: {error}"))?;
    match gate.token_principal(snapshot, &claims)? {
        Principal::Anonymous => Err("refresh token refused: it names no account".into()),
        principal => Ok(principal),
    }
}

/// The granted subset of `scopes`.
pub(crate) fn grant(
    snapshot: &Snapshot,
    principal: &Principal,
    scopes: &[Scope],
) -> Vec<ResourceAccess> {
    let is_account = matches!(principal, Principal::Account { .. });
    let mut repositories: Vec<(&str, ActionSet)> = Vec::new();
    let mut catalog = false;
    for scope in scopes {
        let requested = ActionSet::parse_docker_all(scope.actions.iter().map(String::as_str));
        match scope.resource_type.as_str() {
            "repository" if RepositoryName::parse(&scope.name).is_ok() => {
                let granted =
                    requested.intersection(snapshot.authorizer.allowed(principal, &scope.name));
                match repositories
                    .iter_mut()
                    .find(|(name, _)| *name == scope.name)
                {
                    Some((_, actions)) => *actions = actions.union(granted),
                    None => repositories.push((&scope.name, granted)),
                }
            }
            "registry" if scope.name == "catalog" => {
                catalog |= is_account && scope.actions.iter().any(|a| a == "*");
            }
            _ => {}
        }
    }
    let entry = |resource_type: &str, name: &str, actions: Vec<&str>| ResourceAccess {
        resource_type: resource_type.to_owned(),
        name: name.to_owned(),
        actions: actions.into_iter().map(str::to_owned).collect(),
    };
    let mut access: Vec<ResourceAccess> = repositories
        .into_iter()
        .filter(|(_, actions)| !actions.is_empty())
        .map(|(name, actions)| entry("repository", name, actions.names()))
        .collect();
    if catalog {
        access.push(entry("registry", "catalog", vec!["*"]));
    }
    access
}

pub(crate) fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(axum::http::StatusCode::BAD_REQUEST)
}

/// `2026-11-27T12:05:06Z` for unix seconds `secs`.
fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_781_106), "2026-11-27T12:05:06Z");
    }
}
