//! The WAL writer thread: group commit, memtable insertion, and the decision to flush.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::flusher::Job;
use super::wal::Wal;
use super::{PreparedWrite, Shared, StoreError};
use crate::config::FsyncPolicy;

/// How often the writer wakes up without work, to fsync (interval policy) or flush by age.
const TICK: Duration = Duration::from_millis(50);

pub(super) enum Command {
    Write(WriteRequest),
    /// Flush everything written so far; answered once it is in Parquet.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Admission refused a request for memory: flush the active generation now, unless a
    /// flush is already running (whose end frees memory by itself).
    RelieveMemory,
    /// Compact every partition after the flushes queued so far; answered when done.
    CompactAll(oneshot::Sender<()>),
    /// Flush and stop; answered once the flush and compaction threads have finished too.
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct WriteRequest {
    pub(super) write: PreparedWrite,
    pub(super) ack: oneshot::Sender<Result<(), StoreError>>,
}

struct Writer<'a> {
    shared: &'a Shared,
    wal: Wal,
    jobs: &'a Sender<Job>,
    /// Bytes appended since the last fsync (interval and never policies).
    unsynced: bool,
    last_sync: Instant,
    /// After a failed append the segment may end in a torn record: nothing more may be
    /// appended to it, or replay would stop before later, acknowledged records.
    needs_new_segment: bool,
}

pub(super) fn run(shared: &Shared, wal: Wal, commands: &Receiver<Command>, jobs: &Sender<Job>) {
    let mut writer = Writer {
        shared,
        wal,
        jobs,
        unsynced: false,
        last_sync: Instant::now(),
        needs_new_segment: false,
    };
    let max_group_bytes = shared.settings.wal.group_commit_max_bytes;
    let mut carried: Option<Command> = None;
    loop {
        let command = match carried.take() {
            Some(command) => command,
            None => match commands.recv_timeout(TICK) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    writer.housekeeping();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    writer.stop(None);
                    return;
                }
            },
        };
        match command {
            Command::Write(first) => {
                // Group commit: take every write already waiting, up to the byte limit.
                let mut bytes = first.write.wal_bytes();
                let mut group = vec![first];
                while bytes < max_group_bytes {
                    match commands.try_recv() {
                        Ok(Command::Write(next)) => {
                            bytes += next.write.wal_bytes();
                            group.push(next);
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                writer.commit_group(group);
            }
            Command::Flush(done) => writer.flush(Some(done)),
            Command::RelieveMemory => writer.relieve_memory(),
            Command::CompactAll(done) => {
                let _ = jobs.send(Job::CompactAll(done));
            }
            Command::Shutdown(done) => {
                writer.stop(Some(done));
                return;
            }
        }
        writer.housekeeping();
    }
}

impl Writer<'_> {
    fn commit_group(&mut self, group: Vec<WriteRequest>) {
        let result = self.append_durably(&group);
        if let Err(error) = result {
            tracing::error!(%error, requests = group.len(), "wal write failed; refusing the requests");
            for request in group {
                let _ = request.ack.send(Err(StoreError::Wal(error.to_string())));
            }
            return;
        }
        {
            let mut state = self.shared.write();
            for request in &group {
                for (table, batch) in &request.write.batches {
                    state.resources.record(*table, batch);
                    state.memtable.insert(*table, batch.clone());
                }
                state.metrics.merge(&request.write.metrics);
            }
            self.shared.publish_sizes(&state);
        }
        for request in group {
            let _ = request.ack.send(Ok(()));
        }
    }

    fn append_durably(&mut self, group: &[WriteRequest]) -> std::io::Result<()> {
        if self.needs_new_segment {
            self.wal.rotate()?;
            self.needs_new_segment = false;
        }
        let records = group.iter().flat_map(|request| &request.write.records);
        let written = match self.wal.append(records) {
            Ok(written) => written,
            Err(error) => {
                self.needs_new_segment = true;
                return Err(error);
            }
        };
        self.shared.metrics.wal_bytes_written.inc_by(written);
        if self.shared.settings.wal.fsync == FsyncPolicy::Always {
            self.sync()
        } else {
            self.unsynced = true;
            Ok(())
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.wal.sync();
        if result.is_err() {
            // Linux reports a writeback error once and may drop the pages it could not
            // write: a later fsync of this segment would succeed without them, and replay
            // would stop at the hole, before records acknowledged after it. They go to a
            // fresh segment instead.
            self.needs_new_segment = true;
        }
        self.shared.metrics.wal_fsync_seconds.observe(started.elapsed().as_secs_f64());
        self.unsynced = false;
        self.last_sync = Instant::now();
        result
    }

    /// Periodic duties: the interval fsync, and flushing a memtable that is big or old.
    fn housekeeping(&mut self) {
        let settings = &self.shared.settings;
        let interval = Duration::from_millis(settings.wal.fsync_interval_ms);
        let sync_due = self.unsynced
            && settings.wal.fsync == FsyncPolicy::Interval
            && self.last_sync.elapsed() >= interval;
        if sync_due && let Err(error) = self.sync() {
            tracing::error!(%error, "wal fsync failed");
        }
        let (bytes, age) = {
            let state = self.shared.read();
            (state.memtable.active_bytes(), state.memtable.active_age())
        };
        let old = age.is_some_and(|age| age >= settings.storage.flush_interval());
        let previous_done = self.shared.pending_flushes.load(Ordering::Acquire) == 0;
        if (bytes >= settings.storage.flush_bytes || old) && previous_done {
            self.flush(None);
        }
    }

    /// Flushes the active generation if no flush is running, however small or young the
    /// generation: memory is full, and until a flush frees some every request is refused.
    fn relieve_memory(&mut self) {
        self.shared.relief_requested.store(false, Ordering::Release);
        let idle = self.shared.pending_flushes.load(Ordering::Acquire) == 0;
        if idle && self.shared.read().memtable.active_bytes() > 0 {
            self.shared.metrics.pressure_flushes.inc();
            self.flush(None);
        }
    }

    /// Seals the WAL segment, freezes the memtable generation it covers and queues its
    /// flush. `done` is answered when the flush (and every earlier one) has finished.
    fn flush(&mut self, done: Option<oneshot::Sender<Result<(), StoreError>>>) {
        let sealed = match self.wal.rotate() {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::error!(%error, "wal rotation failed; flush postponed");
                self.needs_new_segment = true;
                if let Some(done) = done {
                    let _ = done.send(Err(StoreError::Wal(error.to_string())));
                }
                return;
            }
        };
        self.unsynced = false;
        let generation = {
            let mut state = self.shared.write();
            let generation = state.memtable.freeze(sealed);
            self.shared.publish_sizes(&state);
            generation
        };
        if generation.is_some() {
            self.shared.pending_flushes.fetch_add(1, Ordering::AcqRel);
        }
        let _ = self.jobs.send(Job::Flush { generation, done });
    }

    fn stop(&mut self, done: Option<oneshot::Sender<()>>) {
        self.flush(None);
        let (stopped_tx, stopped) = oneshot::channel();
        if self.jobs.send(Job::Stop(stopped_tx)).is_ok() {
            let _ = stopped.blocking_recv();
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
