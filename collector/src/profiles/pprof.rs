//! Decoding of uploaded pprof profiles, which come from the network and are trusted in
//! nothing: the size is capped before and while decompressing, the sample count before
//! decoding, and every string index and id reference is checked before anything reads
//! through it, so the rest of the pipeline can index without fallbacks that hide bad data.
//!
//! Error messages go back to the uploader in a 400 response, so each names the item, the
//! field and the bad value. Samples have no ids and are named by their position, from 0.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;

use meshlight_profiler::proto;

/// The two bytes every gzip member starts with (RFC 1952), so that an upload can be
/// recognised as gzip without trusting a `Content-Encoding` header. A protobuf never starts
/// with them: 0x1f would be field 3 with wire type 7, which does not exist.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The `Profile.sample` field number: counted on the wire before decoding.
const SAMPLE_FIELD: u64 = 2;

/// How much an upload may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeLimits {
    /// Largest accepted protobuf, after decompression, in bytes. This also bounds the
    /// memory one decode takes: apart from samples, which `max_samples` bounds before
    /// decoding, a decoded message takes at most about 30 times its smallest encoding (an
    /// empty location: 56 bytes from 2), and up to twice that while its vector grows.
    pub max_decompressed_bytes: usize,
    /// Most samples one profile may hold.
    pub max_samples: usize,
    /// Most locations one sample's stack may hold (inlined frames of one location count
    /// once, as storage keeps them in one location row).
    pub max_stack_depth: usize,
}

impl Default for DecodeLimits {
    /// Roomy for real uploads (a 10 s CPU profile of a busy Go service is well under 1 MiB
    /// with a few thousand distinct stacks) while keeping the worst-case decode of a hostile
    /// one under about half a gigabyte.
    fn default() -> DecodeLimits {
        DecodeLimits {
            max_decompressed_bytes: 8 << 20,
            max_samples: 200_000,
            max_stack_depth: 1024,
        }
    }
}

/// The profile item an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A top-level field of the profile.
    Profile,
    /// An entry of `sample_type`, by position.
    SampleType(usize),
    /// The `period_type`.
    PeriodType,
    /// An entry of `comment`, by position.
    Comment(usize),
    /// A mapping, by id.
    Mapping(u64),
    /// A function, by id.
    Function(u64),
    /// A sample, by position.
    Sample(usize),
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Profile => f.write_str("profile"),
            Item::SampleType(position) => write!(f, "sample_type {position}"),
            Item::PeriodType => f.write_str("period_type"),
            Item::Comment(position) => write!(f, "comment {position}"),
            Item::Mapping(id) => write!(f, "mapping {id}"),
            Item::Function(id) => write!(f, "function {id}"),
            Item::Sample(position) => write!(f, "sample {position}"),
        }
    }
}

/// Why an upload was refused. The message is shown to the client as is.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The body starts like gzip but does not decompress.
    #[error("bad gzip: {0}")]
    Gzip(std::io::Error),
    /// The (decompressed) protobuf is larger than `max_decompressed_bytes`.
    #[error("profile exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The protobuf holds more than `max_samples` samples.
    #[error("profile has more than {limit} samples")]
    TooManySamples {
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a `Profile` message.
    #[error("protobuf: {0}")]
    Protobuf(prost::DecodeError),
    /// The string table has no entry 0, which every pprof profile needs.
    #[error("string_table is empty (entry 0 must be the empty string)")]
    EmptyStringTable,
    /// The string table's entry 0 is not the empty string.
    #[error("string_table[0] must be empty")]
    StringTableStart,
    /// A string index outside the string table.
    #[error("{item}: {field} index {index} out of range (string table has {len} entries)")]
    StringIndex {
        /// What holds the index.
        item: Item,
        /// The field of `item` that holds it.
        field: &'static str,
        /// The index.
        index: i64,
        /// The string table's length.
        len: usize,
    },
    /// No sample types, so samples could not say what they measure.
    #[error("no sample types")]
    NoSampleTypes,
    /// Id 0 means "none" in pprof and cannot name a definition.
    #[error("{kind} id 0 is reserved (it means none)")]
    ZeroId {
        /// `mapping`, `function` or `location`.
        kind: &'static str,
    },
    /// Two definitions share an id, so references to it would be ambiguous. pprof's
    /// references only point one way (samples to locations, locations to mappings and
    /// functions), so reusing an id is the only way an upload could make its graph
    /// ambiguous or loop: refusing duplicates is how cycles are refused.
    #[error("{kind} id {id} is defined twice")]
    DuplicateId {
        /// `mapping`, `function` or `location`.
        kind: &'static str,
        /// The id.
        id: u64,
    },
    /// A location refers to a mapping that is not defined.
    #[error("location {location}: mapping id {mapping} is not defined")]
    UndefinedMapping {
        /// The location id.
        location: u64,
        /// The mapping id it refers to.
        mapping: u64,
    },
    /// A location's line refers to a function that is not defined.
    #[error("location {location}: function id {function} is not defined")]
    UndefinedFunction {
        /// The location id.
        location: u64,
        /// The function id it refers to.
        function: u64,
    },
    /// A sample refers to a location that is not defined.
    #[error("sample {sample}: location id {location} is not defined")]
    UndefinedLocation {
        /// The sample's position.
        sample: usize,
        /// The location id it refers to.
        location: u64,
    },
    /// A sample has a different number of values than there are sample types.
    #[error("sample {sample}: {values} values for {sample_types} sample types")]
    ValueCount {
        /// The sample's position.
        sample: usize,
        /// How many values it has.
        values: usize,
        /// How many sample types the profile has.
        sample_types: usize,
    },
    /// A sample's stack is deeper than `max_stack_depth`.
    #[error("sample {sample}: stack of {depth} locations is deeper than the limit of {limit}")]
    StackTooDeep {
        /// The sample's position.
        sample: usize,
        /// Its number of locations.
        depth: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// Decodes an upload, gzip-compressed (recognised by its magic bytes) or raw protobuf, and
/// checks it against `limits` and the references pprof requires to resolve.
pub fn decode(body: &[u8], limits: &DecodeLimits) -> Result<proto::Profile, ProfileError> {
    let limit = limits.max_decompressed_bytes;
    let decompressed;
    let bytes = if body.starts_with(&GZIP_MAGIC) {
        decompressed = gunzip(body, limit)?;
        &decompressed[..]
    } else if body.len() > limit {
        return Err(ProfileError::TooLarge { limit });
    } else {
        body
    };
    check_sample_count(bytes, limits.max_samples)?;
    let profile = <proto::Profile as prost::Message>::decode(bytes).map_err(ProfileError::Protobuf)?;
    debug_assert!(
        profile.sample.len() <= limits.max_samples,
        "the wire count saw every sample"
    );
    validate(&profile, limits)?;
    Ok(profile)
}

/// Decompresses gzip, reading one byte past `limit` at most, so that a bomb stops at the
/// cap instead of being inflated (or allocated) in full. Concatenated members are read as
/// one stream, as `gzip -d` does.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ProfileError> {
    // Profiles compress about 4:1; starting there saves most regrowth without letting a
    // small bomb reserve the whole limit up front.
    let mut output = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut output)
        .map_err(ProfileError::Gzip)?;
    if output.len() > limit {
        return Err(ProfileError::TooLarge { limit });
    }
    Ok(output)
}

/// Counts the `sample` fields on the wire and fails as soon as there are more than `limit`,
/// before decoding: a decoded `Sample` takes some 36 times the two bytes an empty one needs
/// on the wire, so decoding first would let a small upload allocate a lot.
///
/// Malformed wire data ends the count without an error: the decoder that runs next
/// refuses it too, with a better message. Anything it accepts, including unknown fields of
/// every wire type and groups, is skipped here the same way, so no sample goes uncounted.
fn check_sample_count(bytes: &[u8], limit: usize) -> Result<(), ProfileError> {
    let mut wire = Wire { bytes, position: 0 };
    let mut samples = 0usize;
    // Fields inside an (unknown, deprecated) group are not the profile's own.
    let mut group_depth = 0usize;
    while wire.position < bytes.len() {
        let Some(key) = wire.varint() else { return Ok(()) };
        let skipped = match key & 7 {
            0 => wire.varint().map(drop),
            1 => wire.skip(8),
            2 => {
                if key >> 3 == SAMPLE_FIELD && group_depth == 0 {
                    samples += 1;
                    if samples > limit {
                        return Err(ProfileError::TooManySamples { limit });
                    }
                }
                wire.varint().and_then(|len| wire.skip(usize::try_from(len).ok()?))
            }
            3 => {
                group_depth += 1;
                Some(())
            }
            4 => group_depth.checked_sub(1).map(|depth| group_depth = depth),
            5 => wire.skip(4),
            _ => None,
        };
        if skipped.is_none() {
            return Ok(());
        }
    }
    Ok(())
}

/// A cursor over protobuf wire data that only skips fields, for [`check_sample_count`].
struct Wire<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Wire<'_> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.position)?;
            self.position += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        let end = self.position.checked_add(len).filter(|&end| end <= self.bytes.len())?;
        self.position = end;
        Some(())
    }
}

/// Checks every string index and id reference, in the order the profile defines things:
/// strings, types, mappings, functions, locations, then the samples that use them all.
fn validate(profile: &proto::Profile, limits: &DecodeLimits) -> Result<(), ProfileError> {
    match profile.string_table.first() {
        None => return Err(ProfileError::EmptyStringTable),
        Some(first) if !first.is_empty() => return Err(ProfileError::StringTableStart),
        Some(_) => {}
    }
    let strings = StringCheck {
        len: profile.string_table.len(),
    };

    if profile.sample_type.is_empty() {
        return Err(ProfileError::NoSampleTypes);
    }
    for (position, value_type) in profile.sample_type.iter().enumerate() {
        strings.check_value_type(Item::SampleType(position), value_type)?;
    }
    if let Some(period_type) = &profile.period_type {
        strings.check_value_type(Item::PeriodType, period_type)?;
    }
    strings.check(Item::Profile, "default_sample_type", profile.default_sample_type)?;
    strings.check(Item::Profile, "drop_frames", profile.drop_frames)?;
    strings.check(Item::Profile, "keep_frames", profile.keep_frames)?;
    for (position, &comment) in profile.comment.iter().enumerate() {
        strings.check(Item::Comment(position), "text", comment)?;
    }

    let mut mappings = HashSet::with_capacity(profile.mapping.len());
    for mapping in &profile.mapping {
        define(&mut mappings, "mapping", mapping.id)?;
        strings.check(Item::Mapping(mapping.id), "filename", mapping.filename)?;
        strings.check(Item::Mapping(mapping.id), "build_id", mapping.build_id)?;
    }

    let mut functions = HashSet::with_capacity(profile.function.len());
    for function in &profile.function {
        define(&mut functions, "function", function.id)?;
        let item = Item::Function(function.id);
        strings.check(item, "name", function.name)?;
        strings.check(item, "system_name", function.system_name)?;
        strings.check(item, "filename", function.filename)?;
    }

    let mut locations = HashSet::with_capacity(profile.location.len());
    for location in &profile.location {
        define(&mut locations, "location", location.id)?;
        if location.mapping_id != 0 && !mappings.contains(&location.mapping_id) {
            return Err(ProfileError::UndefinedMapping {
                location: location.id,
                mapping: location.mapping_id,
            });
        }
        for line in &location.line {
            if !functions.contains(&line.function_id) {
                return Err(ProfileError::UndefinedFunction {
                    location: location.id,
                    function: line.function_id,
                });
            }
        }
    }

    for (position, sample) in profile.sample.iter().enumerate() {
        if sample.value.len() != profile.sample_type.len() {
            return Err(ProfileError::ValueCount {
                sample: position,
                values: sample.value.len(),
                sample_types: profile.sample_type.len(),
            });
        }
        if sample.location_id.len() > limits.max_stack_depth {
            return Err(ProfileError::StackTooDeep {
                sample: position,
                depth: sample.location_id.len(),
                limit: limits.max_stack_depth,
            });
        }
        for &location in &sample.location_id {
            if !locations.contains(&location) {
                return Err(ProfileError::UndefinedLocation {
                    sample: position,
                    location,
                });
            }
        }
        for label in &sample.label {
            let item = Item::Sample(position);
            strings.check(item, "label key", label.key)?;
            strings.check(item, "label str", label.str)?;
            strings.check(item, "label num_unit", label.num_unit)?;
        }
    }
    Ok(())
}

/// Records a definition's id, refusing 0 and repeats.
fn define(ids: &mut HashSet<u64>, kind: &'static str, id: u64) -> Result<(), ProfileError> {
    if id == 0 {
        return Err(ProfileError::ZeroId { kind });
    }
    if !ids.insert(id) {
        return Err(ProfileError::DuplicateId { kind, id });
    }
    Ok(())
}

/// Checks string indices against a string table of `len` entries.
struct StringCheck {
    len: usize,
}

impl StringCheck {
    fn check(&self, item: Item, field: &'static str, index: i64) -> Result<(), ProfileError> {
        match usize::try_from(index) {
            Ok(position) if position < self.len => Ok(()),
            _ => Err(ProfileError::StringIndex {
                item,
                field,
                index,
                len: self.len,
            }),
        }
    }

    fn check_value_type(&self, item: Item, value_type: &proto::ValueType) -> Result<(), ProfileError> {
        self.check(item, "type", value_type.r#type)?;
        self.check(item, "unit", value_type.unit)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use prost::Message;

    use super::*;

    /// A valid two-type profile: `main` calls `work` (inlined into `main`'s location 2)
    /// and `leaf`; string indices are fixed so tests can break them one at a time.
    fn profile() -> proto::Profile {
        let strings = [
            "",
            "samples",
            "count",
            "cpu",
            "nanoseconds",
            "main",
            "main.rs",
            "work",
            "leaf",
            "lib.so",
            "abc",
            "thread",
            "t1",
        ];
        proto::Profile {
            string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
            sample_type: vec![
                proto::ValueType { r#type: 1, unit: 2 },
                proto::ValueType { r#type: 3, unit: 4 },
            ],
            period_type: Some(proto::ValueType { r#type: 3, unit: 4 }),
            period: 10_000_000,
            mapping: vec![proto::Mapping {
                id: 1,
                filename: 9,
                build_id: 10,
                ..proto::Mapping::default()
            }],
            function: vec![
                proto::Function {
                    id: 1,
                    name: 5,
                    system_name: 5,
                    filename: 6,
                    start_line: 1,
                },
                proto::Function {
                    id: 2,
                    name: 7,
                    system_name: 7,
                    filename: 6,
                    start_line: 10,
                },
                proto::Function {
                    id: 3,
                    name: 8,
                    system_name: 8,
                    filename: 6,
                    start_line: 20,
                },
            ],
            location: vec![
                location(1, 0, &[(1, 3)]),
                location(2, 1, &[(2, 12), (1, 4)]),
                location(3, 1, &[(3, 21)]),
            ],
            sample: vec![
                proto::Sample {
                    location_id: vec![3, 2, 1],
                    value: vec![1, 10_000_000],
                    label: vec![proto::Label {
                        key: 11,
                        str: 12,
                        ..proto::Label::default()
                    }],
                },
                proto::Sample {
                    location_id: vec![2, 1],
                    value: vec![2, 20_000_000],
                    label: vec![],
                },
            ],
            ..proto::Profile::default()
        }
    }

    fn location(id: u64, mapping_id: u64, lines: &[(u64, i64)]) -> proto::Location {
        let line = lines
            .iter()
            .map(|&(function_id, line)| proto::Line {
                function_id,
                line,
                column: 0,
            })
            .collect();
        proto::Location {
            id,
            mapping_id,
            address: 0x1000 * id,
            line,
            is_folded: false,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).expect("in-memory write");
        encoder.finish().expect("in-memory write")
    }

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    /// Decodes `profile` after `corrupt` changed it and returns the error message.
    fn error_after(corrupt: impl FnOnce(&mut proto::Profile)) -> String {
        let mut broken = profile();
        corrupt(&mut broken);
        match decode(&broken.encode_to_vec(), &limits()) {
            Ok(_) => panic!("a corrupted profile was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn accepts_raw_and_gzipped_profiles() {
        let encoded = profile().encode_to_vec();
        assert_eq!(decode(&encoded, &limits()).expect("raw"), profile());
        assert_eq!(decode(&gzip(&encoded), &limits()).expect("gzip"), profile());
        let mut two_members = gzip(&encoded[..10]);
        two_members.extend(gzip(&encoded[10..]));
        assert_eq!(decode(&two_members, &limits()).expect("multi-member gzip"), profile());
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            encoder.write_all(&zeros).expect("in-memory write");
        }
        let bomb = encoder.finish().expect("in-memory write");
        assert!(
            bomb.len() < 1 << 20,
            "100 MB of zeros compresses to {} bytes",
            bomb.len()
        );
        let limits = DecodeLimits {
            max_decompressed_bytes: 1 << 20,
            ..limits()
        };
        let error = decode(&bomb, &limits).expect_err("bomb");
        assert_eq!(error.to_string(), "profile exceeds the 1048576-byte limit");
        // Cut in half, the stream is corrupt only far past the limit: reporting the limit
        // rather than the corruption shows that decompression stopped at the cap.
        let error = decode(&bomb[..bomb.len() / 2], &limits).expect_err("half a bomb");
        assert_eq!(error.to_string(), "profile exceeds the 1048576-byte limit");
    }

    #[test]
    fn the_size_limit_is_inclusive_and_applies_to_raw_bodies() {
        let encoded = profile().encode_to_vec();
        let exact = DecodeLimits {
            max_decompressed_bytes: encoded.len(),
            ..limits()
        };
        assert!(decode(&encoded, &exact).is_ok());
        assert!(decode(&gzip(&encoded), &exact).is_ok());
        let short = DecodeLimits {
            max_decompressed_bytes: encoded.len() - 1,
            ..limits()
        };
        let expected = format!("profile exceeds the {}-byte limit", encoded.len() - 1);
        assert_eq!(decode(&encoded, &short).expect_err("raw").to_string(), expected);
        assert_eq!(decode(&gzip(&encoded), &short).expect_err("gzip").to_string(), expected);
    }

    #[test]
    fn bad_gzip_is_reported_as_gzip() {
        let error = decode(&[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], &limits()).expect_err("garbage");
        assert!(error.to_string().starts_with("bad gzip: "), "{error}");
        let compressed = gzip(&profile().encode_to_vec());
        let truncated = &compressed[..compressed.len() / 2];
        let error = decode(truncated, &limits()).expect_err("truncated");
        assert!(error.to_string().starts_with("bad gzip: "), "{error}");
    }

    #[test]
    fn bad_protobuf_is_reported_as_protobuf() {
        let error = decode(b"\x0a\xff\xff\xff\x0f", &limits()).expect_err("length past the end");
        assert!(error.to_string().starts_with("protobuf: "), "{error}");
        let error = decode(b"not a profile", &limits()).expect_err("text");
        assert!(error.to_string().starts_with("protobuf: "), "{error}");
    }

    #[test]
    fn too_many_samples_fail_before_decoding() {
        let few = DecodeLimits {
            max_samples: 1,
            ..limits()
        };
        let error = decode(&profile().encode_to_vec(), &few).expect_err("two samples");
        assert_eq!(error.to_string(), "profile has more than 1 samples");
        let exact = DecodeLimits {
            max_samples: 2,
            ..limits()
        };
        assert!(decode(&profile().encode_to_vec(), &exact).is_ok());

        // A million empty samples are two bytes each on the wire: refused by the count,
        // however the rest of the body looks.
        let mut flood = Vec::new();
        for _ in 0..1_000_000 {
            flood.extend_from_slice(&[0x12, 0x00]);
        }
        let error = decode(&flood, &limits()).expect_err("flood");
        assert_eq!(error.to_string(), "profile has more than 200000 samples");
    }

    #[test]
    fn the_sample_count_skips_every_wire_type() {
        let mut bytes = profile().encode_to_vec();
        // Unknown fields of each wire type before the samples: varint, fixed64, fixed32.
        bytes.extend_from_slice(&[0xa8, 0x06, 0x96, 0x01]);
        bytes.extend_from_slice(&[0xb1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend_from_slice(&[0xbd, 0x06, 1, 2, 3, 4]);
        bytes.extend(
            proto::Profile {
                sample: profile().sample,
                ..proto::Profile::default()
            }
            .encode_to_vec(),
        );
        let three = DecodeLimits {
            max_samples: 3,
            ..limits()
        };
        assert_eq!(
            decode(&bytes, &three).expect_err("four samples").to_string(),
            "profile has more than 3 samples"
        );
        let four = DecodeLimits {
            max_samples: 4,
            ..limits()
        };
        assert_eq!(decode(&bytes, &four).expect("four samples").sample.len(), 4);
    }

    #[test]
    fn samples_after_an_unknown_group_are_still_counted() {
        // Field 15 as a group holding a varint and a length-delimited field 2, which is
        // not a sample: the decoder skips groups in unknown fields, so the count must too.
        let mut bytes = vec![0x7b, 0x08, 0x01, 0x12, 0x00, 0x7c];
        bytes.extend(profile().encode_to_vec());
        let one = DecodeLimits {
            max_samples: 1,
            ..limits()
        };
        let error = decode(&bytes, &one).expect_err("two samples after the group");
        assert_eq!(error.to_string(), "profile has more than 1 samples");
        let two = DecodeLimits {
            max_samples: 2,
            ..limits()
        };
        assert_eq!(decode(&bytes, &two).expect("the group is skipped").sample.len(), 2);
    }

    #[test]
    fn refuses_a_bad_string_table() {
        assert_eq!(
            error_after(|p| p.string_table[0] = "x".to_owned()),
            "string_table[0] must be empty"
        );
        assert_eq!(
            error_after(|p| p.string_table.clear()),
            "string_table is empty (entry 0 must be the empty string)"
        );
    }

    #[test]
    fn refuses_every_string_index_out_of_range() {
        type Corruption = fn(&mut proto::Profile);
        let cases: [(&str, Corruption); 17] = [
            ("sample_type 1: type index 99", |p| p.sample_type[1].r#type = 99),
            ("sample_type 0: unit index -1", |p| p.sample_type[0].unit = -1),
            ("period_type: type index 99", |p| {
                p.period_type = Some(proto::ValueType { r#type: 99, unit: 0 });
            }),
            ("period_type: unit index 13", |p| {
                p.period_type = Some(proto::ValueType { r#type: 0, unit: 13 });
            }),
            ("function 3: name index 99", |p| p.function[2].name = 99),
            ("function 1: system_name index 99", |p| p.function[0].system_name = 99),
            ("function 2: filename index 99", |p| p.function[1].filename = 99),
            ("mapping 1: filename index 99", |p| p.mapping[0].filename = 99),
            ("mapping 1: build_id index 99", |p| p.mapping[0].build_id = 99),
            ("sample 0: label key index 99", |p| p.sample[0].label[0].key = 99),
            ("sample 0: label str index 99", |p| p.sample[0].label[0].str = 99),
            ("sample 1: label num_unit index 99", |p| {
                p.sample[1].label.push(proto::Label {
                    key: 11,
                    num: 3,
                    num_unit: 99,
                    str: 0,
                });
            }),
            ("comment 1: text index 99", |p| p.comment = vec![1, 99]),
            ("profile: default_sample_type index 99", |p| p.default_sample_type = 99),
            ("profile: drop_frames index 99", |p| p.drop_frames = 99),
            ("profile: keep_frames index 99", |p| p.keep_frames = 99),
            ("profile: keep_frames index -5", |p| p.keep_frames = -5),
        ];
        for (expected, corrupt) in cases {
            let message = error_after(corrupt);
            assert!(message.starts_with(expected), "{message} should start with {expected}");
        }
        assert_eq!(
            error_after(|p| p.function[2].name = 99),
            "function 3: name index 99 out of range (string table has 13 entries)"
        );
    }

    #[test]
    fn refuses_dangling_references() {
        assert_eq!(
            error_after(|p| p.location[2].line[0].function_id = 5),
            "location 3: function id 5 is not defined"
        );
        assert_eq!(
            error_after(|p| p.location[1].line[1].function_id = 0),
            "location 2: function id 0 is not defined"
        );
        assert_eq!(
            error_after(|p| p.location[0].mapping_id = 4),
            "location 1: mapping id 4 is not defined"
        );
        assert_eq!(
            error_after(|p| p.sample[1].location_id[0] = 0),
            "sample 1: location id 0 is not defined"
        );
        assert_eq!(
            error_after(|p| p.sample[0].location_id.push(9)),
            "sample 0: location id 9 is not defined"
        );
    }

    #[test]
    fn refuses_ambiguous_or_empty_definitions() {
        assert_eq!(error_after(|p| p.location[2].id = 2), "location id 2 is defined twice");
        assert_eq!(error_after(|p| p.function[1].id = 1), "function id 1 is defined twice");
        assert_eq!(
            error_after(|p| p.mapping.push(p.mapping[0].clone())),
            "mapping id 1 is defined twice"
        );
        assert_eq!(
            error_after(|p| p.location[0].id = 0),
            "location id 0 is reserved (it means none)"
        );
        assert_eq!(
            error_after(|p| p.function[0].id = 0),
            "function id 0 is reserved (it means none)"
        );
        assert_eq!(
            error_after(|p| p.mapping[0].id = 0),
            "mapping id 0 is reserved (it means none)"
        );
    }

    #[test]
    fn refuses_malformed_samples() {
        assert_eq!(error_after(|p| p.sample_type.clear()), "no sample types");
        assert_eq!(
            error_after(|p| p.sample[1].value.truncate(1)),
            "sample 1: 1 values for 2 sample types"
        );
        assert_eq!(
            error_after(|p| p.sample[0].value.push(3)),
            "sample 0: 3 values for 2 sample types"
        );
        let shallow = DecodeLimits {
            max_stack_depth: 2,
            ..limits()
        };
        let error = decode(&profile().encode_to_vec(), &shallow).expect_err("three locations");
        assert_eq!(
            error.to_string(),
            "sample 0: stack of 3 locations is deeper than the limit of 2"
        );
        let exact = DecodeLimits {
            max_stack_depth: 3,
            ..limits()
        };
        assert!(decode(&profile().encode_to_vec(), &exact).is_ok());
    }

    #[test]
    fn limits_deserialize_with_defaults_and_refuse_unknown_fields() {
        let limits: DecodeLimits = serde_json::from_str(r#"{"max_samples": 5}"#).expect("partial");
        assert_eq!(
            limits,
            DecodeLimits {
                max_samples: 5,
                ..DecodeLimits::default()
            }
        );
        assert!(serde_json::from_str::<DecodeLimits>(r#"{"max_sample": 5}"#).is_err());
    }
}
