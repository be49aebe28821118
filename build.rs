// build.rs — compile the vendored NNG C library (vendor/nng, NNG 1.4.0) into a
// static `libnng.a` with the `cc` crate, so that ipush builds with only the
// Rust toolchain and a C compiler (no cmake, no libnng-dev).
//
// How the link works:
//   * `nng = { version = "1", default-features = false }` turns off nng-sys's
//     cmake-based `build-nng` feature; nng-sys 1.4.0-rc.0 then prints
//     `cargo:rustc-link-lib=dylib=nng`, i.e. rustc passes `-Wl,-Bdynamic -lnng`.
//   * We compile libnng.a into OUT_DIR and print only
//     `cargo:rustc-link-search=native=$OUT_DIR` (cc's own link metadata is
//     switched off, so there is exactly one `-lnng` on the link line).
//     Under -Bdynamic the linker looks for libnng.so and then libnng.a in each
//     search directory in turn; OUT_DIR holds only libnng.a, so `-lnng` takes
//     the static archive. Checked with rust-lld (the default on
//     x86_64-unknown-linux-gnu) and with GNU ld (`-C linker-features=-lld`):
//     the binary works and `ldd` does not list libnng.so.
//   * The link-search line carries over to every crate that links ipush
//     (bins, tests, benches, workspace members that depend on ipush).
//
// The file list and defines match what NNG's CMake build produces on Linux
// (src/platform/posix/CMakeLists.txt), with these choices:
// epoll pollq, getrandom() for randomness (not glibc 2.36's arc4random, so
// older glibc works too), no TLS, no HTTP/WebSocket, and no stats
// (NNG_ENABLE_STATS is not defined; nng-sys also builds without stats when its
// default features are off).
use std::env;
use std::path::PathBuf;

/// NNG sources, relative to vendor/nng.
const SOURCES: &[&str] = &[
    // public API
    "src/nng.c",
    "src/nng_legacy.c", // the nng crate uses nng_listener_setopt* (legacy API)
    // core
    "src/core/aio.c",
    "src/core/clock.c",
    "src/core/device.c",
    "src/core/dialer.c",
    "src/core/file.c",
    "src/core/idhash.c",
    "src/core/init.c",
    "src/core/list.c",
    "src/core/listener.c",
    "src/core/lmq.c",
    "src/core/message.c",
    "src/core/msgqueue.c",
    "src/core/options.c",
    "src/core/panic.c",
    "src/core/pipe.c",
    "src/core/pollable.c",
    "src/core/protocol.c",
    "src/core/reap.c",
    "src/core/socket.c",
    "src/core/stats.c",
    "src/core/stream.c",
    "src/core/strs.c",
    "src/core/taskq.c",
    "src/core/tcp.c",
    "src/core/thread.c",
    "src/core/timer.c",
    "src/core/transport.c",
    "src/core/url.c",
    // platform: POSIX/Linux (epoll + eventfd poller, getrandom)
    "src/platform/posix/posix_alloc.c",
    "src/platform/posix/posix_atomic.c",
    "src/platform/posix/posix_clock.c",
    "src/platform/posix/posix_debug.c",
    "src/platform/posix/posix_file.c",
    "src/platform/posix/posix_ipcconn.c", // core/stream.c needs the ipc:// stream factory
    "src/platform/posix/posix_ipcdial.c",
    "src/platform/posix/posix_ipclisten.c",
    "src/platform/posix/posix_pipe.c",
    "src/platform/posix/posix_pollq_epoll.c",
    "src/platform/posix/posix_rand_getrandom.c",
    "src/platform/posix/posix_resolv_gai.c",
    "src/platform/posix/posix_sockaddr.c",
    "src/platform/posix/posix_tcpconn.c",
    "src/platform/posix/posix_tcpdial.c",
    "src/platform/posix/posix_tcplisten.c",
    "src/platform/posix/posix_thread.c",
    "src/platform/posix/posix_udp.c",
    // protocols. ipush only uses bus0, but the nng crate's Socket::new()
    // and RawSocket::new() call every nng_*0_open(), so all of them must
    // be present for the link to succeed.
    "src/sp/protocol/bus0/bus.c",
    "src/sp/protocol/pair0/pair.c",
    "src/sp/protocol/pair1/pair.c",
    "src/sp/protocol/pair1/pair1_poly.c",
    "src/sp/protocol/pipeline0/pull.c",
    "src/sp/protocol/pipeline0/push.c",
    "src/sp/protocol/pubsub0/pub.c",
    "src/sp/protocol/pubsub0/sub.c",
    "src/sp/protocol/pubsub0/xsub.c",
    "src/sp/protocol/reqrep0/rep.c",
    "src/sp/protocol/reqrep0/req.c",
    "src/sp/protocol/reqrep0/xrep.c",
    "src/sp/protocol/reqrep0/xreq.c",
    "src/sp/protocol/survey0/respond.c",
    "src/sp/protocol/survey0/survey.c",
    "src/sp/protocol/survey0/xrespond.c",
    "src/sp/protocol/survey0/xsurvey.c",
    // transports (only tcp://; also registered through NNG_TRANSPORT_TCP below)
    "src/sp/transport/tcp/tcp.c",
    // supplemental: core/stream.c refers to the TLS and WebSocket stream
    // factories. Without NNG_SUPP_TLS and without websocket.c these are
    // stubs that return NNG_ENOTSUP.
    "src/supplemental/tls/tls_common.c",
    "src/supplemental/websocket/stub.c",
];

/// Defines that NNG's CMake build would produce on Linux/glibc.
const DEFINES: &[(&str, Option<&str>)] = &[
    // CMakeLists.txt (top level)
    ("NNG_PRIVATE", None),
    ("NNG_STATIC_LIB", None),
    ("NNG_PLATFORM_POSIX", None),
    ("NNG_PLATFORM_LINUX", None),
    ("NNG_USE_EVENTFD", None),
    ("NNG_HAVE_ABSTRACT_SOCKETS", None),
    ("NNG_MAX_TASKQ_THREADS", Some("16")),
    // src/platform/posix/CMakeLists.txt: feature-test macros
    ("_GNU_SOURCE", None),
    ("_REENTRANT", None),
    ("_THREAD_SAFE", None),
    ("_POSIX_PTHREAD_SEMANTICS", None),
    // ... and the results of its configure checks on Linux/glibc
    ("NNG_HAVE_LOCKF", Some("1")),
    ("NNG_HAVE_FLOCK", Some("1")),
    ("NNG_HAVE_GETRANDOM", Some("1")), // glibc >= 2.25
    ("NNG_HAVE_CLOCK_GETTIME", Some("1")),
    ("NNG_HAVE_SEMAPHORE_PTHREAD", Some("1")),
    ("NNG_HAVE_PTHREAD_ATFORK_PTHREAD", Some("1")),
    ("NNG_HAVE_PTHREAD_SETNAME_NP", Some("1")),
    ("NNG_HAVE_UNIX_SOCKETS", Some("1")),
    ("NNG_HAVE_BACKTRACE", Some("1")),
    ("NNG_HAVE_MSG_CONTROL", Some("1")),
    ("NNG_HAVE_EVENTFD", Some("1")),
    ("NNG_HAVE_EPOLL", Some("1")),
    ("NNG_HAVE_EPOLL_CREATE1", Some("1")),
    ("NNG_HAVE_SOPEERCRED", Some("1")),
    ("NNG_HAVE_STDATOMIC", Some("1")),
    // src/core/CMakeLists.txt checks (strlcpy: not in glibc < 2.38, left out)
    ("NNG_HAVE_STRNLEN", Some("1")),
    ("NNG_HAVE_STRCASECMP", Some("1")),
    ("NNG_HAVE_STRNCASECMP", Some("1")),
    // src/sp/**/CMakeLists.txt
    ("NNG_HAVE_BUS0", None),
    ("NNG_HAVE_PAIR0", None),
    ("NNG_HAVE_PAIR1", None),
    ("NNG_HAVE_PUSH0", None),
    ("NNG_HAVE_PULL0", None),
    ("NNG_HAVE_PUB0", None),
    ("NNG_HAVE_SUB0", None),
    ("NNG_HAVE_REQ0", None),
    ("NNG_HAVE_REP0", None),
    ("NNG_HAVE_SURVEYOR0", None),
    ("NNG_HAVE_RESPONDENT0", None),
    ("NNG_TRANSPORT_TCP", None),
    // Deliberately not defined: NNG_ENABLE_STATS, NNG_SUPP_TLS, NNG_SUPP_HTTP,
    // NNG_TRANSPORT_{INPROC,IPC,TLS,WS,WSS,ZEROTIER}.
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=vendor/nng");
    for var in ["CC", "CFLAGS", "AR", "ARFLAGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        panic!(
            "ipush's vendored NNG build (build.rs) only supports Linux targets \
             (target_os = {target_os:?}); add the matching platform sources and defines first"
        );
    }

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let nng = manifest_dir.join("vendor").join("nng");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    let mut build = cc::Build::new();
    build
        .include(nng.join("include"))
        .include(nng.join("src"))
        .std("c99")
        // Link lines are printed below. cc would otherwise add
        // `rustc-link-lib=static=nng` next to nng-sys's `dylib=nng`.
        // gcc warnings still show up as cargo warnings (with cc's default
        // -Wall -Wextra, NNG 1.4.0 builds without any on gcc 12).
        .cargo_metadata(false);
    for (name, value) in DEFINES {
        build.define(name, *value);
    }
    for src in SOURCES {
        build.file(nng.join(src));
    }
    build.compile("nng"); // -> $OUT_DIR/libnng.a

    // nng-sys prints `rustc-link-lib=dylib=nng`; this makes that `-lnng` find
    // our libnng.a (there is no libnng.so in OUT_DIR).
    println!("cargo:rustc-link-search=native={}", out_dir.display());
    // NNG uses pthreads (part of libc since glibc 2.34, a separate
    // library before that).
    println!("cargo:rustc-link-lib=dylib=pthread");
}
