//! HTTP/1.1 request heads, responses and chunk framing: pure code, no I/O, run on any core's thread.
//!
//! Every parser here takes a byte slice the caller owns and answers "need more bytes"
//! (`Ok(None)`), a parsed value plus the number of bytes it consumed, or a typed error; every
//! encoder appends to a `Vec<u8>` the caller owns. Nothing here allocates per byte, blocks, or
//! touches a socket, so the connection code on each core drives it directly.
//!
//! - [`head`]: request head parser (on `httparse`), with the header facts the server acts on.
//! - [`chunk`]: chunked transfer framing; each ipush message is one chunk.
//! - [`response`]: status lines, error bodies, the stream head, redirects, the cached `Date`.
//! - [`query`]: percent-decoding of the request's query string.
//! - [`cors`]: the client port's CORS policy and headers.

pub mod chunk;
pub mod cors;
pub mod head;
pub mod query;
pub mod response;

pub use self::chunk::{
    chunk_overhead, encode_chunk, parse_chunk, Chunk, ChunkError, LAST_CHUNK, MAX_SIZE_LINE,
    MAX_TRAILER_BYTES,
};
pub use self::head::{parse_head, HeadError, Method, RequestHead, MAX_HEADERS, MAX_HEAD_BYTES};
pub use self::query::{parse_query, query_param, QueryError};
pub use self::response::{
    http_date, reason_phrase, write_error, write_head, write_json_escaped, write_redirect,
    write_response, write_stream_head, CONTINUE_100,
};
