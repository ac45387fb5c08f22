//! Profiles for the profile tests: pprof built from readable stacks, uploads, downloads,
//! and the third-party decoder (`tests/interop/pprof_decode.mjs`, npm's `pprof-format`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshlight_profiler::proto::{Function, Label, Line, Location, Profile, Sample, ValueType};
use serde_json::Value;

use super::otlp::{HttpReply, post, try_post};
use super::repo_root;

/// Environment variable naming the `node` binary (default: `node` on the `PATH`).
const NODE_ENV: &str = "MESHLIGHT_NODE";

/// One sample: its stack as function names, leaf first, its value and its span.
pub(crate) struct StackSample<'a> {
    pub(crate) stack: &'a [&'a str],
    pub(crate) cpu_nanos: i64,
    /// The span it was taken in, and that span's trace (pprof labels `span_id`, `trace_id`).
    pub(crate) span: Option<(&'a str, &'a str)>,
}

/// A CPU profile (`samples:count`, `cpu:nanoseconds`, 100 Hz) of the given samples; each
/// function gets its own location, at line 10 of `src/<function>.rs`.
pub(crate) fn cpu_profile(samples: &[StackSample<'_>]) -> Profile {
    let mut profile = Profile { string_table: vec![String::new()], ..Profile::default() };
    let intern = |profile: &mut Profile, text: &str| -> i64 {
        match profile.string_table.iter().position(|s| s == text) {
            Some(index) => index as i64,
            None => {
                profile.string_table.push(text.to_owned());
                profile.string_table.len() as i64 - 1
            }
        }
    };
    let period = 10_000_000;
    profile.sample_type = vec![
        ValueType { r#type: intern(&mut profile, "samples"), unit: intern(&mut profile, "count") },
        ValueType { r#type: intern(&mut profile, "cpu"), unit: intern(&mut profile, "nanoseconds") },
    ];
    profile.period_type = Some(ValueType { r#type: intern(&mut profile, "cpu"), unit: intern(&mut profile, "nanoseconds") });
    profile.period = period;
    let span_key = intern(&mut profile, "span_id");
    let trace_key = intern(&mut profile, "trace_id");
    for sample in samples {
        let mut location_ids = Vec::new();
        for function in sample.stack {
            let id = match profile.function.iter().position(|f| profile.string_table[f.name as usize] == *function) {
                Some(index) => profile.function[index].id,
                None => {
                    let id = profile.function.len() as u64 + 1;
                    let name = intern(&mut profile, function);
                    let filename = intern(&mut profile, &format!("src/{function}.rs"));
                    profile.function.push(Function { id, name, system_name: name, filename, start_line: 1 });
                    profile.location.push(Location {
                        id,
                        line: vec![Line { function_id: id, line: 10, column: 0 }],
                        ..Location::default()
                    });
                    id
                }
            };
            location_ids.push(id);
        }
        let mut labels = Vec::new();
        if let Some((span_id, trace_id)) = sample.span {
            labels.push(Label { key: span_key, str: intern(&mut profile, span_id), ..Label::default() });
            labels.push(Label { key: trace_key, str: intern(&mut profile, trace_id), ..Label::default() });
        }
        profile.sample.push(Sample { location_id: location_ids, value: vec![sample.cpu_nanos / period, sample.cpu_nanos], label: labels });
    }
    profile
}

/// `POST /ingest?<query>` with a raw body.
pub(crate) fn upload(http_endpoint: &str, query: &str, body: &[u8]) -> HttpReply {
    try_upload(http_endpoint, query, body).expect("the upload and its reply")
}

/// [`upload`], with an error when the request cannot be sent or its reply read.
pub(crate) fn try_upload(http_endpoint: &str, query: &str, body: &[u8]) -> Result<HttpReply, ureq::Error> {
    try_post(http_endpoint, &format!("/ingest?{query}"), Some("application/octet-stream"), None, body)
}

/// `POST /ingest?<query>` with the profile as the `profile` part of a multipart form, as
/// Pyroscope's clients send it.
pub(crate) fn upload_multipart(http_endpoint: &str, query: &str, profile: &[u8]) -> HttpReply {
    let boundary = "meshlight-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(profile);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    post(http_endpoint, &format!("/ingest?{query}"), Some(&format!("multipart/form-data; boundary={boundary}")), None, &body)
}

/// The body of a successful `GET`, as bytes.
pub(crate) fn get_bytes(url: &str) -> Vec<u8> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(64 << 20).read_to_vec().expect("read the response");
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    body
}

/// What the third-party decoder reads in each file, one JSON object per file (see
/// `tests/interop/pprof_decode.mjs` for the fields). Fails the test when it cannot read one.
pub(crate) fn decode_with_pprof_format(files: &[&Path]) -> Vec<Value> {
    let node = std::env::var(NODE_ENV).unwrap_or_else(|_| "node".to_owned());
    let script = repo_root().join("tests/interop/pprof_decode.mjs");
    let output = Command::new(&node)
        .arg(&script)
        .args(files)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {node} {}: {error} (scripts/test installs node and pprof-format)", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pprof-format could not read a profile the collector served:\n{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().map(|line| serde_json::from_str(line).expect("the decoder prints JSON")).collect()
}
