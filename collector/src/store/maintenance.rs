//! The maintenance thread: flushes frozen memtable generations to Parquet (in order),
//! compacts small files, applies retention, and deletes replaced files after a grace period.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::catalog::{FileMeta, NANOS_PER_HOUR};
use super::commit::Commit;
use super::memtable::Generation;
use super::parquet::{merge_sorted_files, new_id, write_partitions};
use super::{Shared, StoreError};
use crate::schema::Table;

/// How soon a failed flush is retried.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(super) enum Job {
    /// Write a frozen generation to Parquet (`None`: nothing to write, just answer `done`
    /// once every earlier flush has finished).
    Flush {
        generation: Option<Arc<Generation>>,
        done: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Compact every partition now, as if every hour were over; answered when done.
    CompactAll(oneshot::Sender<()>),
    /// Finish what can be finished and exit.
    Stop(oneshot::Sender<()>),
}

/// Files replaced by a commit, deleted once no query can still be reading them.
struct DeferredDelete {
    due: Instant,
    commit: Commit,
    record: PathBuf,
}

struct Maintenance<'a> {
    shared: &'a Shared,
    /// Drives the DataFusion merge of compactions on this thread.
    runtime: tokio::runtime::Runtime,
    flushes: VecDeque<Job>,
    deferred: Vec<DeferredDelete>,
}

pub(super) fn run(shared: &Shared, runtime: tokio::runtime::Runtime, jobs: &Receiver<Job>) {
    let mut maintenance = Maintenance { shared, runtime, flushes: VecDeque::new(), deferred: Vec::new() };
    let interval = shared.settings.storage.maintenance_interval();
    let mut next_maintenance = Instant::now() + interval;
    loop {
        let wait = if maintenance.flushes.is_empty() { interval } else { RETRY_INTERVAL };
        match jobs.recv_timeout(wait.min(next_maintenance.saturating_duration_since(Instant::now()))) {
            Ok(Job::Stop(stopped)) => {
                maintenance.run_flushes();
                maintenance.delete_deferred(true);
                let _ = stopped.send(());
                return;
            }
            Ok(Job::CompactAll(done)) => {
                maintenance.run_flushes();
                maintenance.compact_all(true);
                let _ = done.send(());
            }
            Ok(job) => maintenance.flushes.push_back(job),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        maintenance.run_flushes();
        if Instant::now() >= next_maintenance {
            maintenance.compact_all(false);
            maintenance.apply_retention();
            maintenance.delete_deferred(false);
            next_maintenance = Instant::now() + interval;
        }
    }
}

impl Maintenance<'_> {
    /// Flushes queued generations oldest first; stops at the first failure so that WAL
    /// segments are only ever retired in order.
    fn run_flushes(&mut self) {
        while let Some(Job::Flush { generation, .. }) = self.flushes.front() {
            if let Some(generation) = generation
                && let Err(error) = self.flush(generation)
            {
                self.shared.metrics.flush_failures.inc();
                tracing::error!(%error, "flush failed; will retry");
                return;
            }
            if let Some(Job::Flush { done: Some(done), .. }) = self.flushes.pop_front() {
                let _ = done.send(Ok(()));
            }
        }
    }

    fn flush(&self, generation: &Arc<Generation>) -> Result<(), StoreError> {
        let started = Instant::now();
        let settings = &self.shared.settings;
        let mut files: Vec<FileMeta> = Vec::new();
        for (table, batches) in &generation.tables {
            files.extend(write_partitions(&settings.data_dir, *table, batches, &settings.storage)?);
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

    /// Compacts every partition that qualifies; `force` treats every hour as settled.
    fn compact_all(&mut self, force: bool) {
        for table in Table::ALL {
            let partitions = self.shared.read().catalog.partitions(table);
            for (hour, files) in partitions {
                let settled = force || hour < current_hour() - 1;
                if let Err(error) = self.compact(table, hour, files, settled) {
                    tracing::error!(%error, table = table.name(), hour, "compaction failed");
                }
            }
        }
    }

    /// Merges the smallest files of a partition into one, once the partition has enough
    /// files or no longer receives data (`settled`: its hour is over).
    fn compact(&mut self, table: Table, hour: i64, mut files: Vec<Arc<FileMeta>>, settled: bool) -> Result<(), StoreError> {
        let settings = &self.shared.settings;
        if files.len() < 2 || (files.len() < settings.storage.compaction_min_files && !settled) {
            return Ok(());
        }
        files.sort_by_key(|file| file.bytes);
        // Size-tiered while the hour is open: a file joins only if it is at most twice the
        // files already picked together, so each byte is rewritten O(log n) times rather than
        // at every compaction. A settled hour is merged as far as the input limit allows.
        let mut input_bytes = 0;
        let inputs: Vec<Arc<FileMeta>> = files
            .into_iter()
            .take_while(|file| {
                let tiered = settled || input_bytes == 0 || file.bytes <= 2 * input_bytes;
                input_bytes += file.bytes;
                tiered && input_bytes <= settings.storage.compaction_max_input_bytes
            })
            .collect();
        if inputs.len() < 2 {
            return Ok(());
        }
        let started = Instant::now();
        let removed: Vec<PathBuf> = inputs.iter().map(|file| file.path.clone()).collect();
        let merged = merge_sorted_files(&self.runtime, &settings.data_dir, table, hour, &removed, &settings.storage)?;
        let commit = Commit { add: vec![merged.path.clone()], remove: removed.clone(), wal_through: None };
        let record = commit.apply(&settings.data_dir, &new_id()).map_err(StoreError::io("commit compaction"))?;
        {
            let mut state = self.shared.write();
            state.catalog.remove(table, &removed);
            state.catalog.add(merged);
            self.shared.publish_sizes(&state);
        }
        self.defer_delete(commit, record);
        self.shared.metrics.compactions.inc();
        self.shared.metrics.compaction_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(table = table.name(), hour, files = removed.len(), "compacted");
        Ok(())
    }

    /// Drops whole partitions older than the retention period.
    fn apply_retention(&mut self) {
        let retention_hours = self.shared.settings.storage.retention_hours;
        if retention_hours == 0 {
            return;
        }
        let oldest_kept = current_hour() - retention_hours as i64;
        for table in Table::ALL {
            let expired: Vec<PathBuf> = self
                .shared
                .read()
                .catalog
                .files(table)
                .iter()
                .filter(|file| file.hour < oldest_kept)
                .map(|file| file.path.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            let commit = Commit { add: Vec::new(), remove: expired.clone(), wal_through: None };
            match commit.apply(&self.shared.settings.data_dir, &new_id()) {
                Ok(record) => {
                    {
                        let mut state = self.shared.write();
                        state.catalog.remove(table, &expired);
                        self.shared.publish_sizes(&state);
                    }
                    self.shared.metrics.retention_deleted_files.inc_by(expired.len() as u64);
                    tracing::info!(table = table.name(), files = expired.len(), "retention expired files");
                    self.defer_delete(commit, record);
                }
                Err(error) => tracing::error!(%error, "retention commit failed"),
            }
        }
    }

    fn defer_delete(&mut self, commit: Commit, record: PathBuf) {
        let due = Instant::now() + self.shared.settings.file_delete_grace;
        self.deferred.push(DeferredDelete { due, commit, record });
    }

    fn delete_deferred(&mut self, all: bool) {
        let now = Instant::now();
        let wal_dir = &self.shared.wal_dir;
        self.deferred.retain(|deferred| {
            if !all && deferred.due > now {
                return true;
            }
            if let Err(error) = deferred.commit.retire(wal_dir, &deferred.record) {
                tracing::warn!(%error, "could not delete replaced files yet");
                return true;
            }
            for path in &deferred.commit.remove {
                // Leave no empty partition directories behind; a non-empty one stays.
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            false
        });
    }
}

fn current_hour() -> i64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos / NANOS_PER_HOUR as u128) as i64
}
