//! Protobuf's wire format, read in place, for the messages ingest decodes by hand (the
//! envelope of a trace export and its spans). Every length-delimited value is a slice of
//! the encoded message.

/// Why a request is not valid protobuf.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A message decoded by hand does not parse.
    #[error("{0}")]
    Malformed(&'static str),
    /// A known field of a message decoded by hand came with another wire type than its
    /// type's.
    #[error("{message} field {field}: invalid wire type")]
    WrongWireType { message: &'static str, field: u32 },
    /// prost could not decode a message inside it.
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
}

/// A field's value as the wire encodes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    /// A length-delimited value (protobuf's `LEN`): a string, bytes or an embedded message.
    Len(&'a [u8]),
    Fixed32(u32),
}

/// The fields of an encoded message as (field number, value), in wire order. Groups (wire
/// types 3 and 4), which OTLP never uses, are refused; so is anything after an error.
#[inline]
pub(crate) fn fields(encoded: &[u8]) -> Fields<'_> {
    Fields { rest: encoded }
}

/// Iterator of [`fields`].
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, WireValue<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, WireValue<'a>), WireError> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).ok().filter(|number| (1..=MAX_FIELD_NUMBER).contains(number));
        let Some(number) = number else {
            return Err(WireError::Malformed("invalid field number"));
        };
        let value = match key & 0b111 {
            VARINT => WireValue::Varint(self.varint()?),
            FIXED64 => WireValue::Fixed64(u64::from_le_bytes(self.array()?)),
            LENGTH_DELIMITED => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Malformed("field too long"))?;
                WireValue::Len(self.take(len)?)
            }
            FIXED32 => WireValue::Fixed32(u32::from_le_bytes(self.array()?)),
            _ => return Err(WireError::Malformed("unsupported wire type")),
        };
        Ok((number, value))
    }

    /// A varint of at most ten bytes, whose tenth holds only the 64th bit (as prost reads
    /// them).
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Field keys and lengths below 128, most of them, take one byte.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for (index, &byte) in self.rest.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte < 0x80 {
                if index == 9 && byte > 1 {
                    break;
                }
                self.rest = &self.rest[index + 1..];
                return Ok(value);
            }
        }
        Err(WireError::Malformed(if self.rest.len() < 10 { "truncated varint" } else { "invalid varint" }))
    }

    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let Some((array, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(WireError::Malformed("fixed-size field cut short"));
        };
        self.rest = rest;
        Ok(*array)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.rest.len() {
            return Err(WireError::Malformed("field runs past the end of its message"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

/// The largest field number protobuf allows.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;
const FIXED32: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(encoded: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, WireError> {
        fields(encoded).collect()
    }

    #[test]
    fn every_wire_type_reads_as_prost_writes_it() {
        let mut encoded = Vec::new();
        prost::encoding::uint64::encode(1, &u64::MAX, &mut encoded);
        prost::encoding::fixed64::encode(2, &0x0102_0304_0506_0708, &mut encoded);
        prost::encoding::bytes::encode(3, &b"text".to_vec(), &mut encoded);
        prost::encoding::fixed32::encode(MAX_FIELD_NUMBER, &7, &mut encoded);
        let fields = decode(&encoded).expect("valid fields");
        assert_eq!(
            fields,
            [
                (1, WireValue::Varint(u64::MAX)),
                (2, WireValue::Fixed64(0x0102_0304_0506_0708)),
                (3, WireValue::Len(b"text")),
                (MAX_FIELD_NUMBER, WireValue::Fixed32(7)),
            ]
        );
    }

    #[test]
    fn malformed_fields_are_refused() {
        let malformed: [&[u8]; 7] = [
            // Field number 0.
            &[0, 1],
            // A varint cut short, and one whose tenth byte holds more than the 64th bit.
            &[1 << 3, 0x80],
            &[1 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            // A length past the end of the message, and a fixed64 cut short.
            &[(1 << 3) | 2, 5, 1, 2],
            &[(1 << 3) | 1, 1, 2, 3],
            // A group (wire type 3), and wire type 7, which does not exist.
            &[(1 << 3) | 3],
            &[(1 << 3) | 7],
        ];
        for encoded in malformed {
            assert!(decode(encoded).is_err(), "{encoded:?}");
        }
    }
}
