//! Storage rows for a decoded profile: functions, locations and stacks are identified by
//! a hash of their content, so the same code uploaded by any number of processes maps to
//! the same rows, and a writer that remembers which ids it already wrote ([`Dedup`])
//! stores each once; samples refer to stacks by id.
//!
//! Ids are persisted: the hashed encoding (see `ContentHash`) is a storage format and must
//! not change, or rows written before and after would stop matching.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};

use meshlight_profiler::proto;

use crate::content_hash::ContentHash;

/// The pprof label whose value is the id of the span a sample ran in (the Pyroscope
/// convention), hex encoded.
pub const SPAN_ID_LABEL: &str = "span_id";

/// The pprof label whose value is the id of the trace a sample ran in, hex encoded.
pub const TRACE_ID_LABEL: &str = "trace_id";

/// A function, identified by the hash of all its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    /// Content hash of the other fields.
    pub id: u64,
    /// Human-readable name, usually demangled.
    pub name: String,
    /// Name as the linker knows it, usually mangled.
    pub system_name: String,
    /// Source file.
    pub filename: String,
    /// First line of the function in `filename` (0 if unknown).
    pub start_line: i64,
}

/// A code location, identified by its source lines only: its address is left out because
/// address-space randomisation gives the same instruction a different address in every
/// process, and the same code from two pods must map to one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationRow {
    /// Content hash of `lines`.
    pub id: u64,
    /// `(function id, line number)`, the innermost inlined line first.
    pub lines: Vec<(u64, i64)>,
}

/// A call stack, identified by its locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRow {
    /// Content hash of `location_ids`.
    pub id: u64,
    /// Location ids, the leaf (where the sample was taken) first.
    pub location_ids: Vec<u64>,
}

/// One measured value of one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRow {
    /// The stack the value was measured in.
    pub stack_id: u64,
    /// What was measured, as `type:unit` (`cpu:nanoseconds`, `samples:count`).
    pub sample_type: String,
    /// The sum of the values of all samples of the profile with this stack, type and labels.
    pub value: i64,
    /// The sample's labels other than the span and trace ids, sorted by key then value.
    pub labels: Vec<(String, String)>,
    /// The span the sample ran in, as 16 lowercase hex digits.
    pub span_id: Option<String>,
    /// The trace the sample ran in, as 32 lowercase hex digits.
    pub trace_id: Option<String>,
}

/// Everything one profile adds to storage; each function, location and stack once, and
/// only those that a sample refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    /// The functions the locations refer to.
    pub functions: Vec<FunctionRow>,
    /// The locations the stacks refer to.
    pub locations: Vec<LocationRow>,
    /// The stacks the samples refer to.
    pub stacks: Vec<StackRow>,
    /// The samples, with non-zero values.
    pub samples: Vec<SampleRow>,
}

/// Turns a profile that passed [`decode`](super::pprof::decode) into rows. Identical
/// `(stack, sample type, labels)` samples are summed (saturating) and zero sums dropped.
///
/// References that do not resolve, which only a profile built without `decode` can have,
/// are skipped (a line without its function, a stack entry without its location) rather
/// than failing, so this never panics on any input.
pub fn to_rows(profile: &proto::Profile) -> Rows {
    let strings = &profile.string_table;

    let mut function_ids = HashMap::with_capacity(profile.function.len());
    let mut functions = HashMap::with_capacity(profile.function.len());
    for function in &profile.function {
        let row = FunctionRow::new(
            text(strings, function.name),
            text(strings, function.system_name),
            text(strings, function.filename),
            function.start_line,
        );
        function_ids.insert(function.id, row.id);
        functions.entry(row.id).or_insert(row);
    }

    let mut location_ids = HashMap::with_capacity(profile.location.len());
    let mut locations = HashMap::with_capacity(profile.location.len());
    for location in &profile.location {
        let mut lines: Vec<(u64, i64)> = location
            .line
            .iter()
            .filter_map(|line| Some((*function_ids.get(&line.function_id)?, line.line)))
            .collect();
        if location.line.is_empty() {
            // An unsymbolized location is shown the way pprof shows it, by its address,
            // under a function of that name. Addresses differ between processes, so such
            // frames de-duplicate only within one.
            let name = format!("0x{:x}", location.address);
            let function = FunctionRow::new(&name, &name, "", 0);
            lines.push((function.id, 0));
            functions.entry(function.id).or_insert(function);
        }
        let row = LocationRow::new(lines);
        location_ids.insert(location.id, row.id);
        locations.entry(row.id).or_insert(row);
    }

    let sample_types: Vec<String> = profile
        .sample_type
        .iter()
        .map(|value_type| {
            format!(
                "{}:{}",
                text(strings, value_type.r#type),
                text(strings, value_type.unit)
            )
        })
        .collect();

    // Samples are summed per (stack, labels) with one value per sample type, in the order
    // they first appear so that the output does not depend on hashing.
    let mut stacks = HashMap::new();
    let mut groups: Vec<(u64, SampleLabels, Vec<i64>)> = Vec::new();
    let mut group_index: HashMap<(u64, SampleLabels), usize> = HashMap::new();
    for sample in &profile.sample {
        let stack = StackRow::new(
            sample
                .location_id
                .iter()
                .filter_map(|id| location_ids.get(id).copied())
                .collect(),
        );
        let stack_id = stack.id;
        stacks.entry(stack_id).or_insert(stack);
        let labels = SampleLabels::new(strings, &sample.label);
        let position = match group_index.entry((stack_id, labels)) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                groups.push((stack_id, entry.key().1.clone(), vec![0; sample_types.len()]));
                *entry.insert(groups.len() - 1)
            }
        };
        let sums = &mut groups[position].2;
        for (sum, value) in sums.iter_mut().zip(&sample.value) {
            *sum = sum.saturating_add(*value);
        }
    }

    let mut rows = Rows::default();
    let mut emitted = HashSet::new();
    for (stack_id, labels, sums) in groups {
        for (sample_type, value) in sample_types.iter().zip(sums) {
            if value == 0 {
                continue;
            }
            rows.samples.push(SampleRow {
                stack_id,
                sample_type: sample_type.clone(),
                value,
                labels: labels.labels.clone(),
                span_id: labels.span_id.clone(),
                trace_id: labels.trace_id.clone(),
            });
            // Each kind's hashes start with its own tag, so ids of different kinds
            // collide no more often than ids of one kind, and one set tracks all three.
            if !emitted.insert(stack_id) {
                continue;
            }
            let Some(stack) = stacks.remove(&stack_id) else {
                continue;
            };
            for location_id in &stack.location_ids {
                if !emitted.insert(*location_id) {
                    continue;
                }
                let Some(location) = locations.remove(location_id) else {
                    continue;
                };
                for (function_id, _) in &location.lines {
                    if emitted.insert(*function_id)
                        && let Some(function) = functions.remove(function_id)
                    {
                        rows.functions.push(function);
                    }
                }
                rows.locations.push(location);
            }
            rows.stacks.push(stack);
        }
    }
    rows
}

/// The period between samples, as `(type:unit, period)`, or `None` when the profile does
/// not say (no `period_type` or a zero period), so that a caller converting counts to
/// time does not divide by a guess.
pub fn profile_period(profile: &proto::Profile) -> Option<(String, i64)> {
    let period_type = profile.period_type.as_ref()?;
    if profile.period == 0 {
        return None;
    }
    let strings = &profile.string_table;
    Some((
        format!(
            "{}:{}",
            text(strings, period_type.r#type),
            text(strings, period_type.unit)
        ),
        profile.period,
    ))
}

/// When a profile was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileTime {
    /// Start, in nanoseconds since the Unix epoch; `None` when the uploader left it unset
    /// (0) or negative, so the caller substitutes the time it received the profile.
    pub start_nanos: Option<i64>,
    /// How long the profile covers, in nanoseconds; `None` when unset or negative.
    pub duration_nanos: Option<i64>,
}

/// The profile's `time_nanos` and `duration_nanos`, with unset and impossible values as
/// `None` rather than 0, which would place the samples in 1970 or make rates infinite.
pub fn profile_time(profile: &proto::Profile) -> ProfileTime {
    let positive = |nanos: i64| (nanos > 0).then_some(nanos);
    ProfileTime {
        start_nanos: positive(profile.time_nanos),
        duration_nanos: positive(profile.duration_nanos),
    }
}

/// A bounded memory of the function, location and stack ids already written, so that a
/// writer skips rows it stored before. Forgetting an id only costs writing its row again
/// (readers see duplicates of identical rows), never a wrong answer, so the bound is
/// enforced by forgetting: when full, the oldest half (by first write) is dropped at once.
/// Dropping half rather than one at a time keeps the cost per id constant; dropping the
/// oldest rather than everything keeps the ids of recent uploads, which the next uploads
/// from the same services mostly repeat.
///
/// `retain_new` records ids as written when it lets their rows through. A writer whose
/// write then fails must call [`Dedup::clear`], or later samples would refer to rows that
/// were never stored; and `retain_new` and the write it filtered must happen under one
/// lock, or another upload could skip a row whose write is still in flight (or about to
/// fail) and have its samples refer to it.
#[derive(Debug, Clone)]
pub struct Dedup {
    capacity: usize,
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl Dedup {
    /// A memory of at most `capacity` ids (about 40 bytes each).
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            capacity,
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Removes from `rows` the functions, locations and stacks already written and records
    /// the rest as written. Samples are always kept.
    pub fn retain_new(&mut self, rows: &mut Rows) {
        rows.functions.retain(|row| self.record(row.id));
        rows.locations.retain(|row| self.record(row.id));
        rows.stacks.retain(|row| self.record(row.id));
    }

    /// Forgets every id, so the next rows are all written again.
    pub fn clear(&mut self) {
        self.order.clear();
        self.seen.clear();
    }

    /// Records `id`; true if it was new.
    fn record(&mut self, id: u64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.seen.contains(&id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            let forget = self.capacity.div_ceil(2);
            for old in self.order.drain(..forget) {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id);
        self.seen.insert(id);
        debug_assert_eq!(self.order.len(), self.seen.len(), "every id is recorded once");
        true
    }
}

impl FunctionRow {
    fn new(name: &str, system_name: &str, filename: &str, start_line: i64) -> FunctionRow {
        let mut hash = ContentHash::new(ContentHash::FUNCTION);
        hash.str(name);
        hash.str(system_name);
        hash.str(filename);
        hash.i64(start_line);
        FunctionRow {
            id: hash.finish(),
            name: name.to_owned(),
            system_name: system_name.to_owned(),
            filename: filename.to_owned(),
            start_line,
        }
    }
}

impl LocationRow {
    fn new(lines: Vec<(u64, i64)>) -> LocationRow {
        let mut hash = ContentHash::new(ContentHash::LOCATION);
        hash.len(lines.len());
        for &(function_id, line) in &lines {
            hash.u64(function_id);
            hash.i64(line);
        }
        LocationRow {
            id: hash.finish(),
            lines,
        }
    }
}

impl StackRow {
    fn new(location_ids: Vec<u64>) -> StackRow {
        let mut hash = ContentHash::new(ContentHash::STACK);
        hash.len(location_ids.len());
        for &location_id in &location_ids {
            hash.u64(location_id);
        }
        StackRow {
            id: hash.finish(),
            location_ids,
        }
    }
}

/// The labels of one pprof sample, split as storage keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SampleLabels {
    labels: Vec<(String, String)>,
    span_id: Option<String>,
    trace_id: Option<String>,
}

impl SampleLabels {
    /// Splits off the span and trace ids, and writes numeric labels as `<num><unit>`. As in
    /// Go's pprof package, a label with a non-empty string value is a string label and any
    /// other a numeric one.
    ///
    /// A span or trace id that is not the hex of a non-zero id of the right length could
    /// never match a stored span, so it is dropped, as is a numeric one; both names stay out
    /// of `labels` whatever their value, as each id would otherwise make its own series.
    /// Of repeated ids the first valid one wins.
    fn new(strings: &[String], labels: &[proto::Label]) -> SampleLabels {
        let mut split = SampleLabels {
            labels: Vec::with_capacity(labels.len()),
            span_id: None,
            trace_id: None,
        };
        for label in labels {
            let key = text(strings, label.key);
            let value = text(strings, label.str);
            match key {
                SPAN_ID_LABEL => {
                    if split.span_id.is_none() {
                        split.span_id = normalize_id(value, 8);
                    }
                }
                TRACE_ID_LABEL => {
                    if split.trace_id.is_none() {
                        split.trace_id = normalize_id(value, 16);
                    }
                }
                _ if !value.is_empty() => split.labels.push((key.to_owned(), value.to_owned())),
                _ => split.labels.push((
                    key.to_owned(),
                    format!("{}{}", label.num, text(strings, label.num_unit)),
                )),
            }
        }
        split.labels.sort_unstable();
        split.labels.dedup();
        split
    }
}

/// `value` as lowercase hex if it is the hex of a non-zero id of `bytes` bytes, the form
/// the trace store keeps span and trace ids in.
fn normalize_id(value: &str, bytes: usize) -> Option<String> {
    let id = hex::decode(value).ok()?;
    (id.len() == bytes && id.iter().any(|&byte| byte != 0)).then(|| hex::encode(id))
}

/// The string at `index`, or "" for an index that a profile built without `decode` may
/// have out of range.
fn text(strings: &[String], index: i64) -> &str {
    usize::try_from(index)
        .ok()
        .and_then(|index| strings.get(index))
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds profiles from `(leaf-first function names, value, labels)` samples, with one
    /// function and location per name; `address_base` shifts every address, as another
    /// process's address-space layout would.
    struct Builder {
        profile: proto::Profile,
    }

    impl Builder {
        fn new(sample_types: &[(&str, &str)], address_base: u64) -> Builder {
            let mut builder = Builder {
                profile: proto::Profile {
                    string_table: vec![String::new()],
                    ..proto::Profile::default()
                },
            };
            for &(r#type, unit) in sample_types {
                let value_type = proto::ValueType {
                    r#type: builder.string(r#type),
                    unit: builder.string(unit),
                };
                builder.profile.sample_type.push(value_type);
            }
            builder.profile.mapping.push(proto::Mapping {
                id: 1,
                memory_start: address_base,
                ..proto::Mapping::default()
            });
            builder
        }

        fn string(&mut self, value: &str) -> i64 {
            let table = &mut self.profile.string_table;
            let index = table.iter().position(|s| s == value).unwrap_or_else(|| {
                table.push(value.to_owned());
                table.len() - 1
            });
            i64::try_from(index).expect("small table")
        }

        fn location(&mut self, name: &str) -> u64 {
            let name_index = self.string(name);
            let file = self.string("app.rs");
            let existing = self
                .profile
                .function
                .iter()
                .find(|function| function.name == name_index);
            if let Some(function) = existing {
                let function_id = function.id;
                let location = self
                    .profile
                    .location
                    .iter()
                    .find(|l| l.line[0].function_id == function_id);
                return location.expect("one location per function").id;
            }
            let id = self.profile.function.len() as u64 + 1;
            self.profile.function.push(proto::Function {
                id,
                name: name_index,
                system_name: name_index,
                filename: file,
                start_line: 1,
            });
            let base = self.profile.mapping[0].memory_start;
            let line = vec![proto::Line {
                function_id: id,
                line: 10 * id as i64,
                column: 0,
            }];
            self.profile.location.push(proto::Location {
                id,
                mapping_id: 1,
                address: base + 0x10 * id,
                line,
                is_folded: false,
            });
            id
        }

        fn sample(mut self, stack: &[&str], values: &[i64], labels: &[(&str, &str)]) -> Builder {
            let location_id = stack.iter().map(|name| self.location(name)).collect();
            let label = labels
                .iter()
                .map(|&(key, value)| proto::Label {
                    key: self.string(key),
                    str: self.string(value),
                    num: 0,
                    num_unit: 0,
                })
                .collect();
            self.profile.sample.push(proto::Sample {
                location_id,
                value: values.to_vec(),
                label,
            });
            self
        }

        fn build(self) -> proto::Profile {
            self.profile
        }
    }

    fn names(rows: &Rows, stack: &StackRow) -> Vec<String> {
        stack
            .location_ids
            .iter()
            .map(|id| {
                let location = rows.locations.iter().find(|l| l.id == *id).expect("location emitted");
                let function = rows
                    .functions
                    .iter()
                    .find(|f| f.id == location.lines[0].0)
                    .expect("function emitted");
                function.name.clone()
            })
            .collect()
    }

    #[test]
    fn stored_ids_are_pinned() {
        // Stored ids must never change: pin one of each kind (values cross-checked with an
        // independent implementation of the encoding).
        let function = FunctionRow::new("main", "_ZN4main", "main.rs", 3);
        let location = LocationRow::new(vec![(function.id, 7)]);
        let stack = StackRow::new(vec![location.id]);
        assert_eq!(
            (function.id, location.id, stack.id),
            (0x3832_464a_b1af_e7e1, 0xf7e7_e8da_2f5b_fc4b, 0x50cd_b3f0_b36d_0d9c),
            "{:#x} {:#x} {:#x}",
            function.id,
            location.id,
            stack.id
        );
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let a = FunctionRow::new("ab", "c", "", 0);
        let b = FunctionRow::new("a", "bc", "", 0);
        assert_ne!(a.id, b.id);
        assert_ne!(LocationRow::new(vec![(1, 2)]).id, StackRow::new(vec![1, 2]).id);
        assert_ne!(StackRow::new(vec![]).id, StackRow::new(vec![0]).id);
    }

    #[test]
    fn identical_samples_are_summed_and_zero_sums_dropped() {
        let profile = Builder::new(&[("samples", "count"), ("cpu", "nanoseconds")], 0)
            .sample(&["leaf", "main"], &[1, 10], &[])
            .sample(&["leaf", "main"], &[2, 20], &[])
            .sample(&["other", "main"], &[0, 5], &[])
            .sample(&["gone", "main"], &[3, 0], &[])
            .sample(&["gone", "main"], &[-3, 0], &[])
            .build();
        let rows = to_rows(&profile);
        let summary: Vec<(Vec<String>, &str, i64)> = rows
            .samples
            .iter()
            .map(|sample| {
                let stack = rows
                    .stacks
                    .iter()
                    .find(|s| s.id == sample.stack_id)
                    .expect("stack emitted");
                (names(&rows, stack), sample.sample_type.as_str(), sample.value)
            })
            .collect();
        let stack = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                (stack(&["leaf", "main"]), "samples:count", 3),
                (stack(&["leaf", "main"]), "cpu:nanoseconds", 30),
                (stack(&["other", "main"]), "cpu:nanoseconds", 5),
            ]
        );
        // Rows only for what the samples use: "gone" summed to zero and is not written.
        assert_eq!(rows.stacks.len(), 2);
        assert_eq!(rows.locations.len(), 3);
        let mut functions: Vec<&str> = rows.functions.iter().map(|f| f.name.as_str()).collect();
        functions.sort_unstable();
        assert_eq!(functions, ["leaf", "main", "other"]);
    }

    #[test]
    fn labels_split_into_span_trace_and_sorted_pairs() {
        let span = "00F067AA0BA902B7";
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut profile = Builder::new(&[("cpu", "nanoseconds")], 0)
            .sample(
                &["a"],
                &[5],
                &[
                    ("span_id", span),
                    ("trace_id", trace),
                    ("thread", "t1"),
                    ("endpoint", "/x"),
                ],
            )
            .sample(
                &["a"],
                &[7],
                &[
                    ("endpoint", "/x"),
                    ("thread", "t1"),
                    ("trace_id", trace),
                    ("span_id", span),
                ],
            )
            .sample(
                &["a"],
                &[1],
                &[("span_id", "not hex"), ("trace_id", "0000000000000000000000000000000")],
            )
            .sample(
                &["a"],
                &[2],
                &[("span_id", "0000000000000000"), ("span_id", "0102030405060708")],
            )
            .build();
        let bytes = proto::Label {
            key: 0,
            str: 0,
            num: 4096,
            num_unit: 0,
        };
        let (key, unit) = (profile.string_table.len() as i64, profile.string_table.len() as i64 + 1);
        profile.string_table.extend(["alloc".to_owned(), "bytes".to_owned()]);
        profile.sample[0].label.push(proto::Label {
            key,
            num_unit: unit,
            ..bytes
        });
        profile.sample[1].label.push(proto::Label {
            key,
            num_unit: unit,
            ..bytes
        });
        profile.sample[3].label.push(proto::Label { key, ..bytes });

        let rows = to_rows(&profile);
        assert_eq!(
            rows.samples.len(),
            3,
            "the first two samples have the same labels in another order"
        );
        let labelled = &rows.samples[0];
        assert_eq!(labelled.value, 12);
        assert_eq!(labelled.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(labelled.trace_id.as_deref(), Some(trace));
        let pairs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labelled.labels,
            pairs(&[("alloc", "4096bytes"), ("endpoint", "/x"), ("thread", "t1")])
        );
        let invalid = &rows.samples[1];
        assert_eq!((invalid.span_id.as_deref(), invalid.trace_id.as_deref()), (None, None));
        assert!(invalid.labels.is_empty(), "invalid ids stay out of the labels too");
        let second_valid = &rows.samples[2];
        assert_eq!(second_valid.span_id.as_deref(), Some("0102030405060708"));
        assert_eq!(second_valid.labels, pairs(&[("alloc", "4096")]));
    }

    #[test]
    fn the_same_code_in_two_processes_dedupes() {
        let first = Builder::new(&[("cpu", "nanoseconds")], 0x5555_0000)
            .sample(&["leaf", "mid", "main"], &[10], &[])
            .sample(&["mid", "main"], &[5], &[])
            .build();
        let second = Builder::new(&[("cpu", "nanoseconds")], 0x7fff_0000)
            .sample(&["leaf", "mid", "main"], &[20], &[])
            .sample(&["new", "main"], &[1], &[])
            .build();
        let mut first_rows = to_rows(&first);
        let mut second_rows = to_rows(&second);
        assert_eq!(first_rows.samples[0].stack_id, second_rows.samples[0].stack_id);

        let mut dedup = Dedup::new(1000);
        dedup.retain_new(&mut first_rows);
        assert_eq!(
            (
                first_rows.functions.len(),
                first_rows.locations.len(),
                first_rows.stacks.len()
            ),
            (3, 3, 2)
        );
        dedup.retain_new(&mut second_rows);
        let new_functions: Vec<&str> = second_rows.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(new_functions, ["new"]);
        assert_eq!(second_rows.locations.len(), 1);
        assert_eq!(second_rows.stacks.len(), 1);
        assert_eq!(second_rows.samples.len(), 2, "samples are never deduplicated");

        dedup.clear();
        let mut again = to_rows(&second);
        dedup.retain_new(&mut again);
        assert_eq!(
            again.stacks.len(),
            2,
            "after a failed write everything is written again"
        );
    }

    #[test]
    fn a_full_dedup_forgets_its_oldest_half() {
        let mut dedup = Dedup::new(4);
        for id in 1..=4 {
            assert!(dedup.record(id));
        }
        assert!(!dedup.record(4));
        assert!(dedup.record(5), "full: 1 and 2 are forgotten");
        assert!(!dedup.record(3));
        assert!(!dedup.record(5));
        assert!(dedup.record(1));
        assert!(dedup.record(2), "full again: 3 and 4 are forgotten, 5, 1 and 2 remain");
        assert!(!dedup.record(5) && !dedup.record(1) && !dedup.record(2));
        assert_eq!(dedup.order.len(), 3);
        assert!(dedup.record(3));
        let mut none = Dedup::new(0);
        assert!(none.record(1) && none.record(1), "a zero capacity remembers nothing");
    }

    #[test]
    fn period_and_time_are_none_when_unset() {
        let mut profile = Builder::new(&[("samples", "count")], 0).build();
        assert_eq!(profile_period(&profile), None);
        assert_eq!(
            profile_time(&profile),
            ProfileTime {
                start_nanos: None,
                duration_nanos: None
            }
        );
        let cpu = proto::ValueType { r#type: 0, unit: 0 };
        profile.period_type = Some(cpu);
        assert_eq!(profile_period(&profile), None, "a zero period says nothing");
        profile
            .string_table
            .extend(["cpu".to_owned(), "nanoseconds".to_owned()]);
        let len = profile.string_table.len() as i64;
        profile.period_type = Some(proto::ValueType {
            r#type: len - 2,
            unit: len - 1,
        });
        profile.period = 10_000_000;
        profile.time_nanos = 1_700_000_000_000_000_000;
        profile.duration_nanos = -1;
        assert_eq!(
            profile_period(&profile),
            Some(("cpu:nanoseconds".to_owned(), 10_000_000))
        );
        assert_eq!(
            profile_time(&profile),
            ProfileTime {
                start_nanos: Some(1_700_000_000_000_000_000),
                duration_nanos: None
            }
        );
    }

    #[test]
    fn inlined_lines_share_a_location_row_innermost_first() {
        let mut profile = Builder::new(&[("cpu", "nanoseconds")], 0)
            .sample(&["outer"], &[1], &[])
            .build();
        let inner_name = profile.string_table.len() as i64;
        profile.string_table.push("inner".to_owned());
        profile.function.push(proto::Function {
            id: 9,
            name: inner_name,
            system_name: 0,
            filename: 0,
            start_line: 0,
        });
        profile.location[0].line.insert(
            0,
            proto::Line {
                function_id: 9,
                line: 77,
                column: 0,
            },
        );
        let rows = to_rows(&profile);
        let names: Vec<(&str, i64)> = rows.locations[0]
            .lines
            .iter()
            .map(|(id, line)| {
                (
                    rows.functions
                        .iter()
                        .find(|f| f.id == *id)
                        .expect("emitted")
                        .name
                        .as_str(),
                    *line,
                )
            })
            .collect();
        assert_eq!(names, [("inner", 77), ("outer", 10)]);
    }

    #[test]
    fn unresolved_references_are_skipped_without_panicking() {
        let mut profile = Builder::new(&[("cpu", "nanoseconds")], 0)
            .sample(&["a", "b"], &[1], &[])
            .build();
        profile.sample[0].location_id.push(99);
        profile.location[0].line[0].function_id = 99;
        profile.function[1].name = 1000;
        profile.sample[0].value.push(5);
        let rows = to_rows(&profile);
        assert_eq!(rows.samples.len(), 1);
        assert_eq!(rows.stacks[0].location_ids.len(), 2);
        assert_eq!(rows.locations.iter().map(|l| l.lines.len()).sum::<usize>(), 1);
        assert_eq!(rows.functions[0].name, "");
    }
}
