//! Pull-through cache upstreams (proxy repositories): the repositories under a prefix are
//! served from another registry and cached as they are pulled. The list lives in the Raft
//! state; gateways read it and route pulls by the longest matching prefix.

use serde::{Deserialize, Serialize};

use crate::auth::validate_id;
use crate::error::MetaError;

/// How long a cached tag is trusted before it is checked with the upstream again, by default.
pub const DEFAULT_TAG_TTL_SECS: u64 = 300;
/// The longest tag TTL accepted: a month.
pub const MAX_TAG_TTL_SECS: u64 = 30 * 24 * 3600;
/// How long cached content is kept without a pull, by default: a week.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 7 * 24 * 3600;

fn default_cache_ttl() -> u64 {
    DEFAULT_CACHE_TTL_SECS
}

/// One upstream registry. Pulls of `<prefix>/<name>` are answered from `<url>` as `<name>`:
/// manifests by digest and blobs are cached for good (until the cache's idle TTL collects
/// them), tags are re-validated with the upstream after `tag_ttl_secs`.
///
/// The credentials are kept in the Raft state (and so in snapshots) as given, because every
/// gateway must present them to the upstream; the operator views ([`ProxyView`]) never show
/// the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyUpstream {
    pub id: String,
    /// The upstream registry's root, `http(s)://host[:port]` (the client adds `/v2/...`).
    pub url: String,
    /// The repository-name prefix it answers under: one or more path components.
    pub prefix: String,
    pub tag_ttl_secs: u64,
    /// How long a cached manifest stays without a pull before garbage collection removes it
    /// (and then the blobs only it used); 0 keeps everything for good.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Also answers pulls of repositories this registry does not have, by their own name
    /// (docker's `registry-mirrors`: `library/alpine` for Docker Hub's), cached under the
    /// prefix. One upstream at most is the mirror.
    #[serde(default)]
    pub mirror: bool,
    /// PEM certificates the upstream's TLS certificate may chain to, besides the system's (a
    /// private CA).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// What an operator sees of an upstream: everything but the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyView {
    pub id: String,
    pub url: String,
    pub prefix: String,
    pub tag_ttl_secs: u64,
    pub cache_ttl_secs: u64,
    pub username: Option<String>,
    pub has_password: bool,
    pub mirror: bool,
    /// Whether a CA bundle of its own is set.
    #[serde(default)]
    pub has_ca: bool,
}

impl ProxyUpstream {
    /// Checks the fields, normalising nothing: `Invalid` with the reason.
    pub fn validate(&self) -> Result<(), MetaError> {
        let invalid = |reason: String| Err(MetaError::Invalid(reason));
        validate_id("proxy upstream", &self.id)?;
        if let Err(reason) = validate_url(&self.url) {
            return invalid(format!("proxy upstream {}: {reason}", self.id));
        }
        if oci_model::RepositoryName::parse(&self.prefix).is_err() {
            return invalid(format!(
                "proxy upstream {}: prefix {:?} is not a repository-name path (lowercase \
                 components separated by '/')",
                self.id, self.prefix
            ));
        }
        if self.tag_ttl_secs > MAX_TAG_TTL_SECS {
            return invalid(format!(
                "proxy upstream {}: the tag TTL is at most {MAX_TAG_TTL_SECS} s",
                self.id
            ));
        }
        if let Err(reason) = validate_ca_pem(self.ca_pem.as_deref()) {
            return invalid(format!("proxy upstream {}: {reason}", self.id));
        }
        match (&self.username, &self.password) {
            (None, Some(_)) => invalid(format!(
                "proxy upstream {}: a password needs a username",
                self.id
            )),
            (Some(user), _) if user.is_empty() || user.contains(':') || has_control(user) => {
                invalid(format!(
                    "proxy upstream {}: a username is not empty and holds no ':' or control \
                     character",
                    self.id
                ))
            }
            _ => Ok(()),
        }
    }

    /// The upstream's name for `repo` when `repo` is under this upstream's prefix (`None` for
    /// the prefix itself, which names no upstream repository).
    pub fn upstream_name<'a>(&self, repo: &'a str) -> Option<&'a str> {
        repo.strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')
            .filter(|rest| !rest.is_empty())
    }

    pub fn view(&self) -> ProxyView {
        ProxyView {
            id: self.id.clone(),
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            tag_ttl_secs: self.tag_ttl_secs,
            cache_ttl_secs: self.cache_ttl_secs,
            username: self.username.clone(),
            has_password: self.password.is_some(),
            mirror: self.mirror,
            has_ca: self.ca_pem.is_some(),
        }
    }
}

// By hand, so that a password never reaches a log line.
impl std::fmt::Debug for ProxyUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.view(), f)
    }
}

/// The largest CA bundle taken: a few dozen certificates.
pub const MAX_CA_PEM_BYTES: usize = 256 * 1024;

/// A CA bundle is PEM text holding at least one certificate, within [`MAX_CA_PEM_BYTES`]
/// (whether each certificate parses is checked where it is used, by the HTTP client).
pub(crate) fn validate_ca_pem(pem: Option<&str>) -> Result<(), String> {
    let Some(pem) = pem else {
        return Ok(());
    };
    if pem.len() > MAX_CA_PEM_BYTES {
        return Err(format!(
            "the CA bundle is {} bytes, more than {MAX_CA_PEM_BYTES}",
            pem.len()
        ));
    }
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err("the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `http(s)://host[:port]`: the registry's root, which the client appends `/v2/...` to; no
/// path, query, fragment, credentials or whitespace.
pub(crate) fn validate_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(format!("URL {url:?} is not http:// or https://"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("URL {url:?} names no host"));
    }
    if authority.contains('@') {
        return Err("credentials go in --user and --password-stdin, not in the URL".to_owned());
    }
    if rest.contains(['/', '?', '#']) || url.chars().any(char::is_whitespace) {
        return Err(format!(
            "URL {url:?} must be the registry's root: scheme, host and port, no path (not even \
             a trailing '/'), query or whitespace"
        ));
    }
    if has_control(url) {
        return Err("the URL holds a control character".to_owned());
    }
    Ok(())
}

/// The upstream whose prefix is the longest one `repo` is under, with the upstream's name for
/// it.
pub fn proxy_for<'a, 'r>(
    proxies: &'a [ProxyUpstream],
    repo: &'r str,
) -> Option<(&'a ProxyUpstream, &'r str)> {
    proxies
        .iter()
        .filter_map(|proxy| Some((proxy, proxy.upstream_name(repo)?)))
        .max_by_key(|(proxy, _)| proxy.prefix.len())
}

/// The mirror upstream, if one is set.
pub fn mirror(proxies: &[ProxyUpstream]) -> Option<&ProxyUpstream> {
    proxies.iter().find(|proxy| proxy.mirror)
}

/// Whether `repo` is a proxy prefix itself or lies under one (pushes there are refused).
pub fn under_proxy(proxies: &[ProxyUpstream], repo: &str) -> bool {
    proxies
        .iter()
        .any(|proxy| repo == proxy.prefix || proxy.upstream_name(repo).is_some())
}

/// Adds `proxy` to `proxies` (kept in id order), or replaces the one with its id. `Invalid` when
/// it does not validate or its prefix overlaps another upstream's (one equal to, or a path
/// under, the other), which would make a repository's upstream ambiguous.
pub fn put_proxy(proxies: &mut Vec<ProxyUpstream>, proxy: ProxyUpstream) -> Result<(), MetaError> {
    proxy.validate()?;
    let overlaps =
        |a: &str, b: &str| a == b || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'));
    if let Some(other) = proxies
        .iter()
        .find(|other| proxy.mirror && other.mirror && other.id != proxy.id)
    {
        return Err(MetaError::Invalid(format!(
            "proxy upstream {} is already the mirror; remove it or make it an ordinary one first",
            other.id
        )));
    }
    if let Some(other) = proxies.iter().find(|other| {
        other.id != proxy.id
            && (overlaps(&other.prefix, &proxy.prefix) || overlaps(&proxy.prefix, &other.prefix))
    }) {
        return Err(MetaError::Invalid(format!(
            "prefix {} of proxy upstream {} overlaps prefix {} of {}",
            proxy.prefix, proxy.id, other.prefix, other.id
        )));
    }
    match proxies.binary_search_by(|known| known.id.cmp(&proxy.id)) {
        Ok(at) => proxies[at] = proxy,
        Err(at) => proxies.insert(at, proxy),
    }
    Ok(())
}

/// Removes upstream `id`; `Invalid` when there is none.
pub fn delete_proxy(proxies: &mut Vec<ProxyUpstream>, id: &str) -> Result<(), MetaError> {
    let before = proxies.len();
    proxies.retain(|proxy| proxy.id != id);
    if proxies.len() == before {
        return Err(MetaError::Invalid(format!(
            "proxy upstream {id} does not exist"
        )));
    }
    Ok(())
}

/// The answer to a fetch-lease request ([`MetaApi::acquire_fetch`](crate::MetaApi::acquire_fetch)):
/// whether the caller holds the lease now, and who does with how long left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchLease {
    pub granted: bool,
    pub holder: String,
    pub expires_in_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(id: &str, prefix: &str) -> ProxyUpstream {
        ProxyUpstream {
            id: id.to_owned(),
            url: "https://registry-1.docker.io".to_owned(),
            prefix: prefix.to_owned(),
            tag_ttl_secs: DEFAULT_TAG_TTL_SECS,
            cache_ttl_secs: DEFAULT_CACHE_TTL_SECS,
            username: None,
            password: None,
            mirror: false,
            ca_pem: None,
        }
    }

    #[test]
    fn validation_names_each_bad_field() {
        upstream("hub", "dockerhub").validate().expect("valid");
        let cases = [
            (
                ProxyUpstream {
                    url: "ftp://x".into(),
                    ..upstream("a", "p")
                },
                "not http",
            ),
            (
                ProxyUpstream {
                    url: "https://".into(),
                    ..upstream("a", "p")
                },
                "no host",
            ),
            (
                ProxyUpstream {
                    url: "https://u:p@host".into(),
                    ..upstream("a", "p")
                },
                "credentials",
            ),
            (
                ProxyUpstream {
                    url: "https://host/".into(),
                    ..upstream("a", "p")
                },
                "no path",
            ),
            (
                ProxyUpstream {
                    url: "https://host:5000/v2".into(),
                    ..upstream("a", "p")
                },
                "no path",
            ),
            (upstream("a", "Docker"), "prefix"),
            (upstream("a", "dockerhub/"), "prefix"),
            (upstream("Bad Id", "p"), "id"),
            (
                ProxyUpstream {
                    tag_ttl_secs: MAX_TAG_TTL_SECS + 1,
                    ..upstream("a", "p")
                },
                "TTL",
            ),
            (
                ProxyUpstream {
                    password: Some("pw".into()),
                    ..upstream("a", "p")
                },
                "needs a username",
            ),
            (
                ProxyUpstream {
                    ca_pem: Some("not a certificate".into()),
                    ..upstream("a", "p")
                },
                "no PEM certificate",
            ),
            (
                ProxyUpstream {
                    ca_pem: Some(format!(
                        "-----BEGIN CERTIFICATE-----\n{}",
                        "A".repeat(MAX_CA_PEM_BYTES)
                    )),
                    ..upstream("a", "p")
                },
                "CA bundle",
            ),
            (
                ProxyUpstream {
                    username: Some("a:b".into()),
                    ..upstream("a", "p")
                },
                "username",
            ),
        ];
        for (proxy, needle) in cases {
            let error = proxy.validate().expect_err(needle).to_string();
            assert!(
                error.contains(needle),
                "{error:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn the_longest_prefix_routes_and_the_prefix_itself_names_nothing() {
        let proxies = vec![upstream("hub", "hub"), upstream("quay", "mirrors/quay")];
        assert_eq!(
            proxy_for(&proxies, "hub/library/alpine").map(|(p, name)| (p.id.as_str(), name)),
            Some(("hub", "library/alpine"))
        );
        assert_eq!(
            proxy_for(&proxies, "mirrors/quay/org/app").map(|(p, name)| (p.id.as_str(), name)),
            Some(("quay", "org/app"))
        );
        assert!(proxy_for(&proxies, "hub").is_none());
        assert!(proxy_for(&proxies, "hubx/app").is_none());
        assert!(proxy_for(&proxies, "mirrors/other").is_none());
        assert!(under_proxy(&proxies, "hub") && under_proxy(&proxies, "hub/a"));
        assert!(!under_proxy(&proxies, "hubx/a") && !under_proxy(&proxies, "mirrors"));
    }

    #[test]
    fn put_replaces_by_id_and_refuses_overlapping_prefixes() {
        let mut proxies = Vec::new();
        put_proxy(&mut proxies, upstream("hub", "hub")).expect("first");
        put_proxy(&mut proxies, upstream("ghcr", "ghcr")).expect("second");
        assert_eq!(
            proxies.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["ghcr", "hub"]
        );
        // The same id may move its own prefix.
        put_proxy(&mut proxies, upstream("hub", "dockerhub")).expect("replace");
        assert_eq!(proxies.len(), 2);
        for prefix in ["ghcr", "ghcr/sub", "dockerhub/x"] {
            let error = put_proxy(&mut proxies, upstream("new", prefix)).expect_err(prefix);
            assert!(error.to_string().contains("overlaps"), "{error}");
        }
        // One mirror at most.
        let mirror = |id: &str, prefix: &str| ProxyUpstream {
            mirror: true,
            ..upstream(id, prefix)
        };
        put_proxy(&mut proxies, mirror("ghcr", "ghcr")).expect("the first mirror");
        let error = put_proxy(&mut proxies, mirror("hub", "dockerhub")).expect_err("a second");
        assert!(error.to_string().contains("already the mirror"), "{error}");
        assert_eq!(super::mirror(&proxies).map(|p| p.id.as_str()), Some("ghcr"));
        put_proxy(&mut proxies, upstream("ghcr", "ghcr")).expect("no mirror again");
        assert!(super::mirror(&proxies).is_none());
        // A prefix that only shares leading characters does not overlap.
        put_proxy(&mut proxies, upstream("new", "ghcrx")).expect("no overlap");
        delete_proxy(&mut proxies, "new").expect("delete");
        assert!(delete_proxy(&mut proxies, "new").is_err());
        assert_eq!(proxies.len(), 2);
    }

    #[test]
    fn the_view_hides_the_password() {
        let proxy = ProxyUpstream {
            username: Some("robot".into()),
            password: Some("secret".into()),
            ..upstream("hub", "hub")
        };
        let view = proxy.view();
        assert!(view.has_password);
        assert!(!format!("{view:?}").contains("secret"));
        assert!(!format!("{proxy:?}").contains("secret"));
    }
}
