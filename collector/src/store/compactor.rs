//! The compaction thread: joins small files into larger ones as flushes create them, applies
//! retention, and deletes replaced files after a grace period.
//!
//! It runs beside the flush thread, never in front of it: a merge can take seconds, and a
//! flush waiting behind one would let the memtable grow until ingest is refused. Once the
//! store is stopping it starts no compaction, so a shutdown waits for one at most.
//!
//! While an hour is open, compaction is size-tiered: a compaction takes at least
//! `compaction_min_files` files of similar size (within [`TIER_RATIO`] of the smallest), so
//! each byte is rewritten about log(files per hour) / log(`compaction_min_files`) times (less
//! when `compaction_max_input_bytes` stops the climb through the tiers) and every compaction
//! stays small. Once the hour is over (settled) its files are compacted as far as
//! `compaction_max_input_bytes` allows, smallest first, and a flushed file left alone is
//! rewritten by itself, since flushed files are not compressed.
//!
//! A merge decodes and re-encodes every row. Spans and log records are merged only when
//! their flushes were small: a flush by size writes final, compressed files
//! (`Table::flushes_final_files`), whose row groups compaction copies as they are into one
//! file (see `parquet::concatenate_files`). Files of the two kinds are never compacted
//! together. An input written under an older schema also makes a compaction a merge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::catalog::{FileMeta, NANOS_PER_HOUR};
use super::commit::Commit;
use super::parquet::{Merged, concatenate_files, merge_sorted_files, new_id};
use super::{Shared, StoreError};
use crate::config::StorageConfig;
use crate::schema::Table;
use crate::telemetry::CompactionLabels;

/// Files of one tier differ in size by at most this factor.
const TIER_RATIO: u64 = 2;

pub(super) enum Request {
    /// Files were added: compact whatever now qualifies.
    Check,
    /// Compact every partition as if every hour were over; answered when done.
    All(oneshot::Sender<()>),
    /// Delete what may be deleted and exit; answered when done.
    Stop(oneshot::Sender<()>),
}

/// Files replaced by a commit, deleted once no query can still be reading them.
struct DeferredDelete {
    due: Instant,
    commit: Commit,
    record: PathBuf,
}

struct Compactor<'a> {
    shared: &'a Shared,
    deferred: Vec<DeferredDelete>,
    /// Partitions whose last merge failed, and when to try them again: checks come with
    /// every flush, and a damaged input would otherwise be read and logged each time.
    retry_at: BTreeMap<(Table, i64), Instant>,
}

pub(super) fn run(shared: &Shared, requests: &Receiver<Request>) {
    let mut compactor = Compactor { shared, deferred: Vec::new(), retry_at: BTreeMap::new() };
    let interval = shared.settings.storage.maintenance_interval();
    let mut next_retention = Instant::now() + interval;
    loop {
        match requests.recv_timeout(next_retention.saturating_duration_since(Instant::now())) {
            // Checks that queued up behind a long merge cost a look at the catalog each.
            Ok(Request::Check) | Err(RecvTimeoutError::Timeout) => compactor.compact_until_done(false),
            Ok(Request::All(done)) => {
                compactor.compact_until_done(true);
                let _ = done.send(());
            }
            Ok(Request::Stop(stopped)) => {
                compactor.delete_deferred(true);
                let _ = stopped.send(());
                return;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_retention {
            compactor.apply_retention();
            next_retention = Instant::now() + interval;
        }
        compactor.delete_deferred(false);
    }
}

impl Compactor<'_> {
    /// Compacts until no partition qualifies or the store is stopping; `force` treats every
    /// hour as settled.
    fn compact_until_done(&mut self, force: bool) {
        while !self.stopping() && self.compact_all(force) > 0 {}
    }

    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// One compaction in every partition that qualifies, none once the store is stopping;
    /// returns how many ran. A partition whose compaction failed waits a maintenance
    /// interval, unless `force`d.
    fn compact_all(&mut self, force: bool) -> usize {
        let mut compactions = 0;
        for table in Table::ALL {
            let partitions = self.shared.read().catalog.partitions(table);
            for (hour, files) in partitions {
                if self.stopping() {
                    return compactions;
                }
                let backing_off = self.retry_at.get(&(table, hour)).is_some_and(|at| Instant::now() < *at);
                if backing_off && !force {
                    continue;
                }
                let settled = force || hour < current_hour() - 1;
                let inputs = pick_inputs(files, settled, &self.shared.settings.storage);
                if inputs.is_empty() {
                    continue;
                }
                match self.compact(table, hour, &inputs) {
                    Ok(()) => {
                        self.retry_at.remove(&(table, hour));
                        compactions += 1;
                    }
                    Err(error) => {
                        tracing::error!(%error, table = table.name(), hour, "compaction failed; retrying later");
                        let retry_at = Instant::now() + self.shared.settings.storage.maintenance_interval();
                        self.retry_at.insert((table, hour), retry_at);
                    }
                }
            }
        }
        compactions
    }

    /// Joins `inputs`, files of one partition, into one: concatenated if they allow it,
    /// merged otherwise.
    fn compact(&mut self, table: Table, hour: i64, inputs: &[Arc<FileMeta>]) -> Result<(), StoreError> {
        let settings = &self.shared.settings;
        let started = Instant::now();
        let removed: Vec<PathBuf> = inputs.iter().map(|file| file.path.clone()).collect();
        let concatenated = if table.flushes_final_files() && inputs.iter().all(|file| !file.is_flushed()) {
            concatenate_files(&settings.data_dir, table, hour, &removed)?
        } else {
            None
        };
        let (Merged { file: merged, rows }, method) = match concatenated {
            Some(concatenated) => (concatenated, "concatenation"),
            None => {
                let resources = self.shared.read().resources.clone();
                (merge_sorted_files(&settings.data_dir, table, hour, &removed, &settings.storage, &resources)?, "merge")
            }
        };
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
        self.shared.metrics.compacted_rows.get_or_create(&CompactionLabels { table: table.name(), method }).inc_by(rows);
        self.shared.metrics.compaction_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(table = table.name(), hour, files = removed.len(), method, "compacted");
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
        self.forget_deleted_rows(oldest_kept);
    }

    /// Drops the catalog entries that only rows before `oldest_kept` named, once no file or
    /// memtable row is older: a table whose retention commit failed keeps its files, and
    /// rows older than retention can arrive late and wait in the memtable.
    fn forget_deleted_rows(&self, oldest_kept: i64) {
        let mut state = self.shared.write();
        let oldest_stored = [state.catalog.oldest_hour(), state.memtable.oldest_hour()].into_iter().flatten().min();
        let forget_before = oldest_stored.map_or(oldest_kept, |oldest| oldest.min(oldest_kept));
        state.resources.forget_older_than(forget_before);
        state.metrics.forget_older_than(forget_before);
        self.shared.publish_sizes(&state);
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

/// The files of one partition that its next compaction takes, or none if it should wait.
///
/// An open hour compacts the smallest tier of at least `compaction_min_files` files of
/// similar size; a settled hour compacts its smallest files. Either way the inputs stop at
/// `compaction_max_input_bytes` or `compaction_max_input_files`. A compaction needs at least
/// two inputs, except that a settled hour's lone flushed file is rewritten to be compressed.
///
/// Spans and log records are compacted among files of one kind: flushed files (small
/// flushes) are merged among themselves, before final files are concatenated. A merge that
/// took final files too would decode compressed inputs, and concatenated ones, sorted only
/// within each stretch, would come out of order.
fn pick_inputs(files: Vec<Arc<FileMeta>>, settled: bool, config: &StorageConfig) -> Vec<Arc<FileMeta>> {
    if !files.first().is_some_and(|file| file.table.flushes_final_files()) {
        return pick_of_one_kind(files, settled, config);
    }
    let (flushed, final_files) = files.into_iter().partition(|file| file.is_flushed());
    let merge = pick_of_one_kind(flushed, settled, config);
    if merge.is_empty() { pick_of_one_kind(final_files, settled, config) } else { merge }
}

fn pick_of_one_kind(mut files: Vec<Arc<FileMeta>>, settled: bool, config: &StorageConfig) -> Vec<Arc<FileMeta>> {
    files.sort_by_key(|file| file.bytes);
    let candidates = if settled {
        &files[..]
    } else {
        let tier = (0..files.len()).find_map(|start| {
            let limit = files[start].bytes.saturating_mul(TIER_RATIO);
            let len = files[start..].iter().take_while(|file| file.bytes <= limit).count();
            (len >= config.compaction_min_files).then(|| &files[start..start + len])
        });
        tier.unwrap_or_default()
    };
    let mut input_bytes = 0;
    let inputs: Vec<Arc<FileMeta>> = candidates
        .iter()
        .take(config.compaction_max_input_files)
        .take_while(|file| {
            input_bytes += file.bytes;
            input_bytes <= config.compaction_max_input_bytes
        })
        .cloned()
        .collect();
    let worth_a_rewrite = inputs.len() >= 2 || (settled && inputs.first().is_some_and(|file| file.is_flushed()));
    if worth_a_rewrite { inputs } else { Vec::new() }
}

fn current_hour() -> i64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos / NANOS_PER_HOUR as u128) as i64
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn file(name: &str, bytes: u64) -> Arc<FileMeta> {
        Arc::new(FileMeta { path: PathBuf::from(name), table: Table::Traces, hour: 0, bytes })
    }

    /// The sizes of the files picked among compacted files of `sizes`.
    fn picked(sizes: &[u64], settled: bool, min_files: usize, max_input_bytes: u64) -> Vec<u64> {
        let config = StorageConfig { compaction_min_files: min_files, compaction_max_input_bytes: max_input_bytes, ..StorageConfig::default() };
        let files = sizes.iter().enumerate().map(|(i, &bytes)| file(&format!("{i}.parquet"), bytes)).collect();
        pick_inputs(files, settled, &config).iter().map(|file| file.bytes).collect()
    }

    #[test]
    fn an_open_hour_merges_only_a_full_tier_of_similar_sizes() {
        // Three small files are not a tier of four; the big file waits for its peers.
        assert!(picked(&[10, 11, 12, 400], false, 4, 1 << 30).is_empty());
        assert_eq!(picked(&[12, 10, 400, 11, 13, 30], false, 4, 1 << 30), [10, 11, 12, 13]);
        // The small files' merged output (about 46) joins the next tier, not the big file.
        assert_eq!(picked(&[46, 400, 50, 60, 90, 91], false, 4, 1 << 30), [46, 50, 60, 90, 91]);
        // A tier too small in count at the bottom does not hide a full tier above it.
        assert_eq!(picked(&[1, 100, 110, 120, 130], false, 4, 1 << 30), [100, 110, 120, 130]);
    }

    #[test]
    fn a_settled_hour_merges_its_smallest_files_up_to_the_input_limit() {
        assert_eq!(picked(&[10, 400, 11], true, 4, 1 << 30), [10, 11, 400]);
        assert_eq!(picked(&[10, 400, 11, 30], true, 4, 100), [10, 11, 30]);
        // One file alone is not a merge.
        assert!(picked(&[10, 400], true, 4, 100).is_empty());
    }

    /// A metrics file, which flushes write uncompressed.
    fn metric_file(name: &str, bytes: u64) -> Arc<FileMeta> {
        Arc::new(FileMeta { table: Table::MetricsGauge, ..(*file(name, bytes)).clone() })
    }

    #[test]
    fn a_lone_flushed_file_is_rewritten_once_its_hour_is_over() {
        let config = StorageConfig::default();
        let lone = |name: &str, settled| pick_inputs(vec![metric_file(name, 10)], settled, &config).len();
        assert_eq!(lone("a.flush.parquet", true), 1);
        assert_eq!(lone("a.flush.parquet", false), 0);
        assert_eq!(lone("a.parquet", true), 0);
    }

    #[test]
    fn the_input_limit_caps_a_tier_too() {
        assert_eq!(picked(&[10, 11, 12, 13], false, 4, 25), [10, 11]);
    }

    #[test]
    fn a_backlog_of_small_files_is_merged_a_bounded_number_at_a_time() {
        let backlog: Vec<u64> = (0..100).map(|n| 1000 + n).collect();
        let max_files = StorageConfig::default().compaction_max_input_files;
        for settled in [false, true] {
            let inputs = picked(&backlog, settled, 12, 1 << 30);
            assert_eq!(inputs, backlog[..max_files], "settled: {settled}");
        }
    }

    /// How many times compaction copies (concatenates) each span of an hour of flushes of
    /// `spans_per_flush` spans, by the compactions `pick_inputs` chooses while the hour is
    /// open and then once it is settled. Flushes of spans are final files at the size the
    /// mesh data set has; a concatenation's output is its inputs' bytes.
    fn copies_per_span(flushes: usize, spans_per_flush: u64, config: &StorageConfig) -> f64 {
        const FLUSHED_BYTES_PER_SPAN: u64 = 32;
        let mut spans_of: HashMap<PathBuf, u64> = HashMap::new();
        let mut files: Vec<Arc<FileMeta>> = Vec::new();
        let mut copied = 0;
        for flush in 0..flushes {
            let flushed = file(&format!("flush-{flush}.parquet"), spans_per_flush * FLUSHED_BYTES_PER_SPAN);
            spans_of.insert(flushed.path.clone(), spans_per_flush);
            files.push(flushed);
            copied += compact_until_done(&mut files, &mut spans_of, false, config);
        }
        copied += compact_until_done(&mut files, &mut spans_of, true, config);
        copied as f64 / (flushes as u64 * spans_per_flush) as f64
    }

    /// Runs the compactions `pick_inputs` chooses until it chooses none; returns the spans
    /// they copied.
    fn compact_until_done(
        files: &mut Vec<Arc<FileMeta>>,
        spans_of: &mut HashMap<PathBuf, u64>,
        settled: bool,
        config: &StorageConfig,
    ) -> u64 {
        let mut copied = 0;
        loop {
            let inputs = pick_inputs(files.clone(), settled, config);
            if inputs.is_empty() {
                return copied;
            }
            files.retain(|file| !inputs.contains(file));
            let spans: u64 = inputs.iter().map(|input| spans_of[&input.path]).sum();
            let bytes = inputs.iter().map(|input| input.bytes).sum();
            copied += spans;
            let output = file(&format!("compaction-{}.parquet", spans_of.len()), bytes);
            spans_of.insert(output.path.clone(), spans);
            files.push(output);
        }
    }

    #[test]
    fn an_hour_of_flushed_spans_is_copied_about_once_a_tier() {
        // An hour at 10 000 mesh spans/s: a 10 MiB memtable holds about 8500 of them, which
        // flush as about 32 bytes each.
        let spans_per_flush = 8500;
        let flushes = 10_000 * 3600 / spans_per_flush as usize;
        let narrow = StorageConfig { compaction_min_files: 8, compaction_max_input_bytes: 256 << 20, ..StorageConfig::default() };
        let narrow = copies_per_span(flushes, spans_per_flush, &narrow);
        let default = copies_per_span(flushes, spans_per_flush, &StorageConfig::default());
        println!("copies per span in an hour of {flushes} flushes: {narrow:.2} (8 files a tier, 256 MB inputs), {default:.2} (default)");
        // log8(4235 flushes) is 4.0 tiers, less the part of the top tier an hour does not fill.
        assert!((3.0..4.0).contains(&narrow), "{narrow}");
        // log12(4235) is 3.4, but 64 MB inputs stop the climb more than a tier short of it.
        assert!((1.5..2.5).contains(&default), "{default}");
    }

    #[test]
    fn spans_are_compacted_among_files_of_one_kind() {
        let names = |picked: Vec<Arc<FileMeta>>| picked.iter().map(|file| file.path.display().to_string()).collect::<Vec<_>>();
        let config = StorageConfig { compaction_min_files: 2, ..StorageConfig::default() };
        let files = vec![file("a.flush.parquet", 30), file("b.parquet", 10), file("c.flush.parquet", 20), file("d.parquet", 15)];
        // Flushed files first, open hour or settled.
        for settled in [false, true] {
            assert_eq!(names(pick_inputs(files.clone(), settled, &config)), ["c.flush.parquet", "a.flush.parquet"]);
        }
        // Final files once no flushed ones qualify: a lone flushed file waits for its peers
        // while the hour is open, and is compressed alone once it is over.
        let files = vec![file("a.flush.parquet", 30), file("b.parquet", 10), file("d.parquet", 15)];
        assert_eq!(names(pick_inputs(files.clone(), false, &config)), ["b.parquet", "d.parquet"]);
        assert_eq!(names(pick_inputs(files, true, &config)), ["a.flush.parquet"]);
        // Metric files are always merged, so they gain nothing from the separation.
        let metrics = ["a.flush.parquet", "b.parquet", "c.flush.parquet", "d.parquet"].map(|name| metric_file(name, 10)).to_vec();
        assert_eq!(pick_inputs(metrics, true, &config).len(), 4);
    }
}
