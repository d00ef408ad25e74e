//! CNCF Distribution 2.8 (Debian's `docker-registry`, which `.ci/run` installs) as a process of
//! the test: the reference registry and a real upstream.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use test_cluster::wait_until;

/// CNCF Distribution on a temp dir and a port of its own choosing (read from its log).
pub struct Distribution {
    pub url: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Distribution {
    pub async fn start() -> Distribution {
        Distribution::start_with(None).await
    }

    /// With `Some((user, password))`, Distribution asks for Basic credentials (its htpasswd
    /// backend, bcrypt, written by Debian's `htpasswd` from apache2-utils, which `.ci/run`
    /// installs).
    pub async fn start_with(basic: Option<(&str, &str)>) -> Distribution {
        let binary = PathBuf::from("/usr/bin/docker-registry");
        assert!(
            binary.exists(),
            "Debian's docker-registry is required (.ci/run installs it: apt-get install docker-registry)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yml");
        let data = dir.path().join("data");
        let mut text = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\nlog:\n  level: info\n  accesslog:\n    disabled: true\n",
            data.display()
        );
        if let Some((user, password)) = basic {
            let htpasswd = dir.path().join("htpasswd");
            let output = std::process::Command::new("htpasswd")
                .args(["-nbB", user, password])
                .output()
                .expect("htpasswd runs (apt-get install apache2-utils)");
            assert!(output.status.success(), "htpasswd failed");
            std::fs::write(&htpasswd, &output.stdout).expect("write htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("write config");
        let log = dir.path().join("log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start docker-registry");
        let log_path = log.clone();
        wait_until(
            "docker-registry to log its address",
            Duration::from_secs(30),
            || {
                let found = listening_addr(&log_path).is_some();
                async move { found }
            },
        )
        .await
        .expect("docker-registry starts");
        let addr = listening_addr(&log).expect("address logged");
        Distribution {
            url: format!("http://{addr}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Distribution {
    /// Killed and reaped, so no process outlives the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `msg="listening on 127.0.0.1:PORT"` from Distribution's log, once it is there.
fn listening_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let start = text.find("listening on ")? + "listening on ".len();
    let addr: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"')
        .collect();
    (!addr.is_empty()).then_some(addr)
}
