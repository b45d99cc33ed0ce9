//! HTTPS and HTTP/2 inbound (`[http] tls`, `--tls-cert/--tls-key`, `[http] h2c`): ALPN
//! gives HTTP/2 to clients that offer it and HTTP/1.1 to the others, Server-Sent Events
//! stream over both, SIGHUP swaps the certificate (and a broken one is refused while the
//! old one keeps serving), the connection limits hold before and after the handshake, h2c
//! shares the plain port with HTTP/1.1, and a bad file stops start-up naming it. Every
//! certificate is made at test time by a private CA (`support::certs`).

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, ClientBuilder, Response};
use reqwest::{StatusCode, Version};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

use crate::chat_api::sse_events;
use crate::support::certs::{SERVER_EXT, make_certificates, make_signed};
use crate::support::fake_openai::{API_KEY, FakeOpenAi};
use crate::support::prometheus::{Sample, parse, value};
use crate::support::{
    Host, client, component, component_toml, llmchat_command, poll_until, route_toml,
};

const WAIT: Duration = Duration::from_secs(30);
const REFUSED: &str = "llmchat_http_connections_refused_total";

/// A CA with two server certificates for 127.0.0.1 it signed: `server` and `renewed`.
struct Certs(tempfile::TempDir);

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        make_signed(
            dir.path(),
            "renewed",
            "llmchat test server renewed",
            SERVER_EXT,
        );
        Certs(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// `LLMCHAT_TLS_CERT` and `LLMCHAT_TLS_KEY` for the `server` certificate.
    fn env(&self) -> [(&'static str, String); 2] {
        [
            (
                "LLMCHAT_TLS_CERT",
                self.path("server.crt").display().to_string(),
            ),
            (
                "LLMCHAT_TLS_KEY",
                self.path("server.key").display().to_string(),
            ),
        ]
    }

    /// A client that trusts the CA (and nothing else), keeps no idle connection and records
    /// the server's certificate; HTTP/2 when the server offers it.
    fn client(&self) -> ClientBuilder {
        let ca = std::fs::read(self.path("ca.crt")).expect("reading ca.crt");
        Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("the CA"))
            .tls_built_in_root_certs(false)
            .tls_info(true)
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(0)
    }
}

/// The DER bytes of the first certificate in the PEM file `path`.
fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .to_vec()
}

/// The certificate that `response`'s connection was served with.
fn served_certificate(response: &Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the TLS info of the response")
        .to_vec()
}

fn start_with(manifest: &str, env: &[(&str, String)]) -> Host {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Host::start_with_env(manifest, &env)
}

fn scrape_with(client: &Client, host: &Host) -> Vec<Sample> {
    let text = client
        .get(host.url("/metrics"))
        .send()
        .and_then(Response::text)
        .expect("GET /metrics");
    parse(&text)
}

fn signal(host: &Host, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(host.pid().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name}");
}

/// `127.0.0.1:PORT` of the host.
fn address(host: &Host) -> String {
    host.base
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string()
}

/// How long the server takes to close `stream` (EOF or reset), at most `timeout`, and what
/// it sent before.
fn time_to_close(stream: &mut TcpStream, timeout: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout");
    let mut sent = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => sent.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {timeout:?}")
            }
            Err(_) => break,
        }
    }
    (started.elapsed(), sent)
}

#[test]
fn https_offers_http2_through_alpn_and_serves_http1_clients_too() {
    let certs = Certs::new();
    let host = start_with("", &certs.env());
    assert!(host.base.starts_with("https://127.0.0.1:"), "{}", host.base);

    let h2 = certs
        .client()
        .build()
        .expect("client")
        .get(host.url("/health"))
        .send()
        .expect("GET /health over HTTPS");
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2, "ALPN chose HTTP/2");
    assert_eq!(served_certificate(&h2), der(&certs.path("server.crt")));

    let h1 = certs
        .client()
        .http1_only()
        .build()
        .expect("client")
        .get(host.url("/health"))
        .send()
        .expect("GET /health over HTTPS with HTTP/1.1");
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.version(), Version::HTTP_11);

    // HTTP/2 names the host in `:authority`: the admin API's same-origin rule sees it as
    // `Host`, so the host's own pages (same origin) may call it over HTTP/2 as well.
    let admin = certs
        .client()
        .build()
        .expect("client")
        .get(host.url("/admin/queues"))
        .header("origin", &host.base)
        .send()
        .expect("GET /admin/queues over HTTP/2");
    assert_eq!(admin.version(), Version::HTTP_2);
    assert_eq!(admin.status(), StatusCode::OK, "{:?}", admin.text());

    let plain = client().get(host.base.replace("https://", "http://") + "/health");
    assert!(
        plain.send().is_err(),
        "plain HTTP is not served on the TLS port"
    );
}

/// The `chat` component on `/api/...`, its `llm` the fake, served over TLS.
fn chat_host(fake: &FakeOpenAi, certs: &Certs) -> Host {
    const KEY_VAR: &str = "LLMCHAT_TEST_OPENAI_KEY";
    let manifest = format!(
        "[llm]\nprovider = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"{KEY_VAR}\"\n\
         model = \"fake-model\"\n{}{}",
        fake.base_url,
        component_toml(
            "chat",
            &component("chat"),
            "[component.chat.config]\n\
             agents = [{ id = \"general\", name = \"General\", system_prompt = \"Be brief.\" }]"
        ),
        route_toml("/api/...", "chat"),
    );
    let mut env = certs.env().to_vec();
    env.push((KEY_VAR, API_KEY.to_string()));
    start_with(&manifest, &env)
}

/// Starts a streamed chat and reads until its first word, which the fake sends before it
/// holds the stream: the word arrived on its own, not with the whole body.
fn first_word(client: &Client, host: &Host) -> (Response, String) {
    let mut response = client
        .post(host.url("/api/chat"))
        .json(&json!({"agent": "general", "message": "one two three", "stream": true}))
        .send()
        .expect("POST /api/chat");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let received = crate::support::read_until(&mut response, "\"delta\":\"fake:\"");
    assert!(
        !received.contains("one"),
        "later words cannot have been produced yet: {received}"
    );
    (response, received)
}

/// Reads the rest of a stream `first_word` began; asserts every word and the end arrived.
fn rest_of_stream(mut response: Response, mut received: String) {
    response
        .read_to_string(&mut received)
        .expect("reading the rest of the stream");
    let events = sse_events(&received);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "fake: one two three");
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("done"));
}

#[test]
fn server_sent_events_arrive_as_produced_over_tls_on_http2_and_http1() {
    let fake = FakeOpenAi::start();
    fake.hold_streams();
    let certs = Certs::new();
    let host = chat_host(&fake, &certs);
    for (client, version) in [
        (certs.client().build(), Version::HTTP_2),
        (certs.client().http1_only().build(), Version::HTTP_11),
    ] {
        let client = client.expect("client");
        let (response, received) = first_word(&client, &host);
        assert_eq!(response.version(), version);
        fake.release();
        rest_of_stream(response, received);
    }
}

#[test]
fn shutdown_lets_a_streaming_http2_request_finish() {
    let fake = FakeOpenAi::start();
    fake.hold_streams();
    let certs = Certs::new();
    let host = chat_host(&fake, &certs);
    let client = certs.client().build().expect("client");
    let (response, received) = first_word(&client, &host);
    assert_eq!(response.version(), Version::HTTP_2);
    signal(&host, "TERM");
    host.wait_for_log("shutdown requested", WAIT);
    fake.release();
    rest_of_stream(response, received);
    let (status, log) = host.terminate_and_log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        !log.contains("shutdown grace of"),
        "the stream ended within the grace period:\n{log}"
    );
    assert!(
        log.contains("llmchat stopped tasks_left=0"),
        "no stream task outlives the server:\n{log}"
    );
}

#[test]
fn sighup_serves_a_renewed_certificate_and_keeps_it_when_the_files_turn_bad() {
    let certs = Certs::new();
    let (live_crt, live_key) = (certs.path("live.crt"), certs.path("live.key"));
    std::fs::copy(certs.path("server.crt"), &live_crt).expect("copy");
    std::fs::copy(certs.path("server.key"), &live_key).expect("copy");
    let host = Host::start(&format!(
        "[http]\ntls = {{ cert = {:?}, key = {:?} }}\n",
        live_crt.display().to_string(),
        live_key.display().to_string()
    ));
    let served = || {
        let client = certs.client().build().expect("client");
        let response = client.get(host.url("/health")).send().expect("GET /health");
        assert_eq!(response.status(), StatusCode::OK);
        served_certificate(&response)
    };
    let (original, renewed) = (
        der(&certs.path("server.crt")),
        der(&certs.path("renewed.crt")),
    );
    assert_eq!(served(), original);

    std::fs::copy(certs.path("renewed.crt"), &live_crt).expect("copy");
    std::fs::copy(certs.path("renewed.key"), &live_key).expect("copy");
    signal(&host, "HUP");
    poll_until(WAIT, "the renewed certificate to be served", || {
        (served() == renewed).then_some(())
    });
    host.wait_for_log("reloaded the TLS certificate and key", WAIT);

    // A key that is not the certificate's, then a certificate cut short.
    let failures = |n: usize| {
        poll_until(WAIT, "the failed reload to be logged", || {
            (host
                .log()
                .matches("still serving the previous ones")
                .count()
                == n)
                .then_some(())
        });
    };
    std::fs::copy(certs.path("server.key"), &live_key).expect("copy");
    signal(&host, "HUP");
    failures(1);
    assert!(
        host.log().contains(&format!(
            "TLS key `{}` does not belong to the certificate",
            live_key.display()
        )),
        "{}",
        host.log()
    );
    assert_eq!(served(), renewed, "a mismatched key keeps the old pair");

    std::fs::write(&live_crt, "-----BEGIN CERTIFICATE-----\nMIIB").expect("write");
    signal(&host, "HUP");
    failures(2);
    assert!(
        host.log()
            .contains(&format!("TLS certificate `{}`", live_crt.display())),
        "{}",
        host.log()
    );
    assert_eq!(served(), renewed, "a broken certificate keeps the old pair");
}

#[test]
fn a_client_that_never_sends_a_client_hello_is_closed_at_the_header_timeout() {
    let certs = Certs::new();
    let host = start_with("[http]\nheader_read_timeout = \"1s\"\n", &certs.env());
    let mut stream = TcpStream::connect(address(&host)).expect("connecting");
    let (lifetime, sent) = time_to_close(&mut stream, Duration::from_secs(10));
    assert!(
        lifetime >= Duration::from_millis(900) && lifetime <= Duration::from_secs(4),
        "closed after {lifetime:?}, not the header_read_timeout of 1s"
    );
    assert!(sent.is_empty(), "nothing is sent before a handshake");
    let client = certs.client().build().expect("client");
    let samples = scrape_with(&client, &host);
    let cut = value(&samples, REFUSED, &[("limit", "header_read_timeout")]).unwrap_or(0.0);
    assert!(cut >= 1.0, "{REFUSED} header_read_timeout: {cut}");
    eprintln!("a silent TLS client was closed after {lifetime:?} (header_read_timeout 1s)");
}

#[test]
fn tls_connections_over_max_connections_are_closed_before_the_handshake() {
    let certs = Certs::new();
    let host = start_with(
        "[http]\nmax_connections = 2\nheader_read_timeout = \"60s\"\n",
        &certs.env(),
    );
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(address(&host)).expect("connecting"))
        .collect();
    let mut over = TcpStream::connect(address(&host)).expect("connecting over the cap");
    let (lifetime, sent) = time_to_close(&mut over, Duration::from_secs(10));
    assert!(
        lifetime < Duration::from_secs(5),
        "refused after {lifetime:?}"
    );
    assert!(
        sent.is_empty(),
        "no plaintext answer to a TLS client: {:?}",
        String::from_utf8_lossy(&sent)
    );
    drop(held);
    let client = certs.client().build().expect("client");
    poll_until(WAIT, "a request under the cap", || {
        let response = client.get(host.url("/health")).send().ok()?;
        (response.status() == StatusCode::OK).then_some(())
    });
    let refused = value(
        &scrape_with(&client, &host),
        REFUSED,
        &[("limit", "max_connections")],
    )
    .unwrap_or(0.0);
    assert!(refused >= 1.0, "{REFUSED} max_connections: {refused}");
}

#[test]
fn an_idle_http2_connection_closes_after_the_idle_timeout() {
    let certs = Certs::new();
    let host = start_with(
        "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\n",
        &certs.env(),
    );
    let scraper = certs.client().http1_only().build().expect("client");
    let idled = || {
        value(
            &scrape_with(&scraper, &host),
            REFUSED,
            &[("limit", "idle_timeout")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(idled(), 0.0);
    // This client keeps its connection for the next request.
    let keeping = certs
        .client()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let response = keeping.get(host.url("/health")).send().expect("GET");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let idle = Instant::now();
    poll_until(WAIT, "the idle HTTP/2 connection to be closed", || {
        (idled() >= 1.0).then_some(())
    });
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(1_900) && after <= Duration::from_secs(5),
        "closed after {after:?}, not the idle_timeout of 2s"
    );
    let samples = scrape_with(&scraper, &host);
    assert_eq!(
        value(&samples, REFUSED, &[("limit", "header_read_timeout")]).unwrap_or(0.0),
        0.0,
        "an idle HTTP/2 connection is not a slow head"
    );
    eprintln!("an idle HTTP/2 connection was closed after {after:?} (idle_timeout 2s)");
}

#[test]
fn h2c_serves_prior_knowledge_http2_and_http1_on_the_plain_port() {
    let host = Host::start("[http]\nh2c = true\n");
    assert!(host.base.starts_with("http://"), "{}", host.base);
    let h2c = Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2c.get(host.url("/health")).send().expect("h2c GET");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let response = client().get(host.url("/health")).send().expect("GET");
    assert_eq!(response.version(), Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);

    // Without it, the plain port is HTTP/1.1 only.
    let plain = Host::start("");
    assert!(
        h2c.get(plain.url("/health")).send().is_err(),
        "an HTTP/2 preface is not HTTP/1.1"
    );
}

/// Runs `llmchat up` with `manifest` and `args`, which must fail at start-up; returns its
/// exit code and stderr.
fn failed_start(manifest: &str, args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("llmchat.toml");
    std::fs::write(&path, manifest).expect("writing the manifest");
    let mut child = llmchat_command(&path)
        .args(args)
        .env("LLMCHAT_STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning llmchat");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for llmchat") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("llmchat started with {args:?} and a manifest of\n{manifest}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("reading stderr");
    (status.code(), stderr)
}

#[test]
fn a_bad_certificate_or_key_stops_start_up_naming_the_file() {
    let certs = Certs::new();
    let missing = certs.path("missing.crt");
    let key = certs.path("server.key");
    let (code, stderr) = failed_start(
        "",
        &[
            "--tls-cert",
            &missing.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "reading the TLS certificate `{}`",
            missing.display()
        )),
        "{stderr}"
    );

    // The manifest form, with the key of another certificate.
    let (code, stderr) = failed_start(
        &format!(
            "[http]\ntls = {{ cert = {:?}, key = {:?} }}\n",
            certs.path("server.crt").display().to_string(),
            certs.path("renewed.key").display().to_string()
        ),
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "TLS key `{}` does not belong to the certificate `{}`",
            certs.path("renewed.key").display(),
            certs.path("server.crt").display()
        )),
        "{stderr}"
    );

    // A certificate without its key is a usage error.
    let (code, stderr) = failed_start("", &["--tls-cert", &key.display().to_string()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--tls-key"), "{stderr}");
}
