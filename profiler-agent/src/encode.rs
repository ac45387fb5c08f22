//! One profiling window as a pprof `Profile` (`samples/count` and `cpu/nanoseconds`), gzipped
//! for upload.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message as _;

use crate::proto;
use crate::span::{SPAN_ID_LABEL, SpanIds, TRACE_ID_LABEL, hex};

/// The samples of one window with their code addresses symbolized.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// When the window began.
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) frequency_hz: u32,
    pub(crate) samples: Vec<WindowSample>,
    /// Every address in `samples`, with its source lines, innermost inlined first; empty
    /// when it could not be symbolized.
    pub(crate) symbols: HashMap<usize, Vec<FrameLine>>,
}

/// Samples of one stack, on any thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WindowSample {
    /// Instruction addresses, leaf first, without the profiler's own frames.
    pub(crate) stack: Vec<usize>,
    /// The span the samples were taken in, when known.
    pub(crate) span: Option<SpanIds>,
    pub(crate) count: u64,
}

/// One (possibly inlined) function at an address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FrameLine {
    pub(crate) name: String,
    pub(crate) system_name: String,
    pub(crate) filename: String,
    pub(crate) line: u32,
}

impl Window {
    /// The sum of the sample counts.
    pub(crate) fn sample_count(&self) -> u64 {
        self.samples.iter().map(|sample| sample.count).sum()
    }

    pub(crate) fn end(&self) -> SystemTime {
        self.start + self.duration
    }
}

/// Strings by index; index 0 is the empty string, as the format requires.
struct StringTable {
    indices: HashMap<String, i64>,
    strings: Vec<String>,
}

impl StringTable {
    fn new() -> Self {
        Self {
            indices: HashMap::from([(String::new(), 0)]),
            strings: vec![String::new()],
        }
    }

    fn index(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.indices.get(text) {
            return index;
        }
        let index = self.strings.len() as i64;
        self.strings.push(text.to_owned());
        self.indices.insert(text.to_owned(), index);
        index
    }
}

/// The window as a profile: one function per distinct (name, system name, file), one
/// location per address, samples whose stacks and span are equal merged into one.
pub(crate) fn encode(window: &Window) -> proto::Profile {
    let mut strings = StringTable::new();
    let samples_type = proto::ValueType {
        r#type: strings.index("samples"),
        unit: strings.index("count"),
    };
    let cpu_type = proto::ValueType {
        r#type: strings.index("cpu"),
        unit: strings.index("nanoseconds"),
    };
    let span_id_key = strings.index(SPAN_ID_LABEL);
    let trace_id_key = strings.index(TRACE_ID_LABEL);
    let period = 1_000_000_000 / i64::from(window.frequency_hz.max(1));

    let mut functions: HashMap<(i64, i64, i64), u64> = HashMap::new();
    let mut function_table = Vec::new();
    let mut locations: HashMap<usize, u64> = HashMap::new();
    let mut location_table = Vec::new();
    let mut merged: BTreeMap<(Vec<u64>, Option<SpanIds>), u64> = BTreeMap::new();

    for sample in &window.samples {
        let mut location_ids = Vec::with_capacity(sample.stack.len());
        for &address in &sample.stack {
            if let Some(&id) = locations.get(&address) {
                location_ids.push(id);
                continue;
            }
            let mut lines = Vec::new();
            for frame in window.symbols.get(&address).into_iter().flatten() {
                let key = (
                    strings.index(&frame.name),
                    strings.index(&frame.system_name),
                    strings.index(&frame.filename),
                );
                let function_id = *functions.entry(key).or_insert_with(|| {
                    let id = function_table.len() as u64 + 1;
                    function_table.push(proto::Function {
                        id,
                        name: key.0,
                        system_name: key.1,
                        filename: key.2,
                        start_line: 0,
                    });
                    id
                });
                lines.push(proto::Line {
                    function_id,
                    line: i64::from(frame.line),
                    column: 0,
                });
            }
            let id = location_table.len() as u64 + 1;
            location_table.push(proto::Location {
                id,
                mapping_id: 0,
                address: address as u64,
                line: lines,
                is_folded: false,
            });
            locations.insert(address, id);
            location_ids.push(id);
        }
        *merged.entry((location_ids, sample.span)).or_default() += sample.count;
    }

    let mut samples = Vec::with_capacity(merged.len());
    for ((location_id, span), count) in merged {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let mut label = Vec::new();
        if let Some(span) = span {
            label.push(proto::Label {
                key: span_id_key,
                str: strings.index(&hex(&span.span_id)),
                num: 0,
                num_unit: 0,
            });
            label.push(proto::Label {
                key: trace_id_key,
                str: strings.index(&hex(&span.trace_id)),
                num: 0,
                num_unit: 0,
            });
        }
        samples.push(proto::Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            label,
        });
    }

    let time_nanos = window.start.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    });
    proto::Profile {
        sample_type: vec![samples_type, cpu_type],
        sample: samples,
        mapping: Vec::new(),
        location: location_table,
        function: function_table,
        default_sample_type: cpu_type.r#type,
        string_table: strings.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos,
        duration_nanos: i64::try_from(window.duration.as_nanos()).unwrap_or(i64::MAX),
        period_type: Some(cpu_type),
        period,
        comment: Vec::new(),
    }
}

/// The profile's protobuf encoding, gzipped.
pub(crate) fn gzip(profile: &proto::Profile) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(&profile.encode_to_vec())?;
    encoder.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Read as _;

    use flate2::read::GzDecoder;

    use super::*;

    fn line(name: &str, line: u32) -> FrameLine {
        FrameLine {
            name: name.to_owned(),
            system_name: format!("_ZN{}E", name.len()),
            filename: "src/app.rs".to_owned(),
            line,
        }
    }

    fn window() -> Window {
        let span = SpanIds {
            trace_id: [0xab; 16],
            span_id: [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
        };
        Window {
            start: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_secs(10),
            frequency_hz: 100,
            samples: vec![
                // Two threads' samples of one stack in one span: merged.
                WindowSample {
                    stack: vec![0x1000, 0x2000, 0x3000],
                    span: Some(span),
                    count: 3,
                },
                WindowSample {
                    stack: vec![0x1000, 0x2000, 0x3000],
                    span: Some(span),
                    count: 4,
                },
                // The same stack outside any span: kept apart.
                WindowSample {
                    stack: vec![0x1000, 0x2000, 0x3000],
                    span: None,
                    count: 2,
                },
                // Another address in the same function: its own location, same function.
                WindowSample {
                    stack: vec![0x1008, 0x3000],
                    span: None,
                    count: 1,
                },
            ],
            symbols: HashMap::from([
                (0x1000, vec![line("app::hash", 10), line("app::handle", 20)]),
                (0x1008, vec![line("app::handle", 22)]),
                (0x2000, vec![line("app::serve", 30)]),
                (0x3000, Vec::new()),
            ]),
        }
    }

    fn decode(bytes: &[u8]) -> proto::Profile {
        let mut decoded = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut decoded)
            .expect("gunzip");
        proto::Profile::decode(decoded.as_slice()).expect("decode")
    }

    fn function_names(profile: &proto::Profile, location_id: u64) -> Vec<&str> {
        let location = &profile.location[location_id as usize - 1];
        assert_eq!(location.id, location_id);
        location
            .line
            .iter()
            .map(|line| {
                let function = &profile.function[line.function_id as usize - 1];
                profile.string_table[function.name as usize].as_str()
            })
            .collect()
    }

    /// The string value of label `key` on `sample`.
    pub(crate) fn label<'a>(
        profile: &'a proto::Profile,
        sample: &proto::Sample,
        key: &str,
    ) -> Option<&'a str> {
        sample
            .label
            .iter()
            .find(|label| profile.string_table[label.key as usize] == key)
            .map(|label| profile.string_table[label.str as usize].as_str())
    }

    #[test]
    fn a_window_round_trips_through_gzip_and_prost() {
        let profile = decode(&gzip(&encode(&window())).expect("gzip"));
        let text = |index: i64| profile.string_table[index as usize].as_str();

        assert_eq!(profile.string_table[0], "");
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|value_type| (text(value_type.r#type), text(value_type.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = profile.period_type.expect("period type");
        assert_eq!(
            (text(period_type.r#type), text(period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(profile.period, 10_000_000);
        assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(profile.duration_nanos, 10_000_000_000);

        // One location per address, lines innermost first; functions shared.
        assert_eq!(profile.location.len(), 4);
        assert_eq!(profile.function.len(), 3);
        let addresses: Vec<u64> = profile.location.iter().map(|l| l.address).collect();
        assert_eq!(addresses, [0x1000, 0x2000, 0x3000, 0x1008]);
        assert_eq!(function_names(&profile, 1), ["app::hash", "app::handle"]);
        assert_eq!(function_names(&profile, 4), ["app::handle"]);
        assert!(function_names(&profile, 3).is_empty());
        let handle = &profile.function[1];
        assert_eq!(text(handle.system_name), "_ZN11E");
        assert_eq!(text(handle.filename), "src/app.rs");
        assert_eq!(profile.location[0].line[1].line, 20);

        assert_eq!(profile.sample.len(), 3);
        let mut seen = Vec::new();
        for sample in &profile.sample {
            let span_id = label(&profile, sample, "span_id");
            let trace_id = label(&profile, sample, "trace_id");
            assert_eq!(sample.value[1], sample.value[0] * 10_000_000);
            seen.push((
                sample.location_id.clone(),
                sample.value[0],
                span_id,
                trace_id,
            ));
        }
        seen.sort();
        let trace = "ab".repeat(16);
        assert_eq!(
            seen,
            [
                (vec![1, 2, 3], 2, None, None),
                (
                    vec![1, 2, 3],
                    7,
                    Some("0123456789abcdef"),
                    Some(trace.as_str())
                ),
                (vec![4, 3], 1, None, None),
            ]
        );
    }

    #[test]
    fn an_empty_window_is_a_valid_profile() {
        let profile = encode(&Window {
            start: UNIX_EPOCH,
            duration: Duration::ZERO,
            frequency_hz: 100,
            samples: Vec::new(),
            symbols: HashMap::new(),
        });
        assert!(profile.sample.is_empty());
        assert_eq!(profile.string_table[0], "");
        assert_eq!(profile.time_nanos, 0);
        let decoded = decode(&gzip(&profile).expect("gzip"));
        assert_eq!(decoded, profile);
    }
}
