//! gzip and zstd request bodies are accepted on both transports, and `meshlight sql` prints
//! what the API answers.

use std::process::Command;

use prost::Message as _;
use tonic::codec::CompressionEncoding;

use crate::support::Collector;
use crate::support::otlp::{GrpcClient, gzip, now_nanos, post, spans};

#[test]
fn gzip_and_zstd_bodies_are_decompressed_on_both_transports() {
    let collector = Collector::start();
    let endpoint = collector.http_endpoint();
    let protobuf = Some("application/x-protobuf");

    let gzipped = gzip(&spans("compressed", 0, 10, now_nanos()).encode_to_vec());
    assert_eq!(post(&endpoint, "/v1/traces", protobuf, Some("gzip"), &gzipped).status, 200);
    let zstd = zstd::encode_all(&spans("compressed", 1, 10, now_nanos()).encode_to_vec()[..], 3).expect("zstd");
    assert_eq!(post(&endpoint, "/v1/traces", protobuf, Some("zstd"), &zstd).status, 200);

    let mut client = GrpcClient::connect(&collector.grpc_endpoint());
    client.compress_with(CompressionEncoding::Gzip);
    client.export(spans("compressed", 2, 10, now_nanos())).expect("gzip over gRPC");

    let stored = collector.sql(
        "SELECT count(DISTINCT \"SpanAttributes\"['batch']) AS batches, count(*) AS spans \
         FROM otel_traces WHERE \"ServiceName\" = 'compressed'",
    );
    let record = stored.records().next().expect("a row");
    assert_eq!((record.u64("batches"), record.u64("spans")), (3, 30));
}

#[test]
fn the_sql_command_prints_a_table_and_reports_bad_queries() {
    let collector = Collector::start();
    assert_eq!(
        post(&collector.http_endpoint(), "/v1/traces", Some("application/x-protobuf"), None,
             &spans("cli", 0, 4, now_nanos()).encode_to_vec()).status,
        200
    );
    let meshlight = env!("CARGO_BIN_EXE_meshlight");
    let output = Command::new(meshlight)
        .args(["sql", "--api", &collector.api_url()])
        .arg("SELECT \"ServiceName\", count(*) AS spans FROM otel_traces GROUP BY 1")
        .output()
        .expect("run meshlight sql");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("| ServiceName | spans |"), "{stdout}");
    assert!(stdout.contains("| cli         | 4     |"), "{stdout}");
    assert!(stdout.contains("1 row(s)"), "{stdout}");

    let output = Command::new(meshlight)
        .args(["sql", "--api", &collector.api_url(), "SELECT nope FROM otel_traces"])
        .output()
        .expect("run meshlight sql");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("400"), "{stderr}");

    let (status, body) = collector.sql_raw("SELECT * FROM otel_traces; DROP TABLE otel_traces");
    assert_eq!(status, 400, "{body}");
}
