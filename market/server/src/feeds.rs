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
use agora_wire::api::{JobInfo, JobState};
use axum::response::sse::Event;
use sqlx::postgres::PgListener;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{Notify, watch};

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
    /// None until the first read (shared: every stream of the job reads it).
    pub info: Option<Arc<JobInfo>>,
    /// The job's newest log line (0: none yet).
    pub last_seq: i64,
}

/// The pollers of the jobs watched in this process.
#[derive(Clone)]
pub struct Feeds {
    jobs: Arc<Mutex<HashMap<String, Weak<Feed>>>>,
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
        Feeds {
            jobs: Arc::default(),
            noticed: Arc::default(),
            fallback,
        }
    }

    /// On PostgreSQL, start taking the job notices: the returned task wakes
    /// the pollers until it is aborted, reconnecting when its connection
    /// drops. None on SQLite.
    pub async fn listen(
        &self,
        db: &Db,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, sqlx::Error> {
        if db.kind != Kind::Postgres {
            return Ok(None);
        }
        let mut listener = notices(&db.url).await?;
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
                        if let Ok(fresh) = notices(&url).await {
                            listener = fresh;
                            feeds.noticed.store(true, Ordering::Relaxed);
                            feeds.wake_all();
                        }
                    }
                }
            }
        })))
    }

    fn feeds(&self) -> MutexGuard<'_, HashMap<String, Weak<Feed>>> {
        self.jobs.lock().expect("the feeds' lock is never poisoned")
    }

    fn wake(&self, job: &str) {
        let feed = self.feeds().get(job).and_then(Weak::upgrade);
        if let Some(feed) = feed {
            feed.news.notify_one();
        }
    }

    fn wake_all(&self) {
        let feeds: Vec<Arc<Feed>> = self.feeds().values().filter_map(Weak::upgrade).collect();
        feeds.iter().for_each(|feed| feed.news.notify_one());
    }

    /// The feed of `job`: the running one, or a new poller.
    pub fn watch(&self, jobs: &Jobs, job: &str) -> Arc<Feed> {
        let mut feeds = self.feeds();
        if let Some(feed) = feeds.get(job).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let (publish, snapshots) = watch::channel(Snapshot::default());
        let news = Arc::new(Notify::new());
        let poller = tokio::spawn(poll(
            jobs.clone(),
            job.to_string(),
            publish,
            self.clone(),
            news.clone(),
        ))
        .abort_handle();
        let feed = Arc::new(Feed {
            snapshots,
            poller,
            news,
        });
        feeds.insert(job.to_string(), Arc::downgrade(&feed));
        feed
    }

    /// Jobs with a live poller.
    pub fn watched(&self) -> usize {
        self.feeds()
            .values()
            .filter(|f| f.strong_count() > 0)
            .count()
    }
}

/// A connection listening on the job notices' channel.
async fn notices(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Read `job` until it ends, publishing each change.
async fn poll(
    jobs: Jobs,
    job: String,
    publish: watch::Sender<Snapshot>,
    feeds: Feeds,
    news: Arc<Notify>,
) {
    loop {
        match (jobs.info(&job).await, jobs.last_log_seq(&job).await) {
            (Ok(info), Ok(last_seq)) => {
                let ended = info.state != JobState::Running;
                let now = Snapshot {
                    info: Some(Arc::new(info)),
                    last_seq,
                };
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
            let _ = tokio::time::timeout(
                feeds.fallback.saturating_sub(EVENT_POLL_INTERVAL),
                news.notified(),
            )
            .await;
        }
    }
}

/// `feed`'s job as server-sent events for one stream, from log line
/// `after` on: every `log` line (id: its seq) before the `job` it led to,
/// a `job` event each time the job changes, and the end after its final
/// state. `held` lives as long as the stream (its slot among the caller's
/// streams).
pub fn events<H: Send + 'static>(
    feed: Arc<Feed>,
    jobs: Jobs,
    job: String,
    after: i64,
    held: H,
) -> impl futures_core::Stream<Item = Result<Event, std::convert::Infallible>> + Send {
    struct Watch<H> {
        // Kept while the stream lives: the job's poller runs for it.
        _feed: Arc<Feed>,
        _held: H,
        snapshots: watch::Receiver<Snapshot>,
        jobs: Jobs,
        job: String,
        after: i64,
        sent: Option<Arc<JobInfo>>,
        pending: VecDeque<Event>,
        finished: bool,
    }
    let snapshots = feed.subscribe();
    let watch = Watch {
        _feed: feed,
        _held: held,
        snapshots,
        jobs,
        job,
        after,
        sent: None,
        pending: VecDeque::new(),
        finished: false,
    };
    futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            if let Some(event) = w.pending.pop_front() {
                return Some((Ok(event), w));
            }
            if w.finished {
                return None;
            }
            let now = w.snapshots.borrow_and_update().clone();
            let Some(info) = now.info else {
                // The first read is not in yet (or the poller is gone).
                if w.snapshots.changed().await.is_err() && w.snapshots.borrow().info.is_none() {
                    return None;
                }
                continue;
            };
            // Log lines first, all of them, then the job's state.
            if now.last_seq > w.after {
                match w.jobs.logs(&w.job, w.after, 1000).await {
                    Ok(logs) if !logs.lines.is_empty() => {
                        w.after = logs.next;
                        for line in logs.lines {
                            w.pending.push_back(
                                Event::default()
                                    .event("log")
                                    .id(line.seq.to_string())
                                    .json_data(&line)
                                    .expect("plain JSON"),
                            );
                        }
                        continue;
                    }
                    Ok(_) => w.after = now.last_seq,
                    Err(e) => {
                        tracing::warn!(job = %w.job, "event stream: {e}");
                        tokio::time::sleep(EVENT_POLL_INTERVAL).await;
                        continue;
                    }
                }
            }
            if w.sent.as_ref() != Some(&info) {
                w.finished = info.state != JobState::Running;
                w.pending.push_back(
                    Event::default()
                        .event("job")
                        .json_data(&*info)
                        .expect("plain JSON"),
                );
                w.sent = Some(info);
                continue;
            }
            if w.snapshots.changed().await.is_err() {
                // The poller ended with the job: what it last read is final.
                let last = w.snapshots.borrow().clone();
                if last.last_seq <= w.after && last.info.as_ref() == w.sent.as_ref() {
                    return None;
                }
            }
        }
    })
}
