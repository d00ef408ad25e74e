//! Placement rules (data residency) end to end on `wharf serve`, whose one blob node is in zone
//! `default`: `wharf admin placement` as the README shows it, a rule naming a zone without nodes
//! refused, a push while no node of the rule's zones is up refused with 503 naming the rule (and
//! nothing stored), pushes in the zone admitted, and `placement status` and fsck judging them.

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

/// `wharf admin placement add --id ID --repos GLOB --zones ZONES [EXTRA...]`.
fn add_rule(
    serve: &Serve,
    id: &str,
    repos: &str,
    zones: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "placement",
        "add",
        "--id",
        id,
        "--repos",
        repos,
        "--zones",
        zones,
    ];
    args.extend_from_slice(extra);
    serve.admin_output(&args)
}

/// [`add_rule`], which must succeed; its standard output.
fn must_add_rule(serve: &Serve, id: &str, repos: &str, zones: &str, extra: &[&str]) -> String {
    let output = add_rule(serve, id, repos, zones, extra);
    assert!(
        output.status.success(),
        "placement add failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_push_outside_the_rules_zones_is_refused_and_stores_nothing() {
    let serve = Serve::start("", &[]).await;
    let registry = Registry::new(serve.base.clone());
    // A zone no blob node is in is refused at once, naming the zones that have nodes.
    let refused = add_rule(&serve, "eu", "eu/**", "eu-west", &[]);
    assert!(!refused.status.success(), "a zone without nodes is refused");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no blob node is in zone \"eu-west\"") && stderr.contains("default"),
        "{stderr}"
    );
    let out = must_add_rule(&serve, "eu", "eu/**", "default", &[]);
    assert!(out.contains("placement rule eu set"), "{out}");
    let listed = serve.admin_json(&["placement", "list"]);
    assert_eq!(listed["rules"][0]["id"], "eu");
    assert_eq!(listed["rules"][0]["zones"][0], "default");
    let epoch = listed["epoch"].as_u64().expect("epoch");

    // The rule's one node drains: no node of its zones is up, so a push is refused with 503
    // naming the rule, and nothing is stored anywhere else.
    serve.admin(&["cluster", "blob-state", "1", "draining"]);
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
        message.contains("placement rule \"eu\"") && message.contains("zones default"),
        "{message}"
    );
    assert_eq!(
        files_under(&serve.blob_dir().join("blobs")),
        blobs_before,
        "nothing stored"
    );
    serve.admin(&["cluster", "blob-state", "1", "up"]);

    // Up again: the push lands in its zone; one blob shared with a repository no rule governs,
    // one only ever pushed under the rule.
    registry
        .push_blob_monolithic("team/app", &data)
        .await
        .expect("push into team/app");
    registry
        .push_blob_monolithic("eu/app", &data)
        .await
        .expect("push into eu/app in its zone");
    registry
        .push_blob_monolithic("eu/app", &random_bytes(1024))
        .await
        .expect("push an EU-only blob");
    let status = serve.admin_json(&["placement", "status"]);
    assert!(status["epoch"].as_u64().expect("epoch") > epoch, "{status}");
    assert_eq!(status["ruled"], 2, "{status}");
    assert_eq!(status["compliant"], 2, "{status}");
    assert_eq!(status["rules"][0]["id"], "eu");
    assert_eq!(status["rules"][0]["compliant"], 2, "{status}");
    serve.admin(&["fsck"]);

    // Two copies asked of a zone with one node: the blobs cannot comply; status and fsck say so.
    must_add_rule(&serve, "eu", "eu/**", "default", &["--replicas", "2"]);
    let status = serve.admin_json(&["placement", "status"]);
    assert_eq!(status["impossible"], 2, "{status}");
    assert_eq!(status["rules"][0]["impossible"], 2, "{status}");
    let fsck = serve.admin_output(&["fsck"]);
    assert!(
        !fsck.status.success(),
        "fsck reports blobs that cannot comply"
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
    let invalid = add_rule(&serve, "bad", "x/**", "a zone", &[]);
    assert!(!invalid.status.success(), "an invalid zone is refused");
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("zone"));
}

/// The value of `name` (with its labels, as the exposition prints them) in a `/metrics` body.
fn gauge(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until `wanted` holds for the placement gauges.
async fn placement_gauges(serve: &Serve, what: &str, wanted: impl Fn(&str) -> bool) {
    let url = format!("{}/metrics", serve.base);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    common::until(what, deadline, || async {
        let body = reqwest::get(&url)
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if wanted(&body) {
            Ok(())
        } else {
            let lines: Vec<&str> = body
                .lines()
                .filter(|line| line.starts_with("wharf_placement"))
                .collect();
            Err(format!("gauges: {lines:?}"))
        }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

#[tokio::test]
async fn placement_gauges_follow_the_blobs_and_the_rules() {
    let serve = Serve::start("[meta]\nplacement_check_interval_ms = 100\n", &[]).await;
    let registry = Registry::new(serve.base.clone());
    must_add_rule(&serve, "eu", "eu/**", "default", &[]);
    for _ in 0..2 {
        registry
            .push_blob_monolithic("eu/app", &random_bytes(2048))
            .await
            .expect("push into eu/app");
    }
    placement_gauges(&serve, "two compliant blobs, no violation", |body| {
        gauge(body, "wharf_placement_blobs{state=\"compliant\"}") == Some(2.0)
            && gauge(body, "wharf_placement_violations{kind=\"outside\"}") == Some(0.0)
            && gauge(body, "wharf_placement_violations{kind=\"missing\"}") == Some(0.0)
    })
    .await;
    // Two copies asked of a zone with one node: both blobs miss a copy they cannot get.
    must_add_rule(&serve, "eu", "eu/**", "default", &["--replicas", "2"]);
    placement_gauges(&serve, "two impossible blobs", |body| {
        gauge(body, "wharf_placement_blobs{state=\"impossible\"}") == Some(2.0)
            && gauge(body, "wharf_placement_blobs{state=\"compliant\"}") == Some(0.0)
    })
    .await;
    serve.admin(&["placement", "rm", "eu"]);
    placement_gauges(&serve, "no rules, nothing counted", |body| {
        gauge(body, "wharf_placement_blobs{state=\"impossible\"}") == Some(0.0)
    })
    .await;
}
