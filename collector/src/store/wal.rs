//! Write-ahead log: every accepted batch is here before its request is acknowledged.
//!
//! Layout: `<data>/wal/<seq>.wal` segments, numbered upwards. A segment is a sequence of
//! records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC32C of payload | payload = u8 table id ++ Arrow IPC stream
//! ```
//!
//! Records are appended by one writer (group commit: many requests' records, one write and
//! at most one fsync). Replay reads segments in order; a record whose length runs past the
//! end of the file (a torn write) or whose checksum does not match ends that segment: the
//! rest of it is counted as skipped and never trusted, and the next segment is read. New
//! writes always go to a fresh segment, never after a damaged tail. Segments are deleted
//! once a flush has made their contents durable in Parquet.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::schema::Table;

const HEADER_LEN: usize = 8;

/// One batch encoded as a WAL record payload, ready to append.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
}

impl EncodedRecord {
    /// Encodes `batch` of `table`. Done by the request handler, so that the single WAL
    /// writer only copies bytes.
    pub fn encode(table: Table, batch: &RecordBatch) -> Result<Self, arrow::error::ArrowError> {
        // Header first as a placeholder, then the payload straight after it: one buffer,
        // no copy of the payload.
        let mut bytes = Vec::with_capacity(HEADER_LEN + 1 + batch.get_array_memory_size());
        bytes.extend_from_slice(&[0; HEADER_LEN]);
        bytes.push(table.id());
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);

        let payload = &bytes[HEADER_LEN..];
        let len = u32::try_from(payload.len()).map_err(|_| {
            arrow::error::ArrowError::InvalidArgumentError("batch over 4 GiB".to_owned())
        })?;
        let crc = crc32c::crc32c(payload);
        bytes[..4].copy_from_slice(&len.to_le_bytes());
        bytes[4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        Ok(Self { bytes })
    }

    /// Size on disk.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the record is empty (never, once encoded).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What replay found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Decoded batches in log order, with the segment each came from.
    pub batches: Vec<(u64, Table, RecordBatch)>,
    /// Records read and decoded.
    pub records: u64,
    /// Segments whose tail was torn or corrupt (the rest of each was skipped).
    pub damaged_segments: u64,
    /// Bytes skipped in damaged tails.
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
            self.file.write_all(&record.bytes)?;
            written += record.bytes.len() as u64;
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
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, segment))?;
    // The directory entry must be durable too, or a crash could lose the whole segment.
    File::open(dir)?.sync_all()?;
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
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut offset = 0usize;
        while offset < bytes.len() {
            match decode_record(&bytes[offset..]) {
                Some((table, batches, consumed)) => {
                    replay.records += 1;
                    replay.batches.extend(batches.into_iter().map(|b| (segment, table, b)));
                    offset += consumed;
                }
                None => {
                    tracing::warn!(
                        segment,
                        offset,
                        skipped_bytes = bytes.len() - offset,
                        "wal segment has a torn or corrupt tail; skipping the rest of it"
                    );
                    replay.damaged_segments += 1;
                    replay.skipped_bytes += (bytes.len() - offset) as u64;
                    break;
                }
            }
        }
    }
    Ok(replay)
}

/// Decodes the record at the start of `bytes`: `None` if it is torn, corrupt or undecodable.
fn decode_record(bytes: &[u8]) -> Option<(Table, Vec<RecordBatch>, usize)> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(HEADER_LEN..HEADER_LEN.checked_add(len)?)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let (&table_id, ipc) = payload.split_first()?;
    let table = Table::from_id(table_id)?;
    let reader = StreamReader::try_new(ipc, None).ok()?;
    let batches: Result<Vec<_>, _> = reader.collect();
    let batches = batches.ok()?;
    // A batch written under another schema version would not fit the table: skip it as
    // corrupt rather than let it poison queries.
    if batches.iter().any(|batch| batch.schema() != table.schema()) {
        return None;
    }
    Some((table, batches, HEADER_LEN + len))
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
    fn records_replay_in_order_across_segments() {
        let dir = temp_dir("order");
        let batch = sample_batch();
        let record = EncodedRecord::encode(Table::Traces, &batch).expect("encodes");
        {
            let (mut wal, replay) = Wal::open(&dir).expect("opens");
            assert_eq!(replay.records, 0);
            wal.append([&record, &record]).expect("appends");
            wal.rotate().expect("rotates");
            wal.append([&record]).expect("appends");
            wal.sync().expect("syncs");
        }
        let (_wal, replay) = Wal::open(&dir).expect("reopens");
        assert_eq!(replay.records, 3);
        assert_eq!(replay.damaged_segments, 0);
        let segments: Vec<u64> = replay.batches.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(segments, vec![1, 1, 2]);
        assert!(replay.batches.iter().all(|(_, t, b)| *t == Table::Traces && *b == batch));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn torn_and_corrupt_tails_are_skipped_and_counted() {
        let batch = sample_batch();
        let record = EncodedRecord::encode(Table::Traces, &batch).expect("encodes");
        // Truncations at several points of the last record, a flipped bit in its payload and
        // in its header, and trailing garbage: each must replay exactly the intact records.
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let full_len = record.len();
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
