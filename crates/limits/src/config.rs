//! [`LimitsConfig`], the `[gateway.limits]` section, and its compiled form.

use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::By;

/// A token bucket: `burst` requests at once, then `per_second` a second. `per_second = 0` is no
/// limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rate {
    pub per_second: u32,
    /// Requests allowed at once after a quiet spell; at least 1 (0 is taken as 1).
    pub burst: u32,
}

impl Rate {
    fn is_on(self) -> bool {
        self.per_second > 0
    }
}

/// Request limits of a gateway. Everything is off by default (a registry behind one NAT address
/// serves a whole CI fleet); the connection and timeout limits are in the gateway's own settings.
///
/// ```toml
/// [gateway.limits]
/// client = { per_second = 50, burst = 200 }     # per client address
/// account = { per_second = 100, burst = 400 }   # per authenticated account
/// client_uploads = 8                            # uploads at once per client address
/// account_uploads = 16
/// exempt_accounts = ["ci-robot"]
/// exempt_clients = ["10.20.0.0/16", "::1"]
///
/// [[gateway.limits.repositories]]
/// repositories = "public/**"
/// client = { per_second = 10, burst = 40 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per client address.
    pub client: Rate,
    /// Requests per authenticated account (anonymous requests count only by address).
    pub account: Rate,
    /// Upload requests at once per client address; 0: no cap.
    pub client_uploads: u32,
    /// Upload requests at once per account; 0: no cap.
    pub account_uploads: u32,
    /// Accounts no limit applies to, by exact name (robots of a CI fleet).
    pub exempt_accounts: Vec<String>,
    /// Client addresses or networks (CIDR) no limit applies to.
    pub exempt_clients: Vec<String>,
    /// Per-repository rules; the first whose glob matches the request's repository applies, with
    /// buckets of its own. A field left out takes the global value; a rate of 0 lifts the limit.
    pub repositories: Vec<RepositoryLimits>,
}

/// Limits for the repositories matching a glob (`*` within a path segment, `**` across them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepositoryLimits {
    pub repositories: String,
    pub client: Option<Rate>,
    pub account: Option<Rate>,
    pub client_uploads: Option<u32>,
    pub account_uploads: Option<u32>,
}

/// Why a [`LimitsConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("limits setting {field} is invalid: {reason}")]
    Invalid { field: String, reason: String },
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        Compiled::new(self).map(drop)
    }
}

/// A rule with its glob compiled.
#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    limits: RepositoryLimits,
}

/// The config in the form requests are checked against.
#[derive(Debug)]
pub(crate) struct Compiled {
    config: LimitsConfig,
    exempt_clients: Vec<IpNet>,
    rules: Vec<Rule>,
}

impl Compiled {
    pub(crate) fn new(config: &LimitsConfig) -> Result<Compiled, ConfigError> {
        let exempt_clients = config
            .exempt_clients
            .iter()
            .map(|text| parse_network(text))
            .collect::<Result<_, _>>()?;
        let rules = config
            .repositories
            .iter()
            .enumerate()
            .map(|(index, limits)| {
                let matcher = GlobBuilder::new(&limits.repositories)
                    .literal_separator(true)
                    .build()
                    .ok()
                    .filter(|_| !limits.repositories.is_empty())
                    .ok_or_else(|| ConfigError::Invalid {
                        field: format!("repositories[{index}].repositories"),
                        reason: format!("{:?} is not a repository glob", limits.repositories),
                    })?
                    .compile_matcher();
                Ok(Rule {
                    matcher,
                    limits: limits.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Compiled {
            config: config.clone(),
            exempt_clients,
            rules,
        })
    }

    pub(crate) fn is_off(&self) -> bool {
        let global = self.config.client.is_on()
            || self.config.account.is_on()
            || self.config.client_uploads > 0
            || self.config.account_uploads > 0;
        let ruled = self.rules.iter().any(|rule| {
            rule.limits.client.is_some_and(Rate::is_on)
                || rule.limits.account.is_some_and(Rate::is_on)
                || rule.limits.client_uploads.is_some_and(|cap| cap > 0)
                || rule.limits.account_uploads.is_some_and(|cap| cap > 0)
        });
        !global && !ruled
    }

    pub(crate) fn exempt_account(&self, name: &str) -> bool {
        self.config
            .exempt_accounts
            .iter()
            .any(|exempt| exempt == name)
    }

    pub(crate) fn exempt_client(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.exempt_clients
            .iter()
            .any(|network| network.contains(&address))
    }

    pub(crate) fn rule_for(&self, repository: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|rule| rule.matcher.is_match(repository))
    }

    /// The rate that applies to `by` under `rule`, with the rule whose buckets count it (`None`
    /// when the global rate applies); `None` when no rate applies.
    pub(crate) fn rate(&self, by: By, rule: Option<usize>) -> Option<(Rate, Option<usize>)> {
        let (global, ruled) = match by {
            By::Client => (
                self.config.client,
                rule.map(|i| self.rules[i].limits.client),
            ),
            By::Account => (
                self.config.account,
                rule.map(|i| self.rules[i].limits.account),
            ),
        };
        match ruled {
            Some(Some(rate)) => rate.is_on().then_some((rate, rule)),
            _ => global.is_on().then_some((global, None)),
        }
    }

    /// The cap on uploads at once for `by` under `rule`, as [`Compiled::rate`].
    pub(crate) fn uploads(&self, by: By, rule: Option<usize>) -> Option<(u32, Option<usize>)> {
        let (global, ruled) = match by {
            By::Client => (
                self.config.client_uploads,
                rule.map(|i| self.rules[i].limits.client_uploads),
            ),
            By::Account => (
                self.config.account_uploads,
                rule.map(|i| self.rules[i].limits.account_uploads),
            ),
        };
        match ruled {
            Some(Some(cap)) => (cap > 0).then_some((cap, rule)),
            _ => (global > 0).then_some((global, None)),
        }
    }
}

/// An address (`10.1.2.3`, `::1`) or a network (`10.0.0.0/8`).
fn parse_network(text: &str) -> Result<IpNet, ConfigError> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|network| match network {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).unwrap_or(network)
                }
                _ => network,
            },
            IpNet::V4(_) => network,
        })
        .map_err(|_| ConfigError::Invalid {
            field: "exempt_clients".to_owned(),
            reason: format!("{text:?} is neither an address nor a network like 10.0.0.0/8"),
        })
}

/// An IPv4 client seen on a dual-stack socket (`::ffff:a.b.c.d`) is its IPv4 address.
pub(crate) fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}
