//! The admin HTTP API, under `/admin/v1/`, for registry administrators (accounts with `admin`),
//! authenticated like any request (Basic or a Bearer token). JSON in and out; errors in the OCI
//! shape. Served only when auth is enabled.
//!
//! ```text
//! GET    /admin/v1/accounts                    users and robots (never their secrets)
//! POST   /admin/v1/users                       {"name", "password", "admin"?}
//! PUT    /admin/v1/users/<name>/password       {"password"}
//! POST   /admin/v1/robots                      {"name", "expires_in_secs"?, "description"?}
//!                                              -> {"name", "secret"}: the secret, shown once
//! DELETE /admin/v1/accounts/<name>             removes a user, revokes a robot
//! GET    /admin/v1/policies
//! POST   /admin/v1/policies                    {"id"?, "subject", "repositories", "actions"}
//! DELETE /admin/v1/policies/<id>
//! POST   /admin/v1/keys/rotate                 a new token signing key
//! GET    /admin/v1/placement                   {"epoch", "rules"}: data-residency rules
//! PUT    /admin/v1/placement/<id>              {"repositories", "zones", "replicas"?}
//! DELETE /admin/v1/placement/<id>
//! GET    /admin/v1/placement/status            blobs compliant / pending / impossible
//! GET    /admin/v1/proxies                     {"proxies"}: pull-through cache upstreams
//!                                              (never their passwords)
//! PUT    /admin/v1/proxies/<id>                {"url", "prefix", "tag_ttl_secs"?, "cache_ttl_secs"?,
//!                                              "username"?, "password"?, "mirror"?}
//! DELETE /admin/v1/proxies/<id>
//! GET    /admin/v1/proxies/status              each upstream probed (GET /v2/), its usage
//! GET    /admin/v1/replication                 {"rules"} (never their passwords)
//! PUT    /admin/v1/replication/<id>            {"mode": "push"|"pull", "url", "repositories",
//!                                              "tags"?, "deletes"?, "username"?, "password"?}
//! DELETE /admin/v1/replication/<id>
//! GET    /admin/v1/replication/status          each rule's last pass
//! ```

use std::net::IpAddr;

use axum::body::{to_bytes, Body};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cluster_api::{
    AuthChange, MetaError, PlacementRule, PlacementStatus, Policy, ProxyUpstream, ReplicationMode,
    ReplicationRule, DEFAULT_CACHE_TTL_SECS, DEFAULT_TAG_TTL_SECS,
};
use oci_model::ErrorCode;
use serde::Deserialize;
use serde_json::json;

use crate::access::{now_unix, AuthGate};
use crate::audit::Event;
use crate::error::ApiError;
use crate::token_endpoint::bad_request;
use crate::Gateway;

const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRobot {
    name: String,
    expires_in_secs: Option<u64>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQuota {
    bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPlacementRule {
    repositories: String,
    zones: Vec<String>,
    replicas: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProxy {
    url: String,
    prefix: String,
    tag_ttl_secs: Option<u64>,
    cache_ttl_secs: Option<u64>,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    mirror: bool,
    /// PEM certificates the upstream's TLS certificate may chain to.
    ca_pem: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReplicationRule {
    mode: ReplicationMode,
    url: String,
    repositories: String,
    tags: Option<String>,
    #[serde(default)]
    deletes: bool,
    username: Option<String>,
    password: Option<String>,
    /// PEM certificates the remote's TLS certificate may chain to.
    ca_pem: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPolicy {
    id: Option<String>,
    subject: String,
    repositories: String,
    actions: Vec<String>,
}

pub(crate) async fn handle(
    gateway: &Gateway,
    gate: &AuthGate,
    parts: &Parts,
    body: Body,
    client: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let (method, path, headers) = (&parts.method, parts.uri.path(), &parts.headers);
    let caller = gate.authenticate(headers, client).await?;
    if !caller.principal.is_admin() {
        if caller.is_account() {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "the admin API is for registry administrators",
            ));
        }
        return Err(gate.unauthorized(headers, "authentication required", None, None));
    }
    let actor = caller.principal.name().to_owned();
    let rest = path.strip_prefix("/admin/v1/").unwrap_or("");
    let segments: Vec<&str> = rest.split('/').collect();
    let body = || async {
        to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| bad_request(format!("the body exceeds {MAX_BODY_BYTES} bytes")))
    };
    let (response, audit_target) = match (method.clone(), segments.as_slice()) {
        (Method::GET, ["accounts"]) => {
            let accounts: Vec<_> = caller
                .snapshot
                .state
                .accounts
                .iter()
                .map(auth::account_view)
                .collect();
            (Json(json!({ "accounts": accounts })).into_response(), None)
        }
        (Method::GET, ["policies"]) => {
            let policies: Vec<_> = caller
                .snapshot
                .state
                .policies
                .iter()
                .map(auth::policy_view)
                .collect();
            (Json(json!({ "policies": policies })).into_response(), None)
        }
        (Method::POST, ["users"]) => {
            let new: NewUser = parse(&body().await?)?;
            let password = new.password;
            let (name, admin) = (new.name.clone(), new.admin);
            let account = tokio::task::spawn_blocking(move || {
                auth::new_user(&name, &password, admin, now_unix())
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(bad_request)?;
            let view = auth::account_view(&account);
            change(
                gate,
                AuthChange::PutAccount {
                    account,
                    replace: false,
                },
            )
            .await?;
            (created(view), Some(format!("user {} created", new.name)))
        }
        (Method::PUT, ["users", name, "password"]) => {
            let new: NewPassword = parse(&body().await?)?;
            let existing = caller
                .snapshot
                .state
                .account(name)
                .filter(|account| account.kind == cluster_api::AccountKind::User)
                .cloned()
                .ok_or_else(|| not_found(format!("user {name} does not exist")))?;
            let password = new.password;
            let account = tokio::task::spawn_blocking(move || {
                auth::new_user(
                    &existing.name,
                    &password,
                    existing.admin,
                    existing.created_at,
                )
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(bad_request)?;
            change(
                gate,
                AuthChange::PutAccount {
                    account,
                    replace: true,
                },
            )
            .await?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("user {name} password changed")),
            )
        }
        (Method::POST, ["robots"]) => {
            let new: NewRobot = parse(&body().await?)?;
            let now = now_unix();
            let expires_at = new.expires_in_secs.map(|secs| now.saturating_add(secs));
            let (account, secret) = auth::new_robot(&new.name, expires_at, &new.description, now)
                .map_err(bad_request)?;
            let mut view = auth::account_view(&account);
            change(
                gate,
                AuthChange::PutAccount {
                    account,
                    replace: false,
                },
            )
            .await?;
            view["secret"] = json!(secret);
            (created(view), Some(format!("robot {} created", new.name)))
        }
        (Method::DELETE, ["accounts", name]) => {
            change(
                gate,
                AuthChange::DeleteAccount {
                    name: (*name).to_owned(),
                },
            )
            .await?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("account {name} removed")),
            )
        }
        (Method::POST, ["policies"]) => {
            let new: NewPolicy = parse(&body().await?)?;
            let policy = policy_from(new)?;
            let view = auth::policy_view(&policy);
            let id = policy.id.clone();
            change(gate, AuthChange::PutPolicy(policy)).await?;
            (created(view), Some(format!("policy {id} set")))
        }
        (Method::DELETE, ["policies", id]) => {
            change(
                gate,
                AuthChange::DeletePolicy {
                    id: (*id).to_owned(),
                },
            )
            .await?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("policy {id} removed")),
            )
        }
        (Method::POST, ["keys", "rotate"]) => {
            let key = auth::generate_signing_key(now_unix());
            let kid = key.kid.clone();
            change(
                gate,
                AuthChange::AddSigningKey {
                    key,
                    only_if_none: false,
                },
            )
            .await?;
            (
                created(json!({ "kid": kid })),
                Some(format!("signing key {kid} added")),
            )
        }
        (Method::GET, ["usage"]) => {
            let usage = gateway.meta.usage(None).await?;
            (Json(json!({ "namespaces": usage })).into_response(), None)
        }
        (Method::GET, ["usage", namespace]) => {
            let usage = gateway.meta.usage(Some(namespace)).await?;
            (Json(json!({ "namespaces": usage })).into_response(), None)
        }
        (Method::PUT, ["quotas", namespace]) => {
            let quota: NewQuota = parse(&body().await?)?;
            gateway.meta.set_quota(namespace, Some(quota.bytes)).await?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("quota of {namespace} set to {} bytes", quota.bytes)),
            )
        }
        (Method::DELETE, ["quotas", namespace]) => {
            gateway.meta.set_quota(namespace, None).await?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("quota of {namespace} removed")),
            )
        }
        (Method::GET, ["placement"]) => {
            let map = gateway.meta.cluster_map().await?;
            let body = json!({ "epoch": map.epoch, "rules": map.placement });
            (Json(body).into_response(), None)
        }
        (Method::GET, ["placement", "status"]) => {
            let status = PlacementStatus::of(gateway.meta.as_ref()).await?;
            (Json(status).into_response(), None)
        }
        (Method::PUT, ["placement", id]) => {
            let new: NewPlacementRule = parse(&body().await?)?;
            let rule = PlacementRule {
                id: (*id).to_owned(),
                repositories: new.repositories,
                zones: new.zones,
                replicas: new.replicas,
            };
            let body = json!(rule);
            gateway
                .meta
                .put_placement_rule(rule)
                .await
                .map_err(invalid_is_bad_request)?;
            (
                (StatusCode::OK, Json(body)).into_response(),
                Some(format!("placement rule {id} set")),
            )
        }
        (Method::DELETE, ["placement", id]) => {
            let map = gateway.meta.cluster_map().await?;
            if !map.placement.iter().any(|rule| rule.id == *id) {
                return Err(not_found(format!("placement rule {id} does not exist")));
            }
            gateway
                .meta
                .delete_placement_rule(id)
                .await
                .map_err(invalid_is_bad_request)?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("placement rule {id} removed")),
            )
        }
        (Method::GET, ["proxies"]) => {
            let proxies = gateway.meta.proxies().await?;
            let views: Vec<_> = proxies.iter().map(ProxyUpstream::view).collect();
            (Json(json!({ "proxies": views })).into_response(), None)
        }
        (Method::GET, ["proxies", "status"]) => {
            let status = proxy::status(gateway.meta.as_ref()).await?;
            (Json(json!({ "proxies": status })).into_response(), None)
        }
        (Method::PUT, ["proxies", id]) => {
            let new: NewProxy = parse(&body().await?)?;
            check_ca(new.ca_pem.as_deref())?;
            let upstream = ProxyUpstream {
                id: (*id).to_owned(),
                url: new.url,
                prefix: new.prefix,
                tag_ttl_secs: new.tag_ttl_secs.unwrap_or(DEFAULT_TAG_TTL_SECS),
                cache_ttl_secs: new.cache_ttl_secs.unwrap_or(DEFAULT_CACHE_TTL_SECS),
                username: new.username,
                password: new.password,
                mirror: new.mirror,
                ca_pem: new.ca_pem,
            };
            let view = upstream.view();
            gateway
                .meta
                .put_proxy(upstream)
                .await
                .map_err(invalid_is_bad_request)?;
            gateway.pull_through.forget();
            (
                (StatusCode::OK, Json(view)).into_response(),
                Some(format!("proxy upstream {id} set")),
            )
        }
        (Method::DELETE, ["proxies", id]) => {
            let proxies = gateway.meta.proxies().await?;
            if !proxies.iter().any(|proxy| proxy.id == *id) {
                return Err(not_found(format!("proxy upstream {id} does not exist")));
            }
            gateway
                .meta
                .delete_proxy(id)
                .await
                .map_err(invalid_is_bad_request)?;
            gateway.pull_through.forget();
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("proxy upstream {id} removed")),
            )
        }
        (Method::GET, ["replication"]) => {
            let rules = gateway.meta.replication_rules().await?;
            let views: Vec<_> = rules.iter().map(ReplicationRule::view).collect();
            (Json(json!({ "rules": views })).into_response(), None)
        }
        (Method::GET, ["replication", "status"]) => {
            let rules = gateway.meta.replication_rules().await?;
            let recorded = gateway.meta.replication_status().await?;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64);
            let report = cluster_api::replication_report(&rules, &recorded, now_ms);
            (Json(json!({ "rules": report })).into_response(), None)
        }
        (Method::PUT, ["replication", id]) => {
            let new: NewReplicationRule = parse(&body().await?)?;
            check_ca(new.ca_pem.as_deref())?;
            let rule = ReplicationRule {
                id: (*id).to_owned(),
                mode: new.mode,
                url: new.url,
                repositories: new.repositories,
                tags: new.tags,
                deletes: new.deletes,
                username: new.username,
                password: new.password,
                ca_pem: new.ca_pem,
            };
            let view = rule.view();
            gateway
                .meta
                .put_replication_rule(rule)
                .await
                .map_err(invalid_is_bad_request)?;
            (
                (StatusCode::OK, Json(view)).into_response(),
                Some(format!("replication rule {id} set")),
            )
        }
        (Method::DELETE, ["replication", id]) => {
            let rules = gateway.meta.replication_rules().await?;
            if !rules.iter().any(|rule| rule.id == *id) {
                return Err(not_found(format!("replication rule {id} does not exist")));
            }
            gateway
                .meta
                .delete_replication_rule(id)
                .await
                .map_err(invalid_is_bad_request)?;
            (
                StatusCode::NO_CONTENT.into_response(),
                Some(format!("replication rule {id} removed")),
            )
        }
        (Method::GET, ["retention"]) => {
            let rules = gateway.meta.retention_rules().await?;
            (Json(json!({ "rules": rules })).into_response(), None)
        }
        (Method::GET, ["retention", "plan"]) => {
            let plan = gateway.meta.retention_plan(true).await?;
            (Json(json!({ "actions": plan })).into_response(), None)
        }
        _ => return Err(ApiError::unknown_path(path)),
    };
    if let Some(target) = audit_target {
        gateway.audit.record(Event {
            actor: &actor,
            client,
            action: "admin",
            repository: "",
            target: &target,
            status: response.status().as_u16(),
        });
    }
    Ok(response)
}

fn policy_from(new: NewPolicy) -> Result<Policy, ApiError> {
    auth::policy_from_parts(new.id, &new.subject, &new.repositories, &new.actions)
        .map_err(bad_request)
}

async fn change(gate: &AuthGate, change: AuthChange) -> Result<u64, ApiError> {
    let version = gate
        .meta()
        .change_auth(change)
        .await
        .map_err(|error| match error {
            MetaError::Invalid(message) => bad_request(message),
            other => ApiError::from_meta(other),
        })?;
    // Make the change visible through this gateway at once.
    if let Err(error) = gate.refresh().await {
        tracing::warn!(%error, "could not refresh the access-control state");
    }
    Ok(version)
}

fn invalid_is_bad_request(error: MetaError) -> ApiError {
    match error {
        MetaError::Invalid(message) => bad_request(message),
        other => ApiError::from_meta(other),
    }
}

/// A CA bundle the upstream client can load, or 400 with why not.
fn check_ca(pem: Option<&str>) -> Result<(), ApiError> {
    match pem {
        Some(pem) => proxy::check_ca_bundle(pem.as_bytes())
            .map(drop)
            .map_err(|error| bad_request(format!("ca_pem: {error}"))),
        None => Ok(()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

fn created(body: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn not_found(message: String) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::NOT_FOUND)
}
