//! Persisted content ids: profile functions, locations and stacks, and metric series.
//!
//! The hashed encoding is a storage format and must not change, or rows written before and
//! after would stop matching.

/// FNV-1a 64 over a canonical encoding of a row, then murmur3's `fmix64` finalizer.
///
/// The encoding is unambiguous: it starts with the row's kind, strings and lists are
/// prefixed with their length, and numbers are 8 little-endian bytes; so two different
/// rows only share an id by a 64-bit collision. By the birthday bound one becomes likely
/// (about 50 %) only around 2^32, some 4 billion distinct rows of one kind; at 10 million
/// the chance is about 3 in a million. FNV-1a is simple enough to reimplement in any
/// language that may need to compute ids; its last bytes reach the high bits poorly, which
/// `fmix64` repairs, so the ids also spread evenly when used for partitioning.
pub(crate) struct ContentHash {
    state: u64,
}

impl ContentHash {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    pub(crate) const FUNCTION: u8 = b'F';
    pub(crate) const LOCATION: u8 = b'L';
    pub(crate) const STACK: u8 = b'S';
    /// A metric series: its name, unit, resource and attributes.
    pub(crate) const SERIES: u8 = b'M';
    /// One attribute (key and value) of a series.
    pub(crate) const ATTRIBUTE: u8 = b'A';
    /// A resource: its attributes as stored, in order.
    pub(crate) const RESOURCE: u8 = b'R';

    pub(crate) fn new(kind: u8) -> ContentHash {
        let mut hash = ContentHash {
            state: ContentHash::FNV_OFFSET_BASIS,
        };
        hash.bytes(&[kind]);
        hash
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.state ^= u64::from(byte);
            self.state = self.state.wrapping_mul(ContentHash::FNV_PRIME);
        }
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.bytes(&value.to_le_bytes());
    }

    pub(crate) fn len(&mut self, len: usize) {
        self.u64(len as u64);
    }

    pub(crate) fn str(&mut self, value: &str) {
        self.len(value.len());
        self.bytes(value.as_bytes());
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut hash = self.state;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}

/// An attribute set's hash that does not depend on the order of its attributes: the
/// wrapping sum of each attribute's own hash. Keys are unique within a set, so no two
/// attributes cancel out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttributeSetHash(u64);

impl AttributeSetHash {
    pub(crate) fn add(&mut self, key: &str, value: &str) {
        let mut hash = ContentHash::new(ContentHash::ATTRIBUTE);
        hash.str(key);
        hash.str(value);
        self.0 = self.0.wrapping_add(hash.finish());
    }
}

/// The id of a metric series: the same for every point of the series, whatever the order
/// its resource and point attributes arrive in.
pub(crate) fn series_id(name: &str, unit: &str, resource: AttributeSetHash, attributes: AttributeSetHash) -> u64 {
    let mut hash = ContentHash::new(ContentHash::SERIES);
    hash.str(name);
    hash.str(unit);
    hash.u64(resource.0);
    hash.u64(attributes.0);
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a() {
        // FNV-1a 64 test vectors: the empty input and "a".
        let mut empty = ContentHash {
            state: ContentHash::FNV_OFFSET_BASIS,
        };
        empty.bytes(b"");
        assert_eq!(empty.state, 0xcbf2_9ce4_8422_2325);
        empty.bytes(b"a");
        assert_eq!(empty.state, 0xaf63_dc4c_8601_ec8c);
    }

    fn set(pairs: &[(&str, &str)]) -> AttributeSetHash {
        let mut hash = AttributeSetHash::default();
        for (key, value) in pairs {
            hash.add(key, value);
        }
        hash
    }

    #[test]
    fn a_series_id_depends_on_every_part_but_not_on_attribute_order() {
        let resource = set(&[("service.name", "cart"), ("service.instance.id", "cart-0")]);
        let id = series_id("rpc.server.duration", "s", resource, set(&[("rpc.method", "Get"), ("outcome", "ok")]));
        assert_eq!(id, series_id("rpc.server.duration", "s", resource, set(&[("outcome", "ok"), ("rpc.method", "Get")])));
        let others = [
            series_id("rpc.server.duration", "ms", resource, set(&[("rpc.method", "Get"), ("outcome", "ok")])),
            series_id("rpc.server.requests", "s", resource, set(&[("rpc.method", "Get"), ("outcome", "ok")])),
            series_id("rpc.server.duration", "s", set(&[("service.name", "cart")]), set(&[("rpc.method", "Get"), ("outcome", "ok")])),
            series_id("rpc.server.duration", "s", resource, set(&[("rpc.method", "Get"), ("outcome", "error")])),
            series_id("rpc.server.duration", "s", resource, set(&[("rpc.method", "Getoutcome"), ("", "ok")])),
            // The same pairs as resource instead of point attributes.
            series_id("rpc.server.duration", "s", set(&[("rpc.method", "Get"), ("outcome", "ok")]), resource),
        ];
        assert!(others.iter().all(|other| *other != id));
        // Stored ids must never change.
        assert_eq!(id, 0xb08e_9806_cc48_e555, "{id:#x}");
    }
}
