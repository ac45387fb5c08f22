use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use meshlight_middleware::Settings;

use crate::support::{Collector, InstrumentedMesh};

const CARDINALITY_LIMIT: usize = 12;

/// Random paths, methods, user agents and lanes: the route template (or none), `_OTHER`
/// methods, bounded lane labels and the per-metric cap keep the series count bounded.
#[test]
fn a_flood_of_random_requests_stays_under_the_series_cap() {
    let collector = Collector::start();
    let settings = Settings {
        metric_cardinality_limit: CARDINALITY_LIMIT,
        lane_label_limit: 3,
        ..Settings::default()
    };
    let mesh = InstrumentedMesh::start(&collector, &settings, None);
    // Raw HTTP/1.1, as an attacker would send it: client libraries refuse invented methods.
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "BREW", "X-RANDOM",
    ];
    for n in 0..300_u32 {
        let method = methods[(n % 9) as usize];
        let path = format!("/random/{}/{}", n.wrapping_mul(2_654_435_761), n % 17);
        let mut connection = TcpStream::connect(mesh.gateway()).expect("connect to the gateway");
        // Every third request claims to be gRPC, for a method nobody serves.
        let grpc = if n % 3 == 0 {
            "content-type: application/grpc\r\n"
        } else {
            ""
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: gateway\r\nuser-agent: flood-agent/{n}\r\n\
             x-asm-prefer-tag: lane-{}\r\n{grpc}connection: close\r\n\r\n",
            n % 40
        );
        connection.write_all(request.as_bytes()).expect("send");
        let mut status_line = String::new();
        BufReader::new(connection)
            .read_line(&mut status_line)
            .expect("the gateway answers");
        assert!(
            status_line.starts_with("HTTP/1.1 4"),
            "unknown paths are 404/405, got {status_line:?}"
        );
    }
    mesh.stop_and_flush();

    let rows = collector.wait_for_rows(
        r#"SELECT "Attributes" FROM otel_metrics_histogram WHERE "MetricName" = 'http.server.request.duration'"#,
        1,
    );
    let series: HashSet<String> = rows
        .iter()
        .map(|row| row["Attributes"].to_string())
        .collect();
    // The cap, plus the one overflow series every later attribute set shares.
    assert!(
        series.len() <= CARDINALITY_LIMIT + 1,
        "{} series: {series:#?}",
        series.len()
    );
    assert!(
        series
            .iter()
            .any(|attributes| attributes.contains("otel.metric.overflow")),
        "{series:#?}"
    );
    assert!(
        series
            .iter()
            .all(|attributes| !attributes.contains("/random/")),
        "no raw paths: {series:#?}"
    );
    let lanes: HashSet<&str> = rows
        .iter()
        .filter_map(|row| row["Attributes"]["meshlight.lane"].as_str())
        .collect();
    assert!(lanes.len() <= 4 && lanes.contains("_OTHER"), "{lanes:?}");

    let grpc = collector.wait_for_rows(
        r#"SELECT "Attributes" FROM otel_metrics_histogram WHERE "MetricName" = 'rpc.server.call.duration'"#,
        1,
    );
    for row in &grpc {
        let method = &row["Attributes"]["rpc.method"];
        assert!(
            method == "_OTHER" || method.is_null(),
            "invented gRPC methods are _OTHER: {row:?}"
        );
    }
}
