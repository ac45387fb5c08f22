//! Resource attributes stored once per file rather than once per row (spans and logs).
//!
//! A span repeats its resource's attributes: 16 pairs, 32 strings, for a pod of the mesh
//! data set, most of a span's strings. Each was copied at ingest, gathered and
//! dictionary-encoded at flush, and decoded and encoded again at every merge. So a table
//! with a `ResourceId` column (the content hash of the attributes, see
//! `RenderedAttributes::resource_id`) stores `ResourceAttributes` sparsely:
//! - a converted batch holds a resource's attributes in its first row of that resource;
//! - a Parquet file holds them in its first row of each resource ([`OncePerFile`]), taking
//!   them from the catalog when that row came without them;
//! - every other row holds a null map, and queries see the attributes filled in from the
//!   [`ResourceCatalog`] ([`ResourceCatalog::resolve`]).
//!
//! The catalog learns a resource from the batch that carries it (before the batch reaches
//! the memtable) and, at start, from the files. Rows written before `ResourceId` existed
//! have no id and their own attributes, and stay as they are.
//!
//! Invariant: every file holds the attributes of every resource its rows name, so it needs
//! no other file to be read, and losing a file to retention loses no other file's
//! attributes.
//!
//! The catalog keeps an entry (one per pod instance, a kilobyte or two) until retention has
//! deleted every row that names it: each entry remembers the latest event hour of the
//! batches that carried it, and [`ResourceCatalog::forget_older_than`] drops the entries
//! whose rows are all in deleted partitions. A batch carries every resource its rows name
//! (a converted request in its first row of each, a file in its first row of each), so no
//! row is more recent than its resource's entry says.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array, UInt64Array, new_null_array};
use arrow::compute::{interleave, max, take};
use arrow::datatypes::UInt64Type;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
// Faster than std's SipHash for the ids that `OncePerFile` looks up once per row written.
use hashbrown::{HashMap, HashSet};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::catalog::{event_times, hour_of};
use crate::schema::Table;

pub(crate) const ID_COLUMN: &str = "ResourceId";
pub(crate) const ATTRIBUTES_COLUMN: &str = "ResourceAttributes";

/// Whether `table` stores its resources' attributes once per file.
fn has_resource_ids(table: Table) -> bool {
    table.schema().field_with_name(ID_COLUMN).is_ok()
}

/// Every resource's attributes, by `ResourceId`.
///
/// A clone is cheap: queries, flushes and merges each take one. The map is copied only when
/// it changes (a resource added, an entry's hour moved on, entries forgotten) while such a
/// clone still holds it.
#[derive(Debug, Default, Clone)]
pub(crate) struct ResourceCatalog {
    resources: Arc<HashMap<u64, Resource>>,
}

#[derive(Debug, Clone)]
struct Resource {
    /// A map array of one row.
    attributes: ArrayRef,
    /// The latest event hour (hours since the epoch) of the batches that carried it: no row
    /// of the resource is later.
    latest_hour: i64,
}

impl ResourceCatalog {
    /// Learns the resources whose attributes rows of `batch` (rows of `table`) carry, and
    /// that each has rows as recent as the batch's latest. Cheap for resources it knows: one
    /// lookup per carrying row, which is one row per resource of a request.
    pub(crate) fn record(&mut self, table: Table, batch: &RecordBatch) {
        let Some(columns) = ResourceColumns::of(batch) else { return };
        let Some(latest_hour) = event_times(table, batch).and_then(max).map(hour_of) else { return };
        for row in (0..batch.num_rows()).filter(|&row| columns.attributes.is_valid(row)) {
            let Some(id) = columns.id(row) else { continue };
            match self.resources.get(&id) {
                Some(known) if known.latest_hour >= latest_hour => {}
                Some(_) => {
                    if let Some(known) = Arc::make_mut(&mut self.resources).get_mut(&id) {
                        known.latest_hour = latest_hour;
                    }
                }
                None => {
                    // A copy: a slice would keep the whole batch's buffers alive.
                    let attributes = match take(&columns.attributes, &UInt32Array::from(vec![row as u32]), None) {
                        Ok(attributes) => attributes,
                        Err(error) => unreachable!("taking a row of a batch: {error}"),
                    };
                    Arc::make_mut(&mut self.resources).insert(id, Resource { attributes, latest_hour });
                }
            }
        }
    }

    /// Learns the resources of a Parquet file of `table`, reading only their two columns
    /// and the event times.
    pub(crate) fn record_file(&mut self, table: Table, path: &Path) -> io::Result<()> {
        if !has_resource_ids(table) {
            return Ok(());
        }
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?).map_err(io::Error::other)?;
        let roots: Vec<usize> = [ID_COLUMN, ATTRIBUTES_COLUMN, table.time_column()]
            .iter()
            .filter_map(|name| builder.schema().index_of(name).ok())
            .collect();
        if roots.len() < 3 {
            return Ok(()); // Written before `ResourceId`: every row has its own attributes.
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        for batch in builder.with_projection(mask).build().map_err(io::Error::other)? {
            self.record(table, &batch.map_err(io::Error::other)?);
        }
        Ok(())
    }

    /// Forgets the resources whose rows are all in partitions before `hour`, which
    /// retention has deleted.
    pub(crate) fn forget_older_than(&mut self, hour: i64) {
        if self.resources.values().any(|resource| resource.latest_hour < hour) {
            Arc::make_mut(&mut self.resources).retain(|_, resource| resource.latest_hour >= hour);
        }
    }

    /// How many resources it knows.
    pub(crate) fn len(&self) -> usize {
        self.resources.len()
    }

    /// `batch` with every row's resource attributes, as queries see it.
    pub(crate) fn resolve(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        self.rebuild(batch, |id, has_attributes| match id {
            Some(id) if !has_attributes => Pick::Catalog(id),
            _ => Pick::Own,
        })
    }

    /// `batch` with its `ResourceAttributes` column rebuilt row by row as `pick` says.
    fn rebuild(
        &self,
        batch: &RecordBatch,
        mut pick: impl FnMut(Option<u64>, bool) -> Pick,
    ) -> Result<RecordBatch, ArrowError> {
        let Some(columns) = ResourceColumns::of(batch) else { return Ok(batch.clone()) };
        let null = new_null_array(columns.attributes.data_type(), 1);
        let mut sources: Vec<&dyn Array> = vec![columns.attributes.as_ref(), null.as_ref()];
        let mut source_of: HashMap<u64, usize> = HashMap::new();
        let mut changed = false;
        let mut indices = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let index = match pick(columns.id(row), columns.attributes.is_valid(row)) {
                Pick::Own => (0, row),
                Pick::Null => (1, 0),
                Pick::Catalog(id) => match self.resources.get(&id) {
                    Some(resource) => {
                        let source = *source_of.entry(id).or_insert_with(|| {
                            sources.push(resource.attributes.as_ref());
                            sources.len() - 1
                        });
                        (source, 0)
                    }
                    None => (0, row),
                },
            };
            changed |= index.0 != 0;
            indices.push(index);
        }
        if !changed {
            return Ok(batch.clone());
        }
        let mut arrays = batch.columns().to_vec();
        arrays[columns.attributes_index] = interleave(&sources, &indices)?;
        RecordBatch::try_new(batch.schema(), arrays)
    }
}

/// Where a row's rebuilt attributes come from.
enum Pick {
    /// The row's own (which may be null).
    Own,
    Null,
    /// The catalog's entry for the id (the row's own if the catalog has none).
    Catalog(u64),
}

/// Rebuilds the batches of one file so that the file holds each resource's attributes in
/// exactly one row: its first.
pub(crate) struct OncePerFile<'a> {
    catalog: &'a ResourceCatalog,
    seen: HashSet<u64>,
}

impl<'a> OncePerFile<'a> {
    pub(crate) fn new(catalog: &'a ResourceCatalog) -> Self {
        Self { catalog, seen: HashSet::new() }
    }

    /// The next batch of the file, rebuilt.
    pub(crate) fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let seen = &mut self.seen;
        self.catalog.rebuild(batch, |id, has_attributes| match id {
            None => Pick::Own,
            Some(id) if seen.insert(id) => {
                if has_attributes { Pick::Own } else { Pick::Catalog(id) }
            }
            Some(_) => {
                if has_attributes { Pick::Null } else { Pick::Own }
            }
        })
    }
}

/// A batch's `ResourceId` and `ResourceAttributes` columns.
struct ResourceColumns<'a> {
    ids: &'a UInt64Array,
    attributes: ArrayRef,
    attributes_index: usize,
}

impl<'a> ResourceColumns<'a> {
    /// `None` for a batch without the two columns.
    fn of(batch: &'a RecordBatch) -> Option<Self> {
        let ids = batch.column_by_name(ID_COLUMN)?.as_primitive_opt::<UInt64Type>()?;
        let attributes_index = batch.schema().index_of(ATTRIBUTES_COLUMN).ok()?;
        Some(Self { ids, attributes: Arc::clone(batch.column(attributes_index)), attributes_index })
    }

    fn id(&self, row: usize) -> Option<u64> {
        self.ids.is_valid(row).then(|| self.ids.value(row))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{MapArray, StringArray};
    use bytes::Bytes;

    use super::*;
    use crate::ingest::wire::Resource;
    use crate::store::catalog::NANOS_PER_HOUR;
    use crate::schema::Rejections;
    use crate::test_data::{attribute, convert_traces, request_with, span, string};

    type Pairs = Vec<(String, String)>;

    const START: u64 = 1_700_000_000_000_000_000;

    /// A request of three spans from each of pods `a` and `b`, from `start` on. The first span of `a` has
    /// invalid text, so the batch leaves it out; the next span of `a` must carry `a`.
    fn batch_of_two_pods(start: u64) -> RecordBatch {
        let mut request = request_with((0..3).map(|n| span(n, start + n)).collect());
        let mut other = request.resource_spans[0].clone();
        request.resource_spans[0].scope_spans[0].spans[0].name = Bytes::from_static(&[0xff]);
        for (resource_spans, pod) in [(&mut request.resource_spans[0], "a"), (&mut other, "b")] {
            let attributes = vec![attribute("service.name", string("svc")), attribute("k8s.pod.name", string(pod))];
            resource_spans.resource = Some(Resource { attributes, dropped_attributes_count: 0 });
        }
        request.resource_spans.push(other);
        let mut rejections = Rejections::default();
        convert_traces(&request, &mut rejections).expect("valid spans")
    }

    /// Each row's (id, attributes), the attributes `None` for a null map.
    fn rows(batch: &RecordBatch) -> Vec<(u64, Option<Pairs>)> {
        let ids = batch.column_by_name(ID_COLUMN).expect("ids").as_primitive::<UInt64Type>();
        let maps: &MapArray = batch.column_by_name(ATTRIBUTES_COLUMN).expect("attributes").as_map();
        (0..maps.len())
            .map(|row| {
                let pairs = maps.is_valid(row).then(|| {
                    let entries = maps.value(row);
                    let keys: &StringArray = entries.column(0).as_string();
                    let values: &StringArray = entries.column(1).as_string();
                    (0..entries.len()).map(|i| (keys.value(i).to_owned(), values.value(i).to_owned())).collect()
                });
                (ids.value(row), pairs)
            })
            .collect()
    }

    fn carriers(batch: &RecordBatch) -> usize {
        rows(batch).iter().filter(|(_, pairs)| pairs.is_some()).count()
    }

    #[test]
    fn a_file_holds_each_resource_once_and_queries_see_it_on_every_row() {
        let batches = [batch_of_two_pods(START), batch_of_two_pods(START)];
        assert_eq!(batches[0].num_rows(), 5, "the span with invalid text is left out");
        assert_eq!(carriers(&batches[0]), 2, "one row of each pod carries its attributes");
        let pods: HashMap<u64, Pairs> = rows(&batches[0]).into_iter().filter_map(|(id, pairs)| Some((id, pairs?))).collect();
        assert_eq!(pods.len(), 2);

        let mut catalog = ResourceCatalog::default();
        for batch in &batches {
            catalog.record(Table::Traces, batch);
        }
        // Written as one file, the second batch's carriers are dropped ...
        let mut once = OncePerFile::new(&catalog);
        let written: Vec<_> = batches.iter().map(|batch| once.apply(batch).expect("rebuilt")).collect();
        assert_eq!(rows(&written[0]), rows(&batches[0]));
        assert_eq!(carriers(&written[1]), 0);
        // ... and a file of that batch alone gets them back from the catalog.
        assert_eq!(carriers(&OncePerFile::new(&catalog).apply(&written[1]).expect("rebuilt")), 2);

        // The first file's carriers are enough to resolve every row of both batches.
        let mut from_file = ResourceCatalog::default();
        from_file.record(Table::Traces, &written[0]);
        for batch in &written {
            for (id, pairs) in rows(&from_file.resolve(batch).expect("resolved")) {
                assert_eq!(pairs.as_ref(), Some(&pods[&id]));
            }
        }
    }

    #[test]
    fn a_resource_is_forgotten_once_retention_has_deleted_all_its_rows() {
        let early = batch_of_two_pods(START);
        // Pod `a` again two hours later: its two rows, the first carrying its attributes.
        let later = batch_of_two_pods(START + 2 * NANOS_PER_HOUR as u64).slice(0, 2);
        let mut catalog = ResourceCatalog::default();
        catalog.record(Table::Traces, &early);
        catalog.record(Table::Traces, &later);
        let held_by_a_query = catalog.clone();

        let start_hour = hour_of(START as i64);
        catalog.forget_older_than(start_hour);
        assert_eq!(catalog.len(), 2, "both pods have rows in the first hour kept");
        catalog.forget_older_than(start_hour + 1);
        assert_eq!(catalog.len(), 1, "pod `b` has no row after its first hour");
        let resolved = rows(&catalog.resolve(&early).expect("resolved"));
        let non_carrier = |pod: usize| resolved[pod * 2 + 1].1.is_some();
        assert!(non_carrier(0), "pod `a` is still known: {resolved:?}");
        assert!(!non_carrier(1), "pod `b` is forgotten: {resolved:?}");
        assert_eq!(held_by_a_query.len(), 2, "a clone keeps what it held");
    }
}
