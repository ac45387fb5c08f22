//! The query side: stacks read back from storage, merged, and rendered as pprof, folded
//! stacks, a flame graph tree, a top-functions table or a diff of two profiles.
//!
//! Every output skips stacks whose values summed to zero, and is deterministic: the same
//! stacks added in the same order give the same bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use meshlight_profiler::proto;

/// One frame of a stack, as storage resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// Function name.
    pub function: String,
    /// Source file.
    pub filename: String,
    /// Line number (0 if unknown).
    pub line: i64,
}

/// Stacks with their summed values. Frames are interned, so a stack costs one index per
/// frame however long the names are.
#[derive(Debug, Clone, Default)]
pub struct MergedProfile {
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, usize>,
    /// Interned frames, leaf first, and their summed value.
    stacks: HashMap<Vec<usize>, i64>,
}

/// A row of the top-functions table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopEntry {
    /// Function name; functions of the same name in different files count as one, as in
    /// the flame graph.
    pub function: String,
    /// Value of the samples taken in the function itself.
    pub self_value: i64,
    /// Value of the samples with the function anywhere on the stack, each counted once
    /// however often the function recurses.
    pub total_value: i64,
    /// `self_value` as a fraction of the profile's total (0 for an empty profile).
    pub self_share: f64,
    /// `total_value` as a fraction of the profile's total.
    pub total_share: f64,
}

impl MergedProfile {
    /// An empty profile.
    pub fn new() -> MergedProfile {
        MergedProfile::default()
    }

    /// Adds `value` to `stack` (leaf first), summing (saturating) with earlier adds of the
    /// same stack. A stack without frames is ignored: no output has a place for it.
    pub fn add(&mut self, stack: &[Frame], value: i64) {
        if stack.is_empty() {
            return;
        }
        let key: Vec<usize> = stack.iter().map(|frame| self.intern(frame)).collect();
        let sum = self.stacks.entry(key).or_insert(0);
        *sum = sum.saturating_add(value);
    }

    /// A pprof profile of the stacks, with one sample type, that any pprof reader accepts:
    /// `string_table[0]` is "", one function per (name, file) and one location per
    /// (function, line), with ids counting from 1.
    pub fn to_pprof(
        &self,
        sample_type: (&str, &str),
        period: Option<((&str, &str), i64)>,
        time_nanos: i64,
        duration_nanos: i64,
    ) -> proto::Profile {
        let mut strings = StringTable::default();
        let mut profile = proto::Profile {
            sample_type: vec![strings.value_type(sample_type)],
            time_nanos,
            duration_nanos,
            ..proto::Profile::default()
        };
        if let Some((period_type, period)) = period {
            profile.period_type = Some(strings.value_type(period_type));
            profile.period = period;
        }
        let mut function_ids: HashMap<(&str, &str), u64> = HashMap::new();
        let mut location_ids: HashMap<usize, u64> = HashMap::new();
        for (stack, value) in self.sorted_stacks() {
            let mut location_id = Vec::with_capacity(stack.len());
            for &frame_index in stack {
                let next_location_id = location_ids.len() as u64 + 1;
                let id = *location_ids.entry(frame_index).or_insert(next_location_id);
                location_id.push(id);
                if id != next_location_id {
                    continue;
                }
                let frame = &self.frames[frame_index];
                let next_function_id = function_ids.len() as u64 + 1;
                let function_id = *function_ids
                    .entry((&frame.function, &frame.filename))
                    .or_insert(next_function_id);
                if function_id == next_function_id {
                    let name = strings.index(&frame.function);
                    profile.function.push(proto::Function {
                        id: function_id,
                        name,
                        system_name: name,
                        filename: strings.index(&frame.filename),
                        start_line: 0,
                    });
                }
                profile.location.push(proto::Location {
                    id,
                    line: vec![proto::Line {
                        function_id,
                        line: frame.line,
                        column: 0,
                    }],
                    ..proto::Location::default()
                });
            }
            profile.sample.push(proto::Sample {
                location_id,
                value: vec![value],
                label: Vec::new(),
            });
        }
        profile.string_table = strings.strings;
        profile
    }

    /// Brendan Gregg's folded stacks: one `root;…;leaf value` line per stack of function
    /// names, sorted, with stacks that differ only in files or lines summed into one line.
    /// In names, `;` (the frame separator) becomes `:` and line breaks (the record
    /// separator) become spaces.
    pub fn to_folded(&self) -> String {
        let mut lines: BTreeMap<String, i64> = BTreeMap::new();
        for (stack, value) in self.sorted_stacks() {
            let names: Vec<String> = stack
                .iter()
                .rev()
                .map(|&frame| folded_name(&self.frames[frame].function))
                .collect();
            let sum = lines.entry(names.join(";")).or_insert(0);
            *sum = sum.saturating_add(value);
        }
        let mut folded = String::new();
        for (line, value) in lines {
            if value != 0 {
                folded.push_str(&format!("{line} {value}\n"));
            }
        }
        folded
    }

    /// A flame graph tree of function names: the root `total`, then each node's callees,
    /// sorted by name. Each node has `name`, `value` (its total), `self` and `children`.
    pub fn to_flamegraph(&self) -> serde_json::Value {
        let mut tree = Tree::<1>::new();
        self.add_to(&mut tree, 0);
        tree.into_json(|total, self_value| serde_json::json!({ "value": total[0], "self": self_value[0] }))
    }

    /// The `limit` functions with the most self value, then total value, then by name.
    pub fn top(&self, limit: usize) -> Vec<TopEntry> {
        let mut values: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut grand_total = 0i64;
        let mut on_stack = HashSet::new();
        for (stack, value) in self.sorted_stacks() {
            grand_total = grand_total.saturating_add(value);
            on_stack.clear();
            for (depth, &frame) in stack.iter().enumerate() {
                let name = self.frames[frame].function.as_str();
                let entry = values.entry(name).or_insert((0, 0));
                if depth == 0 {
                    entry.0 = entry.0.saturating_add(value);
                }
                if on_stack.insert(name) {
                    entry.1 = entry.1.saturating_add(value);
                }
            }
        }
        let share = |value: i64| {
            if grand_total == 0 {
                0.0
            } else {
                value as f64 / grand_total as f64
            }
        };
        let mut entries: Vec<TopEntry> = values
            .into_iter()
            .map(|(function, (self_value, total_value))| TopEntry {
                function: function.to_owned(),
                self_value,
                total_value,
                self_share: share(self_value),
                total_share: share(total_value),
            })
            .collect();
        entries.sort_by(|a, b| {
            b.self_value
                .cmp(&a.self_value)
                .then(b.total_value.cmp(&a.total_value))
                .then_with(|| a.function.cmp(&b.function))
        });
        entries.truncate(limit);
        entries
    }

    fn intern(&mut self, frame: &Frame) -> usize {
        if let Some(&index) = self.frame_ids.get(frame) {
            return index;
        }
        self.frames.push(frame.clone());
        self.frame_ids.insert(frame.clone(), self.frames.len() - 1);
        self.frames.len() - 1
    }

    /// The non-zero stacks in a fixed order, so that outputs do not depend on hashing.
    fn sorted_stacks(&self) -> Vec<(&[usize], i64)> {
        let mut stacks: Vec<(&[usize], i64)> = self
            .stacks
            .iter()
            .filter(|(_, value)| **value != 0)
            .map(|(stack, value)| (stack.as_slice(), *value))
            .collect();
        stacks.sort_unstable();
        stacks
    }

    fn add_to<const N: usize>(&self, tree: &mut Tree<N>, column: usize) {
        for (stack, value) in self.sorted_stacks() {
            tree.add(
                stack.iter().rev().map(|&frame| self.frames[frame].function.as_str()),
                value,
                column,
            );
        }
    }
}

/// The flame graph of `target` against `base`: the union of both trees, each node with
/// `base`, `target` and `delta` (target − base), each `{"value": total, "self": self}`.
pub fn diff(base: &MergedProfile, target: &MergedProfile) -> serde_json::Value {
    let mut tree = Tree::<2>::new();
    base.add_to(&mut tree, 0);
    target.add_to(&mut tree, 1);
    tree.into_json(|total, self_value| {
        serde_json::json!({
            "base": { "value": total[0], "self": self_value[0] },
            "target": { "value": total[1], "self": self_value[1] },
            "delta": {
                "value": total[1].saturating_sub(total[0]),
                "self": self_value[1].saturating_sub(self_value[0]),
            },
        })
    })
}

/// Gzip-compresses an encoded profile, the form `go tool pprof` and browsers download.
pub fn gzip_pprof(profile: &proto::Profile) -> Vec<u8> {
    let encoded = prost::Message::encode_to_vec(profile);
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(encoded.len() / 4), flate2::Compression::default());
    // Writing into a Vec cannot fail: the encoder's only errors are its writer's.
    encoder.write_all(&encoded).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

fn folded_name(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

/// A call tree keyed by function name, with `N` value columns (one for a flame graph, two
/// for a diff). Nodes live in one vector and a child always comes after its parent, which
/// lets [`Tree::into_json`] build the nested JSON bottom-up in one loop instead of recursing
/// once per level of the deepest stack.
struct Tree<const N: usize> {
    nodes: Vec<Node<N>>,
}

struct Node<const N: usize> {
    name: String,
    children: BTreeMap<String, usize>,
    total: [i64; N],
    self_value: [i64; N],
}

impl<const N: usize> Tree<N> {
    fn new() -> Tree<N> {
        Tree {
            nodes: vec![Node {
                name: "total".to_owned(),
                children: BTreeMap::new(),
                total: [0; N],
                self_value: [0; N],
            }],
        }
    }

    /// Adds `value` in `column` along `names`, root first.
    fn add<'a>(&mut self, names: impl Iterator<Item = &'a str>, value: i64, column: usize) {
        let mut node = 0;
        self.nodes[node].total[column] = self.nodes[node].total[column].saturating_add(value);
        for name in names {
            node = self.child(node, name);
            self.nodes[node].total[column] = self.nodes[node].total[column].saturating_add(value);
        }
        self.nodes[node].self_value[column] = self.nodes[node].self_value[column].saturating_add(value);
    }

    fn child(&mut self, parent: usize, name: &str) -> usize {
        if let Some(&child) = self.nodes[parent].children.get(name) {
            return child;
        }
        let child = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_owned(),
            children: BTreeMap::new(),
            total: [0; N],
            self_value: [0; N],
        });
        self.nodes[parent].children.insert(name.to_owned(), child);
        child
    }

    /// The tree as nested JSON objects: `name`, the fields `values` makes from a node's
    /// totals and selfs, and `children` in name order.
    fn into_json(self, values: impl Fn(&[i64; N], &[i64; N]) -> serde_json::Value) -> serde_json::Value {
        let mut built: Vec<Option<serde_json::Value>> = vec![None; self.nodes.len()];
        for (index, node) in self.nodes.iter().enumerate().rev() {
            let children: Vec<serde_json::Value> = node
                .children
                .values()
                .filter_map(|&child| built[child].take())
                .collect();
            let mut object = serde_json::Map::new();
            object.insert("name".to_owned(), node.name.clone().into());
            if let serde_json::Value::Object(fields) = values(&node.total, &node.self_value) {
                object.extend(fields);
            }
            object.insert("children".to_owned(), children.into());
            built[index] = Some(object.into());
        }
        built.into_iter().next().flatten().unwrap_or_default()
    }
}

/// A pprof string table under construction: "" first, each string once.
struct StringTable {
    strings: Vec<String>,
    indices: HashMap<String, i64>,
}

impl Default for StringTable {
    fn default() -> StringTable {
        StringTable {
            strings: vec![String::new()],
            indices: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl StringTable {
    fn index(&mut self, value: &str) -> i64 {
        if let Some(&index) = self.indices.get(value) {
            return index;
        }
        let index = self.strings.len() as i64;
        self.strings.push(value.to_owned());
        self.indices.insert(value.to_owned(), index);
        index
    }

    fn value_type(&mut self, (r#type, unit): (&str, &str)) -> proto::ValueType {
        proto::ValueType {
            r#type: self.index(r#type),
            unit: self.index(unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    // Sibling modules by relative path, so the tests need no change when the folder moves.
    use super::super::model::{self, Rows, SampleRow};
    use super::super::pprof::{DecodeLimits, decode};

    fn frame(function: &str) -> Frame {
        Frame {
            function: function.to_owned(),
            filename: format!("{function}.rs"),
            line: 1,
        }
    }

    /// A profile from `(leaf-first names, value)` stacks, one frame per name.
    fn merged(stacks: &[(&[&str], i64)]) -> MergedProfile {
        let mut profile = MergedProfile::new();
        for (names, value) in stacks {
            let frames: Vec<Frame> = names.iter().map(|name| frame(name)).collect();
            profile.add(&frames, *value);
        }
        profile
    }

    /// Every non-zero stack with its frames resolved, independent of interning order.
    fn stacks(profile: &MergedProfile) -> BTreeMap<Vec<Frame>, i64> {
        let resolve = |stack: &[usize]| stack.iter().map(|&frame| profile.frames[frame].clone()).collect();
        profile
            .sorted_stacks()
            .into_iter()
            .map(|(stack, value)| (resolve(stack), value))
            .collect()
    }

    /// Reads a pprof profile back into a merged profile, as the query side would from rows.
    fn remerge(profile: &proto::Profile) -> MergedProfile {
        let text = |index: i64| profile.string_table[usize::try_from(index).expect("valid")].clone();
        let mut merged = MergedProfile::new();
        for sample in &profile.sample {
            let mut stack = Vec::new();
            for id in &sample.location_id {
                let location = profile.location.iter().find(|l| l.id == *id).expect("defined");
                for line in &location.line {
                    let function = profile
                        .function
                        .iter()
                        .find(|f| f.id == line.function_id)
                        .expect("defined");
                    stack.push(Frame {
                        function: text(function.name),
                        filename: text(function.filename),
                        line: line.line,
                    });
                }
            }
            merged.add(&stack, sample.value[0]);
        }
        merged
    }

    /// Joins rows back into frames for one sample type, as the query side does from storage.
    fn join(rows: &Rows, sample_type: &str, keep: impl Fn(&SampleRow) -> bool) -> MergedProfile {
        let mut merged = MergedProfile::new();
        for sample in rows
            .samples
            .iter()
            .filter(|sample| sample.sample_type == sample_type && keep(sample))
        {
            let stack = rows
                .stacks
                .iter()
                .find(|stack| stack.id == sample.stack_id)
                .expect("stack row");
            let mut frames = Vec::new();
            for location_id in &stack.location_ids {
                let location = rows
                    .locations
                    .iter()
                    .find(|location| location.id == *location_id)
                    .expect("location row");
                for (function_id, line) in &location.lines {
                    let function = rows
                        .functions
                        .iter()
                        .find(|function| function.id == *function_id)
                        .expect("function row");
                    frames.push(Frame {
                        function: function.name.clone(),
                        filename: function.filename.clone(),
                        line: *line,
                    });
                }
            }
            merged.add(&frames, sample.value);
        }
        merged
    }

    /// A CPU profile written by Go 1.19's `runtime/pprof`: `main.fib` recursing under
    /// `main.spin`, 250 ms of it inside `pprof.Do` with `span_id`, `trace_id` and `endpoint`
    /// labels. The expected numbers are what `go tool pprof -top` and `-tags` print for it.
    #[test]
    fn a_real_go_profile_reads_as_go_tool_pprof_reads_it() {
        let body = include_bytes!("testdata/go_cpu_labels.pb.gz");
        let profile = decode(body, &DecodeLimits::default()).expect("Go's own output is valid");
        assert_eq!(profile.location.len(), 21);
        let rows = model::to_rows(&profile);
        // fib's 14 addresses are on 4 lines: the 21 locations are 11 source lines.
        assert_eq!(rows.locations.len(), 11);

        let cpu = join(&rows, "cpu:nanoseconds", |_| true);
        let top = cpu.top(3);
        let rows_of_top: Vec<(&str, i64, i64)> = top
            .iter()
            .map(|e| (e.function.as_str(), e.self_value, e.total_value))
            .collect();
        assert_eq!(
            rows_of_top,
            [
                ("main.fib", 360_000_000, 380_000_000),
                ("runtime.asyncPreempt", 20_000_000, 20_000_000),
                ("main.main", 0, 380_000_000)
            ]
        );
        let samples = join(&rows, "samples:count", |_| true);
        assert_eq!(samples.to_flamegraph()["value"], 38);

        let in_span = |sample: &SampleRow| sample.span_id.as_deref() == Some("00f067aa0ba902b7");
        let labelled: Vec<_> = rows.samples.iter().filter(|sample| in_span(sample)).collect();
        assert!(labelled.iter().all(|sample| {
            sample.trace_id.as_deref() == Some("4bf92f3577b34da6a3ce929d0e0e4736")
                && sample.labels == [("endpoint".to_owned(), "/checkout".to_owned())]
        }));
        assert_eq!(
            join(&rows, "cpu:nanoseconds", in_span).to_flamegraph()["value"],
            250_000_000
        );
        assert!(
            rows.samples
                .iter()
                .filter(|sample| !in_span(sample))
                .all(|sample| sample.labels.is_empty())
        );

        assert_eq!(
            model::profile_period(&profile),
            Some(("cpu:nanoseconds".to_owned(), 10_000_000))
        );
        let period = Some((("cpu", "nanoseconds"), 10_000_000));
        let pprof = cpu.to_pprof(
            ("cpu", "nanoseconds"),
            period,
            profile.time_nanos,
            profile.duration_nanos,
        );
        let reread = decode(&gzip_pprof(&pprof), &DecodeLimits::default()).expect("valid pprof");
        assert_eq!(
            join(&model::to_rows(&reread), "cpu:nanoseconds", |_| true).to_folded(),
            cpu.to_folded()
        );
    }

    fn sample_profile() -> MergedProfile {
        let mut profile = merged(&[
            (&["leaf", "work", "main"], 30),
            (&["work", "main"], 10),
            (&["idle", "main"], 5),
            (&["leaf", "work", "main"], 20),
            (&["gone", "main"], 7),
            (&["gone", "main"], -7),
        ]);
        // `work` at another line: one more location, the same function.
        let other_line = Frame {
            line: 2,
            ..frame("work")
        };
        profile.add(&[frame("leaf"), other_line, frame("main")], 1);
        profile
    }

    #[test]
    fn pprof_output_decodes_and_remerges_to_the_same_stacks() {
        let profile = sample_profile();
        let pprof = profile.to_pprof(
            ("cpu", "nanoseconds"),
            Some((("cpu", "nanoseconds"), 10_000_000)),
            1_700_000_000,
            10,
        );
        let gzipped = gzip_pprof(&pprof);
        let decoded = decode(&gzipped, &DecodeLimits::default()).expect("valid pprof");
        assert_eq!(decoded, pprof);
        let remerged = remerge(&decoded);
        assert_eq!(remerged.to_folded(), profile.to_folded());
        assert_eq!(stacks(&remerged), stacks(&profile), "files and lines survive too");

        assert_eq!(decoded.string_table[0], "");
        let names: Vec<&str> = decoded
            .function
            .iter()
            .map(|f| decoded.string_table[usize::try_from(f.name).expect("valid")].as_str())
            .collect();
        assert_eq!(names.len(), 4, "one function per (name, file): {names:?}");
        assert_eq!(decoded.location.len(), 5, "one location per (function, line)");
        assert_eq!(decoded.sample.len(), 4, "the stack summed to zero is left out");
        assert_eq!(decoded.period, 10_000_000);
        assert_eq!((decoded.time_nanos, decoded.duration_nanos), (1_700_000_000, 10));
        let ids: HashSet<u64> = decoded.location.iter().map(|l| l.id).collect();
        assert_eq!(ids.len(), decoded.location.len());
        assert!(!ids.contains(&0));
    }

    #[test]
    fn pprof_output_is_deterministic() {
        let first = sample_profile().to_pprof(("samples", "count"), None, 0, 0);
        let second = sample_profile().to_pprof(("samples", "count"), None, 0, 0);
        assert_eq!(gzip_pprof(&first), gzip_pprof(&second));
        assert_eq!(first.period_type, None);
        let empty = MergedProfile::new().to_pprof(("samples", "count"), None, 0, 0);
        assert!(
            decode(&gzip_pprof(&empty), &DecodeLimits::default()).is_ok(),
            "an empty result is still a profile"
        );
    }

    #[test]
    fn folded_stacks_are_root_first_sorted_and_summed_by_name() {
        assert_eq!(
            sample_profile().to_folded(),
            "main;idle 5\nmain;work 10\nmain;work;leaf 51\n"
        );
        assert_eq!(MergedProfile::new().to_folded(), "");
    }

    #[test]
    fn folded_names_cannot_break_the_format() {
        let profile = merged(&[(&["operator;()", "multi\nline\r\nname"], 3)]);
        assert_eq!(profile.to_folded(), "multi line  name;operator:() 3\n");
    }

    #[test]
    fn the_flamegraph_is_a_sorted_tree_with_totals_and_selfs() {
        let profile = merged(&[(&["b", "main"], 3), (&["a", "main"], 2), (&["main"], 1), (&["x"], 4)]);
        let expected = json!({
            "name": "total", "value": 10, "self": 0, "children": [
                { "name": "main", "value": 6, "self": 1, "children": [
                    { "name": "a", "value": 2, "self": 2, "children": [] },
                    { "name": "b", "value": 3, "self": 3, "children": [] },
                ]},
                { "name": "x", "value": 4, "self": 4, "children": [] },
            ]
        });
        assert_eq!(profile.to_flamegraph(), expected);
        assert_eq!(
            MergedProfile::new().to_flamegraph(),
            json!({ "name": "total", "value": 0, "self": 0, "children": [] })
        );
    }

    #[test]
    fn a_stack_as_deep_as_ingest_allows_renders() {
        let depth = DecodeLimits::default().max_stack_depth;
        let frames: Vec<Frame> = (0..depth).map(|level| frame(&format!("f{level}"))).collect();
        let mut profile = MergedProfile::new();
        profile.add(&frames, 1);
        let flamegraph = profile.to_flamegraph();
        let mut node = &flamegraph;
        let mut levels = 0;
        while let Some(child) = node["children"].get(0) {
            node = child;
            levels += 1;
        }
        assert_eq!(
            (levels, node["name"].as_str(), node["self"].as_i64()),
            (depth, Some("f0"), Some(1))
        );
    }

    #[test]
    fn top_counts_recursion_once_per_stack() {
        let profile = merged(&[
            (&["fib", "fib", "fib", "main"], 6),
            (&["fib", "main"], 2),
            (&["print", "main"], 2),
            (&["main"], 2),
            (&["alpha", "main"], 2),
        ]);
        let top = profile.top(10);
        let rows: Vec<(&str, i64, i64)> = top
            .iter()
            .map(|e| (e.function.as_str(), e.self_value, e.total_value))
            .collect();
        assert_eq!(rows, [("fib", 8, 8), ("main", 2, 14), ("alpha", 2, 2), ("print", 2, 2)]);
        assert!((top[0].self_share - 8.0 / 14.0).abs() < 1e-12);
        assert!((top[1].total_share - 1.0).abs() < 1e-12, "main is on every stack");
        assert_eq!(profile.top(1).len(), 1);
        assert!(MergedProfile::new().top(5).is_empty());
    }

    #[test]
    fn diff_is_the_union_with_deltas() {
        let base = merged(&[(&["a", "main"], 5), (&["gone", "main"], 3)]);
        let target = merged(&[(&["a", "main"], 8), (&["new", "main"], 1), (&["main"], 2)]);
        let values = |base: i64, base_self: i64, target: i64, target_self: i64| {
            json!({
                "base": { "value": base, "self": base_self },
                "target": { "value": target, "self": target_self },
                "delta": { "value": target - base, "self": target_self - base_self },
            })
        };
        let node = |name: &str, values: serde_json::Value, children: Vec<serde_json::Value>| {
            let mut object = json!({ "name": name, "children": children });
            let fields = values.as_object().expect("object").clone();
            object.as_object_mut().expect("object").extend(fields);
            object
        };
        let expected = node(
            "total",
            values(8, 0, 11, 0),
            vec![node(
                "main",
                values(8, 0, 11, 2),
                vec![
                    node("a", values(5, 5, 8, 8), vec![]),
                    node("gone", values(3, 3, 0, 0), vec![]),
                    node("new", values(0, 0, 1, 1), vec![]),
                ],
            )],
        );
        assert_eq!(diff(&base, &target), expected);
    }

    #[test]
    fn top_entries_serialize_for_the_api() {
        let entry = &merged(&[(&["a"], 1)]).top(1)[0];
        assert_eq!(
            serde_json::to_value(entry).expect("plain struct"),
            json!({ "function": "a", "self_value": 1, "total_value": 1, "self_share": 1.0, "total_share": 1.0 })
        );
    }
}
