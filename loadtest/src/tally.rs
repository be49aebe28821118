//! What every run tallies, below the engine and the reports: the latency histogram shape and
//! the failure counters by kind. Pure; any thread.

use hdrhistogram::Histogram;

/// Latency histogram in microseconds, 1 µs .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failures {
    /// ECONNREFUSED (at connect or on the pending socket).
    pub refused: u64,
    /// No stream head (`200`, `101` for WebSocket) within `--connect-timeout-ms` of the connect start.
    pub timeout: u64,
    /// A head with another status than the transport's (or a 303 that could not be followed).
    pub status: u64,
    /// A stream that had its head and then ended (EOF, reset, terminating chunk,
    /// WebSocket close frame).
    pub closed_while_held: u64,
    /// EOF or reset before a complete head.
    pub closed_before_head: u64,
    /// Unparseable head, a head without the transport's framing (chunked, `Upgrade:
    /// websocket`, `text/event-stream`), or bytes that are not valid framing.
    pub bad_response: u64,
    /// Anything else (EADDRNOTAVAIL, EMFILE, ...); see `errors`.
    pub other: u64,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.refused
            + self.timeout
            + self.status
            + self.closed_while_held
            + self.closed_before_head
            + self.bad_response
            + self.other
    }
}
