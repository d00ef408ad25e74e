//! The `WWW-Authenticate` challenge a registry answers a 401 with (RFC 9110 section 11.6.1;
//! the Docker token flow's `Bearer realm="...",service="...",scope="..."`), as read by clients:
//! `wharf bench` and the pull-through cache's upstream client.

use std::collections::HashMap;

/// A challenge: its scheme (`Bearer`, `Basic`, ...) and its parameters, keys lowercased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Reads a `WWW-Authenticate` value with one challenge; `None` when it names no scheme.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() || scheme.contains(['=', ',', '"']) {
            return None;
        }
        Some(Challenge {
            scheme: scheme.to_owned(),
            params: parse_challenge(params),
        })
    }

    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Where a Bearer challenge's token is asked for: its realm with its `service` and `scope`
    /// (when given) as the query; `None` without an http(s) realm.
    pub fn token_url(&self, scope: Option<&str>) -> Option<String> {
        let realm = self
            .param("realm")
            .filter(|realm| realm.starts_with("https://") || realm.starts_with("http://"))?;
        let query: Vec<String> = [("service", self.param("service")), ("scope", scope)]
            .into_iter()
            .filter_map(|(key, value)| Some(format!("{key}={}", percent_encode(value?))))
            .collect();
        if query.is_empty() {
            return Some(realm.to_owned());
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        Some(format!("{realm}{separator}{}", query.join("&")))
    }
}

/// `realm="...",service="...",scope="..."` into a map (values may be quoted; keys lowercased).
pub fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((value, after)) => (value, after),
                None => (quoted, ""),
            }
        } else {
            after.split_once(',').map_or((after, ""), |(v, a)| (v, a))
        };
        map.insert(key.trim().to_ascii_lowercase(), value.to_string());
        rest = after.trim_start_matches([',', ' ']);
    }
    map
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded: a query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_parses() {
        let challenge = Challenge::parse(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="wharf",scope="repository:a/b:pull,push""#,
        )
        .expect("a challenge");
        assert!(challenge.is("bearer"));
        assert_eq!(
            challenge.param("realm"),
            Some("http://127.0.0.1:5001/token")
        );
        assert_eq!(challenge.param("service"), Some("wharf"));
        assert_eq!(challenge.param("scope"), Some("repository:a/b:pull,push"));
        assert_eq!(challenge.param("error"), None);
    }

    #[test]
    fn a_token_url_carries_the_service_and_scope() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example""#,
        )
        .expect("a challenge");
        assert_eq!(
            challenge.token_url(Some("repository:a/b:pull")).as_deref(),
            Some("https://auth.example/token?service=registry.example&scope=repository%3Aa%2Fb%3Apull")
        );
        let bare = Challenge::parse(r#"Bearer realm="http://h/token?x=1""#).expect("a challenge");
        assert_eq!(bare.token_url(None).as_deref(), Some("http://h/token?x=1"));
        assert_eq!(
            bare.token_url(Some("s")).as_deref(),
            Some("http://h/token?x=1&scope=s")
        );
        for no_realm in [r#"Bearer service="x""#, r#"Bearer realm="ftp://h/token""#] {
            let challenge = Challenge::parse(no_realm).expect("a challenge");
            assert_eq!(challenge.token_url(None), None, "{no_realm}");
        }
    }

    #[test]
    fn basic_unquoted_and_odd_challenges() {
        let basic = Challenge::parse(r#"Basic realm="Registry Realm""#).expect("basic");
        assert!(basic.is("Basic") && !basic.is("Bearer"));
        assert_eq!(basic.param("realm"), Some("Registry Realm"));
        let unquoted = parse_challenge("Realm=x, service=y");
        assert_eq!(
            (unquoted["realm"].as_str(), unquoted["service"].as_str()),
            ("x", "y")
        );
        assert_eq!(parse_challenge(r#"realm="open"#)["realm"], "open");
        assert!(parse_challenge("no-equals-sign").is_empty());
        assert_eq!(
            Challenge::parse("Negotiate").expect("scheme").scheme,
            "Negotiate"
        );
        assert_eq!(Challenge::parse(""), None);
        assert_eq!(Challenge::parse(r#"realm="x""#), None);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
        assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
    }
}
