//! Job feeds: one database poller per watched job in this process, shared
//! by every event stream of that job. Each [`EVENT_POLL_INTERVAL`] the
//! poller reads the job (O(units + leases)) and its newest log line's
//! number, and publishes them when they change; a stream reads the log
//! lines it has not sent only when there are new ones. A thousand watchers
//! of one job cost one poll, not a thousand. Reading the database (not an
//! in-process channel) lets any replica serve any job's stream.
//!
//! On PostgreSQL the database says when a job changes: triggers send a
//! notice on channel `agora_job` (migration `job_notices`), one listener
//! per process ([`Feeds::listen`]) wakes that job's poller, and a poller
//! with nothing new reads again only every [`NOTICED_POLL_INTERVAL`] (in
//! case a notice was lost while the listener reconnected). A poller never
//! reads more often than every [`EVENT_POLL_INTERVAL`].

use crate::db::{Db, Kind};
use crate::jobs::Jobs;
use sqlx::postgres::PgListener;
use std::sync::atomic::AtomicBool;
use tokio::sync::Notify;
use agora_wire::api::{JobInfo, JobState};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often a watched job is read without notices (SQLite), and the
/// shortest time between two reads of one job with them.
pub const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often a watched job with no news is read while notices arrive.
pub const NOTICED_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The channel of the job notices.
const CHANNEL: &str = "agora_job";

/// What a job's poller last read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// None until the first read.
    pub info: Option<JobInfo>,
    /// The job's newest log line (0: none yet).
    pub last_seq: i64,
}

/// The pollers of the jobs watched in this process.
#[derive(Clone)]
pub struct Feeds {
    jobs: Arc<Mutex<HashMap<String, Weak<Feed>>>>,
    polls: Arc<AtomicU64>,
    /// Whether a listener is taking notices now.
    noticed: Arc<AtomicBool>,
    /// How long a poller with notices waits for news before reading anyway.
    fallback: Duration,
}

impl Default for Feeds {
    fn default() -> Self {
        Feeds::with_fallback(NOTICED_POLL_INTERVAL)
    }
}

/// One job's poller, alive while a stream holds it.
pub struct Feed {
    snapshots: watch::Receiver<Snapshot>,
    poller: tokio::task::AbortHandle,
    /// Rung by a notice for the job.
    news: Arc<Notify>,
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
    /// Feeds whose pollers, while notices arrive, read a job with no news
    /// every `fallback` (the market: [`NOTICED_POLL_INTERVAL`]).
    pub fn with_fallback(fallback: Duration) -> Self {
        Feeds { jobs: Arc::default(), polls: Arc::default(), noticed: Arc::default(), fallback }
    }

    /// On PostgreSQL, start taking the job notices: the returned task wakes
    /// the pollers until it is aborted, reconnecting when its connection
    /// drops. None on SQLite.
    pub async fn listen(&self, db: &Db) -> Result<Option<tokio::task::JoinHandle<()>>, sqlx::Error> {
        if db.kind != Kind::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&db.url).await?;
        listener.listen(CHANNEL).await?;
        self.noticed.store(true, Ordering::Relaxed);
        let (feeds, url) = (self.clone(), db.url.clone());
        Ok(Some(tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) => feeds.wake(notice.payload()),
                    // The connection dropped and came back: notices may
                    // have been lost, so every poller reads now.
                    Ok(None) => feeds.wake_all(),
                    Err(e) => {
                        tracing::warn!("job notices: {e}; polling until they come back");
                        feeds.noticed.store(false, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Ok(mut fresh) = PgListener::connect(&url).await
                            && fresh.listen(CHANNEL).await.is_ok()
                        {
                            listener = fresh;
                            feeds.noticed.store(true, Ordering::Relaxed);
                            feeds.wake_all();
                        }
                    }
                }
            }
        })))
    }

    fn wake(&self, job: &str) {
        let feed = self.jobs.lock().expect("the feeds' lock is never poisoned").get(job).and_then(Weak::upgrade);
        if let Some(feed) = feed {
            feed.news.notify_one();
        }
    }

    fn wake_all(&self) {
        let feeds: Vec<Arc<Feed>> = self.jobs.lock().expect("the feeds' lock is never poisoned").values().filter_map(Weak::upgrade).collect();
        feeds.iter().for_each(|feed| feed.news.notify_one());
    }

    /// The feed of `job`: the running one, or a new poller.
    pub fn watch(&self, jobs: &Jobs, job: &str) -> Arc<Feed> {
        let mut feeds = self.jobs.lock().expect("the feeds' lock is never poisoned");
        if let Some(feed) = feeds.get(job).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (publish, snapshots) = watch::channel(Snapshot::default());
        let news = Arc::new(Notify::new());
        let poller = tokio::spawn(poll(jobs.clone(), job.to_string(), publish, self.clone(), news.clone())).abort_handle();
        let feed = Arc::new(Feed { snapshots, poller, news });
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
async fn poll(jobs: Jobs, job: String, publish: watch::Sender<Snapshot>, feeds: Feeds, news: Arc<Notify>) {
    loop {
        feeds.polls.fetch_add(1, Ordering::Relaxed);
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
        if feeds.noticed.load(Ordering::Relaxed) {
            // A notice that came during the sleep is kept by `news`.
            let _ = tokio::time::timeout(feeds.fallback.saturating_sub(EVENT_POLL_INTERVAL), news.notified()).await;
        }
    }
}
