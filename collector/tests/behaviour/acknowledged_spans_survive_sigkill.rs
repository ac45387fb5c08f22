//! SIGKILL while a client streams spans: after a restart every acknowledged span is stored,
//! exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::support::otlp::{GrpcClient, now_nanos, spans};
use crate::support::{Collector, poll_until};

const SPANS_PER_BATCH: u64 = 200;

#[test]
fn acknowledged_spans_survive_sigkill() {
    // Small flushes so the kill lands with data both in Parquet and only in the WAL.
    let mut collector = Collector::start_with(&["--flush-bytes", "1000000"]);
    let acknowledged = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let streamer = {
        let endpoint = collector.grpc_endpoint();
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut client = GrpcClient::connect(&endpoint);
            let start = now_nanos();
            let mut batch = 0;
            // Bounded: stops at the kill (errors) or after 5 000 batches at most.
            while !stop.load(Ordering::Relaxed) && batch < 5_000 {
                match client.export(spans("sigkill", batch, SPANS_PER_BATCH, start)) {
                    Ok(_) => acknowledged.lock().expect("lock").push(batch),
                    Err(_) => break,
                }
                batch += 1;
            }
        })
    };

    // Let the client get well into its stream (including at least one flush), then kill.
    poll_until(Duration::from_secs(30), "acknowledged batches before the kill", || {
        let acked = acknowledged.lock().expect("lock").len();
        let flushed = collector.metric_value("meshlight_parquet_files{table=\"otel_traces\"}").unwrap_or(0.0);
        if acked >= 50 && flushed >= 1.0 { Ok(()) } else { Err(format!("{acked} batches acked, {flushed} files")) }
    });
    collector.kill_hard();
    stop.store(true, Ordering::Relaxed);
    streamer.join().expect("the streaming client");

    collector.restart();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let acked_spans = acknowledged.len() as u64 * SPANS_PER_BATCH;
    let batches = acknowledged.iter().map(|b| format!("'{b}'")).collect::<Vec<_>>().join(",");
    let stored = collector.sql(&format!(
        "SELECT count(*) AS spans, count(DISTINCT \"SpanId\") AS distinct_spans FROM otel_traces \
         WHERE \"ServiceName\" = 'sigkill' AND \"SpanAttributes\"['batch'] IN ({batches})"
    ));
    let record = stored.records().next().expect("one row");
    let (stored_spans, distinct_spans) = (record.u64("spans"), record.u64("distinct_spans"));
    println!("acknowledged {acked_spans} spans; stored after SIGKILL and restart: {stored_spans} ({distinct_spans} distinct)");
    assert_eq!(stored_spans, acked_spans, "every acknowledged span is stored");
    assert_eq!(distinct_spans, stored_spans, "and none twice");
}
