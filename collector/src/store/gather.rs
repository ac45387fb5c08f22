//! Gathering rows of several batches, as flushes and merges do to put rows in sort order.
//!
//! Arrow's `interleave` copies a map column one entry at a time: a span with ten
//! attributes costs twenty string copies, each with its own bounds checks and offset. In
//! flushes of the spec shape that was 17 % of the collector's CPU samples. Here a
//! `Map<Utf8, Utf8>` column (every attribute map) copies each row's keys, and its values,
//! as one slice of bytes and one of offsets, which took it to 9 %. A list column none of
//! whose batches holds an item (the events and links of spans that have none, seven list
//! columns of every span) gets empty lists without a look at each row's. Other columns
//! keep `interleave`.
//!
//! Rows that arrive in sort order (one service and operation, as in the spec shape) come
//! in runs of one batch's consecutive rows. Runs of [`MIN_SLICED_RUN`] rows on average are
//! not copied at all: they are returned as slices of their batch, which the Parquet writer
//! reads as it reads any batch. Shorter runs of [`MIN_AVERAGE_RUN`] rows or more are copied
//! run by run, column by column, into one batch: each batch costs the writer a call per
//! column. Copying the spec shape's runs so took 10 % of the CPU samples of its flushes,
//! and gathering them row by row 16 %. Mesh spans, sorted by service and operation, rarely
//! come in runs.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray, MapArray, StringArray, StructArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{concat_batches, interleave};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// The rows `rows` ((index in `sources`, row)) of `sources`, in that order, as batches of
/// their schema, which all of them share: slices of the sources if the rows come in runs
/// of [`MIN_SLICED_RUN`] rows on average, else one batch they are copied into.
pub(super) fn gather(sources: &[&RecordBatch], rows: &[(usize, usize)]) -> Result<Vec<RecordBatch>, ArrowError> {
    let Some(first) = sources.first() else {
        return Err(ArrowError::InvalidArgumentError("no batches to gather rows from".into()));
    };
    if let Some(runs) = long_runs(rows) {
        let slices = runs.iter().map(|run| sources[run.source].slice(run.start, run.len)).collect();
        if rows.len() >= runs.len() * MIN_SLICED_RUN {
            return Ok(slices);
        }
        return Ok(vec![concat_batches(&first.schema(), &slices)?]);
    }
    let columns = (0..first.num_columns())
        .map(|column| {
            let arrays: Vec<&dyn Array> = sources.iter().map(|batch| batch.column(column).as_ref()).collect();
            if let Some(maps) = string_maps(&arrays) {
                gather_string_maps(&maps, rows)
            } else if let Some(lists) = empty_lists(&arrays) {
                gather_empty_lists(&lists, rows)
            } else {
                interleave(&arrays, rows)
            }
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(vec![RecordBatch::try_new_with_options(first.schema(), columns, &options)?])
}

/// Consecutive rows of one source batch.
struct Run {
    source: usize,
    start: usize,
    len: usize,
}

/// Shortest average run that is copied run by run: copying a run costs a call per column,
/// and shorter runs are copied row by row more cheaply. Not tuned.
const MIN_AVERAGE_RUN: usize = 16;

/// Shortest average run that is returned as slices rather than copied. Not tuned either:
/// the spec shape's runs are whole requests of 500 rows, and OTLP exporters send requests
/// of 512 spans and more by default.
const MIN_SLICED_RUN: usize = 256;

/// `rows` as runs, if they average [`MIN_AVERAGE_RUN`] rows or more.
fn long_runs(rows: &[(usize, usize)]) -> Option<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for &(source, row) in rows {
        match runs.last_mut() {
            Some(run) if run.source == source && run.start + run.len == row => run.len += 1,
            _ => {
                if (runs.len() + 1) * MIN_AVERAGE_RUN > rows.len() {
                    return None;
                }
                runs.push(Run { source, start: row, len: 1 });
            }
        }
    }
    (!runs.is_empty()).then_some(runs)
}

/// `arrays` as maps, if they are `Map<Utf8, Utf8>` without null keys or values (as every
/// attribute map is).
fn string_maps<'a>(arrays: &[&'a dyn Array]) -> Option<Vec<&'a MapArray>> {
    arrays
        .iter()
        .map(|array| {
            let map = array.as_map_opt()?;
            let is_string = |child: &ArrayRef| child.data_type() == &DataType::Utf8 && child.null_count() == 0;
            (is_string(map.keys()) && is_string(map.values())).then_some(map)
        })
        .collect()
}

fn gather_string_maps(maps: &[&MapArray], rows: &[(usize, usize)]) -> Result<ArrayRef, ArrowError> {
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    let mut entries_so_far = 0;
    for &(source, row) in rows {
        let (start, end) = entries(maps[source], row);
        entries_so_far += end - start;
        offsets.push(offset(entries_so_far)?);
    }
    let nulls = gather_nulls(maps, rows);
    let DataType::Map(entries_field, sorted) = maps[0].data_type() else {
        unreachable!("string_maps returns maps only");
    };
    let DataType::Struct(entry_fields) = entries_field.data_type() else {
        return Err(ArrowError::InvalidArgumentError("map entries are not a struct".into()));
    };
    let keys = gather_entry_strings(maps, rows, MapArray::keys)?;
    let values = gather_entry_strings(maps, rows, MapArray::values)?;
    let entries = StructArray::try_new(entry_fields.clone(), vec![keys, values], None)?;
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(Arc::new(MapArray::try_new(entries_field.clone(), offsets, entries, nulls, *sorted)?))
}

/// `arrays` as lists, if none of them holds an item.
fn empty_lists<'a>(arrays: &[&'a dyn Array]) -> Option<Vec<&'a ListArray>> {
    arrays.iter().map(|array| array.as_list_opt::<i32>().filter(|list| list.values().is_empty())).collect()
}

fn gather_empty_lists(lists: &[&ListArray], rows: &[(usize, usize)]) -> Result<ArrayRef, ArrowError> {
    let DataType::List(field) = lists[0].data_type() else {
        unreachable!("empty_lists returns lists only");
    };
    let offsets = OffsetBuffer::new_zeroed(rows.len());
    Ok(Arc::new(ListArray::try_new(field.clone(), offsets, Arc::clone(lists[0].values()), gather_nulls(lists, rows))?))
}

/// Which of `rows` of `arrays` are valid; `None` if all are.
fn gather_nulls<A: Array>(arrays: &[&A], rows: &[(usize, usize)]) -> Option<NullBuffer> {
    arrays
        .iter()
        .any(|array| array.null_count() > 0)
        .then(|| NullBuffer::from_iter(rows.iter().map(|&(source, row)| arrays[source].is_valid(row))))
}

/// The range of `map`'s entries that row `row` holds.
fn entries(map: &MapArray, row: usize) -> (usize, usize) {
    (map.value_offsets()[row] as usize, map.value_offsets()[row + 1] as usize)
}

/// The keys (or values, as `child` picks) of the entries of `rows`, each row's copied as one
/// slice of bytes.
fn gather_entry_strings(
    maps: &[&MapArray],
    rows: &[(usize, usize)],
    child: fn(&MapArray) -> &ArrayRef,
) -> Result<ArrayRef, ArrowError> {
    let sources: Vec<&StringArray> = maps.iter().map(|&map| child(map).as_string()).collect();
    // Each row's strings `start..end` and their bytes `from..to` in its source.
    let ranges = |&(source, row): &(usize, usize)| {
        let (start, end) = entries(maps[source], row);
        let offsets = sources[source].value_offsets();
        (sources[source], start, end, offsets[start] as usize, offsets[end] as usize)
    };
    // Sized up front: growing would copy the bytes again, into fresh pages.
    let (mut strings, mut bytes) = (0, 0);
    for (_, start, end, from, to) in rows.iter().map(ranges) {
        strings += end - start;
        bytes += to - from;
    }
    offset(bytes)?;
    let mut offsets: Vec<i32> = Vec::with_capacity(strings + 1);
    offsets.push(0);
    let mut data: Vec<u8> = Vec::with_capacity(bytes);
    for (source, start, end, from, to) in rows.iter().map(ranges) {
        // Each offset moves by the distance between where its bytes were and where they
        // go; the total, checked above, fits an `i32`, so every offset does.
        let shift = data.len() as i32 - from as i32;
        offsets.extend(source.value_offsets()[start + 1..=end].iter().map(|&offset| offset + shift));
        data.extend_from_slice(&source.value_data()[from..to]);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: the bytes are whole strings of valid string arrays, copied in order, and each
    // offset is its source offset moved by the same distance as its bytes, so every string
    // is the valid UTF-8 it was; re-validating would cost a pass over the bytes.
    #[allow(unsafe_code)]
    let strings = unsafe { StringArray::new_unchecked(offsets, Buffer::from_vec(data), None) };
    Ok(Arc::new(strings))
}

/// `len` as an `i32` offset, or the error of a column past 2 GiB.
fn offset(len: usize) -> Result<i32, ArrowError> {
    i32::try_from(len).map_err(|_| ArrowError::OffsetOverflowError(len))
}

#[cfg(test)]
mod tests {
    use arrow::array::{ListBuilder, MapBuilder, StringBuilder};
    use arrow::compute::{concat_batches, interleave_record_batch};

    use super::*;
    use crate::test_data::sample_traces_batch;

    /// The batches `gather` returns, as one.
    fn gathered(sources: &[&RecordBatch], rows: &[(usize, usize)]) -> Result<RecordBatch, ArrowError> {
        concat_batches(&sources[0].schema(), &gather(sources, rows)?)
    }

    #[test]
    fn gathers_the_rows_interleave_does() {
        let batches = [sample_traces_batch(40), sample_traces_batch(7).slice(2, 5), sample_traces_batch(25)];
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let rows = [(0, 3), (0, 4), (2, 0), (1, 4), (0, 39), (2, 24), (2, 1), (1, 0), (1, 0), (0, 0)];
        let expected = interleave_record_batch(&sources, &rows).expect("interleaved");
        assert_eq!(gathered(&sources, &rows).expect("gathered"), expected);
        let columns = batches[0].columns();
        assert!(columns.iter().any(|column| string_maps(&[column.as_ref()]).is_some()), "the batch has attribute maps");
    }

    #[test]
    fn gathers_long_runs_of_rows_as_interleave_does() {
        let batches = [sample_traces_batch(40), sample_traces_batch(7).slice(2, 5), sample_traces_batch(25)];
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let runs = [(2, 0..25), (0, 3..40), (1, 0..5), (0, 0..3)];
        let rows: Vec<(usize, usize)> = runs.into_iter().flat_map(|(source, run)| run.map(move |row| (source, row))).collect();
        assert_eq!(long_runs(&rows).map(|runs| runs.len()), Some(4));
        let lens = |gathered: Vec<RecordBatch>| -> Vec<usize> { gathered.iter().map(RecordBatch::num_rows).collect() };
        assert_eq!(lens(gather(&sources, &rows).expect("gathered")), [70], "copied into one batch");
        let expected = interleave_record_batch(&sources, &rows).expect("interleaved");
        assert_eq!(gathered(&sources, &rows).expect("gathered"), expected);

        // Runs of 256 rows or more on average come back as slices, one a run.
        let batches = [sample_traces_batch(600), sample_traces_batch(600).slice(50, 500)];
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let runs = [(1, 200..500), (0, 0..600), (1, 0..200)];
        let rows: Vec<(usize, usize)> = runs.into_iter().flat_map(|(source, run)| run.map(move |row| (source, row))).collect();
        assert_eq!(lens(gather(&sources, &rows).expect("gathered")), [300, 600, 200], "one slice a run");
        let expected = interleave_record_batch(&sources, &rows).expect("interleaved");
        assert_eq!(gathered(&sources, &rows).expect("gathered"), expected);

        // Runs of 16 rows on average, or a row fewer; a single run.
        let runs_of = |lens: &[usize]| -> Vec<(usize, usize)> {
            lens.iter().enumerate().flat_map(|(source, &len)| (0..len).map(move |row| (source, row))).collect()
        };
        assert!(long_runs(&runs_of(&[1, 1, 1, 61])).is_some());
        assert!(long_runs(&runs_of(&[1, 1, 1, 60])).is_none());
        assert!(long_runs(&runs_of(&[100])).is_some());
    }

    #[test]
    fn gathers_lists_without_items_as_interleave_does() -> Result<(), ArrowError> {
        let mut builder = ListBuilder::new(StringBuilder::new());
        builder.append(true);
        builder.append(false);
        builder.append(true);
        let lists: ArrayRef = Arc::new(builder.finish());
        let batches = [
            RecordBatch::try_from_iter([("Links.TraceId", Arc::clone(&lists))])?,
            RecordBatch::try_from_iter([("Links.TraceId", lists.slice(1, 2))])?,
        ];
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        assert!(empty_lists(&[lists.as_ref()]).is_some());
        let rows = [(0, 2), (1, 0), (0, 0), (1, 1), (0, 1)];
        let lists = gathered(&sources, &rows)?;
        assert_eq!(lists, interleave_record_batch(&sources, &rows)?);
        assert_eq!(lists.column(0).null_count(), 2);
        Ok(())
    }

    #[test]
    fn keeps_null_and_empty_maps() -> Result<(), ArrowError> {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        builder.keys().append_value("http.method");
        builder.values().append_value("GET");
        builder.append(true)?;
        builder.append(false)?;
        builder.append(true)?;
        let batch = RecordBatch::try_from_iter([("Attributes", Arc::new(builder.finish()) as ArrayRef)])?;
        let rows = [(0, 2), (0, 1), (0, 0), (0, 1), (0, 0)];
        let maps = gathered(&[&batch], &rows)?;
        assert_eq!(maps, interleave_record_batch(&[&batch], &rows)?);
        assert_eq!(maps.column(0).null_count(), 2);
        Ok(())
    }
}
