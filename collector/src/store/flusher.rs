//! The flush thread: writes frozen memtable generations to Parquet, in order, and tells the
//! compaction thread about the new files.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::catalog::FileMeta;
use super::commit::Commit;
use super::compactor;
use super::memtable::Generation;
use super::parquet::{new_id, write_partitions};
use super::{Shared, StoreError};

/// How soon a failed flush is retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(super) enum Job {
    /// Write a frozen generation to Parquet (`None`: nothing to write, just answer `done`
    /// once every earlier flush has finished).
    Flush {
        generation: Option<Arc<Generation>>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Compact every partition after the flushes queued so far; answered when done.
    CompactAll(oneshot::Sender<()>),
    /// Finish the queued flushes, stop the compaction thread, and exit.
    Stop(oneshot::Sender<()>),
}

struct Flusher<'a> {
    shared: &'a Shared,
    compactor: &'a Sender<compactor::Request>,
    queue: VecDeque<Job>,
}

pub(super) fn run(shared: &Shared, jobs: &Receiver<Job>, compactor: &Sender<compactor::Request>) {
    let mut flusher = Flusher { shared, compactor, queue: VecDeque::new() };
    loop {
        // With nothing queued, wait for the next job; otherwise retry a failed flush.
        let wait = if flusher.queue.is_empty() { Duration::MAX } else { RETRY_INTERVAL };
        match jobs.recv_timeout(wait) {
            Ok(Job::Stop(stopped)) => {
                flusher.run_flushes();
                let (compactor_stopped, done) = oneshot::channel();
                if compactor.send(compactor::Request::Stop(compactor_stopped)).is_ok() {
                    let _ = done.blocking_recv();
                }
                let _ = stopped.send(());
                return;
            }
            Ok(Job::CompactAll(done)) => {
                flusher.run_flushes();
                let _ = compactor.send(compactor::Request::All(done));
            }
            Ok(job) => flusher.queue.push_back(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        flusher.run_flushes();
    }
}

impl Flusher<'_> {
    /// Flushes queued generations oldest first; stops at the first failure so that WAL
    /// segments are only ever retired in order.
    fn run_flushes(&mut self) {
        while let Some(Job::Flush { generation, .. }) = self.queue.front() {
            if let Some(generation) = generation {
                if let Err(error) = self.flush(generation) {
                    self.shared.metrics.flush_failures.inc();
                    tracing::error!(%error, "flush failed; will retry");
                    return;
                }
                let _ = self.compactor.send(compactor::Request::Check);
            }
            if let Some(Job::Flush { done: Some(done), .. }) = self.queue.pop_front() {
                let _ = done.send(Ok(()));
            }
        }
    }

    fn flush(&self, generation: &Arc<Generation>) -> Result<(), StoreError> {
        let started = Instant::now();
        let settings = &self.shared.settings;
        let mut files: Vec<FileMeta> = Vec::new();
        let resources = self.shared.read().resources.clone();
        for (table, batches) in &generation.tables {
            files.extend(write_partitions(&settings.data_dir, *table, batches, &settings.storage, &resources)?);
        }
        let commit = Commit {
            add: files.iter().map(|file| file.path.clone()).collect(),
            remove: Vec::new(),
            wal_through: Some(generation.through_segment),
        };
        let record = commit.apply(&settings.data_dir, &new_id()).map_err(StoreError::io("commit flush"))?;
        {
            let mut state = self.shared.write();
            for file in files {
                state.catalog.add(file);
            }
            state.memtable.flushed(generation);
            self.shared.publish_sizes(&state);
        }
        self.shared.pending_flushes.fetch_sub(1, Ordering::AcqRel);
        // The data is safe in Parquet now; if retiring fails, recovery finishes it on start.
        if let Err(error) = commit.retire(&self.shared.wal_dir, &record) {
            tracing::warn!(%error, "could not retire flushed wal segments yet");
        }
        self.shared.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        tracing::debug!(bytes = generation.bytes, through_segment = generation.through_segment, "flushed");
        Ok(())
    }
}
