//! The short soak (issue 12): `wharf serve` under a minute of mixed load (manifest PUTs to new
//! and moving tags, deletes, tag GETs, blob pushes and pulls, garbage collection every half
//! second), every answer checked by the load tool's model. Its resident memory must stay flat
//! once warm: a regression like the snapshot held in memory (a few KiB per manifest ever pushed,
//! never returned) shows here as growth far beyond the bound. The long soak and its figures are
//! `benches/soak.sh` (benches/README.md); the bounds here have headroom for a debug build.

use std::path::Path;

use clap::Parser;
use load::{BenchArgs, Report};
use test_cluster::ServeProcess;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// Growth of serve's RSS allowed from the end of the warm-up to the end of the run: about 1.5 KiB
/// per operation of the measured phase at a debug build's pace; the leaks this guards against
/// cost 3 to 9 KiB per manifest PUT.
const MAX_GROWTH_MIB: f64 = 16.0;
/// serve's RSS, at most, at any sample (a debug build: its code alone is about 60 MiB).
const MAX_RSS_MIB: f64 = 256.0;

async fn soak(url: &str, pid: u32, seconds: u64, meta_dir: &Path) -> Report {
    let argv = [
        "bench".to_owned(),
        "--url".to_owned(),
        url.to_owned(),
        "--quiet".to_owned(),
        "soak".to_owned(),
        "--duration".to_owned(),
        seconds.to_string(),
        "-c".to_owned(),
        "8".to_owned(),
        "--sample-every".to_owned(),
        "1".to_owned(),
        "--watch".to_owned(),
        format!("serve={pid}"),
        "--watch-dir".to_owned(),
        format!("meta={}", meta_dir.display()),
    ];
    let cli = Cli::try_parse_from(&argv).expect("valid soak arguments");
    load::run(&cli.bench).await.expect("the soak runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_memory_stays_flat_under_a_mixed_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let serve = ServeProcess::spawn_with(
        Path::new(env!("CARGO_BIN_EXE_wharf")),
        &data,
        // The smallest memory budget, so RocksDB's cache and memtables are full within the
        // warm-up and what grows after it is growth, not warming.
        &[
            "--gc-interval-ms",
            "500",
            "--upload-grace-ms",
            "2000",
            "--meta-memory-budget",
            "8MiB",
        ],
    )
    .await
    .expect("serve starts");
    let pid = serve.pid().expect("serve runs");
    let meta_dir = data.join("meta");

    let warmup = soak(&serve.base_url(), pid, 20, &meta_dir).await;
    let measured = soak(&serve.base_url(), pid, 40, &meta_dir).await;
    for report in [&warmup, &measured] {
        assert_eq!(report.errors, 0, "{:?}", report.error_samples);
        assert!(report.ok > 1_000, "only {} operations", report.ok);
    }
    let soak = measured.soak.as_ref().expect("soak figures");
    let memory = &soak.processes[0];
    println!("{}{}", warmup.table(), measured.table());
    for (kind, count) in &soak.operations {
        assert!(*count > 0, "no {kind} in the mix: {:?}", soak.operations);
    }
    assert!(
        memory.peak_mib <= MAX_RSS_MIB,
        "serve peaked at {:.1} MiB",
        memory.peak_mib
    );
    assert!(
        memory.end_mib - memory.start_mib <= MAX_GROWTH_MIB,
        "serve grew from {:.1} to {:.1} MiB over {} operations after a warm-up of {}",
        memory.start_mib,
        memory.end_mib,
        measured.ok,
        warmup.ok
    );
}
