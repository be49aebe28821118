//! Chunked transfer framing (RFC 9112 §7.1): each ipush message is one chunk
//! `<hex len>\r\n<payload>\r\n`, the stream ends with `0\r\n\r\n`. Pure code, no I/O; runs on
//! the connection's core.

use std::fmt;

/// The zero-size last chunk with no trailers: ends a chunked stream.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// Longest size line accepted (hex digits plus any extension), not counting its CRLF.
pub const MAX_SIZE_LINE: usize = 64;
/// Most bytes of trailer section accepted after the zero chunk, final blank line included.
pub const MAX_TRAILER_BYTES: usize = 4096;

/// One decoded chunk. `Data` borrows the payload from the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// The zero-size last chunk `0\r\n`, any trailers, and the blank line.
    End,
}

/// Why a chunk was refused; any of these ends the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Size line empty, not hex, overflowing, longer than [`MAX_SIZE_LINE`], or not CRLF-ended.
    BadSize,
    /// Declared size is over the caller's limit; reported before any payload byte is needed.
    TooLarge { size: u64 },
    /// Payload not followed by CRLF, or a bad/oversized trailer section.
    BadTerminator,
}

impl ChunkError {
    /// Short text for a final `{"error":"..."}` chunk.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::BadSize => "bad chunk size",
            ChunkError::TooLarge { .. } => "message too large",
            ChunkError::BadTerminator => "bad chunk terminator",
        }
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::TooLarge { size } => write!(f, "message too large ({size} bytes)"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Decodes one chunk from the start of `buf`.
///
/// `Ok(None)`: need more bytes. `Ok(Some((chunk, consumed)))`: `consumed` bytes of `buf` made up
/// the chunk; the rest is the next chunk. The declared size is checked against `max_payload` as
/// soon as the size line is complete, so an oversized message is refused before it arrives.
/// Size line: hex digits (either case), optional whitespace and `;extension` (ignored), CRLF.
/// Errors are reported as early as the bytes allow: a buffer that is a prefix of a bad input
/// gives either `Ok(None)` or the same error.
pub fn parse_chunk(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(Chunk<'_>, usize)>, ChunkError> {
    let (size, line) = match parse_size_line(buf)? {
        Some(v) => v,
        None => return Ok(None),
    };
    if size == 0 {
        return Ok(skip_trailers(&buf[line..])?.map(|n| (Chunk::End, line + n)));
    }
    if size > max_payload as u64 {
        return Err(ChunkError::TooLarge { size });
    }
    // size <= max_payload, so it fits in usize.
    let size = size as usize;
    let rest = &buf[line..];
    if let Some(&b) = rest.get(size) {
        if b != b'\r' {
            return Err(ChunkError::BadTerminator);
        }
    }
    if let Some(&b) = rest.get(size.saturating_add(1)) {
        if b != b'\n' {
            return Err(ChunkError::BadTerminator);
        }
    }
    if rest.len() < size.saturating_add(2) {
        return Ok(None);
    }
    Ok(Some((Chunk::Data(&rest[..size]), line + size + 2)))
}

/// Returns (size, bytes of the size line including CRLF).
fn parse_size_line(buf: &[u8]) -> Result<Option<(u64, usize)>, ChunkError> {
    // Never look further than a maximal line plus its CRLF.
    let window = &buf[..buf.len().min(MAX_SIZE_LINE + 2)];
    let need_more = |seen: usize| {
        if seen > MAX_SIZE_LINE {
            Err(ChunkError::BadSize)
        } else {
            Ok(None)
        }
    };
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(d) = window.get(i).and_then(|&b| hex_value(b)) {
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkError::BadSize)?;
        i += 1;
    }
    if i == window.len() {
        return need_more(i);
    }
    if i == 0 {
        return Err(ChunkError::BadSize);
    }
    while i < window.len() && (window[i] == b' ' || window[i] == b'\t') {
        i += 1;
    }
    if window.get(i) == Some(&b';') {
        while i < window.len() && window[i] != b'\r' && window[i] != b'\n' {
            i += 1;
        }
    }
    if i == window.len() {
        return need_more(i);
    }
    if window[i] != b'\r' || i > MAX_SIZE_LINE {
        return Err(ChunkError::BadSize);
    }
    match window.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((size, i + 2))),
        Some(_) => Err(ChunkError::BadSize),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Skips `*(field-line CRLF) CRLF` after the zero chunk; returns the bytes it covers.
fn skip_trailers(buf: &[u8]) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(MAX_TRAILER_BYTES)];
    let mut line_start = 0;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => {
                if i == 0 || window[i - 1] != b'\r' {
                    return Err(ChunkError::BadTerminator);
                }
                if i - 1 == line_start {
                    return Ok(Some(i + 1));
                }
                line_start = i + 1;
            }
            b'\r' if window.get(i + 1).is_some_and(|&n| n != b'\n') => {
                return Err(ChunkError::BadTerminator);
            }
            _ => {}
        }
    }
    if buf.len() >= MAX_TRAILER_BYTES {
        Err(ChunkError::BadTerminator)
    } else {
        Ok(None)
    }
}

fn hex_len(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        (usize::BITS - n.leading_zeros()).div_ceil(4) as usize
    }
}

/// Appends `<hex len>\r\n<payload>\r\n` (lower-case hex, no leading zeros).
///
/// An empty payload would encode as `0\r\n\r\n`, which is [`LAST_CHUNK`] and ends the stream;
/// callers must not send empty messages.
pub fn encode_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(chunk_overhead(payload.len()) + payload.len());
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let len = hex_len(payload.len());
    let mut n = payload.len();
    for d in digits[..len].iter_mut().rev() {
        *d = HEX[n & 0xf];
        n >>= 4;
    }
    out.extend_from_slice(&digits[..len]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Bytes of framing [`encode_chunk`] puts around a payload of `n` bytes.
pub fn chunk_overhead(n: usize) -> usize {
    hex_len(n) + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    /// Every strict prefix of the chunk gives Ok(None); the chunk and any longer prefix give
    /// the same result.
    fn check_splits<'a>(input: &'a [u8], max: usize) -> (Chunk<'a>, usize) {
        let (chunk, n) = parse_chunk(input, max).expect("valid").expect("complete");
        for i in 0..n {
            assert_eq!(parse_chunk(&input[..i], max), Ok(None), "prefix {i}");
        }
        for i in n..=input.len() {
            assert_eq!(
                parse_chunk(&input[..i], max).unwrap().map(|(_, n)| n),
                Some(n),
                "prefix {i}"
            );
        }
        (chunk, n)
    }

    /// Every prefix of a bad input gives Ok(None) or the same error; the whole gives the error.
    fn check_error_splits(input: &[u8], max: usize, err: ChunkError) {
        assert_eq!(parse_chunk(input, max), Err(err.clone()));
        for i in 0..input.len() {
            match parse_chunk(&input[..i], max) {
                Ok(None) => {}
                Err(e) => assert_eq!(e, err, "prefix {i}"),
                Ok(Some(c)) => panic!("prefix {i} parsed {c:?}"),
            }
        }
    }

    #[test]
    fn heartbeat() {
        let input = b"7\r\n{\"y\":0}\r\n";
        let (chunk, n) = check_splits(input, MAX);
        assert_eq!(chunk, Chunk::Data(b"{\"y\":0}"));
        assert_eq!(n, input.len());
    }

    #[test]
    fn upper_and_lower_hex() {
        let payload = [b'x'; 26];
        for line in [&b"1A\r\n"[..], b"1a\r\n", b"001a\r\n"] {
            let mut input = line.to_vec();
            input.extend_from_slice(&payload);
            input.extend_from_slice(b"\r\n");
            let (chunk, n) = check_splits(&input, MAX);
            assert_eq!(chunk, Chunk::Data(&payload[..]));
            assert_eq!(n, input.len());
        }
        let mut input = b"FfF\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 0xfff));
        input.extend_from_slice(b"\r\n");
        assert_eq!(check_splits(&input, MAX).1, input.len());
    }

    #[test]
    fn extensions_ignored() {
        for input in [
            &b"5;name=value\r\nhello\r\n"[..],
            b"5;a;b=\"c d\"\r\nhello\r\n",
            b"5 ;ext\r\nhello\r\n",
            b"5\t\r\nhello\r\n",
        ] {
            let (chunk, n) = check_splits(input, MAX);
            assert_eq!(chunk, Chunk::Data(b"hello"));
            assert_eq!(n, input.len());
        }
    }

    #[test]
    fn zero_chunk() {
        for input in [
            LAST_CHUNK,
            b"000\r\n\r\n",
            b"0;ext=1\r\n\r\n",
            b"0\r\nX-Trailer: a\r\nOther: b\r\n\r\n",
        ] {
            let (chunk, n) = check_splits(input, MAX);
            assert_eq!(chunk, Chunk::End);
            assert_eq!(n, input.len());
        }
        // The zero chunk is never "too large".
        assert_eq!(parse_chunk(LAST_CHUNK, 0), Ok(Some((Chunk::End, 5))));
    }

    #[test]
    fn pipelined_chunks() {
        let mut buf = Vec::new();
        encode_chunk(&mut buf, b"{\"y\":0}");
        encode_chunk(
            &mut buf,
            b"{\"y\":1,\"f\":\"user001\",\"c\":\"channel001\"}",
        );
        buf.extend_from_slice(b"A\r\n0123456789\r\n");
        buf.extend_from_slice(LAST_CHUNK);
        buf.extend_from_slice(b"GET");
        let mut got = Vec::new();
        let mut pos = 0;
        loop {
            let (chunk, n) = parse_chunk(&buf[pos..], MAX).unwrap().unwrap();
            pos += n;
            match chunk {
                Chunk::Data(d) => got.push(d.to_vec()),
                Chunk::End => break,
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], b"{\"y\":0}");
        assert_eq!(got[2], b"0123456789");
        assert_eq!(&buf[pos..], b"GET");
        // Chunk by chunk, each split at every byte boundary.
        let mut pos = 0;
        for _ in 0..4 {
            let (_, n) = check_splits(&buf[pos..], MAX);
            pos += n;
        }
        assert_eq!(parse_chunk(&buf[pos..], MAX), Err(ChunkError::BadSize));
    }

    #[test]
    fn too_large_before_payload() {
        assert_eq!(
            parse_chunk(b"100\r\n", 255),
            Err(ChunkError::TooLarge { size: 256 })
        );
        assert_eq!(parse_chunk(b"100\r", 255), Ok(None));
        assert_eq!(parse_chunk(b"ff\r\n", 255), Ok(None));
        check_error_splits(
            b"10001\r\nabc",
            0x10000,
            ChunkError::TooLarge { size: 0x10001 },
        );
        assert_eq!(
            parse_chunk(b"ffffffffffffffff\r\n", usize::MAX),
            if usize::BITS == 64 {
                Ok(None)
            } else {
                Err(ChunkError::TooLarge { size: u64::MAX })
            }
        );
        assert_eq!(
            ChunkError::TooLarge { size: 1 }.reason(),
            "message too large"
        );
    }

    #[test]
    fn bad_size() {
        let long_zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        let mut long_ext = b"5;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'e', 200));
        for input in [
            &b"\r\n"[..],
            b";ext\r\n",
            b"g\r\n",
            b"-1\r\n",
            b" 5\r\n",
            b"0x5\r\n",
            b"5\rx",
            b"5\n",
            b"5;ext\n",
            b"5 x\r\n",
            b"10000000000000000\r\n",
            &long_zeros,
            &long_ext,
            b"{\"y\":0}",
        ] {
            check_error_splits(input, MAX, ChunkError::BadSize);
        }
        assert_eq!(ChunkError::BadSize.reason(), "bad chunk size");
    }

    #[test]
    fn size_line_at_limit() {
        let mut input = vec![b'0'; MAX_SIZE_LINE - 1];
        input.extend_from_slice(b"3\r\nabc\r\n");
        assert_eq!(check_splits(&input, MAX).0, Chunk::Data(b"abc"));
        let mut input = b"3;".to_vec();
        input.extend(std::iter::repeat_n(b'e', MAX_SIZE_LINE - 2));
        input.extend_from_slice(b"\r\nabc\r\n");
        assert_eq!(check_splits(&input, MAX).0, Chunk::Data(b"abc"));
        let mut input = b"3;".to_vec();
        input.extend(std::iter::repeat_n(b'e', MAX_SIZE_LINE - 1));
        input.extend_from_slice(b"\r\nabc\r\n");
        check_error_splits(&input, MAX, ChunkError::BadSize);
    }

    #[test]
    fn bad_terminator() {
        for input in [
            &b"3\r\nabcX"[..],
            b"3\r\nabc\rX",
            b"3\r\nabc\n\n",
            b"3\r\nabcd\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\nX: y\rz\r\n\r\n",
            b"0\r\n\rX",
        ] {
            check_error_splits(input, MAX, ChunkError::BadTerminator);
        }
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..200 {
            trailers.extend_from_slice(b"X-Trailer: aaaaaaaaaaaaaaaa\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(parse_chunk(&trailers, MAX), Err(ChunkError::BadTerminator));
        assert_eq!(ChunkError::BadTerminator.reason(), "bad chunk terminator");
    }

    #[test]
    fn trailers_at_limit() {
        let mut input = b"0\r\nX: ".to_vec();
        let fill = MAX_TRAILER_BYTES - 3 - 4;
        input.extend(std::iter::repeat_n(b'v', fill));
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(input.len() - 3, MAX_TRAILER_BYTES);
        assert_eq!(
            parse_chunk(&input, MAX),
            Ok(Some((Chunk::End, input.len())))
        );
        input.insert(6, b'v');
        assert_eq!(parse_chunk(&input, MAX), Err(ChunkError::BadTerminator));
    }

    #[test]
    fn oversized_inputs_never_panic() {
        let garbage = vec![b'z'; 200 * 1024];
        assert_eq!(parse_chunk(&garbage, MAX), Err(ChunkError::BadSize));
        let hex = vec![b'f'; 200 * 1024];
        assert_eq!(parse_chunk(&hex, MAX), Err(ChunkError::BadSize));
        let mut big = b"32000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'p', 0x32000));
        big.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_chunk(&big, MAX),
            Err(ChunkError::TooLarge { size: 0x32000 })
        );
        let (c, n) = parse_chunk(&big, 0x32000).unwrap().unwrap();
        assert_eq!(n, big.len());
        assert!(matches!(c, Chunk::Data(d) if d.len() == 0x32000));
        let mut zeros_then_crlf = b"0\r\n".to_vec();
        zeros_then_crlf.extend(std::iter::repeat_n(b'x', 200 * 1024));
        assert_eq!(
            parse_chunk(&zeros_then_crlf, MAX),
            Err(ChunkError::BadTerminator)
        );
    }

    #[test]
    fn encode_exact_bytes() {
        let mut out = Vec::new();
        encode_chunk(&mut out, b"{\"y\":0}");
        assert_eq!(out, b"7\r\n{\"y\":0}\r\n");
        out.clear();
        encode_chunk(&mut out, &[b'a'; 255]);
        assert_eq!(&out[..4], b"ff\r\n");
        out.clear();
        encode_chunk(&mut out, &[b'a'; 256]);
        assert_eq!(&out[..5], b"100\r\n");
        out.clear();
        encode_chunk(&mut out, b"");
        assert_eq!(out, LAST_CHUNK);
    }

    #[test]
    fn encode_roundtrip_and_overhead() {
        let sizes = (0..600).chain([4095, 4096, 65535, 65536, 1 << 20]);
        for len in sizes {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = vec![b'#'];
            encode_chunk(&mut out, &payload);
            assert_eq!(
                out.len() - 1,
                payload.len() + chunk_overhead(len),
                "len {len}"
            );
            let (chunk, n) = parse_chunk(&out[1..], usize::MAX).unwrap().unwrap();
            assert_eq!(n, out.len() - 1);
            if len == 0 {
                assert_eq!(chunk, Chunk::End);
            } else {
                assert_eq!(chunk, Chunk::Data(&payload[..]));
            }
        }
        assert_eq!(chunk_overhead(0), 5);
        assert_eq!(chunk_overhead(15), 5);
        assert_eq!(chunk_overhead(16), 6);
        assert_eq!(
            chunk_overhead(usize::MAX),
            2 * std::mem::size_of::<usize>() + 4
        );
    }

    #[test]
    fn pseudo_random_inputs_keep_invariants() {
        let alphabet = b"0123456789abcdefABCDEFxz;= \t\r\n\r\n";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let mut y = x;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    y ^= y << 13;
                    y ^= y >> 7;
                    y ^= y << 17;
                    alphabet[(y % alphabet.len() as u64) as usize]
                })
                .collect();
            let mut pos = 0;
            while let Ok(Some((chunk, n))) = parse_chunk(&buf[pos..], 16) {
                assert!(n > 0 && n <= buf.len() - pos);
                if let Chunk::Data(d) = chunk {
                    assert!(!d.is_empty() && d.len() <= 16);
                }
                pos += n;
            }
        }
    }
}
