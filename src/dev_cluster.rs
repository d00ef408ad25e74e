//! `wharf dev`: a local cluster of real processes, for trying a cluster out and for end-to-end tests.
//!
//! `wharf dev cluster` starts every member as a child process of this same binary on 127.0.0.1
//! (port 0; each member reports its bound addresses through `--addr-file`), waits until every
//! gateway answers `GET /v2/`, records the members in `<dir>/cluster.json` and supervises them
//! until Ctrl-C or SIGTERM, then stops and reaps them all. `wharf dev kill|restart` act on one
//! member by asking the running supervisor over `<dir>/control.sock`, so the supervisor stays the
//! parent (and reaper) of every member; with no supervisor running they act on the pid recorded in
//! `cluster.json` directly. A member's recorded `args` pin the addresses it first bound, so a
//! restarted member comes back at the same address (Raft and the cluster map remember addresses).
//!
//! ```text
//! <dir>/cluster.json          every member: role, id, http/grpc addresses, pid, state, data, log, args
//! <dir>/control.sock          the supervisor's control socket: one JSON request line, one answer line
//! <dir>/<member>/             the member's data dir (members: meta-1, blob-2, gateway-1, ...)
//! <dir>/<member>.log          its stdout and stderr (appended across restarts)
//! <dir>/<member>.addr.json    written by the member once it is ready
//! ```
//!
//! With more than one meta voter, meta-1 starts with `--bootstrap` and the others with
//! `--join <meta-1>`; a lone voter gets neither flag (it bootstraps by default).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::process::Child;

mod control;
mod process;

use control::{member_command, ControlAnswer, ControlRequest};
use process::{start_member, stop_children};

#[derive(clap::Subcommand, Debug)]
pub enum DevCommand {
    /// Start a local cluster of separate processes and supervise it until Ctrl-C.
    Cluster(ClusterArgs),
    /// SIGKILL one member of a running dev cluster (e.g. `--member blob-2`).
    Kill(MemberArgs),
    /// Start one member again with the same arguments and data (SIGKILLs it first if it runs).
    Restart(MemberArgs),
    /// Write a development CA and a node certificate for TLS and mTLS (`wharf dev certs --help`).
    Certs(crate::certs::CertsArgs),
}

#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Number of meta (Raft) voters.
    #[arg(long, default_value_t = 1)]
    pub meta: u32,
    /// Number of meta read replicas (learners that never vote), named after the voters.
    #[arg(long, default_value_t = 0)]
    pub read_replicas: u32,
    /// Number of blob nodes.
    #[arg(long, default_value_t = 1)]
    pub blob: u32,
    /// Number of gateways.
    #[arg(long, default_value_t = 1)]
    pub gateways: u32,
    /// Give every blob node its endpoint for redirected blob GETs (on a loopback port), so the
    /// gateways send pulls there.
    #[arg(long)]
    pub blob_http: bool,
    /// Directory for cluster.json, the control socket, and every member's data and log.
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds to wait for each member to become ready.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
}

#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    /// The dev cluster's directory (as given to `wharf dev cluster --dir`).
    #[arg(long)]
    pub dir: PathBuf,
    /// Member name from cluster.json, e.g. `blob-2`.
    #[arg(long)]
    pub member: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{path} is invalid: {source}")]
    ClusterFile {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("{name} exited before it was ready ({status}); see {log}")]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
    },
    #[error("no member named {0:?} (see cluster.json)")]
    UnknownMember(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("the supervisor answered: {0}")]
    Supervisor(String),
    #[error(transparent)]
    Certs(#[from] crate::certs::CertsError),
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let what = what.into();
    move |source| DevError::Io { what, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Meta,
    Blob,
    Gateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Started and ready; `pid` is set.
    Running,
    /// Stopped by `wharf dev kill`.
    Killed,
    /// Ended on its own (see its log).
    Exited,
    /// Stopped with the whole cluster.
    Stopped,
}

/// One member as recorded in `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub role: Role,
    pub id: u64,
    pub http: Option<String>,
    pub grpc: Option<String>,
    /// The blob node's endpoint for redirected GETs, when it serves one.
    #[serde(default)]
    pub blob_http: Option<String>,
    pub pid: Option<u32>,
    pub state: MemberState,
    pub data: PathBuf,
    pub log: PathBuf,
    /// Arguments that start it again (bound addresses pinned); `--addr-file` is added at spawn.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    Starting,
    Ready,
    Stopped,
}

/// `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub state: ClusterState,
    pub binary: PathBuf,
    pub supervisor_pid: Option<u32>,
    pub control: PathBuf,
    /// `http://` base URLs of the gateways, for convenience.
    pub gateways: Vec<String>,
    pub members: Vec<MemberRecord>,
}

impl ClusterFile {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    pub fn read(dir: &Path) -> Result<ClusterFile, DevError> {
        let path = ClusterFile::path(dir);
        let bytes =
            std::fs::read(&path).map_err(io_error(format!("cannot read {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|source| DevError::ClusterFile { path, source })
    }

    /// Written then renamed, so a reader never sees a partial file.
    pub fn write(&mut self, dir: &Path) -> Result<(), DevError> {
        self.gateways = self
            .members
            .iter()
            .filter(|member| member.role == Role::Gateway)
            .filter_map(|member| member.http.as_ref().map(|http| format!("http://{http}")))
            .collect();
        let path = ClusterFile::path(dir);
        let temp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|source| DevError::ClusterFile {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&temp, json)
            .map_err(io_error(format!("cannot write {}", temp.display())))?;
        std::fs::rename(&temp, &path).map_err(io_error(format!("cannot write {}", path.display())))
    }

    fn member_mut(&mut self, name: &str) -> Result<&mut MemberRecord, DevError> {
        self.members
            .iter_mut()
            .find(|member| member.name == name)
            .ok_or_else(|| DevError::UnknownMember(name.to_owned()))
    }
}

/// Runs one `wharf dev ...` command to completion.
pub async fn run(command: DevCommand) -> Result<(), DevError> {
    match command {
        DevCommand::Cluster(args) => run_cluster(args).await,
        DevCommand::Kill(args) => member_command("kill", args).await,
        DevCommand::Restart(args) => member_command("restart", args).await,
        DevCommand::Certs(args) => Ok(crate::certs::run(&args)?),
    }
}

/// The argument lists of a new cluster's members, meta first (their addresses are filled in as
/// they start: see [`Supervisor::start_all`]).
fn plan(args: &ClusterArgs, dir: &Path) -> Vec<MemberRecord> {
    let member = |role: Role, id: u64, args: &[&str]| {
        let name = format!("{}-{id}", role_name(role));
        let data = dir.join(&name);
        let mut all: Vec<String> = vec![role_name(role).into()];
        if role != Role::Gateway {
            // A gateway has neither an id nor data; its directory stays empty.
            all.extend(["--node-id".into(), id.to_string()]);
            all.extend(["--data".into(), data.display().to_string()]);
        }
        all.extend(args.iter().map(|arg| arg.to_string()));
        MemberRecord {
            log: dir.join(format!("{name}.log")),
            name,
            role,
            id,
            http: None,
            grpc: None,
            blob_http: None,
            pid: None,
            state: MemberState::Stopped,
            data,
            args: all,
        }
    };
    let mut members = Vec::new();
    for id in 1..=u64::from(args.meta) {
        let mut record = member(Role::Meta, id, &["--grpc-listen", "127.0.0.1:0"]);
        if args.meta > 1 && id == 1 {
            record.args.push("--bootstrap".into());
        }
        members.push(record);
    }
    let voters = u64::from(args.meta);
    for id in voters + 1..=voters + u64::from(args.read_replicas) {
        members.push(member(
            Role::Meta,
            id,
            &["--grpc-listen", "127.0.0.1:0", "--read-replica"],
        ));
    }
    for id in 1..=u64::from(args.blob) {
        let mut record = member(Role::Blob, id, &["--grpc-listen", "127.0.0.1:0"]);
        if args.blob_http {
            record
                .args
                .extend(["--blob-http-listen".into(), "127.0.0.1:0".into()]);
        }
        members.push(record);
    }
    for id in 1..=u64::from(args.gateways) {
        members.push(member(Role::Gateway, id, &["--listen", "127.0.0.1:0"]));
    }
    members
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Meta => "meta",
        Role::Blob => "blob",
        Role::Gateway => "gateway",
    }
}

/// The foreground `wharf dev cluster` process: owns every member's `Child`.
struct Supervisor {
    dir: PathBuf,
    file: ClusterFile,
    children: HashMap<String, Child>,
    ready_timeout: Duration,
}

async fn run_cluster(args: ClusterArgs) -> Result<(), DevError> {
    if args.meta == 0 || args.blob == 0 || args.gateways == 0 {
        return Err(DevError::Invalid(
            "a cluster needs at least one meta, one blob node and one gateway".into(),
        ));
    }
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    let dir = dir
        .canonicalize()
        .map_err(io_error("cannot resolve --dir"))?;
    let control = dir.join("control.sock");
    if UnixStream::connect(&control).await.is_ok() {
        return Err(DevError::Invalid(format!(
            "a dev cluster is already running in {}",
            dir.display()
        )));
    }
    let _ = std::fs::remove_file(&control);
    let listener = UnixListener::bind(&control).map_err(io_error("cannot bind control.sock"))?;
    let binary = std::env::current_exe().map_err(io_error("cannot find this binary"))?;
    let mut supervisor = Supervisor {
        file: ClusterFile {
            state: ClusterState::Starting,
            binary,
            supervisor_pid: Some(std::process::id()),
            control: control.clone(),
            gateways: Vec::new(),
            members: plan(&args, &dir),
        },
        dir,
        children: HashMap::new(),
        ready_timeout: Duration::from_secs(args.ready_timeout),
    };
    let started = supervisor.start_all().await;
    if let Err(error) = started {
        supervisor.stop_all().await;
        let _ = std::fs::remove_file(&control);
        return Err(error);
    }
    supervisor.print_summary();
    let result = supervisor.supervise(&listener).await;
    supervisor.stop_all().await;
    let _ = std::fs::remove_file(&control);
    result
}

impl Supervisor {
    /// Meta first (the first voter alone, so the others can join it), then blob nodes (they
    /// register with meta before reporting ready), then gateways.
    async fn start_all(&mut self) -> Result<(), DevError> {
        self.file.write(&self.dir)?;
        let names: Vec<String> = self.file.members.iter().map(|m| m.name.clone()).collect();
        let mut meta_addrs: Vec<String> = Vec::new();
        for name in names {
            let record = self.file.member_mut(&name)?;
            match record.role {
                Role::Meta if record.id > 1 => {
                    record.args.extend(["--join".into(), meta_addrs[0].clone()]);
                }
                Role::Meta => {}
                Role::Blob | Role::Gateway => {
                    record.args.extend(["--meta".into(), meta_addrs.join(",")]);
                }
            }
            self.start(&name).await?;
            let record = self.file.member_mut(&name)?;
            if let (Role::Meta, Some(grpc)) = (record.role, &record.grpc) {
                meta_addrs.push(grpc.clone());
            }
        }
        self.file.state = ClusterState::Ready;
        self.file.write(&self.dir)
    }

    async fn start(&mut self, name: &str) -> Result<(), DevError> {
        let binary = self.file.binary.clone();
        let record = self.file.member_mut(name)?;
        let child = start_member(&binary, record, &self.dir, self.ready_timeout).await?;
        self.children.insert(name.to_owned(), child);
        self.file.write(&self.dir)
    }

    fn print_summary(&self) {
        println!(
            "wharf dev cluster ready: {}",
            ClusterFile::path(&self.dir).display()
        );
        for member in &self.file.members {
            let addr = match (&member.http, &member.grpc) {
                (Some(http), _) => format!("http://{http}"),
                (None, Some(grpc)) => format!("grpc {grpc}"),
                (None, None) => String::new(),
            };
            let pid = member.pid.map(|pid| pid.to_string()).unwrap_or_default();
            println!(
                "  {:<10} pid {pid:<8} {addr:<28} {}",
                member.name,
                member.log.display()
            );
        }
        println!("Ctrl-C stops every member.");
    }

    /// Serves control requests and notices members that end, until Ctrl-C or SIGTERM.
    async fn supervise(&mut self, listener: &UnixListener) -> Result<(), DevError> {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut reap = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = reap.tick() => self.reap_exited()?,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.serve_control(stream).await,
                    Err(error) => tracing::warn!(%error, "control socket accept failed"),
                },
            }
        }
    }

    fn reap_exited(&mut self) -> Result<(), DevError> {
        let mut exited = Vec::new();
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((name.clone(), status));
            }
        }
        for (name, status) in exited {
            self.children.remove(&name);
            let record = self.file.member_mut(&name)?;
            eprintln!(
                "wharf dev: {name} exited ({status}); see {}",
                record.log.display()
            );
            record.state = MemberState::Exited;
            record.pid = None;
            self.file.write(&self.dir)?;
        }
        Ok(())
    }

    async fn serve_control(&mut self, stream: UnixStream) {
        let (reader, mut writer) = stream.into_split();
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            BufReader::new(reader).read_line(&mut line),
        )
        .await;
        let answer = match read {
            Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(request) => self.handle(&request).await,
                Err(error) => Err(DevError::Invalid(error.to_string())),
            },
            _ => Err(DevError::Invalid("no request line".into())),
        };
        let answer = match answer {
            Ok(member) => ControlAnswer {
                member: Some(member),
                error: None,
            },
            Err(error) => ControlAnswer {
                member: None,
                error: Some(error.to_string()),
            },
        };
        if let Ok(mut json) = serde_json::to_string(&answer) {
            json.push('\n');
            let _ = writer.write_all(json.as_bytes()).await;
        }
    }

    async fn handle(&mut self, request: &ControlRequest) -> Result<MemberRecord, DevError> {
        self.file.member_mut(&request.member)?;
        if let Some(mut child) = self.children.remove(&request.member) {
            // SIGKILL, then reap, so the old pid is gone before we answer.
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        let record = self.file.member_mut(&request.member)?;
        record.state = MemberState::Killed;
        record.pid = None;
        match request.op.as_str() {
            "kill" => self.file.write(&self.dir)?,
            "restart" => self.start(&request.member).await?,
            other => return Err(DevError::Invalid(format!("unknown operation {other:?}"))),
        }
        Ok(self.file.member_mut(&request.member)?.clone())
    }

    async fn stop_all(&mut self) {
        // Gateways first, meta last, so nobody logs errors about a dependency that went away.
        for role in [Role::Gateway, Role::Blob, Role::Meta] {
            let names: Vec<String> = (self.file.members.iter())
                .filter(|member| member.role == role)
                .map(|member| member.name.clone())
                .collect();
            let children: Vec<Child> = (names.iter())
                .filter_map(|name| self.children.remove(name))
                .collect();
            stop_children(children, Duration::from_secs(10)).await;
        }
        for member in &mut self.file.members {
            if member.state == MemberState::Running {
                member.state = MemberState::Stopped;
            }
            member.pid = None;
        }
        self.file.state = ClusterState::Stopped;
        self.file.supervisor_pid = None;
        if let Err(error) = self.file.write(&self.dir) {
            eprintln!("wharf dev: {error}");
        }
    }
}

/// Whether `GET http://addr/v2/` answers 200 (a raw HTTP/1.1 request: no HTTP client needed).
pub(crate) async fn answers_v2(addr: &str) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut status_line = [0u8; 12];
        stream.read_exact(&mut status_line).await.ok()?;
        Some(status_line.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(meta: u32) -> ClusterArgs {
        ClusterArgs {
            meta,
            read_replicas: 0,
            blob: 2,
            gateways: 1,
            blob_http: false,
            dir: PathBuf::from("/d"),
            ready_timeout: 1,
        }
    }

    #[test]
    fn plan_names_members_and_bootstraps_only_a_multi_voter_cluster() {
        let members = plan(&args(1), Path::new("/d"));
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["meta-1", "blob-1", "blob-2", "gateway-1"]);
        assert_eq!(
            members[0].args,
            [
                "meta",
                "--node-id",
                "1",
                "--data",
                "/d/meta-1",
                "--grpc-listen",
                "127.0.0.1:0"
            ]
        );
        assert_eq!(members[3].args, ["gateway", "--listen", "127.0.0.1:0"]);

        let members = plan(&args(3), Path::new("/d"));
        assert!(members[0].args.contains(&"--bootstrap".to_owned()));
        assert!(!members[1].args.contains(&"--bootstrap".to_owned()));

        let with_replicas = ClusterArgs {
            read_replicas: 2,
            ..args(3)
        };
        let members = plan(&with_replicas, Path::new("/d"));
        let replicas: Vec<&str> = members
            .iter()
            .filter(|m| m.args.contains(&"--read-replica".to_owned()))
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(replicas, ["meta-4", "meta-5"]);
        assert!(members[..3]
            .iter()
            .all(|m| !m.args.contains(&"--read-replica".to_owned())));
    }
}
