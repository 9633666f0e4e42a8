//! Job feeds: one database poller per watched job in this process, shared
//! by every event stream of that job. Each [`EVENT_POLL_INTERVAL`] the
//! poller reads the job (O(units + leases)) and its newest log line's
//! number, and publishes them when they change; a stream reads the log
//! lines it has not sent only when there are new ones. A thousand watchers
//! of one job cost one poll, not a thousand. Polling the database (not an
//! in-process channel) lets any replica serve any job's stream.

use crate::jobs::Jobs;
use agora_wire::api::{JobInfo, JobState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often a watched job is read.
pub const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a job's poller last read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// None until the first read.
    pub info: Option<JobInfo>,
    /// The job's newest log line (0: none yet).
    pub last_seq: i64,
}

/// The pollers of the jobs watched in this process.
#[derive(Clone, Default)]
pub struct Feeds {
    jobs: Arc<Mutex<HashMap<String, Weak<Feed>>>>,
    polls: Arc<AtomicU64>,
}

/// One job's poller, alive while a stream holds it.
pub struct Feed {
    snapshots: watch::Receiver<Snapshot>,
    poller: tokio::task::AbortHandle,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Feed {
    /// A receiver of the job's snapshots, for one stream.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshots.clone()
    }
}

impl Feeds {
    /// The feed of `job`: the running one, or a new poller.
    pub fn watch(&self, jobs: &Jobs, job: &str) -> Arc<Feed> {
        let mut feeds = self.jobs.lock().expect("the feeds' lock is never poisoned");
        if let Some(feed) = feeds.get(job).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (publish, snapshots) = watch::channel(Snapshot::default());
        let poller = tokio::spawn(poll(jobs.clone(), job.to_string(), publish, self.polls.clone())).abort_handle();
        let feed = Arc::new(Feed { snapshots, poller });
        feeds.insert(job.to_string(), Arc::downgrade(&feed));
        feed
    }

    /// Jobs with a live poller.
    pub fn watched(&self) -> usize {
        self.jobs.lock().expect("the feeds' lock is never poisoned").values().filter(|f| f.strong_count() > 0).count()
    }

    /// Polls made since start, all jobs together.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }
}

/// Read `job` until it ends, publishing each change.
async fn poll(jobs: Jobs, job: String, publish: watch::Sender<Snapshot>, polls: Arc<AtomicU64>) {
    loop {
        polls.fetch_add(1, Ordering::Relaxed);
        match (jobs.info(&job).await, jobs.last_log_seq(&job).await) {
            (Ok(info), Ok(last_seq)) => {
                let ended = info.state != JobState::Running;
                let now = Snapshot { info: Some(info), last_seq };
                publish.send_if_modified(|last| {
                    let changed = *last != now;
                    *last = now;
                    changed
                });
                if ended {
                    // Its last snapshot stays readable by every stream.
                    return;
                }
            }
            (Err(e), _) | (_, Err(e)) => tracing::warn!(job, "a job's event feed: {e}"),
        }
        tokio::time::sleep(EVENT_POLL_INTERVAL).await;
    }
}
