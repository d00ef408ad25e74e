//! The process heap under glibc's malloc: fewer arenas, and freed memory handed back to the
//! kernel on a schedule.
//!
//! A long-running meta node allocates and frees memtable arena blocks (1 MiB), write batches
//! and snapshot buffers on several threads. glibc returns freed memory to the kernel only from
//! the top of a heap, so blocks freed below a live allocation stay resident: in the 200k
//! manifest-PUT run (benches/README.md) `serve` held 38 MiB of anonymous memory of which the
//! allocator's live heap was about 28. `malloc_trim(0)` releases the free pages inside every
//! arena (`madvise(MADV_DONTNEED)`), and costs about a millisecond a call. Lowering the mmap
//! threshold instead released the memory too but halved blob throughput (every 1 MiB buffer
//! became an mmap/munmap pair with its page faults), and jemalloc held more, not less.

use std::time::Duration;

/// How often the heap's free pages go back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Two glibc malloc arenas instead of eight per core. Blob bytes move in 1 MiB buffers allocated on
/// one thread and freed on another; with an arena per thread each keeps its own freed buffers, and
/// `serve`'s RSS under load was 63 MiB instead of 49 (benches/README.md), with no throughput change.
/// Called before any thread exists; `MALLOC_ARENA_MAX` in the environment still wins.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread is running yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Starts a thread that returns the heap's free pages to the kernel every few seconds, for the
/// life of the process (long-running roles only; a CLI command exits first).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("wharf-heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim only walks the allocator's own free lists under its locks.
                unsafe {
                    libc::malloc_trim(0);
                }
                publish_heap();
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the heap trimmer");
        }
    }
}

/// `wharf_process_heap_bytes{state}`: what the allocator holds from the kernel, split into what
/// is allocated (`in_use`) and what it keeps free (`free`, fragmentation and not-yet-trimmed pages).
/// RSS minus both is the binary's text, thread stacks and other mappings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn publish_heap() {
    // SAFETY: mallinfo2 reads the allocator's counters under its locks and returns them by value.
    let info = unsafe { libc::mallinfo2() };
    let in_use = info.uordblks + info.hblkhd;
    metrics::gauge!("wharf_process_heap_bytes", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("wharf_process_heap_bytes", "state" => "free").set(info.fordblks as f64);
}
