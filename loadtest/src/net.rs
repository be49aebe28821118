//! Socket helpers shared by every connection engine (`hold`, `ramp`/`worker`, the message
//! scenarios): name resolution, non-blocking connects from a chosen source address, and how a
//! connect error is counted.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result};
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

/// Why a stream failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Fail {
    Refused,
    Timeout,
    Status(u16),
    ClosedWhileHeld,
    ClosedBeforeHead,
    BadResponse,
    Other(String),
}

pub fn classify(e: &io::Error) -> Fail {
    match e.kind() {
        ErrorKind::ConnectionRefused => Fail::Refused,
        ErrorKind::TimedOut => Fail::Timeout,
        _ => match e.raw_os_error() {
            Some(libc::ETIMEDOUT) => Fail::Timeout,
            Some(code) => Fail::Other(format!("os error {code}: {}", errno_name(code))),
            None => Fail::Other(e.kind().to_string()),
        },
    }
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL (out of local ports? use --src)",
        libc::EMFILE => "EMFILE (fd limit)",
        libc::ENFILE => "ENFILE (file-max)",
        libc::ECONNRESET => "ECONNRESET",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::EADDRINUSE => "EADDRINUSE",
        _ => "",
    }
}

pub fn resolve(target: &str) -> Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} resolves to nothing"))
}

/// Starts a non-blocking connect to `addr`, from `src` when given.
pub fn open_socket(
    addr: SocketAddr,
    src: Option<Ipv4Addr>,
    nodelay: bool,
) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    if nodelay {
        sock.set_nodelay(true)?;
    }
    if let Some(ip) = src {
        // Defer the port choice to connect() so the 4-tuple, not the source
        // address alone, has to be unique.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own with a c_int option value.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(sock)))
}
