//! Continuous profiles: pprof uploads stored de-duplicated in the columnar store, and read
//! back merged as pprof, folded stacks, flamegraph trees or top functions.
//!
//! Ingest ([`ingest`], `POST /ingest` on the OTLP/HTTP port, Pyroscope's protocol) decodes
//! and validates an upload ([`pprof`]), splits it into functions, locations, stacks and
//! samples with content-hash ids ([`model`]), drops the functions, locations and stacks
//! already stored in the same hour, and writes the rest through the store like any other
//! signal: WAL, memtable, Parquet, retention. Queries ([`query`]) select samples with a
//! label selector ([`series`]), a time range, a span or a trace, sum them per stack, join
//! the stacks back and render them ([`render`]).
//!
//! | table | one row per | key columns |
//! |---|---|---|
//! | `profile_samples` | stack × sample type × label set of an upload | `Timestamp`, `ServiceName`, `Labels`, `SampleType`, `StackId`, `Value`, `SpanId`, `TraceId` |
//! | `profile_stacks` | distinct stack per hour | `StackId`, `LocationIds` (leaf first) |
//! | `profile_locations` | distinct code location per hour | `LocationId`, `FunctionIds`, `Lines` (innermost inlined first) |
//! | `profile_functions` | distinct function per hour | `FunctionId`, `Name`, `SystemName`, `Filename`, `StartLine` |
//!
//! ```
//! use meshlight_collector::profiles::{model, pprof, render};
//! use meshlight_profiler::proto;
//!
//! let location = |id, function_id, line| proto::Location {
//!     id,
//!     line: vec![proto::Line { function_id, line, column: 0 }],
//!     ..Default::default()
//! };
//! // An upload: `main` calling `work`, sampled twice.
//! let strings = ["", "cpu", "nanoseconds", "main", "work", "main.rs"];
//! let upload = proto::Profile {
//!     string_table: strings.iter().map(|s| s.to_string()).collect(),
//!     sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
//!     function: vec![
//!         proto::Function { id: 1, name: 3, filename: 5, ..Default::default() },
//!         proto::Function { id: 2, name: 4, filename: 5, ..Default::default() },
//!     ],
//!     location: vec![location(1, 1, 3), location(2, 2, 9)],
//!     sample: vec![proto::Sample { location_id: vec![2, 1], value: vec![20], label: vec![] }; 2],
//!     ..Default::default()
//! };
//! let body = prost::Message::encode_to_vec(&upload);
//!
//! let profile = pprof::decode(&body, &pprof::DecodeLimits::default())?;
//! let mut rows = model::to_rows(&profile);
//! model::Dedup::new(100_000).retain_new(&mut rows);
//! assert_eq!((rows.functions.len(), rows.stacks.len(), rows.samples[0].value), (2, 1, 40));
//!
//! // The query side joins the rows back into frames.
//! let frame = |function: &str, line| render::Frame { function: function.into(), filename: "main.rs".into(), line };
//! let mut merged = render::MergedProfile::new();
//! merged.add(&[frame("work", 9), frame("main", 3)], rows.samples[0].value);
//! assert_eq!(merged.to_folded(), "main;work 40\n");
//! # Ok::<(), pprof::ProfileError>(())
//! ```

pub mod ingest;
pub mod model;
pub mod pprof;
pub mod query;
pub mod render;
pub mod series;
