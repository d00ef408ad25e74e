//! `wharf`: a clustered OCI / Docker container registry. One binary, one subcommand per role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use wharf::{Running, WharfConfig};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A clustered OCI / Docker container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process: a gateway, one meta voter and one blob node.
    Serve(Options),
    /// Run a meta (Raft metadata) node.
    Meta(Options),
    /// Run a blob storage node.
    Blob(Options),
    /// Run a stateless OCI HTTP gateway.
    Gateway(Options),
    /// Operate a running cluster: `wharf admin --meta ADDR cluster status|add-meta|...`.
    Admin(Admin),
    /// Local development clusters of separate processes (`wharf dev cluster --help`).
    #[command(subcommand)]
    Dev(wharf::dev_cluster::DevCommand),
    /// Load-test any OCI registry: blob push/pull, manifest PUT/GET/HEAD, tag listing.
    Bench(load::BenchArgs),
    /// Copy repositories (or a whole catalog) from any registry into another, verified and
    /// resumable: the migration from Distribution.
    Mirror(wharf::mirror_cli::MirrorArgs),
}

/// Settings come from the config file, then `WHARF_*` environment variables, then these flags;
/// each later source overrides the earlier.
#[derive(Args, Debug, Default)]
struct Options {
    /// TOML config file (see README "Configuration").
    #[arg(long, env = "WHARF_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP address of the OCI API [default: 127.0.0.1:5000].
    #[arg(long, env = "WHARF_LISTEN")]
    listen: Option<String>,
    /// Data directory [default: ./wharf-data].
    #[arg(long, env = "WHARF_DATA")]
    data: Option<PathBuf>,
    /// gRPC address of this node (meta, blob; for serve the internal one) [default: 127.0.0.1:0].
    #[arg(long, env = "WHARF_GRPC_LISTEN")]
    grpc_listen: Option<String>,
    /// gRPC address other members reach this node at [default: the bound gRPC address].
    #[arg(long, env = "WHARF_ADVERTISE")]
    advertise: Option<String>,
    /// Meta node addresses, comma-separated (gateway and blob roles).
    #[arg(long, env = "WHARF_META", value_delimiter = ',')]
    meta: Option<Vec<String>>,
    /// This node's id within its role (meta voter id or blob node id) [default: 1].
    #[arg(long, env = "WHARF_NODE_ID")]
    node_id: Option<u64>,
    /// Zone of a blob node, for replica placement [default: default].
    #[arg(long, env = "WHARF_ZONE")]
    zone: Option<String>,
    /// Blob node (and serve): serve redirected blob GETs on this address, e.g. `0.0.0.0:7001`
    /// [default: none; gateways then proxy the bytes].
    #[arg(long, env = "WHARF_BLOB_HTTP_LISTEN")]
    blob_http_listen: Option<String>,
    /// The base URL clients reach --blob-http-listen at [default: http://<the bound address>].
    #[arg(long, env = "WHARF_BLOB_HTTP_ADVERTISE")]
    blob_http_advertise: Option<String>,
    /// Meta: start a new cluster with this node as its only voter when the data dir is empty
    /// [default: when --join is not given].
    #[arg(long, env = "WHARF_BOOTSTRAP", num_args = 0..=1, default_missing_value = "true")]
    bootstrap: Option<bool>,
    /// Meta: join the cluster through these meta node addresses when the data dir is empty.
    #[arg(long, env = "WHARF_JOIN", value_delimiter = ',')]
    join: Option<Vec<String>>,
    /// Meta: join as a read replica, a Raft learner that never votes and serves reads (needs
    /// --join) [default: false].
    #[arg(long, env = "WHARF_READ_REPLICA", num_args = 0..=1, default_missing_value = "true")]
    read_replica: Option<bool>,
    /// Serve Prometheus `GET /metrics` on this address too (meta and blob roles have no other HTTP).
    #[arg(long, env = "WHARF_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// A pull-through cache upstream, `ID=URL@PREFIX` (repeat, or comma-separate in the
    /// environment); added to the config file's `[[proxy]]` list, replacing the same id.
    #[arg(long = "proxy", env = "WHARF_PROXY", value_delimiter = ',', value_parser = wharf::config::ProxyConfig::parse_flag)]
    proxies: Vec<wharf::config::ProxyConfig>,
    /// Log filter, e.g. `info` or `debug` [default: info; RUST_LOG wins when set].
    #[arg(long, env = "WHARF_LOG")]
    log: Option<String>,
    /// Export trace spans over OTLP/gRPC to this collector, e.g. `http://127.0.0.1:4317`
    /// [default: OTEL_EXPORTER_OTLP_ENDPOINT when set, else no export].
    #[arg(long, env = "WHARF_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Turn access control on (gateway, serve): accounts and policies from meta, default deny,
    /// the Docker token flow at /auth/token [default: off, or `[gateway.auth] enabled`].
    #[arg(long, env = "WHARF_AUTH", num_args = 0..=1, default_missing_value = "true")]
    auth: Option<bool>,
    /// Append audit events (push, pull, delete, login, denial, admin) as JSON lines to this file.
    #[arg(long, env = "WHARF_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Write the bound addresses as JSON to this file once ready (for scripts and tests).
    #[arg(long, env = "WHARF_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Serve HTTPS on --listen with this PEM certificate chain (gateway, serve; with --tls-key).
    #[arg(long, env = "WHARF_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "WHARF_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// How often the HTTPS certificate files are checked for a new certificate [default: 10000].
    #[arg(long, env = "WHARF_TLS_RELOAD_INTERVAL_MS")]
    tls_reload_interval_ms: Option<u64>,
    #[command(flatten)]
    cluster_tls: ClusterTlsArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Meta: all of RocksDB's memory (block cache, index and filter blocks, memtables), e.g.
    /// `64MiB` [default: 32MiB, or `[meta] memory_budget`].
    #[arg(long, env = "WHARF_META_MEMORY_BUDGET", value_parser = wharf::lifecycle_cli::parse_size)]
    meta_memory_budget: Option<u64>,
    /// How often garbage is swept (meta leader) and deleted (blob nodes), ms [default: 5000].
    #[arg(long, env = "WHARF_GC_INTERVAL_MS")]
    gc_interval_ms: Option<u64>,
    /// How long an uploaded blob no manifest uses stays in its repository, ms [default: 3600000].
    #[arg(long, env = "WHARF_UPLOAD_GRACE_MS")]
    upload_grace_ms: Option<u64>,
    /// Upload sessions older than this are closed and their staging files removed, ms
    /// [default: 86400000].
    #[arg(long, env = "WHARF_UPLOAD_EXPIRY_MS")]
    upload_expiry_ms: Option<u64>,
}

/// A blob node (and serve) on an S3-compatible bucket instead of the data directory
/// (`[blob_s3]`).
#[derive(Args, Debug, Default)]
struct S3Args {
    /// Keep blobs in this S3 bucket (it must exist) instead of under --data.
    #[arg(long, env = "WHARF_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// Key prefix in the bucket, one per blob node, e.g. `eu-west/blob-1` [default: none].
    #[arg(long, env = "WHARF_S3_PREFIX")]
    s3_prefix: Option<String>,
    /// The S3 API endpoint, e.g. `http://127.0.0.1:3900` [default: AWS's, for the region].
    #[arg(long, env = "WHARF_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The bucket's region [default: AWS_REGION, or us-east-1].
    #[arg(long, env = "WHARF_S3_REGION")]
    s3_region: Option<String>,
    /// Access key id [default: AWS_ACCESS_KEY_ID, or the instance's role].
    #[arg(long, env = "WHARF_S3_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// Secret access key [default: AWS_SECRET_ACCESS_KEY].
    #[arg(long, env = "WHARF_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
}

impl S3Args {
    /// Overrides `[blob_s3]` with the settings given; a bucket given here creates the section.
    fn apply(self, config: &mut Option<wharf::config::S3Config>) -> Result<(), String> {
        let S3Args {
            s3_bucket,
            s3_prefix,
            s3_endpoint,
            s3_region,
            s3_access_key_id,
            s3_secret_access_key,
        } = self;
        let any_other = s3_prefix.is_some()
            || s3_endpoint.is_some()
            || s3_region.is_some()
            || s3_access_key_id.is_some()
            || s3_secret_access_key.is_some();
        let section = match (config.as_mut(), s3_bucket) {
            (Some(section), bucket) => {
                if let Some(bucket) = bucket {
                    section.bucket = bucket;
                }
                section
            }
            (None, Some(bucket)) => config.insert(wharf::config::S3Config {
                bucket,
                prefix: String::new(),
                endpoint: None,
                region: None,
                access_key_id: None,
                secret_access_key: None,
            }),
            (None, None) if any_other => {
                return Err("the --s3-* settings need --s3-bucket (or a [blob_s3] section)".into())
            }
            (None, None) => return Ok(()),
        };
        if let Some(prefix) = s3_prefix {
            section.prefix = prefix;
        }
        if let Some(endpoint) = s3_endpoint {
            section.endpoint = Some(endpoint);
        }
        if let Some(region) = s3_region {
            section.region = Some(region);
        }
        if let Some(key) = s3_access_key_id {
            section.access_key_id = Some(key);
        }
        if let Some(secret) = s3_secret_access_key {
            section.secret_access_key = Some(secret);
        }
        Ok(())
    }
}

/// mTLS between cluster members (roles and `wharf admin`): all three, or none.
#[derive(Args, Debug, Default)]
struct ClusterTlsArgs {
    /// PEM CA bundle that signs every member's certificate (mTLS on every gRPC hop).
    #[arg(long, env = "WHARF_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
    /// This member's (or admin client's) PEM certificate chain, signed by --cluster-tls-ca.
    #[arg(long, env = "WHARF_CLUSTER_TLS_CERT")]
    cluster_tls_cert: Option<PathBuf>,
    /// The PEM private key of --cluster-tls-cert.
    #[arg(long, env = "WHARF_CLUSTER_TLS_KEY")]
    cluster_tls_key: Option<PathBuf>,
}

impl ClusterTlsArgs {
    /// Overrides the config section's paths with the ones given.
    fn apply(self, config: &mut wharf_tls::ClusterTlsConfig) {
        if let Some(ca) = self.cluster_tls_ca {
            config.ca = Some(ca);
        }
        if let Some(cert) = self.cluster_tls_cert {
            config.cert = Some(cert);
        }
        if let Some(key) = self.cluster_tls_key {
            config.key = Some(key);
        }
    }
}

/// `wharf admin`: the cluster TLS flags, then the admin command.
#[derive(Args, Debug)]
struct Admin {
    #[command(flatten)]
    cluster_tls: ClusterTlsArgs,
    #[command(flatten)]
    args: wharf::admin_cli::AdminArgs,
}

impl Options {
    fn into_config(self) -> Result<(WharfConfig, Option<PathBuf>), wharf::config::ConfigError> {
        let mut config = WharfConfig::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        if let Some(grpc_listen) = self.grpc_listen {
            config.grpc_listen = grpc_listen;
        }
        if let Some(advertise) = self.advertise {
            config.advertise = Some(advertise);
        }
        if let Some(meta) = self.meta {
            config.meta.addresses = meta;
        }
        if let Some(budget) = self.meta_memory_budget {
            config.meta.memory_budget = Some(budget);
        }
        if let Some(node_id) = self.node_id {
            config.node_id = node_id;
        }
        if let Some(zone) = self.zone {
            config.zone = zone;
        }
        if let Some(listen) = self.blob_http_listen {
            config.blob_http_listen = Some(listen);
        }
        if let Some(advertise) = self.blob_http_advertise {
            config.blob_http_advertise = Some(advertise);
        }
        if let Some(bootstrap) = self.bootstrap {
            config.bootstrap = Some(bootstrap);
        }
        if let Some(join) = self.join {
            config.join = join;
        }
        if let Some(read_replica) = self.read_replica {
            config.read_replica = read_replica;
        }
        if let Some(metrics_listen) = self.metrics_listen {
            config.metrics_listen = Some(metrics_listen);
        }
        if let Some(log) = self.log {
            config.log = log;
        }
        if let Some(auth) = self.auth {
            config.gateway.auth.enabled = auth;
        }
        if let Some(audit_log) = self.audit_log {
            config.gateway.audit_log = Some(audit_log);
        }
        if let Some(otlp_endpoint) = self.otlp_endpoint {
            config.otlp_endpoint = Some(otlp_endpoint);
        }
        if let Some(cert) = self.tls_cert {
            config.tls.cert = Some(cert);
        }
        if let Some(key) = self.tls_key {
            config.tls.key = Some(key);
        }
        if let Some(interval) = self.tls_reload_interval_ms {
            config.tls.reload_interval_ms = interval;
        }
        self.cluster_tls.apply(&mut config.cluster_tls);
        self.s3
            .apply(&mut config.blob_s3)
            .map_err(wharf::config::ConfigError::Invalid)?;
        if let Some(interval) = self.gc_interval_ms {
            config.gc.interval_ms = interval;
        }
        if let Some(grace) = self.upload_grace_ms {
            config.gc.upload_grace_ms = grace;
        }
        if let Some(expiry) = self.upload_expiry_ms {
            config.gc.upload_expiry_ms = expiry;
        }
        for proxy in self.proxies {
            config.proxies.retain(|known| known.id != proxy.id);
            config.proxies.push(proxy);
        }
        Ok((config, self.addr_file))
    }
}

fn main() -> ExitCode {
    wharf::heap::limit_malloc_arenas();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Admin(_) | Command::Mirror(_)) {
        // A command-line tool whose output is piped into `head` should end quietly when the
        // reader goes, as other Unix tools do, instead of panicking in `println!` on EPIPE.
        // Only for `admin`: a server must survive a peer closing its socket (sockets are
        // written with MSG_NOSIGNAL either way, so this touches only stdout and stderr).
        // SAFETY: restoring a signal's default disposition at start-up, before any thread runs.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("wharf: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wharf: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    let (role, options) = match command {
        Command::Serve(options) => ("serve", options),
        Command::Meta(options) => ("meta", options),
        Command::Blob(options) => ("blob", options),
        Command::Gateway(options) => ("gateway", options),
        Command::Admin(admin) => {
            let mut tls = wharf_tls::ClusterTlsConfig::default();
            admin.cluster_tls.apply(&mut tls);
            wharf::roles::install_cluster_client_tls(&tls)?;
            return wharf::admin_cli::run(admin.args).await;
        }
        Command::Dev(command) => return Ok(wharf::dev_cluster::run(command).await?),
        Command::Bench(args) => return bench(args).await,
        Command::Mirror(args) => return wharf::mirror_cli::run(args).await,
    };
    let (config, addr_file) = options.into_config()?;
    wharf::heap::spawn_trimmer();
    let telemetry =
        wharf::telemetry::init_for_role(&config.log, role, config.otlp_endpoint.as_deref())?;
    let mut running = match role {
        "serve" => wharf::start_serve(&config).await?,
        "meta" => wharf::start_meta(&config).await?,
        "blob" => wharf::start_blob(&config).await?,
        _ => wharf::start_gateway(&config).await?,
    };
    announce(role, &running, addr_file.as_deref())?;
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        _ = running.wait_any() => tracing::error!("a server task ended unexpectedly; shutting down"),
    }
    running.stop().await;
    // Flushing waits for the exporter's last batch; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    Ok(())
}

/// `wharf bench`: the report on stdout; fails when more operations failed than allowed.
async fn bench(args: load::BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = load::run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.errors > args.max_errors {
        return Err(format!(
            "{} of {} operations failed (--max-errors {})",
            report.errors, report.operations, args.max_errors
        )
        .into());
    }
    Ok(())
}

fn announce(
    role: &str,
    running: &Running,
    addr_file: Option<&std::path::Path>,
) -> std::io::Result<()> {
    if let Some(http) = running.http_addr {
        let scheme = if running.https { "https" } else { "http" };
        tracing::info!(role, "OCI registry listening on {scheme}://{http}");
    }
    if let Some(grpc) = running.grpc_addr {
        tracing::info!(role, "gRPC listening on {grpc}");
    }
    if let Some(path) = addr_file {
        let json = serde_json::json!({
            "http": running.http_addr.map(|a| a.to_string()),
            "grpc": running.grpc_addr.map(|a| a.to_string()),
            "blob_http": running.blob_http_addr.map(|a| a.to_string()),
            "pid": std::process::id(),
        });
        // Written then renamed, so a reader never sees a partial file.
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, json.to_string())?;
        std::fs::rename(&temp, path)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Options {
        let cli = Cli::try_parse_from(args).expect("arguments parse");
        match cli.command {
            Command::Serve(options) => options,
            _ => panic!("expected serve"),
        }
    }

    #[test]
    fn s3_flags_make_or_override_the_blob_s3_section() {
        let (config, _) = options(&[
            "wharf",
            "serve",
            "--s3-bucket",
            "wharf-eu",
            "--s3-prefix",
            "blob-3",
            "--s3-endpoint",
            "http://127.0.0.1:3900",
        ])
        .into_config()
        .expect("config");
        let s3 = config.blob_s3.expect("a [blob_s3] section from the flags");
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("wharf-eu", "blob-3")
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        let orphan = options(&["wharf", "serve", "--s3-prefix", "blob-3"]).into_config();
        let error = orphan.expect_err("a prefix without a bucket").to_string();
        assert!(error.contains("--s3-bucket"), "{error}");
        let (plain, _) = options(&["wharf", "serve"]).into_config().expect("config");
        assert!(plain.blob_s3.is_none());
    }

    /// File < environment < flags, in one test because the environment is process-wide.
    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("wharf.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\ndata = \"/from/file\"\nzone = \"file-zone\"\n",
        )
        .expect("write");
        let file = file.to_str().expect("utf-8");
        std::env::set_var("WHARF_LISTEN", "127.0.0.1:2");
        std::env::set_var("WHARF_DATA", "/from/env");

        let (config, _) = options(&["wharf", "serve", "--config", file])
            .into_config()
            .expect("config");
        assert_eq!(config.listen, "127.0.0.1:2", "environment beats the file");
        assert_eq!(config.data, PathBuf::from("/from/env"));
        assert_eq!(config.zone, "file-zone", "the file beats the defaults");
        assert_eq!(config.grpc_listen, "127.0.0.1:0", "defaults fill the rest");

        let args = [
            "wharf",
            "serve",
            "--config",
            file,
            "--listen",
            "127.0.0.1:3",
        ];
        let (config, _) = options(&args).into_config().expect("config");
        assert_eq!(config.listen, "127.0.0.1:3", "flags beat the environment");
        assert_eq!(config.data, PathBuf::from("/from/env"));

        std::env::remove_var("WHARF_LISTEN");
        std::env::remove_var("WHARF_DATA");
        let (config, _) = options(&["wharf", "serve", "--config", file])
            .into_config()
            .expect("config");
        assert_eq!(config.listen, "127.0.0.1:1");
        assert!(
            options(&["wharf", "serve", "--config", "/nonexistent.toml"])
                .into_config()
                .is_err()
        );
    }
}
