//! Connection hygiene (`[http]` header_read_timeout, idle_timeout, max_connections): clients
//! that send half a request head are closed in time while a normal client is served
//! throughout, connections over the cap are refused with a 503, idle keep-alive connections
//! are closed after the idle timeout, and each limit is logged once.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::prometheus::{scrape, value};
use crate::support::{Host, client, poll_until};

const REFUSED: &str = "llmchat_http_connections_refused_total";

/// Raises this process's soft open-file limit to at least `needed` (the host it spawns
/// inherits it); panics when the hard limit is lower.
#[expect(unsafe_code, reason = "getrlimit and setrlimit are C functions")]
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, on this stack.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    if limit.rlim_cur >= needed {
        return;
    }
    assert!(
        limit.rlim_max >= needed,
        "this test needs {needed} open files; the hard limit is {}",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: setrlimit only reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
}

/// `127.0.0.1:PORT` of the host.
fn address(host: &Host) -> String {
    host.base.trim_start_matches("http://").to_string()
}

/// Whether the server has closed `stream` (EOF or reset), without blocking; whatever it
/// sent first is read and dropped.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// Reads one response with a `content-length` from a keep-alive connection.
fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("reading a response");
        assert!(n > 0, "the connection closed mid-response: {data:?}");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .expect("a content-length")
                .parse()
                .expect("a numeric content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

/// Waits until the server closes `stream`, for at most `timeout`; returns how long it took.
fn time_to_close(stream: &mut TcpStream, timeout: Duration) -> Duration {
    stream.set_nonblocking(true).expect("non-blocking socket");
    let started = Instant::now();
    poll_until(timeout, "the server to close the connection", || {
        closed_by_server(stream).then(|| started.elapsed())
    })
}

/// The 99th percentile and the maximum of `samples`.
fn p99_and_max(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let max = *samples.last().expect("samples");
    (samples[samples.len() * 99 / 100], max)
}

#[test]
fn half_open_connections_are_closed_by_the_header_timeout_while_clients_are_served() {
    const CONNECTIONS: usize = 5_000;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const MARGIN: Duration = Duration::from_secs(3);
    raise_fd_limit(CONNECTIONS as u64 + 1_000);
    let host = Host::start("[http]\nheader_read_timeout = \"2s\"\n");
    let address = address(&host);

    // A normal client, one new connection per request, throughout the attack.
    let stop = Arc::new(AtomicBool::new(false));
    let normal = std::thread::spawn({
        let url = host.url("/health");
        let stop = stop.clone();
        move || {
            let client = client();
            let mut served = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let status = client.get(&url).send().map(|r| r.status().as_u16());
                served.push((status.map_err(|e| e.to_string()), started.elapsed()));
                // A steady client, not a second flood.
                std::thread::sleep(Duration::from_millis(5));
            }
            served
        }
    });

    // Each connection's lifetime is seen to within one sweep: every 100 connections opened,
    // and every 20 ms once all are.
    let mut open: Vec<(TcpStream, Instant)> = Vec::with_capacity(CONNECTIONS);
    let mut lifetimes = Vec::with_capacity(CONNECTIONS);
    let sweep = |open: &mut Vec<(TcpStream, Instant)>, lifetimes: &mut Vec<Duration>| {
        open.retain_mut(|(stream, opened)| {
            let closed = closed_by_server(stream);
            if closed {
                lifetimes.push(opened.elapsed());
            }
            !closed
        });
    };
    let attack = Instant::now();
    let mut slowest_connect = Duration::ZERO;
    for i in 0..CONNECTIONS {
        let connecting = Instant::now();
        let mut stream = TcpStream::connect(&address)
            .unwrap_or_else(|e| panic!("connection {i}: connecting: {e}"));
        // The host's clock starts at its accept, after the handshake.
        let opened = Instant::now();
        slowest_connect = slowest_connect.max(opened - connecting);
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .unwrap_or_else(|e| panic!("connection {i}: sending half a head: {e}"));
        stream.set_nonblocking(true).expect("non-blocking socket");
        open.push((stream, opened));
        if i % 100 == 99 {
            sweep(&mut open, &mut lifetimes);
        }
    }
    let opened_in = attack.elapsed();
    let last_opened = Instant::now();
    let deadline = last_opened + HEADER_TIMEOUT + MARGIN;
    while !open.is_empty() && Instant::now() < deadline {
        sweep(&mut open, &mut lifetimes);
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_closed_after = last_opened.elapsed();
    stop.store(true, Ordering::Relaxed);
    let served = normal.join().expect("the normal client panicked");

    assert!(
        open.is_empty(),
        "{} of {CONNECTIONS} half-open connections were still open {:?} after the last was opened",
        open.len(),
        HEADER_TIMEOUT + MARGIN
    );
    let shortest = *lifetimes.iter().min().expect("lifetimes");
    let (lifetime_p99, longest) = p99_and_max(lifetimes);
    assert!(
        shortest >= HEADER_TIMEOUT - Duration::from_millis(50),
        "a half-open connection was closed after {shortest:?}, before the header timeout"
    );
    assert!(longest <= HEADER_TIMEOUT + MARGIN, "{longest:?}");

    let failures: Vec<_> = served.iter().filter(|(s, _)| *s != Ok(200)).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests of the normal client failed: {:?}",
        failures.len(),
        served.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served.len() >= 10, "only {} requests served", served.len());
    let (latency_p99, latency_max) = p99_and_max(served.iter().map(|(_, d)| *d).collect());
    eprintln!(
        "{CONNECTIONS} half-open connections opened in {opened_in:?} (slowest connect \
         {slowest_connect:?}), all closed by the server {all_closed_after:?} after the last \
         was opened; lifetime {shortest:?} min, {lifetime_p99:?} p99, {longest:?} max \
         (header_read_timeout {HEADER_TIMEOUT:?}); normal client: {} requests, all 200, latency p99 {latency_p99:?}, max {latency_max:?}",
        served.len()
    );

    let samples = scrape(&host);
    let cut = value(&samples, REFUSED, &[("limit", "header_read_timeout")]).unwrap_or(0.0);
    assert!(cut >= CONNECTIONS as f64, "{REFUSED}: {cut}");
    let log = host.log();
    assert_eq!(
        log.matches("within [http] header_read_timeout").count(),
        1,
        "the header timeout is logged once:\n{log}"
    );
}

#[test]
fn connections_over_max_connections_are_refused_with_503_and_logged_once() {
    const MAX: usize = 20;
    let host = Host::start("[http]\nmax_connections = 20\nheader_read_timeout = \"60s\"\n");
    let address = address(&host);
    // Accepted in order, so the cap is reached by these before any later connection.
    let held: Vec<TcpStream> = (0..MAX)
        .map(|_| TcpStream::connect(&address).expect("connecting"))
        .collect();
    for i in 0..5 {
        let mut stream = TcpStream::connect(&address).expect("connecting over the cap");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("refusal {i}: reading: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 503 ") && answer.ends_with("too many connections\"}"),
            "refusal {i}: {answer:?}"
        );
    }
    drop(held);
    // The host notices the held connections end; then it serves again.
    poll_until(Duration::from_secs(10), "a request under the cap", || {
        let response = client().get(host.url("/health")).send().ok()?;
        (response.status() == 200).then_some(())
    });
    let samples = scrape(&host);
    let refused = value(&samples, REFUSED, &[("limit", "max_connections")]).unwrap_or(0.0);
    assert!(refused >= 5.0, "{REFUSED}: {refused}");
    let open = value(&samples, "llmchat_http_connections_open", &[]).expect("open gauge");
    assert!(open <= 2.0, "open connections: {open}");
    let log = host.log();
    assert_eq!(
        log.matches("[http] max_connections: refusing").count(),
        1,
        "the cap is logged once:\n{log}"
    );
}

#[test]
fn idle_keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let host = Host::start("[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"3s\"\n");
    let address = address(&host);
    let mut stream = TcpStream::connect(&address).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(REQUEST).expect("first request");
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200 "));
    // Idle for longer than the header timeout: the connection stays usable.
    std::thread::sleep(Duration::from_millis(1_500));
    stream.write_all(REQUEST).expect("second request");
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200 "));
    let idle = time_to_close(&mut stream, Duration::from_secs(8));
    assert!(
        idle >= Duration::from_millis(2_900) && idle <= Duration::from_secs(5),
        "an idle connection closed after {idle:?}, not the idle_timeout of 3s"
    );

    // The first byte after idle starts the header timeout.
    let mut stream = TcpStream::connect(&address).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(REQUEST).expect("request");
    assert!(read_response(&mut stream).starts_with("HTTP/1.1 200 "));
    stream
        .write_all(b"GET /health HTTP/1.1\r\n")
        .expect("half a head");
    let head = time_to_close(&mut stream, Duration::from_secs(8));
    assert!(
        head >= Duration::from_millis(900) && head <= Duration::from_millis(2_500),
        "a half head after a request closed after {head:?}, not the header_read_timeout of 1s"
    );

    let samples = scrape(&host);
    let idled = value(&samples, REFUSED, &[("limit", "idle_timeout")]).unwrap_or(0.0);
    assert!(idled >= 1.0, "{REFUSED} idle_timeout: {idled}");
    let log = host.log();
    assert_eq!(
        log.matches("idle for [http] idle_timeout").count(),
        1,
        "the idle timeout is logged once:\n{log}"
    );
    eprintln!(
        "idle keep-alive closed after {idle:?} (idle_timeout 3s); half head after {head:?} (header_read_timeout 1s)"
    );
}
