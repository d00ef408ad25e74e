//! The timed phase (workers, progress bar, memory sampling) and its report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::client::Client;
use crate::{BenchError, Context};

/// Error messages kept in a report.
const ERROR_SAMPLES: usize = 5;

/// One operation of a workload, run by many workers at once.
pub(crate) trait Operation: Send + Sync + 'static {
    /// Performs operation `index` and returns the body bytes it moved.
    fn run(
        &self,
        client: &mut Client,
        index: u64,
    ) -> impl Future<Output = Result<u64, String>> + Send;
}

/// What is being timed, for the report.
#[derive(Clone)]
pub(crate) struct Plan {
    pub workload: String,
    pub operations: u64,
    pub concurrency: usize,
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// The summary of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: String,
    pub url: String,
    pub repo: String,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub concurrency: usize,
    pub operations: u64,
    pub ok: u64,
    pub errors: u64,
    /// Body bytes moved by the successful operations.
    pub bytes: u64,
    pub seconds: f64,
    pub ops_per_second: f64,
    /// 10^6 bytes per second.
    pub mb_per_second: f64,
    pub latency_ms: Latency,
    /// Peak of the summed VmRSS of `--watch-pid` processes during the timed phase.
    pub rss_peak_mib: Option<f64>,
    pub error_samples: Vec<String>,
    /// The soak workload's memory and disk figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<crate::SoakSummary>,
    /// Pull `--passes`: the passes after the first, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<Report>,
}

/// Latency percentiles of the successful operations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    samples: Vec<String>,
}

/// Files through which several bench processes time the same interval: each creates
/// `ready_file` once its set-up is done, and starts when `start_when` exists.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    pub ready_file: Option<PathBuf>,
    pub start_when: Option<PathBuf>,
}

/// How long a gated run waits for its start file.
const GATE_WAIT: Duration = Duration::from_secs(600);

impl Gate {
    async fn pass(&self) -> Result<(), BenchError> {
        if let Some(ready) = &self.ready_file {
            tokio::fs::write(ready, b"ready\n").await.map_err(|error| {
                BenchError::Gate(format!("writing {}: {error}", ready.display()))
            })?;
        }
        if let Some(start) = &self.start_when {
            let deadline = Instant::now() + GATE_WAIT;
            while !tokio::fs::try_exists(start).await.unwrap_or(false) {
                if Instant::now() >= deadline {
                    return Err(BenchError::Gate(format!(
                        "{} did not appear within {GATE_WAIT:?}",
                        start.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

/// Runs `plan.operations` operations on `plan.concurrency` workers and reports. A gated context
/// waits at its gate first; only a gate that never opens is an error (failed operations are
/// counted in the report).
pub(crate) async fn measure<O: Operation>(
    context: &Context,
    plan: Plan,
    operation: O,
) -> Result<Report, BenchError> {
    if let Some(gate) = &context.gate {
        gate.pass().await?;
    }
    let operation = Arc::new(operation);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally {
        histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        ok: 0,
        errors: 0,
        bytes: 0,
        samples: Vec::new(),
    }));
    let memory = MemorySampler::start(&context.watch_pids);
    let progress = Progress::start(context.progress, &plan, &done, &moved, &failed);
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.concurrency.max(1))
        .map(|_| {
            let operation = operation.clone();
            let (next, done, moved, failed, tally) = (
                next.clone(),
                done.clone(),
                moved.clone(),
                failed.clone(),
                tally.clone(),
            );
            let mut client = Client::new(&context.target);
            let timeout = context.timeout;
            let total = plan.operations;
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
                let (mut ok, mut errors, mut bytes, mut samples) = (0, 0, 0, Vec::new());
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    let began = Instant::now();
                    let outcome = tokio::time::timeout(timeout, operation.run(&mut client, index))
                        .await
                        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")));
                    match outcome {
                        Ok(n) => {
                            ok += 1;
                            bytes += n;
                            moved.fetch_add(n, Ordering::Relaxed);
                            let micros = began.elapsed().as_micros().max(1) as u64;
                            histogram.saturating_record(micros);
                        }
                        Err(message) => {
                            errors += 1;
                            failed.fetch_add(1, Ordering::Relaxed);
                            if samples.len() < ERROR_SAMPLES {
                                samples.push(message);
                            }
                            // A failed exchange may leave a connection mid-message.
                            client = Client::new(client.target());
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                let mut tally = tally.lock().expect("tally lock");
                tally.histogram.add(&histogram).expect("same bounds");
                tally.ok += ok;
                tally.errors += errors;
                tally.bytes += bytes;
                for sample in samples {
                    if tally.samples.len() < ERROR_SAMPLES {
                        tally.samples.push(sample);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        if let Err(error) = worker.await {
            let mut tally = tally.lock().expect("tally lock");
            tally.errors += 1;
            tally.samples.push(format!("worker failed: {error}"));
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    progress.finish();
    let rss_peak_mib = memory.stop().await;
    let tally = tally.lock().expect("tally lock");
    let quantile = |q: f64| tally.histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        workload: plan.workload,
        url: String::new(),
        repo: String::new(),
        settings: plan.settings,
        concurrency: plan.concurrency,
        operations: plan.operations,
        ok: tally.ok,
        errors: tally.errors,
        bytes: tally.bytes,
        seconds,
        ops_per_second: tally.ok as f64 / seconds,
        mb_per_second: tally.bytes as f64 / seconds / 1e6,
        latency_ms: Latency {
            p50: quantile(0.50),
            p95: quantile(0.95),
            p99: quantile(0.99),
            max: tally.histogram.max() as f64 / 1000.0,
            mean: tally.histogram.mean() / 1000.0,
        },
        rss_peak_mib,
        error_samples: tally.samples.clone(),
        soak: None,
        passes: Vec::new(),
    })
}

impl Report {
    /// The human summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k} {s}"),
                other => format!("{k} {other}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "workload     {}  ({})",
            self.workload,
            settings.join(", ")
        );
        let _ = writeln!(out, "target       {}  repository {}", self.url, self.repo);
        let _ = writeln!(
            out,
            "operations   {} ok, {} failed, concurrency {}, {:.3} s",
            self.ok, self.errors, self.concurrency, self.seconds
        );
        let _ = writeln!(
            out,
            "throughput   {:.1} ops/s, {:.1} MB/s",
            self.ops_per_second, self.mb_per_second
        );
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "latency ms   p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
            l.p50, l.p95, l.p99, l.max, l.mean
        );
        if let Some(rss) = self.rss_peak_mib {
            let _ = writeln!(out, "server RSS   peak {rss:.1} MiB");
        }
        for (index, pass) in self.passes.iter().enumerate() {
            let l = &pass.latency_ms;
            let _ = writeln!(
                out,
                "pass {}       {} ok, {} failed, {:.1} MB/s, p50 {:.2} p99 {:.2} ms{}",
                index + 2,
                pass.ok,
                pass.errors,
                pass.mb_per_second,
                l.p50,
                l.p99,
                pass.rss_peak_mib.map_or(String::new(), |rss| format!(
                    ", server RSS peak {rss:.1} MiB"
                ))
            );
        }
        if let Some(soak) = &self.soak {
            for process in &soak.processes {
                let slope = process
                    .slope_mib_per_100k
                    .map_or("-".to_owned(), |slope| format!("{slope:+.2}"));
                let _ = writeln!(
                    out,
                    "RSS          {:<10} start {:.1}  peak {:.1}  end {:.1} MiB, slope {slope} MiB per 100k ops after {} ops",
                    process.name, process.start_mib, process.peak_mib, process.end_mib, soak.warmup_operations
                );
            }
            for dir in &soak.directories {
                let _ = writeln!(
                    out,
                    "disk         {:<10} peak {:.1}  end {:.1} MiB",
                    dir.name, dir.peak_mib, dir.end_mib
                );
            }
            let mix: Vec<String> = soak
                .operations
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "mix          {}", mix.join(", "));
        }
        for sample in &self.error_samples {
            let _ = writeln!(out, "error        {sample}");
        }
        out
    }
}

/// The live progress bar on stderr (hidden when stderr is not a terminal).
struct Progress {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicBool>,
}

impl Progress {
    fn start(
        enabled: bool,
        plan: &Plan,
        done: &Arc<AtomicU64>,
        moved: &Arc<AtomicU64>,
        failed: &Arc<AtomicU64>,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Progress { bar: None, stop };
        }
        let bar = ProgressBar::new(plan.operations);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(plan.workload.clone());
        let (ticker, done, moved, failed, flag) = (
            bar.clone(),
            done.clone(),
            moved.clone(),
            failed.clone(),
            stop.clone(),
        );
        let started = Instant::now();
        tokio::spawn(async move {
            while !flag.load(Ordering::Relaxed) {
                let seconds = started.elapsed().as_secs_f64().max(1e-9);
                let done = done.load(Ordering::Relaxed);
                ticker.set_position(done);
                ticker.set_message(format!(
                    "{:.0} ops/s {:.1} MB/s, {} failed",
                    done as f64 / seconds,
                    moved.load(Ordering::Relaxed) as f64 / seconds / 1e6,
                    failed.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar: Some(bar),
            stop,
        }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Samples the summed VmRSS of some processes every 20 ms.
struct MemorySampler {
    task: Option<(tokio::task::JoinHandle<f64>, Arc<AtomicBool>)>,
}

impl MemorySampler {
    fn start(pids: &[u32]) -> MemorySampler {
        if pids.is_empty() {
            return MemorySampler { task: None };
        }
        let pids = pids.to_vec();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak_kib = 0u64;
            loop {
                let sum: u64 = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();
                peak_kib = peak_kib.max(sum);
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak_kib as f64 / 1024.0
        });
        MemorySampler {
            task: Some((task, stop)),
        }
    }

    async fn stop(self) -> Option<f64> {
        let (task, stop) = self.task?;
        stop.store(true, Ordering::Relaxed);
        task.await.ok()
    }
}

/// VmRSS of a process in KiB, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::rss_kib;

    #[test]
    fn reads_own_rss() {
        let kib = rss_kib(std::process::id()).expect("this process has a VmRSS");
        assert!(kib > 100, "{kib} KiB");
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
