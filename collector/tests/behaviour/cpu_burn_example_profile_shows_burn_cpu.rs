//! The README's profiling example end to end: `cpu_burn` (the agent in a real program)
//! uploads to a real collector, and the merged profile `meshlight profile` prints has the
//! burning function at the top, in a pprof a third-party decoder reads.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::support::profiles::decode_with_pprof_format;
use serde_json::Value;

use crate::support::{Collector, encode, run_to_completion};

/// The example binary: building the workspace's tests builds the examples too.
fn cpu_burn_example() -> PathBuf {
    let meshlight = PathBuf::from(env!("CARGO_BIN_EXE_meshlight"));
    let example = meshlight.with_file_name("examples").join("cpu_burn");
    assert!(
        example.exists(),
        "{} is missing: build the tests with `cargo nextest run --workspace --release` (or scripts/test), which builds the examples",
        example.display()
    );
    example
}

#[test]
fn the_cpu_burn_example_profile_has_burn_cpu_among_its_top_frames() {
    let collector = Collector::start();
    let scratch = collector.scratch_dir().to_owned();
    let run = run_to_completion(
        Command::new(cpu_burn_example())
            .args(["--seconds", "3"])
            .env("MESHLIGHT_PROFILER_ENDPOINT", collector.http_endpoint())
            .env("MESHLIGHT_PROFILER_UPLOAD_INTERVAL_SECS", "1")
            .env_remove("OTEL_SERVICE_NAME"),
        Duration::from_secs(60),
        &scratch,
        "cpu_burn",
    );
    assert!(run.status.success(), "cpu_burn failed\n{}", run.report());

    let meshlight = env!("CARGO_BIN_EXE_meshlight");
    let profile = |format: &str, extra: &[&str]| {
        let output = Command::new(meshlight)
            .args(["profile", "--api", &collector.api_url(), "--selector", r#"{service_name="cpu_burn"}"#, "--format", format])
            .args(extra)
            .output()
            .expect("run meshlight profile");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let top = profile("top", &["--limit", "3"]);
    assert!(
        top.lines().skip(1).any(|row| row.contains("burn_cpu")),
        "burn_cpu is not among the top 3 functions by self time:\n{top}\n{}",
        run.report()
    );

    let pprof = scratch.join("cpu_burn.pb.gz");
    profile("pprof", &["--output", pprof.to_str().expect("UTF-8 path")]);
    let read = &decode_with_pprof_format(&[&pprof])[0];
    let functions: Vec<&str> = read["functions"].as_array().expect("functions").iter().filter_map(|f| f.as_str()).collect();
    assert!(functions.iter().any(|f| f.contains("burn_cpu")), "{read}");
    // Most of the CPU time is spent inside burn_cpu (with what the compiler inlined into
    // it): the example does little else.
    let (status, body) = collector.get(&format!("/api/v1/profiles/merge?format=top&limit=1000&selector={}", encode(r#"{service_name="cpu_burn"}"#))).expect("API");
    assert_eq!(status, 200, "{body}");
    let top_json: Value = serde_json::from_str(&body).expect("JSON");
    let burn_cpu_share = top_json["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .find(|row| row["function"] == "burn_cpu")
        .and_then(|row| row["totalShare"].as_f64());
    assert!(burn_cpu_share.is_some_and(|share| share > 0.5), "burn_cpu's share of the total: {burn_cpu_share:?}\n{top_json}");
}
