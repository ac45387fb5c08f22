//! A torn or corrupt WAL tail is skipped and counted on /metrics; everything before it
//! replays. So is an intact record whose request no longer converts.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::Collector;
use crate::support::otlp::{now_nanos, post_traces, spans};

fn newest_wal_segment(collector: &Collector) -> PathBuf {
    let wal = collector.data_dir().join("wal");
    let mut segments: Vec<PathBuf> = fs::read_dir(&wal)
        .expect("list the wal directory")
        .map(|entry| entry.expect("wal entry").path())
        .filter(|path| segment_number(path).is_some())
        .collect();
    segments.sort();
    segments.pop().expect("a non-empty wal segment")
}

/// The number of a WAL segment file (`<number>.wal`; spares are `spare-<number>.wal`).
fn segment_number(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".wal")?.parse().ok()
}

/// The length of a segment's header, and of the end marker after its last record
/// (`store::wal`).
const SEGMENT_HEADER_LEN: usize = 24;
const END_LEN: usize = 8;

fn replay_after(damage: impl Fn(&mut Vec<u8>)) -> (Collector, u64) {
    let mut collector = Collector::start();
    for batch in 0..3 {
        let reply = post_traces(&collector.http_endpoint(), &spans("wal", batch, 50, now_nanos()));
        assert_eq!(reply.status, 200);
    }
    collector.kill_hard();
    let segment = newest_wal_segment(&collector);
    let mut bytes = fs::read(&segment).expect("read the segment");
    damage(&mut bytes);
    fs::write(&segment, &bytes).expect("write the damaged segment");

    collector.restart();
    let stored = collector.sql("SELECT count(*) AS n FROM otel_traces").single_value().as_u64();
    (collector, stored.expect("a count"))
}

#[test]
fn a_torn_last_record_is_skipped_and_the_rest_replays() {
    // The write of the last record was cut short.
    let (collector, stored) = replay_after(|bytes| bytes.truncate(bytes.len() - 100));
    assert_eq!(stored, 100, "the two complete records replay");
    assert_eq!(collector.metric_value("meshlight_wal_damaged_segments_total"), Some(1.0));
    assert!(collector.metric_value("meshlight_wal_skipped_bytes_total").is_some_and(|b| b > 0.0));
    assert_eq!(collector.metric_value("meshlight_wal_replayed_records_total"), Some(2.0));
}

#[test]
fn garbage_after_the_last_record_is_skipped() {
    // In place of the end marker, a header whose length runs far past the end of the file,
    // then noise.
    let (collector, stored) = replay_after(|bytes| {
        bytes.truncate(bytes.len() - END_LEN);
        bytes.extend_from_slice(&[0xff, 0xff, 0x00, 0x10, 1, 2, 3, 4, 5]);
    });
    assert_eq!(stored, 150, "all three acknowledged batches replay");
    assert_eq!(collector.metric_value("meshlight_wal_damaged_segments_total"), Some(1.0));
    assert_eq!(collector.metric_value("meshlight_wal_skipped_bytes_total"), Some(9.0));
}

#[test]
fn a_corrupt_record_ends_the_segment_without_a_panic() {
    // Flip a byte in the middle of the last record: its checksum no longer matches.
    let (collector, stored) = replay_after(|bytes| {
        let position = bytes.len() - 100;
        bytes[position] ^= 0x55;
    });
    assert_eq!(stored, 100, "the records before the corrupt one replay");
    assert_eq!(collector.metric_value("meshlight_wal_damaged_segments_total"), Some(1.0));
}

#[test]
fn an_intact_record_that_no_longer_converts_is_skipped_and_the_rest_replays() {
    // A well-formed record of an OTLP trace request whose protobuf is not valid: a field
    // whose length runs past the end of the message. Only a stricter decoder in a newer
    // version could find such a record; replay must go on after it.
    let body = [0x0a, 0x10, 0x0a];
    let mut payload = vec![0x81];
    payload.extend_from_slice(&body);
    let (collector, stored) = replay_after(|bytes| {
        // The checksum is masked with the segment's mask: the header's bytes 16 to 20.
        let mask = u32::from_le_bytes(bytes[16..20].try_into().expect("a segment header"));
        let mut record = Vec::new();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&(crc32c::crc32c(&payload) ^ mask).to_le_bytes());
        record.extend_from_slice(&payload);
        bytes.splice(SEGMENT_HEADER_LEN..SEGMENT_HEADER_LEN, record);
    });
    assert_eq!(stored, 150, "the acknowledged records after it replay");
    assert_eq!(collector.metric_value("meshlight_wal_damaged_segments_total"), Some(0.0));
    assert_eq!(collector.metric_value("meshlight_wal_skipped_bytes_total"), Some(body.len() as f64));
    assert_eq!(collector.metric_value("meshlight_wal_replayed_records_total"), Some(4.0));
}
