//! A pool of pre-generated requests that load is sent from, so that generating traces does
//! not compete with sending them.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{Generator, Shape, span_count};

/// Pre-generated requests, sent in a cycle.
///
/// Each time the cycle repeats, trace and span ids are re-keyed (see [`rekey_and_shift`])
/// so that a long run does not send the same trace twice, and timestamps are moved forward by the time
/// elapsed since generation so that spans stay near "now".
#[derive(Debug, Clone)]
pub struct RequestPool {
    requests: Vec<ExportTraceServiceRequest>,
    span_counts: Vec<u64>,
    generated_at_unix_nanos: u64,
}

impl RequestPool {
    /// Generates `request_count` requests of about `spans_per_request` spans each.
    pub fn generate(
        shape: Shape,
        seed: u64,
        request_count: usize,
        spans_per_request: usize,
        now_unix_nanos: u64,
    ) -> Self {
        let mut generator = Generator::new(shape, seed);
        let requests = (0..request_count)
            .map(|_| generator.request(spans_per_request, now_unix_nanos))
            .collect();
        Self::from_requests(requests, now_unix_nanos)
    }

    /// A pool of the given requests, whose timestamps are relative to `generated_at_unix_nanos`.
    pub fn from_requests(
        requests: Vec<ExportTraceServiceRequest>,
        generated_at_unix_nanos: u64,
    ) -> Self {
        let span_counts = requests
            .iter()
            .map(|request| span_count(request) as u64)
            .collect();
        RequestPool {
            requests,
            span_counts,
            generated_at_unix_nanos,
        }
    }

    /// The requests as generated.
    pub fn requests(&self) -> &[ExportTraceServiceRequest] {
        &self.requests
    }

    /// Number of requests in the pool.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the pool holds no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Spans in all requests of the pool.
    pub fn total_spans(&self) -> u64 {
        self.span_counts.iter().sum()
    }

    /// Mean spans per request (0 for an empty pool).
    pub fn mean_spans_per_request(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.total_spans() as f64 / self.len() as f64
        }
    }

    /// Spans in the request sent as number `sequence` of the cycle.
    ///
    /// # Panics
    /// If the pool is empty.
    pub fn span_count(&self, sequence: u64) -> u64 {
        self.span_counts[self.position(sequence)]
    }

    /// The request to send as number `sequence`: a copy of pool entry `sequence % len`,
    /// re-keyed for pass `sequence / len` and shifted to `now_unix_nanos`.
    ///
    /// # Panics
    /// If the pool is empty.
    pub fn prepare(&self, sequence: u64, now_unix_nanos: u64) -> ExportTraceServiceRequest {
        let mut request = self.requests[self.position(sequence)].clone();
        let pass = sequence / self.requests.len() as u64;
        let shift_nanos = now_unix_nanos.saturating_sub(self.generated_at_unix_nanos);
        rekey_and_shift(&mut request, pass, shift_nanos);
        request
    }

    fn position(&self, sequence: u64) -> usize {
        (sequence % self.requests.len() as u64) as usize
    }
}

/// Makes a copy of a request distinct from earlier copies: XORs the low 8 bytes of every
/// trace id, and every span id, with keys derived from `pass` (spans, parents and links
/// alike, so trees and links stay intact), and moves every timestamp `shift_nanos` later.
/// Pass 0 keeps the ids unchanged.
///
/// The keys change every byte of an id: a key that left most bytes alone would let the
/// store compress an id against its earlier copies, flattering bytes per span.
pub fn rekey_and_shift(request: &mut ExportTraceServiceRequest, pass: u64, shift_nanos: u64) {
    let trace_key = if pass == 0 { 0 } else { splitmix64(pass) };
    let span_key = if pass == 0 { 0 } else { splitmix64(trace_key) };
    let rekey = |id: &mut Vec<u8>, key: u64| {
        if let Some(low) = id.len().checked_sub(8).and_then(|start| id.get_mut(start..)) {
            for (byte, key_byte) in low.iter_mut().zip(key.to_be_bytes()) {
                *byte ^= key_byte;
            }
        }
    };
    for resource_spans in &mut request.resource_spans {
        for scope_spans in &mut resource_spans.scope_spans {
            for span in &mut scope_spans.spans {
                rekey(&mut span.trace_id, trace_key);
                rekey(&mut span.span_id, span_key);
                rekey(&mut span.parent_span_id, span_key);
                for link in &mut span.links {
                    rekey(&mut link.trace_id, trace_key);
                    rekey(&mut link.span_id, span_key);
                }
                span.start_time_unix_nano = span.start_time_unix_nano.saturating_add(shift_nanos);
                span.end_time_unix_nano = span.end_time_unix_nano.saturating_add(shift_nanos);
                for event in &mut span.events {
                    event.time_unix_nano = event.time_unix_nano.saturating_add(shift_nanos);
                }
            }
        }
    }
}

/// SplitMix64's output function: a bijection on `u64` in which every input bit flips each
/// output bit with probability about one half, so consecutive passes get unrelated keys.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
