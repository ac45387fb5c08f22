//! Write-ahead log: every accepted request is here before it is acknowledged.
//!
//! Layout: `<data>/wal/<seq>.wal` segments, numbered upwards. A segment starts with a
//! header, [`SEGMENT_MAGIC`], its number (u64 LE) and its mask (u32 LE, random, then four
//! zero bytes), and holds a sequence of records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC32C of payload XOR the segment's mask | payload = u8 kind ++ body
//! ```
//!
//! up to a record header of zeros ([`END`]), which every append writes after its records
//! and the next append overwrites. Segments written before the header existed have none,
//! no mask and no end marker, and replay as before.
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
//! end of the file or whose checksum does not match (a torn write, in a new file or a
//! reused one) ends that segment: the
//! rest of it is counted as skipped and never trusted, and the next segment is read. An
//! intact record that does not decode (a kind, or a batch under a schema, that the build
//! replaying it does not know) is skipped alone: the records after it still replay. New
//! writes always go to a fresh segment, never after a damaged tail.
//!
//! Once a flush has made a segment's contents durable in Parquet, the segment is deleted
//! or, up to [`SPARE_SEGMENTS`] of them, renamed `spare-<seq>.wal` and later written again
//! as a new segment. Overwriting a file's cached pages spares the kernel what a new file
//! costs: allocating pages and blocks (a third of the WAL thread's CPU samples with spec
//! spans) and evicting the old file's pages at its deletion (3.5 % of the flush thread's).
//! A reused file still holds its earlier life's records past the end marker. They never
//! replay: replay stops at the marker, and where a torn write leaves one of them at a
//! record boundary, it fails its checksum, since each life draws its own mask. A segment
//! whose header names another number is a spare whose new header never reached the disk:
//! it holds nothing (a sync writes the header too). Segment numbers never repeat, spares'
//! included.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::schema::{Signal, Table};

const HEADER_LEN: usize = 8;

/// How a segment's header starts; its number and mask follow.
const SEGMENT_MAGIC: [u8; 8] = *b"MLWALv2\0";
const SEGMENT_HEADER_LEN: usize = 24;

/// A record header of zeros: the end of a segment's records.
const END: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// Most flushed segments kept to be written again (see the module docs).
const SPARE_SEGMENTS: usize = 2;

/// Largest segment kept as a spare. A segment is about a flush's worth of requests
/// (`storage.flush_bytes`, 10 MiB by default); one that grew while flushes failed is
/// deleted rather than kept at that size, and read whole at every replay of its next life.
const SPARE_MAX_BYTES: u64 = 64 << 20;

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

    /// The header and kind as a segment of mask `mask` stores them.
    fn masked_head(&self, mask: u32) -> [u8; HEADER_LEN + 1] {
        let mut head = self.head;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) ^ mask;
        head[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        head
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
    mask: u32,
    /// Where the next record goes: at the segment's end marker.
    end: u64,
}

impl Wal {
    /// Replays every segment in `dir` and opens a fresh segment after them for writing.
    pub fn open(dir: &Path) -> io::Result<(Wal, Replay)> {
        fs::create_dir_all(dir)?;
        let replay = replay(dir)?;
        let spares = spares(dir)?.into_iter().map(|(segment, _)| segment);
        let segment = spares.chain([replay.last_segment]).max().unwrap_or_default() + 1;
        let (file, mask) = create_segment(dir, segment)?;
        Ok((Wal { dir: dir.to_owned(), segment, file, mask, end: SEGMENT_HEADER_LEN as u64 }, replay))
    }

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Appends records, and the end marker after them. They are not yet durable: see
    /// [`Wal::sync`].
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a EncodedRecord>) -> io::Result<u64> {
        let mut written = 0;
        for record in records {
            let head = record.masked_head(self.mask);
            self.file.write_all_at(&head, self.end)?;
            self.file.write_all_at(&record.body, self.end + head.len() as u64)?;
            self.end += record.size() as u64;
            written += record.size() as u64;
        }
        self.file.write_all_at(&END, self.end)?;
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
        (self.file, self.mask) = create_segment(&self.dir, sealed + 1)?;
        self.segment = sealed + 1;
        self.end = SEGMENT_HEADER_LEN as u64;
        Ok(sealed)
    }
}

/// Retires every segment numbered `through` or lower: their data is in Parquet now. Up to
/// [`SPARE_SEGMENTS`] of them are kept as spares to be written again: those with a header
/// (an older segment's records carry no mask that would tell them from a new life's) and
/// at most [`SPARE_MAX_BYTES`]. The rest are deleted.
pub fn remove_segments_through(dir: &Path, through: u64) -> io::Result<()> {
    let mut spares = spares(dir)?.len();
    for (segment, path) in list_segments(dir)? {
        if segment > through {
            continue;
        }
        if spares < SPARE_SEGMENTS && can_be_spare(&path)? {
            fs::rename(&path, dir.join(format!("{SPARE_PREFIX}{segment:020}.wal")))?;
            spares += 1;
        } else {
            fs::remove_file(path)?;
        }
    }
    // Durable before the flush's commit record goes, or a crash could bring a segment back
    // to replay rows that are in Parquet already.
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

/// Creates segment `segment`, from a spare if there is one, and returns it with its mask:
/// its header, then the end marker. The header need not be durable before a record is: a
/// sync writes both.
fn create_segment(dir: &Path, segment: u64) -> io::Result<(File, u32)> {
    let path = segment_path(dir, segment);
    let file = match spares(dir)?.into_iter().next() {
        // A rename would replace a segment already there; `create_new` refuses to.
        Some(_) if path.exists() => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "wal segment exists")),
        Some((_, spare)) => {
            // Opened before the rename, so that a failure leaves the spare as it was.
            let file = OpenOptions::new().write(true).open(&spare)?;
            fs::rename(&spare, &path)?;
            file
        }
        None => OpenOptions::new().create_new(true).write(true).open(&path)?,
    };
    let mask = rand::random::<u32>();
    let mut start = [0; SEGMENT_HEADER_LEN + END.len()];
    start[..8].copy_from_slice(&SEGMENT_MAGIC);
    start[8..16].copy_from_slice(&segment.to_le_bytes());
    start[16..20].copy_from_slice(&mask.to_le_bytes());
    // The directory entry must be durable too, or a crash could lose the whole segment.
    let written = file.write_all_at(&start, 0).and_then(|()| File::open(dir)?.sync_all());
    if let Err(error) = written {
        // Removed, or every later attempt to create the segment would find it there.
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    Ok((file, mask))
}

const SPARE_PREFIX: &str = "spare-";

/// The spare segments in `dir`, with the numbers they had.
fn spares(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered_files(dir, SPARE_PREFIX)
}

/// Whether a retired segment may be written again: it has a header and is not oversized.
fn can_be_spare(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    let mut magic = [0; SEGMENT_MAGIC.len()];
    let read = file.read_at(&mut magic, 0)?;
    Ok(read == magic.len() && magic == SEGMENT_MAGIC && file.metadata()?.len() <= SPARE_MAX_BYTES)
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered_files(dir, "")
}

/// The files `<prefix><number>.wal` in `dir`, with their numbers, in order.
fn numbered_files(dir: &Path, prefix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix(prefix)?.strip_suffix(".wal")?.parse::<u64>().ok());
        if let Some(number) = number {
            files.push((number, path));
        }
    }
    files.sort();
    Ok(files)
}

fn replay(dir: &Path) -> io::Result<Replay> {
    let mut replay = Replay::default();
    for (segment, path) in list_segments(dir)? {
        replay.last_segment = segment;
        let bytes = Bytes::from(fs::read(&path)?);
        let Some(records) = Records::of(&bytes, segment) else {
            continue;
        };
        let mut offset = records.start;
        while offset < bytes.len() {
            let rest = bytes.slice(offset..);
            if records.ends_at_marker && rest.starts_with(&END) {
                break;
            }
            let Some((payload, consumed)) = frame(&rest, records.mask) else {
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

/// Where a segment's records are and how to read them.
struct Records {
    start: usize,
    mask: u32,
    ends_at_marker: bool,
}

impl Records {
    /// The records of the file `bytes` of segment `segment`; `None` if it holds none of
    /// its own: a spare renamed to `segment` whose new header never reached the disk (it
    /// names another segment, or is cut short or zeros).
    fn of(bytes: &[u8], segment: u64) -> Option<Self> {
        let start = &bytes[..bytes.len().min(SEGMENT_MAGIC.len())];
        if start.iter().all(|&byte| byte == 0) && !start.is_empty() {
            return None;
        }
        if start.is_empty() || start != &SEGMENT_MAGIC[..start.len()] {
            // Written before segments had a header (whose records' headers are never zeros).
            return Some(Self { start: 0, mask: 0, ends_at_marker: false });
        }
        let header = bytes.get(..SEGMENT_HEADER_LEN)?;
        let number = u64::from_le_bytes(header[8..16].try_into().ok()?);
        let mask = u32::from_le_bytes(header[16..20].try_into().ok()?);
        (number == segment).then_some(Self { start: SEGMENT_HEADER_LEN, mask, ends_at_marker: true })
    }
}

/// The payload (kind and body) of the record at the start of `bytes`, whose checksum is
/// masked with `mask`, and the record's size; `None` if it is torn or its checksum does not
/// match.
fn frame(bytes: &Bytes, mask: u32) -> Option<(Bytes, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?) ^ mask;
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
        // Where the second record starts: after the segment's header and the first record.
        let second = SEGMENT_HEADER_LEN + record.size();
        let damage: Vec<Damage> = vec![
            Box::new(move |bytes: &mut Vec<u8>| bytes.truncate(second + 3)),
            Box::new(move |bytes: &mut Vec<u8>| bytes.truncate(second + HEADER_LEN + 10)),
            Box::new(|bytes: &mut Vec<u8>| bytes.truncate(bytes.len() - END.len() - 1)),
            Box::new(move |bytes: &mut Vec<u8>| bytes[second + HEADER_LEN + 40] ^= 0x10),
            Box::new(move |bytes: &mut Vec<u8>| bytes[second + 2] ^= 0xff),
            // Garbage in place of the end marker.
            Box::new(|bytes: &mut Vec<u8>| {
                bytes.truncate(bytes.len() - END.len());
                bytes.extend_from_slice(&[0xde, 0xad, 0xbe]);
            }),
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

    #[test]
    fn a_spare_is_written_again_and_its_old_records_never_replay() {
        let dir = temp_dir("spare");
        // Of one size, so that the old records sit where new ones would.
        let old = EncodedRecord::otlp(Signal::Logs, Bytes::from_static(b"\x0a\x02\x12\x00")).expect("encodes");
        let new = EncodedRecord::otlp(Signal::Traces, Bytes::from_static(b"\x0a\x02\x12\x01")).expect("encodes");
        let old_bytes = {
            let (mut wal, _) = Wal::open(&dir).expect("opens");
            wal.append([&old, &old, &old]).expect("appends");
            wal.rotate().expect("rotates");
            let old_bytes = fs::read(segment_path(&dir, 1)).expect("reads");
            // Segment 1 is flushed: it becomes a spare, and segment 3 is written in it.
            remove_segments_through(&dir, 1).expect("retires");
            assert!(!segment_path(&dir, 1).exists());
            assert_eq!(spares(&dir).expect("lists").len(), 1);
            wal.append([&new]).expect("appends");
            wal.rotate().expect("rotates");
            assert!(spares(&dir).expect("lists").is_empty(), "segment 3 took the spare");
            wal.append([&new]).expect("appends");
            wal.sync().expect("syncs");
            old_bytes
        };
        let reused = fs::read(segment_path(&dir, 3)).expect("reads");
        assert_eq!(reused.len(), old_bytes.len(), "the spare's file, overwritten in place");
        let request = Payload::Otlp(Signal::Traces, Bytes::from_static(b"\x0a\x02\x12\x01"));
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        assert_eq!(replay.payloads, vec![(2, request.clone()), (3, request)], "the end marker stops replay");
        assert_eq!((replay.damaged_segments, replay.skipped_bytes), (0, 0));

        // Without the end marker (as a torn write could leave it), the old second record
        // is intact at a record boundary, and fails its checksum only by its mask.
        let marker = SEGMENT_HEADER_LEN + new.size();
        let mut bytes = reused;
        bytes[marker..marker + END.len()].copy_from_slice(&old_bytes[marker..marker + END.len()]);
        assert_eq!(bytes[marker..], old_bytes[marker..], "the old second record, whole");
        fs::write(segment_path(&dir, 3), &bytes).expect("writes");
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        assert_eq!(replay.payloads.iter().filter(|(segment, _)| *segment == 3).count(), 1);
        assert_eq!(replay.damaged_segments, 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn segment_numbers_continue_past_the_spares() {
        let dir = temp_dir("numbers");
        {
            let (mut wal, _) = Wal::open(&dir).expect("opens");
            wal.rotate().expect("rotates");
            wal.rotate().expect("rotates");
            remove_segments_through(&dir, 2).expect("retires");
        }
        // Without segment 3, the highest number is a spare's.
        fs::remove_file(segment_path(&dir, 3)).expect("removes");
        let (wal, _) = Wal::open(&dir).expect("reopens");
        assert_eq!(wal.segment(), 3);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_spare_whose_new_header_is_not_on_disk_holds_nothing() {
        let dir = temp_dir("unwritten-spare");
        let record = EncodedRecord::otlp(Signal::Logs, Bytes::from_static(b"\x0a\x02\x12\x00")).expect("encodes");
        {
            let (mut wal, _) = Wal::open(&dir).expect("opens");
            wal.append([&record]).expect("appends");
            wal.sync().expect("syncs");
        }
        // Segment 1 renamed to segment 7, its header still naming segment 1.
        fs::rename(segment_path(&dir, 1), segment_path(&dir, 7)).expect("renames");
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        assert_eq!((replay.records, replay.damaged_segments, replay.last_segment), (0, 0, 7));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn segments_without_a_header_replay_and_are_deleted_rather_than_kept() {
        let dir = temp_dir("headerless");
        fs::create_dir_all(&dir).expect("creates");
        let record = EncodedRecord::otlp(Signal::Logs, Bytes::from_static(b"\x0a\x02\x12\x00")).expect("encodes");
        // As written before segments had a header: records unmasked, no end marker.
        for segment in 1..=3 {
            fs::write(segment_path(&dir, segment), [&record.head[..], &record.body[..]].concat()).expect("writes");
        }
        let (mut wal, replay) = Wal::open(&dir).expect("opens");
        assert_eq!((replay.records, replay.damaged_segments), (3, 0));
        wal.rotate().expect("rotates");
        wal.rotate().expect("rotates");
        wal.rotate().expect("rotates");
        // Segments 1 to 3 have no header, 4 to 6 do: two of those become spares.
        remove_segments_through(&dir, 6).expect("retires");
        assert_eq!(list_segments(&dir).expect("lists").iter().map(|(segment, _)| *segment).collect::<Vec<_>>(), [7]);
        assert_eq!(spares(&dir).expect("lists").len(), SPARE_SEGMENTS);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
