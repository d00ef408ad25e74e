use super::*;

fn limiter(toml_text: &str) -> Limiter {
    let config: LimitsConfig = toml::from_str(toml_text).expect("config parses");
    Limiter::new(&config).expect("config is valid")
}

fn from(client: &str) -> Request<'static> {
    Request {
        client: Some(client.parse().unwrap()),
        ..Request::default()
    }
}

#[test]
fn a_client_gets_its_burst_then_its_rate() {
    let limits = limiter("client = { per_second = 2, burst = 3 }");
    let t0 = Instant::now();
    for _ in 0..3 {
        drop(
            limits
                .admit(&from("10.0.0.1"), t0)
                .expect("within the burst"),
        );
    }
    let refusal = limits
        .admit(&from("10.0.0.1"), t0)
        .err()
        .expect("burst spent");
    assert_eq!((refusal.limit, refusal.by), (Limit::Rate, By::Client));
    assert!(
        refusal.retry_after <= Duration::from_millis(500),
        "{refusal:?}"
    );
    assert_eq!(refusal.retry_after_secs(), 1);
    // Another address has its own bucket.
    drop(limits.admit(&from("10.0.0.2"), t0).expect("another client"));
    // Half a second later one more token has come back, and only one.
    let later = t0 + Duration::from_millis(500);
    drop(limits.admit(&from("10.0.0.1"), later).expect("refilled"));
    assert!(limits.admit(&from("10.0.0.1"), later).is_err());
    // A long quiet spell refills up to the burst, no more.
    let much_later = t0 + Duration::from_secs(3600);
    for _ in 0..3 {
        drop(limits.admit(&from("10.0.0.1"), much_later).unwrap());
    }
    assert!(limits.admit(&from("10.0.0.1"), much_later).is_err());
}

#[test]
fn a_refused_request_takes_nothing_from_its_other_bucket() {
    let limits =
        limiter("client = { per_second = 1, burst = 2 }\naccount = { per_second = 1, burst = 1 }");
    let t0 = Instant::now();
    let bob = Request {
        account: Some("bob"),
        ..from("10.0.0.1")
    };
    drop(limits.admit(&bob, t0).unwrap());
    let refusal = limits.admit(&bob, t0).err().expect("account bucket empty");
    assert_eq!(refusal.by, By::Account);
    // The address still has the token the refused request did not take.
    drop(
        limits
            .admit(&from("10.0.0.1"), t0)
            .expect("client bucket untouched"),
    );
    assert!(limits.admit(&from("10.0.0.1"), t0).is_err());
}

#[test]
fn exempt_accounts_and_networks_are_never_limited() {
    let limits = limiter(
        r#"
client = { per_second = 1, burst = 1 }
account = { per_second = 1, burst = 1 }
client_uploads = 1
exempt_accounts = ["ci-robot"]
exempt_clients = ["192.168.0.0/16", "::1"]
"#,
    );
    let t0 = Instant::now();
    let robot = Request {
        account: Some("ci-robot"),
        upload: true,
        ..from("10.0.0.1")
    };
    let held: Vec<Admitted> = (0..50).map(|_| limits.admit(&robot, t0).unwrap()).collect();
    for client in ["192.168.4.5", "::1", "::ffff:192.168.0.9"] {
        for _ in 0..50 {
            drop(limits.admit(&from(client), t0).unwrap());
        }
    }
    // The robot's address is limited for others (the robot took nothing from it).
    drop(limits.admit(&from("10.0.0.1"), t0).unwrap());
    assert!(limits.admit(&from("10.0.0.1"), t0).is_err());
    drop(held);
}

#[test]
fn uploads_are_counted_while_they_run() {
    let limits = limiter("client_uploads = 2\naccount_uploads = 3");
    let upload = |client: &'static str, account: Option<&'static str>| Request {
        upload: true,
        account,
        ..from(client)
    };
    let t0 = Instant::now();
    let first = limits.admit(&upload("10.0.0.1", Some("bob")), t0).unwrap();
    let second = limits.admit(&upload("10.0.0.1", Some("bob")), t0).unwrap();
    let refusal = limits
        .admit(&upload("10.0.0.1", Some("bob")), t0)
        .err()
        .expect("two at once per address");
    assert_eq!((refusal.limit, refusal.by), (Limit::Uploads, By::Client));
    let third = limits.admit(&upload("10.0.0.2", Some("bob")), t0).unwrap();
    let refusal = limits
        .admit(&upload("10.0.0.3", Some("bob")), t0)
        .err()
        .expect("three at once per account");
    assert_eq!(refusal.by, By::Account);
    // Requests that are not uploads are not counted.
    drop(limits.admit(&from("10.0.0.1"), t0).unwrap());
    assert_eq!(limits.uploads_in_progress(), 6);
    drop(first);
    limits
        .admit(&upload("10.0.0.1", Some("bob")), t0)
        .map(drop)
        .expect("a slot came back");
    drop((second, third));
    assert_eq!(limits.uploads_in_progress(), 0);
}

#[test]
fn a_repository_rule_has_buckets_of_its_own_and_can_lift_the_limit() {
    let limits = limiter(
        r#"
client = { per_second = 1, burst = 1 }
[[repositories]]
repositories = "public/**"
client = { per_second = 1, burst = 5 }
[[repositories]]
repositories = "ci/*"
client = { per_second = 0 }
"#,
    );
    let t0 = Instant::now();
    let to = |repository: &'static str| Request {
        repository: Some(repository),
        ..from("10.0.0.1")
    };
    for _ in 0..5 {
        drop(limits.admit(&to("public/a/b"), t0).unwrap());
    }
    assert!(limits.admit(&to("public/x"), t0).is_err());
    // The global bucket is untouched by the rule's requests.
    drop(limits.admit(&to("private/x"), t0).unwrap());
    assert!(limits.admit(&to("private/x"), t0).is_err());
    // `ci/*` lifts the limit, for one segment only; `ci/a/b` falls to the global bucket.
    for _ in 0..100 {
        drop(limits.admit(&to("ci/builds"), t0).unwrap());
    }
    assert!(limits.admit(&to("ci/a/b"), t0).is_err());
}

#[test]
fn ipv6_clients_are_counted_per_64() {
    let limits = limiter("client = { per_second = 1, burst = 1 }");
    let t0 = Instant::now();
    drop(limits.admit(&from("2001:db8:1:2::1"), t0).unwrap());
    assert!(limits.admit(&from("2001:db8:1:2:ffff::7"), t0).is_err());
    drop(limits.admit(&from("2001:db8:1:3::1"), t0).unwrap());
    // An IPv4 client on a dual-stack socket is its IPv4 address.
    drop(limits.admit(&from("::ffff:10.0.0.1"), t0).unwrap());
    assert!(limits.admit(&from("10.0.0.1"), t0).is_err());
}

#[test]
fn the_bucket_table_stays_bounded() {
    let limits = limiter("client = { per_second = 1, burst = 2 }");
    let t0 = Instant::now();
    for i in 0..(MAX_KEYS as u32 + 10) {
        let address = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let request = Request {
            client: Some(address),
            ..Request::default()
        };
        drop(limits.admit(&request, t0).unwrap());
    }
    assert!(limits.buckets.lock().len() <= MAX_KEYS);
}

#[test]
fn off_by_default_and_bad_settings_are_refused() {
    assert!(limiter("").is_off());
    assert!(
        limiter("[[repositories]]\nrepositories = \"a/**\"\nclient = { per_second = 0 }").is_off()
    );
    assert!(!limiter("account_uploads = 1").is_off());
    let bad_network: LimitsConfig = toml::from_str("exempt_clients = [\"10.0.0.0/33\"]").unwrap();
    let error = bad_network.validate().unwrap_err().to_string();
    assert!(error.contains("10.0.0.0/33"), "{error}");
    let bad_glob: LimitsConfig =
        toml::from_str("[[repositories]]\nrepositories = \"a/[\"").unwrap();
    assert!(bad_glob.validate().is_err());
    assert!(toml::from_str::<LimitsConfig>("clients = {}").is_err());
}

proptest::proptest! {
    /// However requests arrive, a key never gets more than its burst plus its rate times the time
    /// elapsed.
    #[test]
    fn never_more_than_burst_plus_rate(
        per_second in 1u32..50,
        burst in 1u32..20,
        gaps in proptest::collection::vec(0u64..200, 1..300),
    ) {
        let limits = Limiter::new(&LimitsConfig {
            client: Rate { per_second, burst },
            ..LimitsConfig::default()
        }).unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let mut admitted = 0u64;
        for gap in gaps {
            now += Duration::from_millis(gap);
            if limits.admit(&from("10.0.0.1"), now).is_ok() {
                admitted += 1;
            }
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        let allowed = f64::from(burst) + elapsed * f64::from(per_second);
        proptest::prop_assert!(admitted as f64 <= allowed + 1e-9, "{admitted} > {allowed}");
    }
}
