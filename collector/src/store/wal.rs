//! Write-ahead log: every accepted request is here before it is acknowledged.
//!
//! Layout: `<data>/wal/<seq>.wal` segments, numbered upwards. A segment is a sequence of
//! records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC32C of payload | payload = u8 kind ++ body
//! ```
//!
//! The kind says what the body is (docs/adr/003):
//! - an OTLP signal ([`otlp_kind`], 129 to 131): the export request as protobuf, exactly
//!   as it was accepted. Replay converts it again, with the code of the collector that
//!   replays it, so a record outlives a change of the tables' schema;
//! - a table id ([`Table::id`], below 128): one batch of that table as an Arrow IPC stream.
//!   Profiles are written so, and so was every record before OTLP records.
//!
//! Records are appended by one writer (group commit: many requests' records, one write and
//! at most one fsync). Replay reads segments in order; a record whose length runs past the
//! end of the file (a torn write) or whose checksum does not match ends that segment: the
//! rest of it is counted as skipped and never trusted, and the next segment is read. An
//! intact record that does not decode (a kind, or a batch under a schema, that the build
//! replaying it does not know) is skipped alone: the records after it still replay. New
//! writes always go to a fresh segment, never after a damaged tail. Segments are deleted
//! once a flush has made their contents durable in Parquet.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::schema::{Signal, Table};

const HEADER_LEN: usize = 8;

/// The kind byte of a record holding an OTLP request of `signal`.
fn otlp_kind(signal: Signal) -> u8 {
    0x80 | match signal {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

fn otlp_signal(kind: u8) -> Option<Signal> {
    [Signal::Traces, Signal::Metrics, Signal::Logs]
        .into_iter()
        .find(|signal| otlp_kind(*signal) == kind)
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// An export request as protobuf, to be converted like a new request.
    Otlp(Signal, Bytes),
    /// One batch of a table.
    Batch(Table, RecordBatch),
}

/// One record, ready to append: its header and kind, and its body.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    head: [u8; HEADER_LEN + 1],
    body: Bytes,
}

impl EncodedRecord {
    /// An OTLP export request of `signal`, as the protobuf it was decoded from. The body is
    /// shared, not copied.
    pub fn otlp(signal: Signal, protobuf: Bytes) -> io::Result<Self> {
        Self::new(otlp_kind(signal), protobuf)
    }

    /// `batch` of `table` as Arrow IPC. Done by the request handler, so that the single WAL
    /// writer only copies bytes.
    pub fn batch(table: Table, batch: &RecordBatch) -> io::Result<Self> {
        let mut ipc = Vec::with_capacity(batch.get_array_memory_size());
        let mut writer = StreamWriter::try_new(&mut ipc, &batch.schema()).map_err(io::Error::other)?;
        writer.write(batch).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
        drop(writer);
        Self::new(table.id(), Bytes::from(ipc))
    }

    fn new(kind: u8, body: Bytes) -> io::Result<Self> {
        let len = u32::try_from(body.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "wal record over 4 GiB"))?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), &body);
        let mut head = [0; HEADER_LEN + 1];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        head[HEADER_LEN] = kind;
        Ok(Self { head, body })
    }

    /// Size on disk.
    pub fn size(&self) -> usize {
        self.head.len() + self.body.len()
    }
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// What the records hold, in log order, with the segment each came from.
    pub payloads: Vec<(u64, Payload)>,
    /// Records read and decoded.
    pub records: u64,
    /// Segments whose tail was torn or corrupt (the rest of each was skipped).
    pub damaged_segments: u64,
    /// Intact records that did not decode (each skipped alone).
    pub undecodable_records: u64,
    /// Bytes skipped: damaged tails and undecodable records.
    pub skipped_bytes: u64,
    /// The highest segment number present, 0 if none.
    pub last_segment: u64,
}

/// The appending end of the log.
pub struct Wal {
    dir: PathBuf,
    segment: u64,
    file: File,
}

impl Wal {
    /// Replays every segment in `dir` and opens a fresh segment after them for writing.
    pub fn open(dir: &Path) -> io::Result<(Wal, Replay)> {
        fs::create_dir_all(dir)?;
        let replay = replay(dir)?;
        let segment = replay.last_segment + 1;
        let file = create_segment(dir, segment)?;
        Ok((Wal { dir: dir.to_owned(), segment, file }, replay))
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Appends records. They are not yet durable: see [`Wal::sync`].
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a EncodedRecord>) -> io::Result<u64> {
        let mut written = 0;
        for record in records {
            self.file.write_all(&record.head)?;
            self.file.write_all(&record.body)?;
            written += record.size() as u64;
        }
        Ok(written)
    }

    /// Makes everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Seals the current segment (synced) and starts the next one; returns the sealed one.
    pub fn rotate(&mut self) -> io::Result<u64> {
        self.file.sync_data()?;
        let sealed = self.segment;
        self.file = create_segment(&self.dir, sealed + 1)?;
        self.segment = sealed + 1;
        Ok(sealed)
    }
}

/// Deletes every segment numbered `through` or lower: their data is in Parquet now.
pub fn remove_segments_through(dir: &Path, through: u64) -> io::Result<()> {
    for (segment, path) in list_segments(dir)? {
        if segment <= through {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

fn create_segment(dir: &Path, segment: u64) -> io::Result<File> {
    let path = segment_path(dir, segment);
    let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
    // The directory entry must be durable too, or a crash could lose the whole segment.
    if let Err(error) = File::open(dir).and_then(|dir| dir.sync_all()) {
        // Removed, or every later attempt to create the segment would find it there.
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    Ok(file)
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".wal"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(number) = number {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn replay(dir: &Path) -> io::Result<Replay> {
    let mut replay = Replay::default();
    for (segment, path) in list_segments(dir)? {
        replay.last_segment = segment;
        let bytes = Bytes::from(fs::read(&path)?);
        let mut offset = 0usize;
        while offset < bytes.len() {
            let Some((payload, consumed)) = frame(&bytes.slice(offset..)) else {
                tracing::warn!(
                    segment,
                    offset,
                    skipped_bytes = bytes.len() - offset,
                    "wal segment has a torn or corrupt tail; skipping the rest of it"
                );
                replay.damaged_segments += 1;
                replay.skipped_bytes += (bytes.len() - offset) as u64;
                break;
            };
            match decode_payload(payload) {
                Some(payloads) => {
                    replay.records += 1;
                    replay.payloads.extend(payloads.into_iter().map(|payload| (segment, payload)));
                }
                None => {
                    tracing::warn!(segment, offset, skipped_bytes = consumed, "wal record is intact but does not decode; skipping it");
                    replay.undecodable_records += 1;
                    replay.skipped_bytes += consumed as u64;
                }
            }
            offset += consumed;
        }
    }
    Ok(replay)
}

/// The payload (kind and body) of the record at the start of `bytes`, and the record's
/// size; `None` if it is torn or its checksum does not match.
fn frame(bytes: &Bytes) -> Option<(Bytes, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let end = HEADER_LEN.checked_add(len)?;
    let payload = bytes.get(HEADER_LEN..end)?;
    (crc32c::crc32c(payload) == crc).then(|| (bytes.slice(HEADER_LEN..end), end))
}

/// What an intact record holds; `None` for a kind, or a batch under a schema, that this
/// build does not know. An Arrow record's stream may hold several batches.
fn decode_payload(payload: Bytes) -> Option<Vec<Payload>> {
    let (&kind, body) = payload.split_first()?;
    if let Some(signal) = otlp_signal(kind) {
        return Some(vec![Payload::Otlp(signal, payload.slice(1..))]);
    }
    let table = Table::from_id(kind)?;
    let reader = StreamReader::try_new(body, None).ok()?;
    let batches: Result<Vec<_>, _> = reader.collect();
    let batches = batches.ok()?;
    // A batch written under another schema version would not fit the table: skip it rather
    // than let it poison queries.
    if batches.iter().any(|batch| batch.schema() != table.schema()) {
        return None;
    }
    Some(batches.into_iter().map(|batch| Payload::Batch(table, batch)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::sample_traces_batch;

    fn sample_batch() -> RecordBatch {
        sample_traces_batch(3)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshlight-wal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_of_both_kinds_replay_in_order_across_segments() {
        let dir = temp_dir("order");
        let (batch, protobuf) = (sample_batch(), Bytes::from_static(b"\x0a\x02\x12\x00"));
        let arrow = EncodedRecord::batch(Table::Traces, &batch).expect("encodes");
        let otlp = EncodedRecord::otlp(Signal::Logs, protobuf.clone()).expect("encodes");
        {
            let (mut wal, replay) = Wal::open(&dir).expect("opens");
            assert_eq!(replay.records, 0);
            wal.append([&arrow, &otlp]).expect("appends");
            wal.rotate().expect("rotates");
            wal.append([&otlp]).expect("appends");
            wal.sync().expect("syncs");
        }
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        assert_eq!(replay.records, 3);
        assert_eq!(replay.damaged_segments, 0);
        let request = Payload::Otlp(Signal::Logs, protobuf);
        assert_eq!(replay.payloads, vec![(1, Payload::Batch(Table::Traces, batch)), (1, request.clone()), (2, request)]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_intact_record_that_does_not_decode_is_skipped_alone() {
        let dir = temp_dir("undecodable");
        let batch = sample_batch();
        let good = EncodedRecord::batch(Table::Traces, &batch).expect("encodes");
        let unknown_kind = EncodedRecord::new(0x7f, Bytes::from_static(b"from a later build")).expect("encodes");
        let other_schema = EncodedRecord::batch(Table::Logs, &batch).expect("encodes");
        {
            let (mut wal, _) = Wal::open(&dir).expect("opens");
            wal.append([&good, &unknown_kind, &other_schema, &good]).expect("appends");
            wal.sync().expect("syncs");
        }
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        let traces = Payload::Batch(Table::Traces, batch);
        assert_eq!(replay.payloads, vec![(1, traces.clone()), (1, traces)]);
        assert_eq!((replay.records, replay.undecodable_records, replay.damaged_segments), (2, 2, 0));
        assert_eq!(replay.skipped_bytes, (unknown_kind.size() + other_schema.size()) as u64);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn torn_and_corrupt_tails_are_skipped_and_counted() {
        let batch = sample_batch();
        let record = EncodedRecord::batch(Table::Traces, &batch).expect("encodes");
        // Truncations at several points of the last record, a flipped bit in its payload and
        // in its header, and trailing garbage: each must replay exactly the intact records.
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let full_len = record.size();
        let damage: Vec<Damage> = vec![
            Box::new(move |bytes: &mut Vec<u8>| bytes.truncate(full_len + 3)),
            Box::new(move |bytes: &mut Vec<u8>| bytes.truncate(full_len + HEADER_LEN + 10)),
            Box::new(|bytes: &mut Vec<u8>| bytes.truncate(bytes.len() - 1)),
            Box::new(move |bytes: &mut Vec<u8>| bytes[full_len + HEADER_LEN + 40] ^= 0x10),
            Box::new(move |bytes: &mut Vec<u8>| bytes[full_len + 2] ^= 0xff),
            Box::new(|bytes: &mut Vec<u8>| bytes.extend_from_slice(&[0xde, 0xad, 0xbe])),
        ];
        for (case, damage) in damage.iter().enumerate() {
            let dir = temp_dir(&format!("damage{case}"));
            {
                let (mut wal, _) = Wal::open(&dir).expect("opens");
                wal.append([&record, &record]).expect("appends");
            }
            let path = segment_path(&dir, 1);
            let mut bytes = fs::read(&path).expect("reads");
            damage(&mut bytes);
            fs::write(&path, &bytes).expect("writes");

            let (_wal, replay) = Wal::open(&dir).expect("reopens");
            let expected_records = if case == 5 { 2 } else { 1 };
            assert_eq!(replay.records, expected_records, "case {case}");
            assert_eq!(replay.damaged_segments, 1, "case {case}");
            assert!(replay.skipped_bytes > 0, "case {case}");
            fs::remove_dir_all(&dir).expect("cleanup");
        }
    }
}
