//! WebSocket frame parser on arbitrary client bytes, frame after frame as the stream task reads
//! them (unmasking in place), with each close payload checked: never panics, always makes
//! progress, never reads past the buffer, refuses oversized frames, and a close answer is
//! always a code that may be sent.
#![no_main]

use ipush::transport::ws::{check_close, parse_frame};
use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::frame::coding::{Control, OpCode};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut pos = 0;
    while pos < buf.len() {
        let f = match parse_frame(&mut buf[pos..], MAX) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => break,
        };
        assert!(f.start <= f.end && pos + f.end <= buf.len());
        assert!(f.end > 0, "a frame takes at least its header");
        assert!(f.end - f.start <= MAX);
        if let OpCode::Control(c) = f.opcode {
            assert!(
                f.fin && f.end - f.start <= 125,
                "control frames are short and final"
            );
            if c == Control::Close {
                match check_close(&buf[pos + f.start..pos + f.end]) {
                    Ok(Some(code)) => assert!(code >= 1000 && code != 1005 && code != 1006),
                    Ok(None) => {}
                    Err((code, _)) => assert!(code == 1002 || code == 1007),
                }
            }
        }
        pos += f.end;
    }
    // The close check alone, on any payload.
    let _ = check_close(data);
});
