//! Guards the per-stream memory budget: the state an idle stream task keeps must stay small
//! (see perf/RESULTS.md; every byte here is paid once per connected client).
use ipush::transport::stream::StreamTask;

#[test]
fn idle_stream_state_stays_small() {
    let size = std::mem::size_of::<StreamTask>();
    // Was 712 bytes as an async fn holding start-up state; a glommio TcpStream alone is 120.
    eprintln!("StreamTask {size} B");
    assert!(size <= 200, "stream task state grew to {size} bytes");
    let conn = std::mem::size_of::<ipush::shard::conn::Conn>();
    let user = std::mem::size_of::<ipush::shard::User>();
    // Conn grew from 96 to 112 B with what the core's flusher needs to write to the socket
    // directly (fd, mode, dirty/final flags, the boxed unsent bytes). User went from 64 to
    // 56 B (its stream in a Cell): with the Rc's counts that is an 80-byte malloc chunk
    // instead of 96, paid by every resident user, online or not.
    eprintln!("Conn {conn} B, User {user} B");
    assert!(conn <= 112 && user <= 56, "Conn {conn} B, User {user} B");
}
