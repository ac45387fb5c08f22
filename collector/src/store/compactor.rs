//! The compaction thread: merges small files as flushes create them, applies retention, and
//! deletes replaced files after a grace period.
//!
//! It runs beside the flush thread, never in front of it: a merge can take seconds, and a
//! flush waiting behind one would let the memtable grow until ingest is refused. Once the
//! store is stopping it starts no merge, so a shutdown waits for one merge at most.
//!
//! While an hour is open, compaction is size-tiered: a merge takes at least
//! `compaction_min_files` files of similar size (within [`TIER_RATIO`] of the smallest), so
//! each byte is rewritten about log(files per hour) / log(`compaction_min_files`) times (less
//! when `compaction_max_input_bytes` stops the climb through the tiers) and every merge
//! stays small. Once the hour is over (settled) its files are merged as far as
//! `compaction_max_input_bytes` allows, smallest first, and a flushed file left alone is
//! rewritten by itself, since flushed files are not compressed.
//!
//! A merge decodes and re-encodes every row. Where every input is a file that compaction
//! wrote (tier two and up) of a table that allows it, the inputs are concatenated instead:
//! their row groups are copied as they are (see `parquet::concatenate_files`).

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

    /// One merge in every partition that qualifies, none once the store is stopping;
    /// returns how many merges ran. A partition whose merge failed waits a maintenance
    /// interval, unless `force`d.
    fn compact_all(&mut self, force: bool) -> usize {
        let mut merges = 0;
        for table in Table::ALL {
            let partitions = self.shared.read().catalog.partitions(table);
            for (hour, files) in partitions {
                if self.stopping() {
                    return merges;
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
                        merges += 1;
                    }
                    Err(error) => {
                        tracing::error!(%error, table = table.name(), hour, "compaction failed; retrying later");
                        let retry_at = Instant::now() + self.shared.settings.storage.maintenance_interval();
                        self.retry_at.insert((table, hour), retry_at);
                    }
                }
            }
        }
        merges
    }

    /// Merges `inputs`, files of one partition, into one.
    fn compact(&mut self, table: Table, hour: i64, inputs: &[Arc<FileMeta>]) -> Result<(), StoreError> {
        let settings = &self.shared.settings;
        let started = Instant::now();
        let removed: Vec<PathBuf> = inputs.iter().map(|file| file.path.clone()).collect();
        let concatenated = if table.concatenates_compacted_files() && inputs.iter().all(|file| !file.is_flushed()) {
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

/// The files of one partition that its next merge takes, or none if it should wait.
///
/// An open hour merges the smallest tier of at least `compaction_min_files` files of similar
/// size; a settled hour merges its smallest files. Either way the inputs stop at
/// `compaction_max_input_bytes` or `compaction_max_input_files`. A merge needs at least two
/// inputs, except that a settled hour's lone flushed file is rewritten to be compressed.
fn pick_inputs(mut files: Vec<Arc<FileMeta>>, settled: bool, config: &StorageConfig) -> Vec<Arc<FileMeta>> {
    let concatenates = files.first().is_some_and(|file| file.table.concatenates_compacted_files());
    if settled && concatenates && files.iter().any(|file| file.is_flushed()) {
        // Flushed files are merged among themselves first, so that the compacted files
        // are then concatenated rather than merged with them.
        files.retain(|file| file.is_flushed());
    }
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

    #[test]
    fn a_lone_flushed_file_is_rewritten_once_its_hour_is_over() {
        let config = StorageConfig::default();
        let lone = |name: &str, settled| pick_inputs(vec![file(name, 10)], settled, &config).len();
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

    /// How many times an hour of flushes is rewritten (merged) and copied (concatenated),
    /// per span, by the compactions `pick_inputs` chooses while the hour is open and then
    /// once it is settled. A flushed file holds `spans_per_flush` spans, uncompressed; a
    /// compaction's output holds its inputs' spans compressed, at the sizes the mesh data
    /// set has.
    fn rewrites_per_span(flushes: usize, spans_per_flush: u64, config: &StorageConfig) -> Written {
        const FLUSHED_BYTES_PER_SPAN: u64 = 116;
        let mut spans_of: HashMap<PathBuf, u64> = HashMap::new();
        let mut files: Vec<Arc<FileMeta>> = Vec::new();
        let mut written = Written::default();
        for flush in 0..flushes {
            let flushed = file(&format!("{flush}.flush.parquet"), spans_per_flush * FLUSHED_BYTES_PER_SPAN);
            spans_of.insert(flushed.path.clone(), spans_per_flush);
            files.push(flushed);
            compact_until_done(&mut files, &mut spans_of, false, config, &mut written);
        }
        compact_until_done(&mut files, &mut spans_of, true, config, &mut written);
        let spans = (flushes as u64 * spans_per_flush) as f64;
        Written { merged: written.merged / spans, copied: written.copied / spans }
    }

    /// Spans (or spans per span) that compaction merged and copied.
    #[derive(Debug, Default)]
    struct Written {
        merged: f64,
        copied: f64,
    }

    /// Runs the compactions `pick_inputs` chooses until it chooses none, adding the spans
    /// they wrote to `written`.
    fn compact_until_done(
        files: &mut Vec<Arc<FileMeta>>,
        spans_of: &mut HashMap<PathBuf, u64>,
        settled: bool,
        config: &StorageConfig,
        written: &mut Written,
    ) {
        // A first merge of 12 flushes of the load generator's mesh spans.
        const COMPACTED_BYTES_PER_SPAN: u64 = 31;
        loop {
            let inputs = pick_inputs(files.clone(), settled, config);
            if inputs.is_empty() {
                return;
            }
            files.retain(|file| !inputs.contains(file));
            let spans: u64 = inputs.iter().map(|input| spans_of[&input.path]).sum();
            if inputs.iter().all(|input| !input.is_flushed()) {
                written.copied += spans as f64;
            } else {
                written.merged += spans as f64;
            }
            let output = file(&format!("{}.parquet", spans_of.len()), spans * COMPACTED_BYTES_PER_SPAN);
            spans_of.insert(output.path.clone(), spans);
            files.push(output);
        }
    }

    #[test]
    fn an_hour_of_spans_is_merged_once_and_then_only_concatenated() {
        // An hour at 10 000 mesh spans/s: a 10 MiB memtable holds about 8500 of them, which
        // flush as 0.95 MB and compact to about 31 bytes each.
        let spans_per_flush = 8500;
        let flushes = 10_000 * 3600 / spans_per_flush as usize;
        let narrow = StorageConfig { compaction_min_files: 8, compaction_max_input_bytes: 256 << 20, ..StorageConfig::default() };
        let narrow = rewrites_per_span(flushes, spans_per_flush, &narrow);
        let default = rewrites_per_span(flushes, spans_per_flush, &StorageConfig::default());
        println!("per span in an hour of {flushes} flushes: {narrow:?} (8 files a tier, 256 MB merges), {default:?} (default)");
        // Only flushed files are merged: once each, at the first tier or when the hour is
        // settled. The tiers above copy: log8(4235 flushes) is 4.0 tiers, the merge one of
        // them, less the part of the top tier an hour does not fill.
        assert!((1.0..1.05).contains(&narrow.merged), "{narrow:?}");
        assert!((2.0..3.5).contains(&narrow.copied), "{narrow:?}");
        // log12(4235) is 3.4, but 64 MB merges stop the climb more than a tier short of it.
        assert!((1.0..1.05).contains(&default.merged), "{default:?}");
        assert!((0.5..1.5).contains(&default.copied), "{default:?}");
    }

    #[test]
    fn a_settled_hour_merges_its_flushed_files_apart_from_its_compacted_ones() {
        let files = vec![file("a.flush.parquet", 30), file("b.parquet", 10), file("c.flush.parquet", 20), file("d.parquet", 5)];
        let names = |picked: Vec<Arc<FileMeta>>| picked.iter().map(|file| file.path.display().to_string()).collect::<Vec<_>>();
        let config = StorageConfig::default();
        assert_eq!(names(pick_inputs(files.clone(), true, &config)), ["c.flush.parquet", "a.flush.parquet"]);
        // Metric files are never concatenated, so they gain nothing from the separation.
        let metrics = files.iter().map(|file| Arc::new(FileMeta { table: Table::MetricsGauge, ..(**file).clone() })).collect();
        assert_eq!(pick_inputs(metrics, true, &config).len(), 4);
    }
}
