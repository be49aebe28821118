//! Sizes of the per-stream types and futures (ipush 99c4aae): a tiny crate in /tmp with
//! `ipush = { path = ... }`, glommio 0.9 and futures-lite 2; `cargo run --release`.
//! Printed: TcpStream 120, Conn 96, User 88, stream::run future 712, floor future 272.
use std::rc::Rc;
use std::sync::Arc;
fn main() {
    glommio::LocalExecutorBuilder::default().spawn(|| async move {
        let l = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = glommio::net::TcpStream::connect(addr).await.unwrap();
        let cfg = Arc::new(ipush::config::Config::default());
        let store = ipush::storage::Store::Memory(ipush::storage::memory::MemoryStore::new());
        let shard = Rc::new(ipush::shard::Shard::new(ipush::shard::ids::ShardId(0), cfg, store, vec![None], 0));
        println!("TcpStream {}", std::mem::size_of_val(&s));
        println!("Conn {}  User {}", std::mem::size_of::<ipush::shard::conn::Conn>(), std::mem::size_of::<ipush::shard::User>());
        let f = ipush::transport::stream::run(shard.clone(), s, String::from("u"), Vec::new());
        println!("stream::run future {}", std::mem::size_of_val(&f));
        let s2 = glommio::net::TcpStream::connect(addr).await.unwrap();
        let g = async move { let mut s2 = s2; let mut b=[0u8;1]; let _ = futures_lite::AsyncReadExt::read(&mut s2, &mut b).await; };
        println!("floor future {}", std::mem::size_of_val(&g));
    }).unwrap().join().unwrap();
}
