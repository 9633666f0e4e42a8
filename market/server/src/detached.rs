//! Work that runs to its end whatever its caller does: spawned on its own
//! task, so a caller that goes away (a dropped connection, a cancelled
//! request) never leaves a transaction half-driven on a pooled connection
//! (holding SQLite's write lock until that connection is used again), and
//! counted, so tests and shutdown can wait until none is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A count of detached tasks still running.
#[derive(Clone, Default)]
pub struct Detached(Arc<AtomicUsize>);

/// Counts one task until it ends, however it ends (a panic included).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Detached {
    /// Run `work` on its own task and wait for it; the task goes on if this
    /// future is dropped. `Err` when the task panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let counted = Counted(self.0.clone());
        tokio::spawn(async move {
            let _counted = counted;
            work.await
        })
        .await
    }

    /// Wait until every task started here has ended.
    pub async fn quiesce(&self) {
        while self.0.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
