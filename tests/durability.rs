//! Acknowledged means durable: `wharf serve` is killed with SIGKILL right after (and while)
//! pushes are acknowledged; after a restart every acknowledged blob and manifest is present and
//! its SHA-256 re-verifies.

mod common;

use std::time::Duration;

use common::{PushedImage, Registry};
use test_cluster::ServeProcess;
use tokio::sync::mpsc;

const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_pushes_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut serve = ServeProcess::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_wharf")), &data)
        .await
        .expect("wharf serve starts");
    let mut acknowledged: Vec<PushedImage> = Vec::new();

    for round in 0..ROUNDS {
        // A pusher keeps pushing; the process is killed while it is mid-push, right after the
        // pusher has seen a few acknowledgements.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let registry = Registry::new(serve.base_url());
        let pusher = tokio::spawn(async move {
            for index in 0.. {
                let repo = format!("durable/round{round}");
                match registry
                    .push_image(&repo, &format!("t{index}"), 32 * 1024 + index * 1000)
                    .await
                {
                    Ok(image) => {
                        if tx.send(image).is_err() {
                            return;
                        }
                    }
                    Err(_) => return, // the registry was killed under us
                }
            }
        });
        let wanted = 3 + round;
        while acknowledged.len() < wanted * (round + 1) {
            let image = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("pushes are acknowledged in time")
                .expect("pusher keeps pushing");
            acknowledged.push(image);
        }
        serve.kill9().expect("SIGKILL");
        pusher.abort();
        let _ = pusher.await;
        // Acknowledgements that raced the kill count too: they were answered 201.
        while let Ok(image) = rx.try_recv() {
            acknowledged.push(image);
        }

        serve
            .restart()
            .await
            .expect("wharf serve restarts on the same data");
        let registry = Registry::new(serve.base_url());
        for image in &acknowledged {
            registry
                .verify_image(image)
                .await
                .unwrap_or_else(|e| panic!("after SIGKILL round {round}: {e}"));
        }
    }
    assert!(
        acknowledged.len() >= 3 + 4 + 5,
        "every round acknowledged pushes"
    );
}
