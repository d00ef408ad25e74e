//! Batching of linearizable reads. A read must see every write committed before it arrived, so it
//! needs a leadership check (a heartbeat round to a quorum) that *started* after it arrived. Under
//! concurrency one check can serve every read that was waiting when it started: reads queue, one
//! task runs checks back to back, each answering the reads queued before it began. A burst of 64
//! concurrent reads then costs one or two quorum rounds instead of 64.
//!
//! A paced barrier (a follower's, whose checks are calls to the leader) also gathers reads under
//! load: after a check that answered `k` >= [`PACED_BATCH`] reads, the next starts once `k` reads
//! wait again (the clients it answered have come back) or `spacing` after the last one started,
//! whichever is first. Batches then grow towards the number of reads in flight, each call to the
//! leader carries more of them, and a closed loop of clients is never held to one batch per
//! `spacing`. Below that size (a lone read, a few concurrent clients) checks run back to back.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

/// The smallest batch after which a paced barrier spaces its next check.
pub(crate) const PACED_BATCH: usize = 4;

type Waiter<T, E> = oneshot::Sender<Result<T, E>>;

/// Shares leadership checks among the reads waiting when each check starts.
pub(crate) struct ReadBarrier<T, E> {
    state: Arc<Mutex<State<T, E>>>,
    /// Told when `wanted` reads wait.
    gathered: Arc<Notify>,
    spacing: Option<Duration>,
}

struct State<T, E> {
    checking: bool,
    waiting: Vec<Waiter<T, E>>,
    /// How many waiting reads start the next check early (0: the checker is not gathering).
    wanted: usize,
}

impl<T, E> ReadBarrier<T, E>
where
    T: Clone + Send + 'static,
    E: Clone + Send + 'static,
{
    pub(crate) fn new() -> ReadBarrier<T, E> {
        ReadBarrier {
            state: Arc::new(Mutex::new(State {
                checking: false,
                waiting: Vec::new(),
                wanted: 0,
            })),
            gathered: Arc::new(Notify::new()),
            spacing: None,
        }
    }

    /// A barrier that, after a check shared by [`PACED_BATCH`] reads or more, starts the next once
    /// as many reads wait again or `spacing` after the last started.
    pub(crate) fn paced(spacing: Duration) -> ReadBarrier<T, E> {
        ReadBarrier {
            spacing: Some(spacing),
            ..ReadBarrier::new()
        }
    }

    /// Waits for a check that started after this call, running checks with `check` while reads
    /// are waiting. `closed` is answered if the checking task goes away (the runtime stops).
    pub(crate) async fn wait<F, Fut>(&self, check: F, closed: E) -> Result<T, E>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send,
    {
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().expect("read barrier lock");
            state.waiting.push(sender);
            if state.wanted > 0 && state.waiting.len() == state.wanted {
                self.gathered.notify_one();
            }
            !std::mem::replace(&mut state.checking, true)
        };
        if start {
            let (state, gathered, spacing) =
                (self.state.clone(), self.gathered.clone(), self.spacing);
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut state = state.lock().expect("read barrier lock");
                        if state.waiting.is_empty() {
                            state.checking = false;
                            return;
                        }
                        std::mem::take(&mut state.waiting)
                    };
                    let started = tokio::time::Instant::now();
                    let answered = batch.len();
                    let result = check().await;
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                    let Some(spacing) = spacing.filter(|_| answered >= PACED_BATCH) else {
                        continue;
                    };
                    let gathering = {
                        let mut state = state.lock().expect("read barrier lock");
                        let short = state.waiting.len() < answered;
                        state.wanted = if short { answered } else { 0 };
                        short
                    };
                    if gathering {
                        tokio::select! {
                            () = gathered.notified() => {}
                            () = tokio::time::sleep_until(started + spacing) => {}
                        }
                        state.lock().expect("read barrier lock").wanted = 0;
                    }
                }
            });
        }
        receiver.await.unwrap_or(Err(closed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Every read gets the result of a check that began after the read arrived, and concurrent
    /// reads share checks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_share_checks_that_start_after_them() {
        let barrier = Arc::new(ReadBarrier::<u64, ()>::new());
        let started = Arc::new(AtomicU64::new(0));
        let mut reads = Vec::new();
        for _ in 0..200 {
            let (barrier, started) = (barrier.clone(), started.clone());
            reads.push(tokio::spawn(async move {
                let before = started.load(Ordering::SeqCst);
                let counter = started.clone();
                let seen = barrier
                    .wait(
                        move || {
                            let counter = counter.clone();
                            async move {
                                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                                tokio::task::yield_now().await;
                                Ok(number)
                            }
                        },
                        (),
                    )
                    .await
                    .expect("check succeeds");
                assert!(
                    seen > before,
                    "check {seen} began before the read (after {before})"
                );
            }));
        }
        for read in reads {
            read.await.expect("read task");
        }
        let checks = started.load(Ordering::SeqCst);
        assert!((1..200).contains(&checks), "{checks} checks for 200 reads");
    }

    /// After a check that answered a batch, a paced barrier holds the next check until as many
    /// reads wait again (here its spacing is an hour, so nothing else could start it).
    #[tokio::test]
    async fn a_paced_barrier_gathers_as_many_reads_as_its_last_batch() {
        let barrier = Arc::new(ReadBarrier::<u64, ()>::paced(Duration::from_secs(3600)));
        let checks = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let read = || {
            let (barrier, checks, gate) = (barrier.clone(), checks.clone(), gate.clone());
            tokio::spawn(async move {
                let check = move || {
                    let (checks, gate) = (checks.clone(), gate.clone());
                    async move {
                        let number = checks.fetch_add(1, Ordering::SeqCst) + 1;
                        gate.acquire().await.expect("gate").forget();
                        Ok(number)
                    }
                };
                barrier.wait(check, ()).await
            })
        };
        let settle = || async {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        };

        let first = read();
        settle().await;
        let batch: Vec<_> = (0..=PACED_BATCH).map(|_| read()).collect();
        settle().await;
        gate.add_permits(1);
        assert_eq!(first.await.expect("read"), Ok(1));
        settle().await;
        assert_eq!(
            checks.load(Ordering::SeqCst),
            2,
            "the waiting reads share one check"
        );
        gate.add_permits(2);
        for read in batch {
            assert_eq!(read.await.expect("read"), Ok(2));
        }

        let gathered: Vec<_> = (0..PACED_BATCH).map(|_| read()).collect();
        settle().await;
        assert_eq!(
            checks.load(Ordering::SeqCst),
            2,
            "fewer reads than the last batch start no check"
        );
        let last = read();
        for read in gathered.into_iter().chain([last]) {
            let answer = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .expect("the last batch's size of reads starts a check");
            assert_eq!(answer.expect("read"), Ok(3));
        }
    }

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let barrier = ReadBarrier::<u64, String>::new();
        let result = barrier
            .wait(|| async { Err("no quorum".to_string()) }, "closed".into())
            .await;
        assert_eq!(result, Err("no quorum".to_string()));
    }
}
