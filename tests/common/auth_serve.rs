//! `wharf serve --auth` as a child process, administered through `wharf admin` as an operator
//! would: the access-control tests' registry, and an upstream that speaks the token flow.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use cluster_client::{MetaClient, RetryPolicy};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use super::Registry;

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
pub const DEADLINE: Duration = Duration::from_secs(20);

/// `wharf serve --auth` as a child process, killed and reaped on drop; its log is kept.
pub struct AuthServe {
    child: Child,
    dir: tempfile::TempDir,
    pub base: String,
    pub grpc: String,
}

impl AuthServe {
    pub async fn start(extra: &[&str]) -> AuthServe {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr_file = dir.path().join("addr.json");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log file");
        let child = Command::new(WHARF)
            .args([
                "serve",
                "--auth",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(dir.path().join("data"))
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--audit-log")
            .arg(dir.path().join("audit.log"))
            .args(["--log", "debug,openraft=warn,h2=info,hyper=info,tower=info"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn wharf serve");
        let mut serve = AuthServe {
            child,
            dir,
            base: String::new(),
            grpc: String::new(),
        };
        let (base, grpc) = super::serve_addresses(&addr_file, Instant::now() + DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", serve.log()));
        (serve.base, serve.grpc) = (base, grpc);
        serve
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default()
    }

    /// Runs `wharf admin --meta <grpc> ARGS` with `stdin`; returns stdout, panics on failure.
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let output = self.admin_output(args, stdin);
        assert!(
            output.status.success(),
            "wharf admin {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn admin_output(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        super::admin_with_stdin(&self.grpc, args, stdin)
    }

    /// A robot that may do `actions` on `repos`; returns its secret.
    pub fn robot(&self, name: &str, repos: &str, actions: &str) -> String {
        let out = self.admin(&["robot", "add", name], None);
        let secret = out.lines().last().expect("secret line").trim().to_owned();
        assert!(secret.starts_with("wharf_"), "{out}");
        self.policy(name, repos, actions);
        secret
    }

    /// `wharf admin policy add`: `subject` may do `actions` (comma-separated) on `repos`.
    pub fn policy(&self, subject: &str, repos: &str, actions: &str) {
        self.admin(
            &[
                "policy",
                "add",
                "--subject",
                subject,
                "--repos",
                repos,
                "--actions",
                actions,
            ],
            None,
        );
    }

    pub fn user(&self, name: &str, password: &str, admin: bool) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        self.admin(&args, Some(&format!("{password}\n")));
    }

    pub fn meta(&self) -> MetaClient {
        MetaClient::new(std::slice::from_ref(&self.grpc), RetryPolicy::default())
            .expect("meta client")
    }
}

impl Drop for AuthServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn basic(user: &str, secret: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    format!("Basic {encoded}")
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A registry client that sends `authorization` on every request.
pub fn registry(base: &str, authorization: Option<&str>) -> Registry {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
    }
    Registry {
        base: base.to_owned(),
        http: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client"),
    }
}
