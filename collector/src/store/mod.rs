//! The embedded store: WAL → memtable → Parquet, with compaction and retention.
//!
//! Data path: ingest hands converted batches, with the request they came from, to
//! [`Store::write`]; the WAL writer thread appends the request to the log (group commit),
//! inserts the batches into the memtable and only then acknowledges, so acknowledged data is
//! both durable and queryable. Replay converts logged requests again ([`wal`]). When the memtable is
//! large or old enough the writer rotates the WAL and freezes the memtable generation; the
//! flush thread writes it to Parquet, swaps it for the files in one step, and retires the
//! WAL segments. A compaction thread joins small files as they appear and applies
//! retention, so a long compaction never holds up a flush.
//!
//! Invariant: a row is in exactly one of {memtable, Parquet} as seen by a query snapshot;
//! flush and compaction change the file set and the memtable under one lock.

mod catalog;
mod commit;
mod compactor;
mod flusher;
mod gather;
mod memtable;
mod merge;
mod metric_catalog;
mod parquet;
mod resources;
pub mod wal;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::{StorageConfig, WalConfig};
use crate::ingest::Export;
use crate::schema::{Rejections, Signal, Table};
use crate::telemetry::{CatalogLabels, SelfMetrics, TableLabels};
use catalog::Catalog;
use memtable::Memtable;
use metric_catalog::MetricCatalog;
pub(crate) use resources::{ATTRIBUTES_COLUMN as RESOURCE_ATTRIBUTES_COLUMN, ID_COLUMN as RESOURCE_ID_COLUMN, ResourceCatalog};
use wal::{EncodedRecord, Payload, Wal};

/// The width of a partition: the profile tables de-duplicate per partition hour.
pub(crate) use catalog::NANOS_PER_HOUR;
pub(crate) use parquet::files_as_table;
pub use metric_catalog::TABLE_NAME as METRIC_CATALOG_TABLE;
pub(crate) use metric_catalog::schema as metric_catalog_schema;

/// What the store needs from the configuration.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub data_dir: PathBuf,
    pub wal: WalConfig,
    pub storage: StorageConfig,
    /// Buffered bytes (memtable plus admitted requests) above which writes are refused.
    pub memory_limit_bytes: usize,
    /// How long a file replaced by compaction or retention stays on disk for queries that
    /// already planned to read it.
    pub file_delete_grace: Duration,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Io { context: &'static str, source: io::Error },
    #[error("{context}: {source}")]
    Arrow { context: &'static str, source: arrow::error::ArrowError },
    #[error("{context}: {source}")]
    Parquet { context: &'static str, source: ::parquet::errors::ParquetError },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("write-ahead log write failed: {0}")]
    Wal(String),
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl StoreError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { context, source }
    }

    fn arrow(context: &'static str) -> impl FnOnce(arrow::error::ArrowError) -> StoreError {
        move |source| StoreError::Arrow { context, source }
    }

    fn parquet(context: &'static str) -> impl FnOnce(::parquet::errors::ParquetError) -> StoreError {
        move |source| StoreError::Parquet { context, source }
    }
}

/// Why a write was refused before it started. Both are retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("memory limit reached; retry later")]
    MemoryLimit,
    #[error("the collector is shutting down")]
    ShuttingDown,
}

impl Refusal {
    /// Self-metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MemoryLimit => "memory_limit",
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// State shared by the store's handle and its threads.
struct Shared {
    settings: StoreSettings,
    wal_dir: PathBuf,
    state: RwLock<State>,
    /// Mirror of `state.memtable.bytes()`, readable without the lock on every request.
    memtable_bytes: AtomicUsize,
    /// Bytes of requests admitted but not yet in the memtable.
    admitted_bytes: AtomicUsize,
    /// Frozen generations not yet in Parquet. The writer freezes the next one by size or age
    /// only when this is zero, so under load flushes grow rather than queue up: each flush
    /// pays several fsyncs, whatever its size.
    pending_flushes: AtomicUsize,
    /// A `RelieveMemory` command is on its way to the writer: refusals send one at a time.
    relief_requested: AtomicBool,
    /// Shutdown has begun: compaction starts no further merge, so a backlog of them (after a
    /// restart, or behind a long merge) does not hold up the exit. The next start takes it up.
    stopping: AtomicBool,
    metrics: Arc<SelfMetrics>,
}

struct State {
    memtable: Memtable,
    catalog: Catalog,
    /// Which metrics the memtable and the files hold.
    metrics: MetricCatalog,
    /// The attributes of every resource that rows name by `ResourceId`.
    resources: ResourceCatalog,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Call with the state locked for writing, after changing the memtable or catalog.
    fn publish_sizes(&self, state: &State) {
        let bytes = state.memtable.bytes();
        self.memtable_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.memtable_bytes.set(bytes as i64);
        self.metrics.catalog_entries.get_or_create(&CatalogLabels { catalog: "resources" }).set(state.resources.len() as i64);
        self.metrics.catalog_entries.get_or_create(&CatalogLabels { catalog: "metrics" }).set(state.metrics.len() as i64);
        for table in Table::ALL {
            let (files, bytes) = state.catalog.totals(table);
            let labels = TableLabels { table: table.name() };
            self.metrics.parquet_files.get_or_create(&labels).set(files as i64);
            self.metrics.parquet_bytes.get_or_create(&labels).set(bytes as i64);
        }
    }
}

/// A consistent view of one table for a query.
#[derive(Debug, Default)]
pub struct TableSnapshot {
    /// Memtable batches (not yet in Parquet).
    pub batches: Vec<RecordBatch>,
    /// Parquet files.
    pub files: Vec<PathBuf>,
    /// The attributes of every resource, for the rows stored without theirs (see
    /// [`ResourceCatalog::resolve`]). A clone shares the store's.
    pub(crate) resources: ResourceCatalog,
}

/// Memory reserved for a request between admission and its write; released on drop.
pub struct Admission<'a> {
    store: &'a Store,
    bytes: usize,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.store.shared.admitted_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Batches and the WAL records that log them, ready to commit.
pub struct PreparedWrite {
    batches: Vec<(Table, RecordBatch)>,
    records: Vec<EncodedRecord>,
    metrics: MetricCatalog,
}

impl PreparedWrite {
    /// The batches converted from an OTLP export request, logged as the request itself
    /// (`protobuf`): a third of the size of the batches in Arrow IPC, and no encoding.
    pub fn otlp(signal: Signal, protobuf: Bytes, batches: Vec<(Table, RecordBatch)>) -> Result<Self, StoreError> {
        let record = EncodedRecord::otlp(signal, protobuf).map_err(StoreError::io("encode wal record"))?;
        Ok(Self::logged_as(batches, vec![record]))
    }

    /// Batches logged as Arrow IPC (CPU work: call it off the async runtime for large
    /// writes).
    pub fn batches(batches: Vec<(Table, RecordBatch)>) -> Result<Self, StoreError> {
        let records = batches
            .iter()
            .map(|(table, batch)| EncodedRecord::batch(*table, batch))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::io("encode wal record"))?;
        Ok(Self::logged_as(batches, records))
    }

    fn logged_as(batches: Vec<(Table, RecordBatch)>, records: Vec<EncodedRecord>) -> Self {
        let mut metrics = MetricCatalog::default();
        for (table, batch) in &batches {
            metrics.record(*table, batch);
        }
        Self { batches, records, metrics }
    }

    fn wal_bytes(&self) -> usize {
        self.records.iter().map(EncodedRecord::size).sum()
    }
}

/// The batches of a record replayed from the WAL. An OTLP request is converted as it was
/// on ingest (its invalid items are rejected again); one that no longer decodes, which only
/// a stricter decoder in a newer version could cause, is skipped and its bytes counted.
fn replayed_batches(payload: Payload, metrics: &SelfMetrics) -> Vec<(Table, RecordBatch)> {
    match payload {
        Payload::Batch(table, batch) => vec![(table, batch)],
        Payload::Otlp(signal, protobuf) => {
            let bytes = protobuf.len() as u64;
            let converted = Export::decode_protobuf(signal, protobuf)
                .and_then(|export| export.to_batches(&mut Rejections::default()));
            converted.unwrap_or_else(|error| {
                tracing::warn!(%error, signal = signal.as_str(), bytes, "skipping a wal record that no longer converts");
                metrics.wal_skipped_bytes.inc_by(bytes);
                Vec::new()
            })
        }
    }
}

/// The embedded store. Open one per data directory.
pub struct Store {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::Sender<writer::Command>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Store {
    /// Recovers interrupted commits, loads the file catalog, replays the WAL into the
    /// memtable and starts the writer, flush and compaction threads.
    pub fn open(settings: StoreSettings, metrics: Arc<SelfMetrics>) -> Result<Store, StoreError> {
        let data_dir = settings.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(StoreError::io("create data directory"))?;
        let recovered = commit::recover(&data_dir, &wal_dir).map_err(StoreError::io("recover commits"))?;
        if recovered > 0 {
            tracing::info!(recovered, "completed interrupted file commits");
        }
        let catalog = Catalog::load(&data_dir).map_err(StoreError::io("load parquet catalog"))?;
        let (wal, replay) = Wal::open(&wal_dir).map_err(StoreError::io("open wal"))?;
        metrics.wal_replayed_records.inc_by(replay.records);
        metrics.wal_damaged_segments.inc_by(replay.damaged_segments);
        metrics.wal_skipped_bytes.inc_by(replay.skipped_bytes);
        tracing::info!(
            records = replay.records,
            damaged_segments = replay.damaged_segments,
            undecodable_records = replay.undecodable_records,
            skipped_bytes = replay.skipped_bytes,
            "wal replayed"
        );

        let mut metric_catalog = MetricCatalog::default();
        let mut resources = ResourceCatalog::default();
        for table in Table::ALL {
            for file in catalog.files(table) {
                if let Err(error) = metric_catalog.record_file(table, &file.path) {
                    tracing::warn!(%error, path = %file.path.display(), "cannot list the metrics of a file; PromQL will not see them");
                }
                if let Err(error) = resources.record_file(table, &file.path) {
                    tracing::warn!(%error, path = %file.path.display(), "cannot read the resources of a file; rows of them in other files may show no resource attributes");
                }
            }
        }
        let mut memtable = Memtable::default();
        for (_segment, payload) in replay.payloads {
            for (table, batch) in replayed_batches(payload, &metrics) {
                metric_catalog.record(table, &batch);
                resources.record(table, &batch);
                memtable.insert(table, batch);
            }
        }
        let shared = Arc::new(Shared {
            settings,
            wal_dir,
            state: RwLock::new(State { memtable, catalog, metrics: metric_catalog, resources }),
            memtable_bytes: AtomicUsize::new(0),
            admitted_bytes: AtomicUsize::new(0),
            pending_flushes: AtomicUsize::new(0),
            relief_requested: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            metrics,
        });
        shared.publish_sizes(&shared.read());

        let (command_tx, command_rx) = mpsc::channel();
        let (job_tx, job_rx) = mpsc::channel();
        let (compaction_tx, compaction_rx) = mpsc::channel();
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.to_owned()).spawn(run).map_err(StoreError::io("spawn store thread"))
        };
        let compactor = {
            let shared = shared.clone();
            spawn("meshlight-compact", Box::new(move || compactor::run(&shared, &compaction_rx)))?
        };
        let flusher = {
            let shared = shared.clone();
            spawn("meshlight-flush", Box::new(move || flusher::run(&shared, &job_rx, &compaction_tx)))?
        };
        let writer = {
            let shared = shared.clone();
            spawn("meshlight-wal", Box::new(move || writer::run(&shared, wal, &command_rx, &job_tx)))?
        };
        Ok(Store {
            shared,
            commands: Mutex::new(Some(command_tx)),
            threads: Mutex::new(vec![writer, flusher, compactor]),
        })
    }

    /// Reserves memory for a request of about `bytes`, or refuses it (retryably) when the
    /// memory limit would be exceeded.
    ///
    /// A refusal asks the writer to flush, so memory frees up for the client's retry even
    /// when the memtable is under `storage.flush_bytes` (a memory limit set near it) and
    /// younger than `storage.flush_interval_secs`. It does not when the memtable holds less
    /// than a quarter of the memory in use: requests in flight hold the rest, a flush would
    /// free little and leave a small file, and those requests soon either land in the
    /// memtable (and a later refusal flushes them) or give their memory back.
    pub fn admit(&self, bytes: usize) -> Result<Admission<'_>, Refusal> {
        let shared = &self.shared;
        let admitted = shared.admitted_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let admission = Admission { store: self, bytes };
        let memtable = shared.memtable_bytes.load(Ordering::Relaxed);
        let used = admitted + memtable;
        if used > shared.settings.memory_limit_bytes {
            let flush_would_help = memtable.saturating_mul(4) >= used;
            if flush_would_help && !shared.relief_requested.swap(true, Ordering::AcqRel) {
                // Only a store that is shutting down has no writer, and its flush is coming.
                let _ = self.send(writer::Command::RelieveMemory);
            }
            return Err(Refusal::MemoryLimit);
        }
        Ok(admission)
    }

    /// Makes the batches durable (per the fsync policy) and queryable. Returns once both
    /// hold: only then may the request be acknowledged.
    pub async fn write(&self, write: PreparedWrite) -> Result<(), StoreError> {
        if write.batches.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.send(writer::Command::Write(writer::WriteRequest { write, ack }))?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Flushes everything written so far to Parquet and waits for it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.send(writer::Command::Flush(ack))?;
        done.await.map_err(|_| StoreError::ShuttingDown)?
    }

    /// Compacts every partition's files as far as the input limit allows, as if every hour were
    /// over, and waits for it (operators and benchmarks; normally compaction runs by itself).
    pub async fn compact_all(&self) -> Result<(), StoreError> {
        let (done_tx, done) = oneshot::channel();
        self.send(writer::Command::CompactAll(done_tx))?;
        done.await.map_err(|_| StoreError::ShuttingDown)
    }

    /// Flushes the memtable and stops the store's threads. Writes after this are refused.
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        let sender = self.commands.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(sender) = sender {
            let (ack, done) = oneshot::channel();
            if sender.send(writer::Command::Shutdown(ack)).is_ok() {
                let _ = done.await;
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }

    fn send(&self, command: writer::Command) -> Result<(), StoreError> {
        let commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = commands.as_ref().ok_or(StoreError::ShuttingDown)?;
        sender.send(command).map_err(|_| StoreError::ShuttingDown)
    }

    /// What a query of `table` sees right now.
    pub fn snapshot(&self, table: Table) -> TableSnapshot {
        let state = self.shared.read();
        TableSnapshot {
            batches: state.memtable.batches(table),
            files: state.catalog.files(table).iter().map(|file| file.path.clone()).collect(),
            resources: state.resources.clone(),
        }
    }

    /// The metric catalog as one batch (see `metric_catalog.rs`).
    pub fn metric_catalog(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        self.shared.read().metrics.to_batch()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.settings.data_dir
    }
}
