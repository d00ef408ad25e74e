//! Access control end to end, against the real `wharf serve --auth` binary and `wharf admin`:
//! the README's flow (an administrator, a CI robot limited to `ci/*`), the adversarial matrix
//! (every case answers 401 or 403 with the spec's code, and nothing changes), the token
//! endpoint's OAuth2 form and refresh tokens, the admin HTTP API, the filtered catalog, the
//! failed-login limiter, the audit trail, and that no secret or token reaches a log line.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use auth::{Claims, ResourceAccess, TokenKeys, TokenUse};
use base64::Engine;
use cluster_api::MetaApi;
use common::auth_serve::{basic, bearer, registry, AuthServe, DEADLINE};
use common::{until, PushedImage, Registry};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::Value;

/// A token from `/auth/token` (GET, Basic when `credentials`), for `scopes`.
async fn token(base: &str, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let mut url = format!("{base}/auth/token?service=wharf");
    for scope in scopes {
        url.push_str(&format!("&scope={}", urlencoding::encode(scope)));
    }
    let mut request = reqwest::Client::new().get(url);
    if let Some((user, secret)) = credentials {
        request = request.header(AUTHORIZATION, basic(user, secret));
    }
    let response = request.send().await.expect("token request");
    assert_eq!(response.status(), StatusCode::OK, "token endpoint");
    let body: Value = response.json().await.expect("token JSON");
    body["token"].as_str().expect("token").to_owned()
}

/// The claims of a token, read without verification (for assertions only).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

/// Status, OCI error code and the `WWW-Authenticate` header of a request.
async fn attempt(request: reqwest::RequestBuilder) -> (StatusCode, String, String) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
    (status, code, challenge)
}

async fn push_image(registry: &Registry, repo: &str, tag: &str) -> PushedImage {
    registry
        .push_image(repo, tag, 4096)
        .await
        .unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}"))
}

/// Tags of `repo` as an administrator sees them (empty when the repository does not exist).
async fn tags(base: &str, admin: &str, repo: &str) -> Vec<String> {
    let response = reqwest::Client::new()
        .get(format!("{base}/v2/{repo}/tags/list"))
        .header(AUTHORIZATION, admin)
        .send()
        .await
        .expect("tags");
    if response.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let body: Value = response.json().await.expect("tags JSON");
    body["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_admin_robot_and_boundaries() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    // Anonymous clients are refused, with the Docker challenge.
    let (status, code, challenge) =
        attempt(reqwest::Client::new().get(format!("{base}/v2/"))).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert_eq!(
        challenge,
        format!("Bearer realm=\"{base}/auth/token\",service=\"wharf\"")
    );
    let anonymous = registry(&base, None);
    assert!(anonymous
        .push_blob_monolithic("ci/app", b"anonymous layer")
        .await
        .is_err());

    serve.user("alice", "alice-password", true);
    let ci = serve.robot("ci", "ci/*", "pull,push");
    let alice = basic("alice", "alice-password");

    // The robot pushes to ci/* with Basic and with a token, and can pull what it pushed.
    let robot = registry(&base, Some(&basic("ci", &ci)));
    let image = push_image(&robot, "ci/app", "v1").await;
    robot.verify_image(&image).await.expect("robot pulls");
    let robot_token = token(&base, Some(("ci", &ci)), &["repository:ci/tool:pull,push"]).await;
    let with_token = registry(&base, Some(&bearer(&robot_token)));
    push_image(&with_token, "ci/tool", "v1").await;

    // ... and cannot touch prod/*, nor ci/* one level down.
    let alice_image = push_image(&registry(&base, Some(&alice)), "prod/app", "v1").await;
    for repo in ["prod/app", "ci/app/nested"] {
        let (status, code, _) = attempt(
            reqwest::Client::new()
                .post(format!("{base}/v2/{repo}/blobs/uploads/"))
                .header(AUTHORIZATION, basic("ci", &ci)),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "DENIED"),
            "{repo}"
        );
    }
    let (status, code, _) = attempt(
        reqwest::Client::new()
            .get(format!("{base}/v2/prod/app/manifests/v1"))
            .header(AUTHORIZATION, basic("ci", &ci)),
    )
    .await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"));
    // A cross-repository mount needs pull on `from`: from ci/app it mounts (201); from prod/app,
    // which the robot may not read, it falls back to a plain upload session (202), revealing
    // nothing about prod/app.
    let prod_blob = alice_image.blobs[0].0.clone();
    let ci_blob = image.blobs[0].0.clone();
    for (from, digest, expected) in [
        ("ci/app", &ci_blob, StatusCode::CREATED),
        ("prod/app", &prod_blob, StatusCode::ACCEPTED),
    ] {
        let response = reqwest::Client::new()
            .post(format!(
                "{base}/v2/ci/mounted/blobs/uploads/?mount={digest}&from={from}"
            ))
            .header(AUTHORIZATION, basic("ci", &ci))
            .send()
            .await
            .expect("mount");
        assert_eq!(response.status(), expected, "mount from {from}");
    }
    // A token asked for prod/app carries nothing for it.
    let asked = token(&base, Some(("ci", &ci)), &["repository:prod/app:pull,push"]).await;
    assert_eq!(claims_of(&asked)["access"], serde_json::json!([]));
    assert_eq!(tags(&base, &alice, "prod/app").await, ["v1"]);

    // The audit trail names who pushed what.
    let audit = serve.audit();
    assert!(
        audit.lines().any(|line| line.contains("\"actor\":\"ci\"")
            && line.contains("\"action\":\"push\"")
            && line.contains("ci/app")),
        "{audit}"
    );
    assert!(audit.contains("\"action\":\"denied\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_matrix_answers_401_or_403_and_changes_nothing() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    serve.user("root", "root-password", true);
    serve.user("dev", "dev-password", false);
    serve.policy("dev", "team/**", "pull,push");
    let ci = serve.robot("ci", "ci/**", "pull,push");
    let root = basic("root", "root-password");
    let dev = basic("dev", "dev-password");
    let image = push_image(&registry(&base, Some(&root)), "team/app", "v1").await;
    push_image(&registry(&base, Some(&root)), "ci/app", "v1").await;
    // A blob no manifest uses: meta itself would let it be deleted, so only the access check
    // can refuse the DELETE below.
    let loose = registry(&base, Some(&root))
        .push_blob_monolithic("team/app", &common::random_bytes(512))
        .await
        .expect("push a loose blob");
    let http = reqwest::Client::new();
    let manifest_url = format!("{base}/v2/team/app/manifests/v1");
    let evil = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#.to_vec();
    let put_evil = |authorization: Option<String>| {
        let mut request = http
            .put(&manifest_url)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(evil.clone());
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        request
    };

    // The key the registry signs with, read from meta as a cluster member may, to forge
    // tokens that differ from a real one in exactly one respect.
    let state = serve
        .meta()
        .auth_state(None)
        .await
        .expect("auth state")
        .expect("state");
    let keys = TokenKeys::new(&state.keys);
    let dev_gen = state.account("dev").expect("dev").generation;
    let forge = |edit: &dyn Fn(&mut Claims)| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut claims = Claims::new("wharf", "dev", "wharf", now, 300, TokenUse::Access);
        claims.gen = dev_gen;
        claims.access = vec![ResourceAccess {
            resource_type: "repository".into(),
            name: "team/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
        edit(&mut claims);
        keys.sign(&claims).expect("sign")
    };
    // Sanity: an unedited forged token is accepted, so each case below fails for its one reason.
    let valid = forge(&|_| {});
    let (status, _, _) = attempt(
        http.get(&manifest_url)
            .header(AUTHORIZATION, bearer(&valid)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the baseline token works");

    let expired = forge(&|c| {
        c.exp = c.iat - 3600;
        c.nbf = c.iat - 7200;
    });
    let other_audience = forge(&|c| c.aud = "another-registry".into());
    let refresh_as_access = forge(&|c| c.token_use = TokenUse::Refresh);
    let stale_generation = forge(&|c| c.gen += 1);
    let wrong_signature = {
        let mut impostor = auth::generate_signing_key(0);
        impostor.kid = state.keys[0].kid.clone();
        let parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let other = TokenKeys::new(&[impostor])
            .sign(&claims_from(&parts[1]))
            .expect("sign");
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.split('.').nth(2).unwrap()
        )
    };
    let alg_none = {
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            state.keys[0].kid
        ));
        format!("{header}.{}.", valid.split('.').nth(1).unwrap())
    };
    let other_repo = token(
        &base,
        Some(("dev", "dev-password")),
        &["repository:team/other:pull,push"],
    )
    .await;
    let pull_only = token(
        &base,
        Some(("dev", "dev-password")),
        &["repository:team/app:pull"],
    )
    .await;
    let delete_asked = token(
        &base,
        Some(("dev", "dev-password")),
        &["repository:team/app:pull,delete"],
    )
    .await;
    assert_eq!(
        claims_of(&delete_asked)["access"][0]["actions"],
        serde_json::json!(["pull"]),
        "the token server grants only what the policy allows"
    );
    // A new policy reaches the gateway within its state refresh interval (1 s): a token asked
    // for sooner is granted what the gateway knew then, so ask until the grant shows it.
    let ci_token = until(
        "the robot's policy to reach the gateway",
        Instant::now() + DEADLINE,
        || async {
            let token = token(&base, Some(("ci", &ci)), &["repository:ci/app:pull,push"]).await;
            let granted = claims_of(&token)["access"][0]["actions"].clone();
            (granted == serde_json::json!(["pull", "push"]))
                .then_some(token)
                .ok_or_else(|| format!("granted {granted}"))
        },
    )
    .await
    .expect("the robot's token");

    struct Case {
        name: &'static str,
        request: reqwest::RequestBuilder,
        status: StatusCode,
        code: &'static str,
        challenge_error: Option<&'static str>,
    }
    let case = |name, request, status, code, challenge_error| Case {
        name,
        request,
        status,
        code,
        challenge_error,
    };
    let unauthorized = StatusCode::UNAUTHORIZED;
    let cases = vec![
        case(
            "no token",
            put_evil(None),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
        case(
            "expired token",
            put_evil(Some(bearer(&expired))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "wrong signature",
            put_evil(Some(bearer(&wrong_signature))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "alg none",
            put_evil(Some(bearer(&alg_none))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "token for another registry",
            put_evil(Some(bearer(&other_audience))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "refresh token as access token",
            put_evil(Some(bearer(&refresh_as_access))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "token from before a password change",
            put_evil(Some(bearer(&stale_generation))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "garbage token",
            put_evil(Some(bearer("not.a.jwt"))),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_token"),
        ),
        case(
            "scope for another repository",
            put_evil(Some(bearer(&other_repo))),
            unauthorized,
            "UNAUTHORIZED",
            Some("insufficient_scope"),
        ),
        case(
            "pull token used to push",
            put_evil(Some(bearer(&pull_only))),
            unauthorized,
            "UNAUTHORIZED",
            Some("insufficient_scope"),
        ),
        case(
            "wrong password",
            put_evil(Some(basic("dev", "not-the-password"))),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
        case(
            "unknown user",
            put_evil(Some(basic("mallory", "whatever-1"))),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
        case(
            "malformed Basic",
            put_evil(Some("Basic !!!".into())),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_request"),
        ),
        case(
            "unknown scheme",
            put_evil(Some("Digest x".into())),
            unauthorized,
            "UNAUTHORIZED",
            Some("invalid_request"),
        ),
        case(
            "user without delete, Basic",
            http.delete(format!(
                "{base}/v2/team/app/manifests/{}",
                image.manifest_digest
            ))
            .header(AUTHORIZATION, dev.clone()),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "user without delete, token",
            http.delete(format!(
                "{base}/v2/team/app/manifests/{}",
                image.manifest_digest
            ))
            .header(AUTHORIZATION, bearer(&delete_asked)),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "user without delete, blob",
            http.delete(format!("{base}/v2/team/app/blobs/{loose}"))
                .header(AUTHORIZATION, dev.clone()),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "path traversal",
            http.put(format!("{base}/v2/team/../prod/app/manifests/v1"))
                .header(AUTHORIZATION, dev.clone())
                .body(evil.clone()),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "encoded path traversal",
            http.put(format!("{base}/v2/team/%2e%2e/prod/app/manifests/v1"))
                .header(AUTHORIZATION, dev.clone())
                .body(evil.clone()),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "anonymous path traversal",
            http.put(format!("{base}/v2/team/%2E%2E/ci/app/manifests/v1"))
                .body(evil.clone()),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
        case(
            "robot outside its glob",
            http.post(format!("{base}/v2/team/app/blobs/uploads/"))
                .header(AUTHORIZATION, basic("ci", &ci)),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "anonymous catalog",
            http.get(format!("{base}/v2/_catalog")),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
        case(
            "non-admin on the admin API",
            http.get(format!("{base}/admin/v1/accounts"))
                .header(AUTHORIZATION, dev.clone()),
            StatusCode::FORBIDDEN,
            "DENIED",
            None,
        ),
        case(
            "anonymous on the admin API",
            http.post(format!("{base}/admin/v1/users"))
                .body(r#"{"name":"x","password":"xxxxxxxxxx","admin":true}"#),
            unauthorized,
            "UNAUTHORIZED",
            None,
        ),
    ];
    for case in cases {
        let (status, code, challenge) = attempt(case.request).await;
        assert_eq!(
            (status, code.as_str()),
            (case.status, case.code),
            "case {:?}",
            case.name
        );
        if status == StatusCode::UNAUTHORIZED {
            assert!(
                challenge.starts_with("Bearer realm="),
                "case {:?}: {challenge:?}",
                case.name
            );
        }
        if let Some(error) = case.challenge_error {
            assert!(
                challenge.contains(&format!("error=\"{error}\"")),
                "case {:?}: {challenge:?}",
                case.name
            );
        }
    }

    // The revoked robot: its token and its secret stop working on every gateway within the
    // state refresh interval (1 s by default).
    let (status, _, _) = attempt(
        http.get(format!("{base}/v2/ci/app/manifests/v1"))
            .header(AUTHORIZATION, bearer(&ci_token)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the robot's token works before revocation"
    );
    serve.admin(&["robot", "rm", "ci"], None);
    for (name, authorization) in [
        ("revoked robot's token", bearer(&ci_token)),
        ("revoked robot's secret", basic("ci", &ci)),
    ] {
        until(name, Instant::now() + DEADLINE, || async {
            let (status, code, _) = attempt(
                http.get(format!("{base}/v2/ci/app/manifests/v1"))
                    .header(AUTHORIZATION, authorization.clone()),
            )
            .await;
            (status == unauthorized && code == "UNAUTHORIZED")
                .then_some(())
                .ok_or_else(|| format!("{status} {code}"))
        })
        .await
        .expect("revocation takes effect");
    }
    // Nothing changed: the tags, the manifest bytes, the loose blob, no prod/app, no new account.
    assert_eq!(tags(&base, &root, "team/app").await, ["v1"]);
    let loose_status = http
        .head(format!("{base}/v2/team/app/blobs/{loose}"))
        .header(AUTHORIZATION, root.clone())
        .send()
        .await
        .expect("HEAD loose blob")
        .status();
    assert_eq!(
        loose_status,
        StatusCode::OK,
        "the loose blob is still there"
    );
    assert_eq!(tags(&base, &root, "ci/app").await, ["v1"]);
    assert!(tags(&base, &root, "prod/app").await.is_empty());
    let stored = http
        .get(&manifest_url)
        .header(AUTHORIZATION, root.clone())
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("manifest")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(
        stored.as_ref(),
        image.manifest.as_slice(),
        "the manifest is untouched"
    );
    let accounts: Value = http
        .get(format!("{base}/admin/v1/accounts"))
        .header(AUTHORIZATION, root.clone())
        .send()
        .await
        .expect("accounts")
        .json()
        .await
        .expect("JSON");
    let names: Vec<&str> = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "root"]);

    // No secret or token in any log line or audit event.
    let log = serve.log();
    let audit = serve.audit();
    assert!(log.contains("audit"), "the debug log is captured");
    for secret in [
        "root-password",
        "dev-password",
        ci.as_str(),
        valid.as_str(),
        ci_token.as_str(),
        pull_only.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret or token is in the log");
        assert!(
            !audit.contains(secret),
            "a secret or token is in the audit trail"
        );
    }
}

/// The claims part of a token, for re-signing.
fn claims_from(payload: &str) -> Claims {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_account_and_client() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    serve.user("bob", "bob-password", false);
    let http = reqwest::Client::new();
    let login = |password: &str| {
        http.get(format!("{base}/auth/token?service=wharf"))
            .header(AUTHORIZATION, basic("bob", password))
    };
    // The default burst is 10 failures (draining one per 6 s): at least 10 wrong passwords are
    // answered 401, then attempts get 429, and then even the right password is refused.
    let mut failures = 0;
    loop {
        let (status, _, _) = attempt(login("wrong")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        failures += 1;
        assert!(failures <= 40, "no throttling after {failures} failures");
    }
    assert!(failures >= 10, "throttled after only {failures} failures");
    let response = login("bob-password").send().await.expect("login");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    let audit = serve.audit();
    assert!(audit.contains("\"target\":\"failed\""), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_form_refresh_tokens_and_password_change() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    serve.user("carol", "carol-password", false);
    serve.policy("carol", "carol/**", "pull,push");
    let http = reqwest::Client::new();
    let form =
        |fields: &[(&str, &str)]| http.post(format!("{base}/auth/token")).form(fields).send();
    let first: Value = form(&[
        ("grant_type", "password"),
        ("username", "carol"),
        ("password", "carol-password"),
        ("service", "wharf"),
        (
            "scope",
            "repository:carol/app:pull,push repository:other/x:pull",
        ),
        ("access_type", "offline"),
        ("client_id", "docker"),
    ])
    .await
    .expect("password grant")
    .json()
    .await
    .expect("JSON");
    let access = first["access_token"].as_str().expect("access token");
    let refresh = first["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    assert_eq!(
        claims_of(access)["access"],
        serde_json::json!([{"type": "repository", "name": "carol/app", "actions": ["pull", "push"]}])
    );
    push_image(&registry(&base, Some(&bearer(access))), "carol/app", "v1").await;

    let refreshed = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", "wharf"),
        ("scope", "repository:carol/app:pull"),
    ])
    .await
    .expect("refresh grant");
    assert_eq!(refreshed.status(), StatusCode::OK);
    let refreshed: Value = refreshed.json().await.expect("JSON");
    assert_eq!(
        claims_of(refreshed["access_token"].as_str().unwrap())["sub"],
        "carol"
    );

    for bad in [
        vec![
            ("grant_type", "password"),
            ("username", "carol"),
            ("password", "nope-nope"),
        ],
        vec![("grant_type", "refresh_token"), ("refresh_token", access)],
    ] {
        let response = form(&bad).await.expect("bad grant");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad:?}");
    }
    let response = form(&[("grant_type", "client_credentials")])
        .await
        .expect("grant");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A password change ends every earlier token, refresh tokens included.
    serve.admin(
        &["user", "passwd", "carol", "--password-stdin"],
        Some("carol-new-password\n"),
    );
    // (This gateway sees the change made through meta within its refresh interval.)
    until(
        "the stale refresh token to be refused",
        Instant::now() + DEADLINE,
        || async {
            let response = form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
                .await
                .map_err(|e| e.to_string())?;
            (response.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
                .ok_or_else(|| format!("still {}", response.status()))
        },
    )
    .await
    .expect("password change ends refresh tokens");
    let (status, _, _) = attempt(
        http.get(format!("{base}/v2/carol/app/tags/list"))
            .header(AUTHORIZATION, bearer(access)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = attempt(
        http.get(format!("{base}/v2/carol/app/tags/list"))
            .header(AUTHORIZATION, basic("carol", "carol-new-password")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pull_policy_catalog_filter_and_admin_api() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    serve.user("root", "root-password", true);
    let root = basic("root", "root-password");
    let http = reqwest::Client::new();

    // The admin HTTP API: a user, a robot (secret shown once), policies, a key rotation.
    let created = http
        .post(format!("{base}/admin/v1/users"))
        .header(AUTHORIZATION, root.clone())
        .body(r#"{"name":"dana","password":"dana-password"}"#)
        .send()
        .await
        .expect("create user");
    assert_eq!(created.status(), StatusCode::CREATED);
    let robot: Value = http
        .post(format!("{base}/admin/v1/robots"))
        .header(AUTHORIZATION, root.clone())
        .body(r#"{"name":"builder","expires_in_secs":3600}"#)
        .send()
        .await
        .expect("create robot")
        .json()
        .await
        .expect("JSON");
    let secret = robot["secret"].as_str().expect("secret").to_owned();
    for policy in [
        r#"{"subject":"anonymous","repositories":"*/public/**","actions":["pull"]}"#,
        r#"{"subject":"builder","repositories":"team/**","actions":["pull","push"]}"#,
        r#"{"subject":"dana","repositories":"team/*","actions":["pull"]}"#,
    ] {
        let response = http
            .post(format!("{base}/admin/v1/policies"))
            .header(AUTHORIZATION, root.clone())
            .body(policy)
            .send()
            .await
            .expect("policy");
        assert_eq!(response.status(), StatusCode::CREATED, "{policy}");
    }
    let bad = http
        .post(format!("{base}/admin/v1/policies"))
        .header(AUTHORIZATION, root.clone())
        .body(r#"{"subject":"ghost","repositories":"x/**","actions":["pull"]}"#)
        .send()
        .await
        .expect("bad policy");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let builder = registry(&base, Some(&basic("builder", &secret)));
    let public = push_image(&builder, "team/public/base", "v1").await;
    push_image(&builder, "team/app", "v1").await;
    push_image(&registry(&base, Some(&root)), "hidden/app", "v1").await;

    // Anonymous pull where a policy allows it, with no token at all; nothing else.
    registry(&base, None)
        .verify_image(&public)
        .await
        .expect("anonymous pull");
    let (status, _, _) = attempt(http.get(format!("{base}/v2/team/app/tags/list"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The catalog lists what each caller may pull.
    let catalog = |authorization: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let body: Value = http
                .get(format!("{base}/v2/_catalog"))
                .header(AUTHORIZATION, authorization)
                .send()
                .await
                .expect("catalog")
                .json()
                .await
                .expect("JSON");
            body["repositories"].clone()
        }
    };
    assert_eq!(
        catalog(basic("dana", "dana-password")).await,
        serde_json::json!(["team/app", "team/public/base"])
    );
    assert_eq!(
        catalog(root.clone()).await,
        serde_json::json!(["hidden/app", "team/app", "team/public/base"])
    );
    // A token for the catalog alone names no repository; it lists what the account may pull,
    // as Basic does (it listed nothing before).
    let catalog_token = token(
        &base,
        Some(("dana", "dana-password")),
        &["registry:catalog:*"],
    )
    .await;
    assert_eq!(
        catalog(bearer(&catalog_token)).await,
        serde_json::json!(["team/app", "team/public/base"])
    );

    // Rotating the signing key keeps earlier tokens valid and signs new ones with the new key.
    let before = token(
        &base,
        Some(("dana", "dana-password")),
        &["repository:team/app:pull"],
    )
    .await;
    let rotated: Value = http
        .post(format!("{base}/admin/v1/keys/rotate"))
        .header(AUTHORIZATION, root.clone())
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("JSON");
    let kid = rotated["kid"].as_str().expect("kid").to_owned();
    let after = token(
        &base,
        Some(("dana", "dana-password")),
        &["repository:team/app:pull"],
    )
    .await;
    let header_of = |token: &str| -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(header_of(&after)["kid"], kid.as_str());
    assert_eq!(header_of(&after)["alg"], "EdDSA");
    assert_ne!(header_of(&before)["kid"], kid.as_str());
    for token in [&before, &after] {
        let (status, _, _) = attempt(
            http.get(format!("{base}/v2/team/app/tags/list"))
                .header(AUTHORIZATION, bearer(token)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    // Placement rules through the admin API: set, listed with the map's epoch, refused when
    // invalid (400), removed, and 404 once gone.
    let rule_url = format!("{base}/admin/v1/placement/eu");
    let put = http
        .put(&rule_url)
        .header(AUTHORIZATION, root.clone())
        .body(r#"{"repositories":"eu/**","zones":["default"],"replicas":2}"#)
        .send()
        .await
        .expect("put rule");
    assert_eq!(put.status(), StatusCode::OK);
    let listed: Value = http
        .get(format!("{base}/admin/v1/placement"))
        .header(AUTHORIZATION, root.clone())
        .send()
        .await
        .expect("list rules")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed["rules"][0]["id"], "eu");
    assert_eq!(listed["rules"][0]["replicas"], 2);
    assert!(listed["epoch"].as_u64().is_some(), "{listed}");
    let status: Value = http
        .get(format!("{base}/admin/v1/placement/status"))
        .header(AUTHORIZATION, root.clone())
        .send()
        .await
        .expect("placement status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["rules"][0]["id"], "eu", "{status}");
    assert_eq!(
        status["ruled"], 0,
        "no blob was pushed under the rule: {status}"
    );
    let (status, code, _) = attempt(
        http.put(format!("{base}/admin/v1/placement/bad"))
            .header(AUTHORIZATION, root.clone())
            .body(r#"{"repositories":"eu/**","zones":[]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{code}");
    let (status, _, _) = attempt(
        http.put(&rule_url)
            .body(r#"{"repositories":"x","zones":["a"]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "administrators only");
    for expected in [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND] {
        let (status, _, _) =
            attempt(http.delete(&rule_url).header(AUTHORIZATION, root.clone())).await;
        assert_eq!(status, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_robot_stops_working() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    let out = serve.admin(&["robot", "add", "brief", "--expires", "2s"], None);
    let secret = out.lines().last().unwrap().trim().to_owned();
    serve.policy("brief", "tmp/**", "pull,push");
    let http = reqwest::Client::new();
    let attempt_push = || {
        http.post(format!("{base}/v2/tmp/x/blobs/uploads/"))
            .header(AUTHORIZATION, basic("brief", &secret))
            .send()
    };
    assert_eq!(
        attempt_push().await.expect("push").status(),
        StatusCode::ACCEPTED
    );
    until("the robot to expire", Instant::now() + DEADLINE, || async {
        let status = attempt_push().await.map_err(|e| e.to_string())?.status();
        (status == StatusCode::UNAUTHORIZED)
            .then_some(())
            .ok_or_else(|| format!("still {status}"))
    })
    .await
    .expect("expiry");
}

/// Runs a client tool with a deadline; returns (success, stdout + stderr).
async fn tool(
    program: &str,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
    stdin: Option<&str>,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (.ci/run installs it): {e}"));
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.expect("stdin");
    }
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} timed out"))
        .expect("tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn must(
    program: &str,
    args: &[&str],
    env: &[(&str, &std::path::Path)],
    stdin: Option<&str>,
) -> String {
    let (ok, text) = tool(program, args, env, stdin).await;
    assert!(ok, "{program} {args:?} failed: {text}");
    text
}

/// docker login/push/pull as a robot, skopeo --creds across repositories, podman login, pull
/// and push as a user: the real clients through the token flow; anonymous and out-of-scope
/// attempts refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_podman_and_skopeo_log_in_push_and_pull() {
    let serve = AuthServe::start(&[]).await;
    let host = serve.base.trim_start_matches("http://").to_owned();
    serve.user("dev", "dev-password", false);
    serve.policy("dev", "team/**", "pull,push");
    serve.policy("dev", "ci/**", "pull");
    let ci = serve.robot("ci", "ci/*", "pull,push");
    let work = tempfile::tempdir().expect("temp dir");
    let docker_config = work.path().join("docker");
    std::fs::create_dir_all(&docker_config).expect("docker config");
    let docker_env = [("DOCKER_CONFIG", docker_config.as_path())];

    // docker: build, log in as the robot, push; pull it back; anonymous and prod/* refused.
    let payload = common::random_bytes(100_000);
    std::fs::write(work.path().join("payload"), &payload).expect("payload");
    std::fs::write(
        work.path().join("Dockerfile"),
        "FROM scratch\nCOPY payload /payload\n",
    )
    .expect("Dockerfile");
    let nonce = common::hex_of(&common::random_bytes(6));
    let image = format!("{host}/ci/app-{nonce}:v1");
    let context = work.path().to_str().expect("utf-8");
    must(
        "docker",
        &["build", "--quiet", "-t", &image, context],
        &docker_env,
        None,
    )
    .await;
    let login = must(
        "docker",
        &["login", &host, "-u", "ci", "--password-stdin"],
        &docker_env,
        Some(&ci),
    )
    .await;
    assert!(login.contains("Login Succeeded"), "{login}");
    must("docker", &["push", &image], &docker_env, None).await;
    let prod = format!("{host}/prod/app-{nonce}:v1");
    must("docker", &["tag", &image, &prod], &docker_env, None).await;
    let (ok, text) = tool("docker", &["push", &prod], &docker_env, None).await;
    assert!(
        !ok && text.contains("denied"),
        "a robot for ci/* cannot push to prod/*: {text}"
    );
    must("docker", &["rmi", &image, &prod], &docker_env, None).await;
    must("docker", &["pull", &image], &docker_env, None).await;
    must("docker", &["logout", &host], &docker_env, None).await;
    must("docker", &["rmi", &image], &docker_env, None).await;
    let (ok, text) = tool("docker", &["pull", &image], &docker_env, None).await;
    assert!(!ok, "an anonymous pull is refused: {text}");

    // skopeo with --creds: copy ci/app (dev may pull it) to team/app (dev may push there).
    let auth_file = work.path().join("auth.json");
    std::fs::write(&auth_file, "{}").expect("auth file");
    let runtime = work.path().join("xdg");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    let env = [
        ("REGISTRY_AUTH_FILE", auth_file.as_path()),
        ("XDG_RUNTIME_DIR", runtime.as_path()),
    ];
    let source = format!("docker://{image}");
    let copy = format!("docker://{host}/team/app-{nonce}:v1");
    must(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds",
            "dev:dev-password",
            "--dest-creds",
            "dev:dev-password",
            &source,
            &copy,
        ],
        &env,
        None,
    )
    .await;
    let inspect = move |reference: String, creds: Option<&'static str>| async move {
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        if let Some(creds) = creds {
            args.extend(["--creds", creds]);
        }
        args.push(&reference);
        tool("skopeo", &args, &env, None).await
    };
    let (ok, original) = inspect(source.clone(), Some("dev:dev-password")).await;
    assert!(ok, "{original}");
    let (ok, copied) = inspect(copy.clone(), Some("dev:dev-password")).await;
    assert!(ok, "{copied}");
    assert_eq!(original, copied, "the copy carries the same manifest");
    let (ok, text) = inspect(copy.clone(), None).await;
    assert!(!ok, "skopeo without credentials is refused: {text}");
    let (ok, text) = inspect(copy.clone(), Some("dev:wrong-password")).await;
    assert!(!ok, "skopeo with a wrong password is refused: {text}");

    // podman: log in as dev, pull team/app, push it under a new tag; out of scope refused.
    let storage = [
        format!("--root={}", work.path().join("root").display()),
        format!("--runroot={}", work.path().join("run").display()),
        "--storage-driver=vfs".to_owned(),
    ];
    let podman = |args: &[&str]| {
        let mut all: Vec<String> = storage.to_vec();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };
    let run_podman = |args: Vec<String>, stdin: Option<&'static str>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tool("podman", &args, &env, stdin).await
    };
    let (ok, text) = run_podman(
        podman(&[
            "login",
            "--tls-verify=false",
            "-u",
            "dev",
            "--password-stdin",
            &host,
        ]),
        Some("dev-password\n"),
    )
    .await;
    assert!(ok && text.contains("Login Succeeded"), "{text}");
    let pulled = format!("{host}/team/app-{nonce}:v1");
    let (ok, text) = run_podman(podman(&["pull", "--tls-verify=false", &pulled]), None).await;
    assert!(ok, "podman pull: {text}");
    let pushed = format!("{host}/team/app-{nonce}:v2");
    let (ok, text) = run_podman(
        podman(&[
            "push",
            "--tls-verify=false",
            &pulled,
            &format!("docker://{pushed}"),
        ]),
        None,
    )
    .await;
    assert!(ok, "podman push: {text}");
    let (ok, text) = run_podman(
        podman(&[
            "push",
            "--tls-verify=false",
            &pulled,
            &format!("docker://{host}/prod/app-{nonce}:v1"),
        ]),
        None,
    )
    .await;
    assert!(!ok, "dev cannot push to prod/*: {text}");
    // podman may convert and recompress what it pushes; the uncompressed layers (the config's
    // diff_ids) are the same bytes.
    let diff_ids = move |reference: String| async move {
        let text = must(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--tls-verify=false",
                "--creds",
                "dev:dev-password",
                &reference,
            ],
            &env,
            None,
        )
        .await;
        let config: Value = serde_json::from_str(&text).expect("config JSON");
        config["rootfs"]["diff_ids"].clone()
    };
    let original_layers = diff_ids(source.clone()).await;
    assert!(original_layers
        .as_array()
        .is_some_and(|ids| !ids.is_empty()));
    assert_eq!(
        diff_ids(format!("docker://{pushed}")).await,
        original_layers
    );
}

/// Immutable tags (issue 6): a protected tag neither moves nor goes away, re-pushing the same
/// manifest is fine, unprotected tags move freely, and of two pushers racing to a new protected
/// tag exactly one wins, decided in the Raft state machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_tags_neither_move_nor_disappear() {
    let serve = AuthServe::start(&[]).await;
    let base = serve.base.clone();
    serve.user("root", "root-password", true);
    let root = basic("root", "root-password");
    let registry = registry(&base, Some(&root));
    let first = push_image(&registry, "prod/app", "v1").await;
    let second = push_image(&registry, "prod/app", "latest").await;
    let rule = serve.admin(
        &["immutable", "add", "--repos", "prod/**", "--tags", "v*"],
        None,
    );
    assert!(rule.contains("immutable"), "{rule}");
    let listed = serve.admin(&["immutable", "list"], None);
    assert!(listed.contains("\"tags\": \"v*\""), "{listed}");

    let http = reqwest::Client::new();
    let put = |tag: &str, image: &PushedImage| {
        http.put(format!("{base}/v2/prod/app/manifests/{tag}"))
            .header(AUTHORIZATION, root.clone())
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(image.manifest.clone())
            .send()
    };
    let status_of = |tag: &'static str, image: &'static PushedImage| {
        let put = &put;
        async move { put(tag, image).await.expect("PUT").status() }
    };
    let first: &'static PushedImage = Box::leak(Box::new(first));
    let second: &'static PushedImage = Box::leak(Box::new(second));
    let tag_digest = |tag: &'static str| {
        let http = http.clone();
        let base = base.clone();
        let root = root.clone();
        async move {
            let response = http
                .head(format!("{base}/v2/prod/app/manifests/{tag}"))
                .header(AUTHORIZATION, root)
                .header("Accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .expect("HEAD");
            response
                .headers()
                .get("docker-content-digest")
                .map(|value| value.to_str().unwrap().to_owned())
        }
    };
    // The rule reaches the state machine at once (it is one Raft entry, not gateway state).
    let response = put("v1", second).await.expect("PUT");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert_eq!(
        tag_digest("v1").await,
        Some(first.manifest_digest.to_string())
    );
    assert_eq!(
        status_of("v1", first).await,
        StatusCode::CREATED,
        "same manifest again"
    );
    assert_eq!(
        status_of("latest", first).await,
        StatusCode::CREATED,
        "unprotected tags move"
    );

    for url in [
        format!("{base}/v2/prod/app/manifests/v1"),
        format!("{base}/v2/prod/app/manifests/{}", first.manifest_digest),
    ] {
        let (status, code, _) =
            attempt(http.delete(&url).header(AUTHORIZATION, root.clone())).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "DENIED"),
            "{url}"
        );
    }
    assert_eq!(
        tag_digest("v1").await,
        Some(first.manifest_digest.to_string())
    );

    // Two pushers race to the new protected tag v2: one wins, the other is refused.
    let (a, b) = tokio::join!(status_of("v2", first), status_of("v2", second));
    let mut statuses = [a, b];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::FORBIDDEN]);
    let winner = if a == StatusCode::CREATED {
        first
    } else {
        second
    };
    assert_eq!(
        tag_digest("v2").await,
        Some(winner.manifest_digest.to_string())
    );

    // Without the rule the tag moves again.
    let id = serde_json::from_str::<Value>(&listed).expect("JSON")[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    serve.admin(&["immutable", "rm", &id], None);
    let loser = if a == StatusCode::CREATED {
        second
    } else {
        first
    };
    assert_eq!(status_of("v2", loser).await, StatusCode::CREATED);
}
