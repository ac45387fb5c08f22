//! Profile ingest and queries end to end: Pyroscope-style uploads (raw and multipart) are
//! stored with their stacks de-duplicated, served merged, per span, per trace and as a
//! difference in every format, read by a third-party pprof decoder, kept across a graceful
//! restart and a crash, and malformed uploads get 400 and change nothing.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use serde_json::Value;

use crate::support::otlp::gzip;
use crate::support::profiles::{StackSample, cpu_profile, decode_with_pprof_format, get_bytes, try_upload, upload, upload_multipart};
use crate::support::{Collector, encode};

const SPAN: &str = "00f067aa0ba902b7";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const MS: i64 = 1_000_000;

fn shop_profile() -> meshlight_profiler::proto::Profile {
    cpu_profile(&[
        StackSample { stack: &["leaf_hot", "middle", "main"], cpu_nanos: 300 * MS, span: Some((SPAN, TRACE)) },
        StackSample { stack: &["leaf_cold", "middle", "main"], cpu_nanos: 100 * MS, span: None },
        StackSample { stack: &["middle", "main"], cpu_nanos: 50 * MS, span: None },
        StackSample { stack: &["leaf_hot", "main"], cpu_nanos: 20 * MS, span: None },
    ])
}

/// The folded stacks of `shop_profile` uploaded `times` times.
fn shop_folded(times: i64) -> String {
    [("main;leaf_hot", 20), ("main;middle", 50), ("main;middle;leaf_cold", 100), ("main;middle;leaf_hot", 300)]
        .iter()
        .map(|(stack, ms)| format!("{stack} {}\n", ms * MS * times))
        .collect()
}

fn count(collector: &Collector, table: &str) -> u64 {
    collector.sql(&format!("SELECT COUNT(*) AS n FROM {table}")).single_value().as_u64().expect("a count")
}

fn api_text(collector: &Collector, path: &str) -> String {
    let (status, body) = collector.get(path).expect("API request");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[test]
fn profiles_are_stored_once_queried_in_every_format_and_survive_restarts() {
    let mut collector = Collector::start_with(&["--max-profile-bytes", "65536", "--max-request-bytes", "1048576"]);
    let http = collector.http_endpoint();
    // A window in the previous hour, so that every upload below shares one hour partition.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let t0 = now - now % 3_600 - 3_000;
    let name = encode("shop.cpu{pod=web-1,namespace=prod}");
    let profile = gzip(&shop_profile().encode_to_vec());

    let first = upload(&http, &format!("name={name}&from={t0}&until={}&format=pprof&sampleRate=100", t0 + 10), &profile);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let second = upload_multipart(&http, &format!("name={name}&from={}&until={}", t0 + 5, t0 + 10), &profile);
    assert_eq!(second.status, 200, "{}", String::from_utf8_lossy(&second.body));
    let later = cpu_profile(&[StackSample { stack: &["leaf_cold", "middle", "main"], cpu_nanos: 500 * MS, span: None }]);
    let third = upload(&http, &format!("name={name}&from={}&until={}&format=pprof", t0 + 20, t0 + 30), &gzip(&later.encode_to_vec()));
    assert_eq!(third.status, 200, "{}", String::from_utf8_lossy(&third.body));

    // Four functions, locations and stacks, stored once although two uploads carry them;
    // samples per upload, stack, label set and sample type (count and CPU time).
    for table in ["profile_functions", "profile_locations", "profile_stacks"] {
        assert_eq!(count(&collector, table), 4, "{table}");
    }
    assert_eq!(count(&collector, "profile_samples"), (4 + 4 + 1) * 2);

    let range = |from: i64, to: i64| format!("from={from}&to={to}");
    let first_two = range(t0, t0 + 15);
    let selector = encode(r#"{service_name="shop", pod=~"web-.*"}"#);
    let merged = format!("/api/v1/profiles/merge?selector={selector}&{first_two}");
    assert_eq!(api_text(&collector, &format!("{merged}&format=folded")), shop_folded(2));
    let other_pod = encode(r#"{service_name="shop", pod="web-2"}"#);
    assert_eq!(api_text(&collector, &format!("/api/v1/profiles/merge?selector={other_pod}&{first_two}&format=folded")), "");

    let top: Value = serde_json::from_str(&api_text(&collector, &format!("{merged}&format=top&limit=2"))).expect("JSON");
    let functions = top["functions"].as_array().expect("functions");
    assert_eq!(functions.len(), 2, "{top}");
    assert_eq!((functions[0]["function"].as_str(), functions[0]["self"].as_i64()), (Some("leaf_hot"), Some(640 * MS)), "{top}");
    assert_eq!((functions[1]["function"].as_str(), functions[1]["self"].as_i64()), (Some("leaf_cold"), Some(200 * MS)), "{top}");

    let flamegraph: Value = serde_json::from_str(&api_text(&collector, &format!("{merged}&format=flamegraph"))).expect("JSON");
    assert_eq!(flamegraph["flamegraph"]["value"].as_i64(), Some(940 * MS), "{flamegraph}");

    let diff_path = format!("/api/v1/profiles/diff?selector={selector}&base_from={t0}&base_to={}&from={}&to={}", t0 + 15, t0 + 15, t0 + 60);
    let diff: Value = serde_json::from_str(&api_text(&collector, &diff_path)).expect("JSON");
    let root = &diff["flamegraph"];
    let totals = ["base", "target", "delta"].map(|side| root[side]["value"].as_i64());
    assert_eq!(totals, [Some(940 * MS), Some(500 * MS), Some(-440 * MS)], "{diff}");

    assert_eq!(api_text(&collector, &format!("/api/v1/profiles/span/{SPAN}?format=folded")), "main;middle;leaf_hot 600000000\n");
    assert_eq!(api_text(&collector, &format!("/api/v1/profiles/trace/{TRACE}?format=folded")), "main;middle;leaf_hot 600000000\n");

    // Every pprof the API serves is readable by a decoder nobody here wrote.
    let scratch = collector.scratch_dir().to_owned();
    let downloads = [
        (format!("{merged}&format=pprof"), 940 * MS),
        (format!("/api/v1/profiles/span/{SPAN}?format=pprof"), 600 * MS),
        (format!("/api/v1/profiles/trace/{TRACE}?format=pprof"), 600 * MS),
        (format!("/api/v1/profiles/merge?selector={other_pod}&{first_two}&format=pprof"), 0),
    ];
    let mut files = Vec::new();
    for (index, (path, _)) in downloads.iter().enumerate() {
        let file = scratch.join(format!("download-{index}.pb.gz"));
        std::fs::write(&file, get_bytes(&format!("{}{path}", collector.api_url()))).expect("write the download");
        files.push(file);
    }
    let decoded = decode_with_pprof_format(&files.iter().map(|file| file.as_path()).collect::<Vec<_>>());
    for ((path, cpu_nanos), read) in downloads.iter().zip(&decoded) {
        assert_eq!(read["sample_types"][0], "cpu:nanoseconds", "{path}: {read}");
        assert_eq!(read["totals"][0].as_i64(), Some(*cpu_nanos), "{path}: {read}");
    }
    assert_eq!(decoded[0]["leaf_totals"]["leaf_hot"].as_i64(), Some(640 * MS), "{}", decoded[0]);
    assert_eq!(decoded[0]["period_type"], "cpu:nanoseconds");

    // The CLI over the same API.
    let meshlight = env!("CARGO_BIN_EXE_meshlight");
    let cli = |format: &str, extra: &[&str]| {
        let output = Command::new(meshlight)
            .args(["profile", "--api", &collector.api_url(), "--selector", r#"{service_name="shop"}"#])
            .args(["--from", &t0.to_string(), "--to", &(t0 + 15).to_string(), "--format", format])
            .args(extra)
            .output()
            .expect("run meshlight profile");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let top_table = cli("top", &["--limit", "3"]);
    let rows: Vec<&str> = top_table.lines().collect();
    assert_eq!(rows.len(), 4, "{top_table}");
    assert!(rows[1].ends_with("leaf_hot") && rows[1].contains("640000000"), "{top_table}");
    assert_eq!(cli("folded", &[]), shop_folded(2));
    let cli_pprof = scratch.join("cli.pb.gz");
    cli("pprof", &["--output", cli_pprof.to_str().expect("UTF-8 path")]);
    assert_eq!(decode_with_pprof_format(&[&cli_pprof])[0]["totals"][0].as_i64(), Some(940 * MS));

    // Malformed uploads: 400 (413 over the body cap) with the reason, and nothing stored.
    let samples_before = count(&collector, "profile_samples");
    let mut bad_string = shop_profile();
    bad_string.function[0].name = 999;
    let mut undefined_location = shop_profile();
    undefined_location.sample[0].location_id.push(77);
    let mut defined_twice = shop_profile();
    let duplicate = defined_twice.location[0].clone();
    defined_twice.location.push(duplicate);
    let mut oversize = shop_profile();
    oversize.string_table.push("x".repeat(100_000));
    let query = format!("name={name}&from={t0}&until={}&format=pprof", t0 + 10);
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("bad gzip", query.clone(), b"\x1f\x8b\x08\x00garbage".to_vec(), 400, "gzip"),
        ("not a profile", query.clone(), b"\xff\xff\xff\xffnot protobuf".to_vec(), 400, "protobuf"),
        ("bad string index", query.clone(), gzip(&bad_string.encode_to_vec()), 400, "out of range"),
        ("undefined location", query.clone(), gzip(&undefined_location.encode_to_vec()), 400, "not defined"),
        ("location defined twice", query.clone(), gzip(&defined_twice.encode_to_vec()), 400, "twice"),
        ("oversize profile", query.clone(), gzip(&oversize.encode_to_vec()), 400, "limit"),
        ("bad name", format!("name={}&format=pprof", encode("app{pod}")), profile.clone(), 400, "key=value"),
        ("unsupported format", format!("name={name}&format=folded"), profile.clone(), 400, "format"),
        ("body over the request cap", query, vec![0_u8; 2 << 20], 413, ""),
    ];
    for (what, query, body, status, reason) in cases {
        let reply = try_upload(&http, &query, &body).unwrap_or_else(|error| panic!("{what}: {error}"));
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, status, "{what}: {text}");
        assert!(text.contains(reason), "{what}: {text:?} should mention {reason:?}");
    }
    assert_eq!(count(&collector, "profile_samples"), samples_before);

    // A graceful restart (flushed to Parquet) and a crash (replayed from the WAL) keep it all.
    collector.restart();
    assert_eq!(api_text(&collector, &format!("{merged}&format=folded")), shop_folded(2));
    let again = upload(&collector.http_endpoint(), &format!("name={name}&from={}&until={}&format=pprof", t0 + 1, t0 + 11), &profile);
    assert_eq!(again.status, 200);
    collector.kill_hard();
    collector.restart();
    assert_eq!(api_text(&collector, &format!("{merged}&format=folded")), shop_folded(3));
}
