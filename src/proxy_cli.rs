//! `wharf admin proxy add|list|rm|status`: the pull-through cache's upstreams, kept in the
//! Raft state. Pulls of `<prefix>/<name>` are answered from the upstream's `<name>` and cached.

use clap::Subcommand;
use cluster_api::{MetaApi, ProxyUpstream, DEFAULT_CACHE_TTL_SECS, DEFAULT_TAG_TTL_SECS};
use cluster_client::{MetaClient, RetryPolicy};
use serde_json::json;

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum ProxyCommand {
    /// Add or replace an upstream: `<prefix>/<name>` is pulled from `<url>` as `<name>` and
    /// cached. Pushes under the prefix are refused.
    Add {
        /// Upstream id.
        #[arg(long)]
        id: String,
        /// The upstream registry's root, e.g. `https://registry-1.docker.io`.
        #[arg(long)]
        url: String,
        /// Repository prefix it is served under, e.g. `dockerhub`.
        #[arg(long)]
        prefix: String,
        /// How long a cached tag is served before it is checked with the upstream again
        /// (90d, 12h, 30m, 300s or plain seconds) [default: 5m].
        #[arg(long, value_parser = crate::admin_cli::parse_duration)]
        tag_ttl: Option<u64>,
        /// How long cached content stays without a pull before garbage collection removes it
        /// (90d, 12h, ...; 0 keeps it for good) [default: 7d].
        #[arg(long, value_parser = parse_ttl)]
        cache_ttl: Option<u64>,
        /// User name at the upstream (Basic or the Docker token flow).
        #[arg(long, requires = "password_stdin")]
        user: Option<String>,
        /// Read the upstream password (or token) from stdin's first line.
        #[arg(long, requires = "user")]
        password_stdin: bool,
        /// Also answer pulls of repositories this registry does not have, by their own name
        /// (for docker's `registry-mirrors`: `library/alpine` is Docker Hub's), cached under
        /// the prefix. One upstream at most.
        #[arg(long)]
        mirror: bool,
        /// PEM file of the CA(s) the upstream's TLS certificate may chain to, besides the
        /// system's (a private CA); kept with the upstream.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Remove an upstream. What it cached stays, as ordinary repositories.
    Rm { id: String },
    /// The upstreams (JSON; never their passwords).
    List,
    /// Each upstream probed from here (`GET /v2/` with its credentials) and its namespace's
    /// usage (JSON).
    Status,
}

/// A duration, or `0` for none.
fn parse_ttl(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    crate::admin_cli::parse_duration(text)
}

pub async fn proxy(meta: &[String], command: ProxyCommand) -> CliResult {
    let client = MetaClient::new(meta, RetryPolicy::default())?;
    match command {
        ProxyCommand::Add {
            id,
            url,
            prefix,
            tag_ttl,
            cache_ttl,
            user,
            password_stdin,
            mirror,
            ca_file,
        } => {
            let ca_pem = ca_file
                .as_deref()
                .map(crate::admin_cli::read_ca_file)
                .transpose()?;
            let password = password_stdin
                .then(crate::admin_cli::stdin_line)
                .transpose()?;
            let upstream = ProxyUpstream {
                id: id.clone(),
                url: url.clone(),
                prefix: prefix.clone(),
                tag_ttl_secs: tag_ttl.unwrap_or(DEFAULT_TAG_TTL_SECS),
                cache_ttl_secs: cache_ttl.unwrap_or(DEFAULT_CACHE_TTL_SECS),
                username: user,
                password,
                mirror,
                ca_pem,
            };
            client.put_proxy(upstream).await?;
            println!("proxy upstream {id} set: {prefix}/<name> pulls {url} <name>");
        }
        ProxyCommand::Rm { id } => {
            client.delete_proxy(&id).await?;
            println!("proxy upstream {id} removed");
        }
        ProxyCommand::List => {
            let views: Vec<_> = client
                .proxies()
                .await?
                .iter()
                .map(ProxyUpstream::view)
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "proxies": views }))?
            );
        }
        ProxyCommand::Status => {
            let status = proxy::status(&client).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "proxies": status }))?
            );
        }
    }
    Ok(())
}
