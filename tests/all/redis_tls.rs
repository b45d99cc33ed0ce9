//! `rediss://` to a `redis-server --tls-port` whose CA, server and client certificates the
//! test makes with `openssl`: a host that trusts the CA and shows its client certificate
//! runs its queue on that Redis (with the password from an environment variable, never
//! logged); a host that does not trust the CA is refused, says why, and answers 503.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::certs::make_certificates;
use crate::support::{Host, client, component, component_toml, get_json, poll_until};

const WAIT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "tls-test-Secret-7f3a";

/// A `redis-server` listening only on TLS (loopback), asking for a client certificate and a
/// password; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        let port = free_port();
        let path = |name: &str| dir.path().join(name);
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(path("server.crt"))
            .arg("--tls-key-file")
            .arg(path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.crt"))
            .args(["--tls-auth-clients", "yes", "--requirepass", PASSWORD])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}); run `just deps`"));
        poll_until(WAIT, "redis-server to listen on its TLS port", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        TlsRedis { child, port, dir }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A queue on the TLS Redis; `tls` is extra `[redis]` lines.
fn manifest(redis: &TlsRedis, tls: &str) -> String {
    format!(
        "[redis]\nurl = {:?}\npassword_env = \"LLMCHAT_TEST_REDIS_PASSWORD\"\n{tls}\n\
         {}[[trigger.queue]]\nqueue = \"jobs\"\ncomponent = \"p\"\n",
        redis.url(),
        component_toml("p", &component("fixture-processor"), ""),
    )
}

fn start(manifest: &str) -> Host {
    Host::start_with_env(manifest, &[("LLMCHAT_TEST_REDIS_PASSWORD", PASSWORD)])
}

fn enqueue(host: &Host) -> StatusCode {
    client()
        .post(host.url("/admin/queues/jobs/jobs"))
        .json(&json!({ "payload": { "action": "record" } }))
        .send()
        .expect("POST a job")
        .status()
}

fn ready(host: &Host) -> StatusCode {
    client()
        .get(host.url("/ready"))
        .send()
        .expect("GET /ready")
        .status()
}

fn assert_password_never_logged(host: Host) {
    let (_, log) = host.terminate_and_log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
}

#[test]
fn a_host_that_trusts_the_ca_and_shows_its_certificate_runs_its_queue_over_tls() {
    let redis = TlsRedis::start();
    let tls = format!(
        "ca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n",
        redis.file("ca.crt"),
        redis.file("client.crt"),
        redis.file("client.key")
    );
    let host = start(&manifest(&redis, &tls));
    for _ in 0..10 {
        assert_eq!(enqueue(&host), StatusCode::CREATED);
    }
    poll_until(WAIT, "10 jobs processed over TLS", || {
        let list: Value = get_json(&host.url("/admin/queues"));
        (list["backend"] == "redis" && list["queues"][0]["processed"] == 10).then_some(())
    });
    assert_eq!(ready(&host), StatusCode::OK);
    assert_password_never_logged(host);
}

#[test]
fn a_host_that_does_not_trust_the_servers_certificate_is_refused_and_says_why() {
    let redis = TlsRedis::start();
    // No ca_file: the system's roots do not know the test CA.
    let host = start(&manifest(
        &redis,
        &format!(
            "client_cert_file = {:?}\nclient_key_file = {:?}\n",
            redis.file("client.crt"),
            redis.file("client.key")
        ),
    ));
    let log = host.log();
    assert!(
        log.contains("Redis is not reachable yet") && log.to_lowercase().contains("certificate"),
        "no certificate error at start-up:\n{log}"
    );
    assert_eq!(enqueue(&host), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready(&host), StatusCode::SERVICE_UNAVAILABLE);
    assert_password_never_logged(host);
}

#[test]
fn a_host_without_a_client_certificate_is_refused_by_a_server_that_asks_for_one() {
    let redis = TlsRedis::start();
    let host = start(&manifest(
        &redis,
        &format!("ca_file = {:?}\n", redis.file("ca.crt")),
    ));
    assert!(
        host.log().contains("Redis is not reachable yet"),
        "{}",
        host.log()
    );
    assert_eq!(enqueue(&host), StatusCode::SERVICE_UNAVAILABLE);
}
