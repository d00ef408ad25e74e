//! Batching of linearizable reads. A read must see every write committed before it arrived, so it
//! needs a leadership check (a heartbeat round to a quorum) that *started* after it arrived. Under
//! concurrency one check can serve every read that was waiting when it started: reads queue, one
//! task runs checks back to back, each answering the reads queued before it began. A burst of 64
//! concurrent reads then costs one or two quorum rounds instead of 64.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Waiter<T, E> = oneshot::Sender<Result<T, E>>;

/// Shares leadership checks among the reads waiting when each check starts.
pub(crate) struct ReadBarrier<T, E> {
    state: Arc<Mutex<State<T, E>>>,
}

struct State<T, E> {
    checking: bool,
    waiting: Vec<Waiter<T, E>>,
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
            })),
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
            !std::mem::replace(&mut state.checking, true)
        };
        if start {
            let state = self.state.clone();
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
                    let result = check().await;
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
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

    #[tokio::test]
    async fn errors_reach_every_waiter() {
        let barrier = ReadBarrier::<u64, String>::new();
        let result = barrier
            .wait(|| async { Err("no quorum".to_string()) }, "closed".into())
            .await;
        assert_eq!(result, Err("no quorum".to_string()));
    }
}
