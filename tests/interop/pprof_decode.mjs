#!/usr/bin/env node
// Decode pprof profiles with a decoder nobody on this project wrote: DataDog's pprof-format.
//
// Meshlight's collector serves pprof profiles, and our Rust encoder and our Rust tests could
// agree with each other and still both be wrong. This script is the independent reader: the
// Rust tests call it on every pprof the collector serves and compare its summary, so a profile
// that only our own code can read fails the tests. The profile is decoded by pprof-format
// (the npm package pinned in package.json / package-lock.json, installed with
// `npm ci --prefix tests/interop`); everything in the summary comes from its Profile.decode.
//
// pprof-format is lenient about the wire format: it silently accepts a truncated message or a
// length that runs past the end of its buffer, and it treats a missing string table as [""].
// So before decoding, the script walks the protobuf framing against the fields of
// profile.proto (wire types, lengths, varints, UTF-8 strings, no fields profile.proto lacks),
// and after decoding it checks the references the format requires to hold.
//
// Usage: node tests/interop/pprof_decode.mjs FILE...
//
// Each FILE is read whole; gzip is detected by its magic bytes (1f 8b), anything else is taken
// as a raw serialized Profile. For each file that decodes and validates, one JSON object is
// printed on its own stdout line, in argument order, with these keys in this order:
//
//   file            the path as given
//   sample_types    ["type:unit", ...] in Profile.sample_type order
//   period_type     "type:unit", or null when the field is absent
//   period          Profile.period
//   time_nanos      Profile.time_nanos
//   duration_nanos  Profile.duration_nanos
//   samples         number of samples
//   totals          per sample type, the sum of that value over all samples
//   functions       sorted distinct names of the functions on any sample's stack (every Line
//                   of every location, so inlined frames count)
//   leaf_totals     {leaf function name: sum of the samples' first value}, keys sorted; the
//                   leaf is the first Line of location_id[0] (the innermost inlined frame); a
//                   leaf location without lines is keyed by its address ("0x..."), an empty
//                   stack by ""
//   labels          {label key: sorted distinct string values}, keys sorted; as in pprof's own
//                   Go decoder, a label whose str index is 0 is not a string label (numeric
//                   labels are left out)
//
// Integers are printed exactly as JSON numbers (int64 fields signed, never rounded through a
// double); strings sort by code point, which is the order of Rust's str.
//
// Checks: the framing above; gzip data decompresses; string_table is present and
// string_table[0] == ""; every string index (sample/period types, comments, drop/keep frames,
// default_sample_type, doc_url, label keys/values/units, mapping file names and build ids,
// function names, system names and file names) is within the table; mapping, location and
// function ids are nonzero and unique; every sample's location ids, every line's function id
// and every nonzero location mapping id are defined; every sample has exactly
// len(sample_type) values.
//
// Exit status: 0 when every file decoded and validated; 1 when any did not (one
// "pprof_decode.mjs: FILE: problem" line per problem on stderr, the other files are still
// processed and the valid ones' JSON still printed); 2 on a usage error or when pprof-format
// is not installed.

import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

const PROG = 'pprof_decode.mjs';
const USAGE = `usage: node tests/interop/pprof_decode.mjs FILE...`;
// Problems reported per file before the rest are summarised as a count.
const MAX_PROBLEMS = 20;

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '-h' || args[0] === '--help')) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
if (args.length === 0) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}

let Profile;
try {
  ({ Profile } = await import('pprof-format'));
} catch (e) {
  process.stderr.write(
    `${PROG}: cannot load pprof-format (run \`npm ci --prefix tests/interop\`): ${e.message}\n`,
  );
  process.exit(2);
}

class Invalid extends Error {}

// ---------------------------------------------------------------------------------------------
// Wire framing, checked against profile.proto before pprof-format sees the bytes.

const VARINT = 'varint'; // a scalar integer or bool: wire type 0
const REPEATED = 'repeated varint'; // packed (wire type 2) or not (wire type 0)
const STRING = 'string'; // wire type 2, valid UTF-8

// message name -> field number -> [field name, kind or message name]
const SCHEMA = {
  Profile: {
    1: ['sample_type', 'ValueType'],
    2: ['sample', 'Sample'],
    3: ['mapping', 'Mapping'],
    4: ['location', 'Location'],
    5: ['function', 'Function'],
    6: ['string_table', STRING],
    7: ['drop_frames', VARINT],
    8: ['keep_frames', VARINT],
    9: ['time_nanos', VARINT],
    10: ['duration_nanos', VARINT],
    11: ['period_type', 'ValueType'],
    12: ['period', VARINT],
    13: ['comment', REPEATED],
    14: ['default_sample_type', VARINT],
    15: ['doc_url', VARINT],
  },
  ValueType: { 1: ['type', VARINT], 2: ['unit', VARINT] },
  Sample: { 1: ['location_id', REPEATED], 2: ['value', REPEATED], 3: ['label', 'Label'] },
  Label: { 1: ['key', VARINT], 2: ['str', VARINT], 3: ['num', VARINT], 4: ['num_unit', VARINT] },
  Mapping: {
    1: ['id', VARINT],
    2: ['memory_start', VARINT],
    3: ['memory_limit', VARINT],
    4: ['file_offset', VARINT],
    5: ['filename', VARINT],
    6: ['build_id', VARINT],
    7: ['has_functions', VARINT],
    8: ['has_filenames', VARINT],
    9: ['has_line_numbers', VARINT],
    10: ['has_inline_frames', VARINT],
  },
  Location: {
    1: ['id', VARINT],
    2: ['mapping_id', VARINT],
    3: ['address', VARINT],
    4: ['line', 'Line'],
    5: ['is_folded', VARINT],
  },
  Line: { 1: ['function_id', VARINT], 2: ['line', VARINT], 3: ['column', VARINT] },
  Function: {
    1: ['id', VARINT],
    2: ['name', VARINT],
    3: ['system_name', VARINT],
    4: ['filename', VARINT],
    5: ['start_line', VARINT],
  },
};

const utf8 = new TextDecoder('utf-8', { fatal: true });

// The varint at buf[i]: [value as BigInt, index after it], or a string describing the fault.
function readVarint(buf, i) {
  let value = 0n;
  for (let n = 0; n < 10; n++) {
    if (i + n >= buf.length) return 'truncated varint';
    const b = buf[i + n];
    value |= BigInt(b & 0x7f) << BigInt(7 * n);
    if (b < 0x80) return [value, i + n + 1];
  }
  return 'varint longer than 10 bytes';
}

// Walks one message of type `type` occupying buf[start, end); `where` names it in problems.
// Returns the number of occurrences of each field number.
function checkFraming(buf, start, end, type, where, problems) {
  const fields = SCHEMA[type];
  const counts = {};
  const at = (name, field) => `${where ? `${where}.` : ''}${name}[${counts[field] ?? 0}]`;
  let i = start;
  while (i < end) {
    const tagAt = i;
    const tag = readVarint(buf.subarray(0, end), i);
    if (typeof tag === 'string') {
      problems.push(`${where || type}: ${tag} in a field tag at byte ${tagAt}`);
      return counts;
    }
    i = tag[1];
    const field = Number(tag[0] >> 3n);
    const wire = Number(tag[0] & 7n);
    const known = fields[field];
    const name = known ? known[0] : `field ${field}`;
    const label = known ? `${at(name, field)} (byte ${tagAt})` : `${where ? `${where}.` : ''}field ${field} (byte ${tagAt})`;
    let payload;
    switch (wire) {
      case 0: {
        const v = readVarint(buf.subarray(0, end), i);
        if (typeof v === 'string') {
          problems.push(`${label}: ${v}`);
          return counts;
        }
        i = v[1];
        break;
      }
      case 2: {
        const len = readVarint(buf.subarray(0, end), i);
        if (typeof len === 'string') {
          problems.push(`${label}: ${len} in a length`);
          return counts;
        }
        i = len[1];
        if (len[0] > BigInt(end - i)) {
          problems.push(
            `${label}: length ${len[0]} runs past the end of the enclosing message (${end - i} bytes left)`,
          );
          return counts;
        }
        payload = [i, i + Number(len[0])];
        i = payload[1];
        break;
      }
      case 1:
      case 5: {
        const size = wire === 1 ? 8 : 4;
        if (end - i < size) {
          problems.push(`${label}: truncated fixed${size * 8} value`);
          return counts;
        }
        i += size;
        break;
      }
      default:
        problems.push(`${label}: wire type ${wire} cannot be read (only 0, 1, 2 and 5 can)`);
        return counts;
    }
    if (!known) {
      problems.push(`${label}: ${type} has no field ${field} in profile.proto (wire type ${wire})`);
    } else {
      const kind = known[1];
      const expected = kind === VARINT ? [0] : kind === REPEATED ? [0, 2] : [2];
      if (!expected.includes(wire)) {
        problems.push(`${label}: wire type ${wire}, profile.proto's ${kind} needs ${expected.join(' or ')}`);
      } else if (kind === REPEATED && wire === 2) {
        for (let j = payload[0]; j < payload[1]; ) {
          const v = readVarint(buf.subarray(0, payload[1]), j);
          if (typeof v === 'string') {
            problems.push(`${label}: packed values end in a ${v}`);
            break;
          }
          j = v[1];
        }
      } else if (kind === STRING) {
        try {
          utf8.decode(buf.subarray(payload[0], payload[1]));
        } catch {
          problems.push(`${label}: not valid UTF-8`);
        }
      } else if (SCHEMA[kind]) {
        checkFraming(buf, payload[0], payload[1], kind, at(name, field), problems);
      }
    }
    counts[field] = (counts[field] ?? 0) + 1;
  }
  return counts;
}

// ---------------------------------------------------------------------------------------------
// Decoding and validation. pprof-format gives an integer as a number when it fits in four
// varint bytes and as an unsigned BigInt otherwise; everything is compared and summed as BigInt.

const s64 = (v) => BigInt.asIntN(64, BigInt(v)); // int64 fields (negatives arrive as 2^64 - x)
const u64 = (v) => BigInt.asUintN(64, BigInt(v)); // uint64 fields (ids, addresses)

function readProfile(path) {
  let data = readFileSync(path);
  if (data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b) {
    try {
      data = gunzipSync(data);
    } catch (e) {
      throw new Invalid(`gzip magic bytes present but the data does not decompress: ${e.message}`);
    }
  }
  const problems = [];
  const counts = checkFraming(data, 0, data.length, 'Profile', '', problems);
  if (problems.length) return { problems };
  let profile;
  try {
    profile = Profile.decode(new Uint8Array(data.buffer, data.byteOffset, data.length));
  } catch (e) {
    throw new Invalid(`pprof-format Profile.decode failed: ${e.name}: ${e.message}`);
  }
  return { profile, hasStringTable: (counts[6] ?? 0) > 0, problems };
}

function validate(profile, hasStringTable) {
  const problems = [];
  const strings = profile.stringTable.strings;
  const n = BigInt(hasStringTable ? strings.length : 0);

  if (!hasStringTable) {
    problems.push('string_table is empty (string_table[0] must be "")');
  } else if (strings[0] !== '') {
    problems.push(`string_table[0] is ${JSON.stringify(strings[0])}, must be ""`);
  }

  const stringIndex = (index, what) => {
    if (!hasStringTable) return; // reported once above, not once per index
    const i = s64(index);
    if (i < 0n || i >= n) problems.push(`${what} = ${i} is not an index into string_table (size ${n})`);
  };

  profile.sampleType.forEach((vt, i) => {
    stringIndex(vt.type, `sample_type[${i}].type`);
    stringIndex(vt.unit, `sample_type[${i}].unit`);
  });
  if (profile.periodType !== undefined) {
    stringIndex(profile.periodType.type, 'period_type.type');
    stringIndex(profile.periodType.unit, 'period_type.unit');
  }
  stringIndex(profile.dropFrames, 'drop_frames');
  stringIndex(profile.keepFrames, 'keep_frames');
  stringIndex(profile.defaultSampleType, 'default_sample_type');
  stringIndex(profile.docUrl, 'doc_url');
  profile.comment.forEach((c, i) => stringIndex(c, `comment[${i}]`));

  const ids = (items, kind) => {
    const seen = new Set();
    items.forEach((item, i) => {
      const id = u64(item.id);
      if (id === 0n) problems.push(`${kind}[${i}].id is 0 (ids must be nonzero)`);
      else if (seen.has(id)) problems.push(`${kind}[${i}].id = ${id} is not unique`);
      seen.add(id);
    });
    return seen;
  };
  const mappingIds = ids(profile.mapping, 'mapping');
  const locationIds = ids(profile.location, 'location');
  const functionIds = ids(profile.function, 'function');

  profile.mapping.forEach((m, i) => {
    stringIndex(m.filename, `mapping[${i}].filename`);
    stringIndex(m.buildId, `mapping[${i}].build_id`);
  });
  profile.function.forEach((fn, i) => {
    stringIndex(fn.name, `function[${i}].name`);
    stringIndex(fn.systemName, `function[${i}].system_name`);
    stringIndex(fn.filename, `function[${i}].filename`);
  });
  profile.location.forEach((loc, i) => {
    const mappingId = u64(loc.mappingId);
    if (mappingId !== 0n && !mappingIds.has(mappingId)) {
      problems.push(`location[${i}].mapping_id = ${mappingId} names no mapping`);
    }
    loc.line.forEach((line, j) => {
      const functionId = u64(line.functionId);
      if (!functionIds.has(functionId)) {
        problems.push(`location[${i}].line[${j}].function_id = ${functionId} names no function`);
      }
    });
  });

  const nTypes = profile.sampleType.length;
  profile.sample.forEach((s, i) => {
    s.locationId.forEach((id, j) => {
      const locationId = u64(id);
      if (!locationIds.has(locationId)) {
        problems.push(`sample[${i}].location_id[${j}] = ${locationId} names no location`);
      }
    });
    if (s.value.length !== nTypes) {
      problems.push(`sample[${i}] has ${s.value.length} values, sample_type has ${nTypes}`);
    }
    s.label.forEach((label, j) => {
      stringIndex(label.key, `sample[${i}].label[${j}].key`);
      stringIndex(label.str, `sample[${i}].label[${j}].str`);
      stringIndex(label.numUnit, `sample[${i}].label[${j}].num_unit`);
    });
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Summary and its JSON (written by hand: JSON.stringify cannot print a BigInt, and it would put
// integer-like keys such as a function named "42" ahead of the others).

const encoder = new TextEncoder();
// Code point order (the order of UTF-8 bytes, and of Rust's str), not JavaScript's UTF-16 order.
const byCodePoint = (a, b) => Buffer.compare(encoder.encode(a), encoder.encode(b));

function summarise(profile, path) {
  const strings = profile.stringTable.strings;
  const str = (i) => strings[Number(s64(i))];
  const locations = new Map(profile.location.map((loc) => [u64(loc.id), loc]));
  const functionNames = new Map(profile.function.map((fn) => [u64(fn.id), str(fn.name)]));
  const valueType = (vt) => `${str(vt.type)}:${str(vt.unit)}`;

  const totals = profile.sampleType.map(() => 0n);
  const functions = new Set();
  const leafTotals = new Map();
  const labels = new Map();
  for (const s of profile.sample) {
    s.value.forEach((v, k) => {
      totals[k] += s64(v);
    });
    for (const id of s.locationId) {
      for (const line of locations.get(u64(id)).line) functions.add(functionNames.get(u64(line.functionId)));
    }
    let leaf = '';
    if (s.locationId.length) {
      const leafLoc = locations.get(u64(s.locationId[0]));
      leaf = leafLoc.line.length
        ? functionNames.get(u64(leafLoc.line[0].functionId))
        : `0x${u64(leafLoc.address).toString(16)}`;
    }
    leafTotals.set(leaf, (leafTotals.get(leaf) ?? 0n) + (s.value.length ? s64(s.value[0]) : 0n));
    for (const label of s.label) {
      if (s64(label.str) === 0n) continue;
      const key = str(label.key);
      if (!labels.has(key)) labels.set(key, new Set());
      labels.get(key).add(str(label.str));
    }
  }

  const sortedKeys = (map) => [...map.keys()].sort(byCodePoint);
  return [
    ['file', path],
    ['sample_types', profile.sampleType.map(valueType)],
    ['period_type', profile.periodType === undefined ? null : valueType(profile.periodType)],
    ['period', s64(profile.period)],
    ['time_nanos', s64(profile.timeNanos)],
    ['duration_nanos', s64(profile.durationNanos)],
    ['samples', profile.sample.length],
    ['totals', totals],
    ['functions', [...functions].sort(byCodePoint)],
    ['leaf_totals', sortedKeys(leafTotals).map((k) => [k, leafTotals.get(k)])],
    ['labels', sortedKeys(labels).map((k) => [k, [...labels.get(k)].sort(byCodePoint)])],
  ];
}

// Objects are given as arrays of [key, value] entries, in the order they are to be printed.
const OBJECT_KEYS = new Set(['leaf_totals', 'labels']);
function json(value, isObject = false) {
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) {
    if (isObject) return `{${value.map(([k, v]) => `${JSON.stringify(k)}:${json(v)}`).join(',')}}`;
    return `[${value.map((v) => json(v)).join(',')}]`;
  }
  return JSON.stringify(value);
}
const summaryLine = (entries) =>
  `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${json(v, OBJECT_KEYS.has(k))}`).join(',')}}`;

// ---------------------------------------------------------------------------------------------

let failed = false;
for (const path of args) {
  let problems;
  let summary;
  try {
    const read = readProfile(path);
    problems = read.problems.length ? read.problems : validate(read.profile, read.hasStringTable);
    if (!problems.length) summary = summaryLine(summarise(read.profile, path));
  } catch (e) {
    if (e instanceof Invalid) problems = [e.message];
    else if (e.code) problems = [`cannot read: ${e.message}`];
    else problems = [`${e.name}: ${e.message}`];
  }
  if (problems.length) {
    failed = true;
    for (const problem of problems.slice(0, MAX_PROBLEMS)) process.stderr.write(`${PROG}: ${path}: ${problem}\n`);
    if (problems.length > MAX_PROBLEMS) {
      process.stderr.write(`${PROG}: ${path}: ... and ${problems.length - MAX_PROBLEMS} more problems\n`);
    }
    continue;
  }
  process.stdout.write(`${summary}\n`);
}
// exitCode rather than exit(): a piped stdout is flushed asynchronously.
process.exitCode = failed ? 1 : 0;
