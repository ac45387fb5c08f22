//! Request body decompression with a cap on the decompressed size, so that a small
//! compressed body cannot expand into unbounded memory (a "zip bomb").

use std::io::Read;

use bytes::Bytes;

use super::IngestError;

/// A `Content-Encoding` the OTLP/HTTP receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// Parses a `Content-Encoding` header value (absent means identity).
    pub(crate) fn parse(header: Option<&str>) -> Option<Encoding> {
        match header.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("identity") => Some(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Some(Encoding::Gzip),
            Some("zstd") => Some(Encoding::Zstd),
            Some(_) => None,
        }
    }
}

/// Decompresses `body`, failing with [`IngestError::TooLarge`] as soon as the output would
/// pass `limit` bytes.
pub(crate) fn decompress(encoding: Encoding, body: Bytes, limit: usize) -> Result<Bytes, IngestError> {
    let too_large = || IngestError::TooLarge { limit };
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => {
            return if body.len() > limit { Err(too_large()) } else { Ok(body) };
        }
        Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Encoding::Zstd => Box::new(
            zstd::stream::read::Decoder::new(&body[..])
                .map_err(|error| IngestError::Invalid(format!("zstd: {error}")))?,
        ),
    };
    let mut output = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    // Read one byte past the limit to tell "exactly the limit" from "over it".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut output)
        .map_err(|error| IngestError::Invalid(format!("cannot decompress {encoding:?} body: {error}")))?;
    if output.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(output))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).expect("in-memory write");
        Bytes::from(encoder.finish().expect("in-memory write"))
    }

    #[test]
    fn round_trips_within_the_limit() {
        let data = vec![7u8; 1000];
        assert_eq!(decompress(Encoding::Gzip, gzip(&data), 1000).expect("fits"), data);
        let zstd = zstd::encode_all(&data[..], 3).expect("in-memory");
        assert_eq!(decompress(Encoding::Zstd, Bytes::from(zstd), 1000).expect("fits"), data);
        assert_eq!(decompress(Encoding::Identity, Bytes::from(data.clone()), 1000).expect("fits"), data);
    }

    #[test]
    fn stops_expanding_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert!(matches!(decompress(Encoding::Gzip, bomb, 1 << 20), Err(IngestError::TooLarge { .. })));
        assert!(matches!(
            decompress(Encoding::Identity, Bytes::from(vec![0u8; 11]), 10),
            Err(IngestError::TooLarge { limit: 10 })
        ));
    }

    #[test]
    fn rejects_garbage_and_unknown_encodings() {
        let garbage = Bytes::from_static(b"not gzip at all");
        assert!(matches!(decompress(Encoding::Gzip, garbage, 1000), Err(IngestError::Invalid(_))));
        assert_eq!(Encoding::parse(Some("br")), None);
        assert_eq!(Encoding::parse(Some(" GZIP ")), Some(Encoding::Gzip));
    }
}
