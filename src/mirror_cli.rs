//! `wharf mirror`: a one-shot copy of repositories, or of a whole catalog, from any registry
//! into another (Wharf, for a migration from Distribution): blobs, manifests (an index's
//! children first, referrers after their subject) and tags, each checked against its digest on
//! the way. What the destination has is skipped, so a run cut short resumes where it stopped
//! when it is run again; `--dry-run` only reports what a run would copy.

use std::io::IsTerminal;

use clap::Args;
use oci_model::{Digest, RepositoryName};
use proxy::{Upstream, UpstreamConfig};
use replication::{copy_repository, CopyOptions, CopyReport, MountHints, Progress};

type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Args, Debug)]
pub struct MirrorArgs {
    /// The registry to copy from, e.g. `https://old-registry.example:5000`.
    #[arg(long)]
    pub from: String,
    /// The registry to copy into.
    #[arg(long)]
    pub to: String,
    /// A repository to copy (repeat for several); without one, `--all` is needed.
    #[arg(long = "repo", value_name = "NAME")]
    pub repos: Vec<String>,
    /// Every repository the source's catalog lists.
    #[arg(long, conflicts_with = "repos")]
    pub all: bool,
    /// Only the tags this glob matches (e.g. `v*`).
    #[arg(long)]
    pub tags: Option<String>,
    /// Put each repository under this prefix at the destination (`team/app` -> `PREFIX/team/app`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Report what would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// User name at the source (its password from `WHARF_MIRROR_FROM_PASSWORD`).
    #[arg(long)]
    pub from_user: Option<String>,
    /// User name at the destination (its password from `WHARF_MIRROR_TO_PASSWORD`).
    #[arg(long)]
    pub to_user: Option<String>,
    /// PEM file of a CA both registries' certificates may chain to (besides the system's).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
}

pub async fn run(args: MirrorArgs) -> CliResult {
    let ca = match &args.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let client = |url: &str, user: &Option<String>, flag: &str, password_env: &str| {
        let password = std::env::var(password_env).ok();
        if user.is_some() && password.is_none() {
            return Err(format!("--{flag} needs the password in {password_env}"));
        }
        let config = UpstreamConfig {
            username: user.clone(),
            password: user.as_ref().and(password),
            ca_pem: ca.clone(),
            ..UpstreamConfig::new(url.trim_end_matches('/'))
        };
        Upstream::new(&config).map_err(|error| format!("{url}: {error}"))
    };
    let source = client(
        &args.from,
        &args.from_user,
        "from-user",
        "WHARF_MIRROR_FROM_PASSWORD",
    )?;
    let destination = client(
        &args.to,
        &args.to_user,
        "to-user",
        "WHARF_MIRROR_TO_PASSWORD",
    )?;
    let names = if args.all {
        source
            .catalog(1000)
            .await
            .map_err(|error| format!("the source's catalog: {error}"))?
    } else if args.repos.is_empty() {
        return Err("name repositories with --repo, or copy the whole catalog with --all".into());
    } else {
        args.repos.clone()
    };
    let options = CopyOptions {
        tags: args.tags.clone(),
        dry_run: args.dry_run,
        // A layer several repositories share is sent once and mounted into the others.
        mounts: Some(std::sync::Arc::new(MountHints::default())),
    };
    let progress = Bar::new();
    let mut total = CopyReport::default();
    let mut failed = Vec::new();
    for name in &names {
        let from =
            RepositoryName::parse(name).map_err(|error| format!("repository {name:?}: {error}"))?;
        let to = match &args.prefix {
            Some(prefix) => RepositoryName::parse(&format!("{}/{name}", prefix.trim_matches('/')))
                .map_err(|error| format!("{prefix}/{name}: {error}"))?,
            None => from.clone(),
        };
        progress.repository(name);
        match copy_repository(&source, &destination, &from, &to, &options, &progress).await {
            Ok(report) => {
                eprintln!(
                    "{name}: {} tags, {} manifests and {} blobs ({} bytes) {}, {} blobs mounted, {} manifests and {} blobs already there",
                    report.tags,
                    report.manifests_copied,
                    report.blobs_copied,
                    report.bytes_copied,
                    if args.dry_run { "to copy" } else { "copied" },
                    report.blobs_mounted,
                    report.manifests_present,
                    report.blobs_present
                );
                for refused in &report.tags_refused {
                    eprintln!("{name}: {refused}");
                }
                total.add(&report);
            }
            Err(error) => {
                eprintln!("{name}: {error}");
                failed.push(format!("{name}: {error}"));
            }
        }
    }
    progress.finish();
    let summary = serde_json::json!({
        "dry_run": args.dry_run,
        "copied": total,
        "failed": failed,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} repositories failed; run again to resume",
            failed.len(),
            names.len()
        )
        .into())
    }
}

/// A byte count on stderr while blobs are copied, when stderr is a terminal.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    fn new() -> Bar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} copied ({bytes_per_sec})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        Bar { bar }
    }

    fn repository(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_owned());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn blob_started(&self, _digest: &Digest, _size: Option<u64>) {
        if let Some(bar) = &self.bar {
            bar.tick();
        }
    }

    fn bytes(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}
