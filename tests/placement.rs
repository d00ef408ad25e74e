//! Placement rules (data residency) end to end on `wharf serve`, whose one blob node is in zone
//! `default`: `wharf admin placement` as the README shows it, a push into a repository whose
//! zones have no node refused with 503 naming the rule (and nothing stored), other repositories
//! unaffected, and the same rule over the node's own zone admitting the push.

mod common;

use common::serve::{files_under, Serve};
use common::{random_bytes, Registry};
use oci_model::Digest;
use serde_json::Value;

async fn post(base: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_push_outside_the_rules_zones_is_refused_and_stores_nothing() {
    let serve = Serve::start("", &[]).await;
    let registry = Registry::new(serve.base.clone());
    let out = serve.admin(&[
        "placement",
        "add",
        "--id",
        "eu",
        "--repos",
        "eu/**",
        "--zones",
        "eu-west,eu-central",
    ]);
    assert!(out.contains("placement rule eu set"), "{out}");
    let listed = serve.admin_json(&["placement", "list"]);
    assert_eq!(listed["rules"][0]["id"], "eu");
    assert_eq!(listed["rules"][0]["zones"][1], "eu-central");
    let epoch = listed["epoch"].as_u64().expect("epoch");

    let blobs_before = files_under(&serve.blob_dir().join("blobs"));
    let data = random_bytes(4096);
    let digest = Digest::sha256_of(&data);
    let (status, body) = post(
        &serve.base,
        &format!("/v2/eu/app/blobs/uploads/?digest={digest}"),
        data.clone(),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("placement rule \"eu\"") && message.contains("eu-west"),
        "{message}"
    );
    assert_eq!(
        files_under(&serve.blob_dir().join("blobs")),
        blobs_before,
        "nothing stored elsewhere"
    );

    // Other repositories are not governed by the rule; a mount into eu/app is not a way around.
    registry
        .push_blob_monolithic("team/app", &data)
        .await
        .expect("push into team/app");
    let (status, _) = post(
        &serve.base,
        &format!("/v2/eu/app/blobs/uploads/?mount={digest}&from=team/app"),
        Vec::new(),
    )
    .await;
    assert_eq!(
        status, 503,
        "a mount must not link the blob outside the zones"
    );

    // The rule over the node's own zone admits the push; removing it lifts the rule.
    serve.admin(&[
        "placement",
        "add",
        "--id",
        "eu",
        "--repos",
        "eu/**",
        "--zones",
        "default",
    ]);
    let listed = serve.admin_json(&["placement", "list"]);
    assert!(listed["epoch"].as_u64().expect("epoch") > epoch, "{listed}");
    registry
        .push_blob_monolithic("eu/app", &data)
        .await
        .expect("push into eu/app in its zone");
    // A blob only ever pushed under the rule, beside `data` (also in team/app, unruled).
    registry
        .push_blob_monolithic("eu/app", &random_bytes(1024))
        .await
        .expect("push an EU-only blob");
    let status = serve.admin_json(&["placement", "status"]);
    assert_eq!(status["ruled"], 2, "{status}");
    assert_eq!(status["compliant"], 2, "{status}");
    assert_eq!(status["rules"][0]["id"], "eu");
    assert_eq!(status["rules"][0]["compliant"], 2, "{status}");
    serve.admin(&["fsck"]);

    // Moved to zones no node is in, the blob cannot comply: status and fsck say so.
    serve.admin(&[
        "placement",
        "add",
        "--id",
        "eu",
        "--repos",
        "eu/**",
        "--zones",
        "eu-west",
    ]);
    let status = serve.admin_json(&["placement", "status"]);
    assert_eq!(status["impossible"], 2, "{status}");
    assert_eq!(
        status["copies_outside"], 1,
        "only the EU-only blob's copy is outside: the other is also team/app's: {status}"
    );
    let fsck = serve.admin_output(&["fsck"]);
    assert!(
        !fsck.status.success(),
        "fsck reports the placement violation"
    );
    let report: Value = serde_json::from_slice(&fsck.stdout).expect("fsck JSON");
    assert_eq!(report["placement"]["impossible"], 2, "{report}");
    serve.admin(&["placement", "rm", "eu"]);
    assert_eq!(
        serve.admin_json(&["placement", "list"])["rules"],
        Value::Array(vec![])
    );
    let again = serve.admin_output(&["placement", "rm", "eu"]);
    assert!(!again.status.success(), "removing an unknown rule fails");
    assert!(String::from_utf8_lossy(&again.stderr).contains("does not exist"));
    let invalid = serve.admin_output(&[
        "placement",
        "add",
        "--id",
        "bad",
        "--repos",
        "x/**",
        "--zones",
        "a zone",
    ]);
    assert!(!invalid.status.success(), "an invalid zone is refused");
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("zone"));
}
