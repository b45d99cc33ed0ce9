//! The container image builds and serves: `build` the repository's Dockerfile, `run` it,
//! `/health` and `/ready` answer on the published port, the default app's components were
//! compiled at build time (the start compiles nothing), it runs as the image's non-root
//! user, its HEALTHCHECK passes, and `stop` (SIGTERM) ends it with 0.
//!
//! A full build takes 10+ minutes on 2 cores and needs a container engine (docker, or
//! podman) that can reach the base images, so the test is `#[ignore]`d, which every run
//! reports with the reason; `cargo test --release --test all container_image -- --ignored`
//! runs it, and fails when no engine answers.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{client, poll_until, repo_root};

/// The first engine whose daemon (or, for podman, whose storage) answers `info`.
fn engine() -> Result<&'static str, String> {
    let mut tried = Vec::new();
    for engine in ["docker", "podman"] {
        match Command::new(engine).arg("info").output() {
            Ok(out) if out.status.success() => return Ok(engine),
            Ok(out) => tried.push(format!(
                "{engine}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => tried.push(format!("{engine}: {e}")),
        }
    }
    Err(tried.join("; "))
}

fn run(engine: &str, args: &[&str]) -> Output {
    let output = Command::new(engine)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {engine} {args:?}: {e}"));
    assert!(
        output.status.success(),
        "{engine} {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Removes the container and the image when the test ends, passed or not.
struct Cleanup {
    engine: &'static str,
    container: Option<String>,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(id) = &self.container {
            let _ = Command::new(self.engine).args(["rm", "-f", id]).output();
        }
        let _ = Command::new(self.engine)
            .args(["rmi", &self.image])
            .output();
    }
}

#[test]
#[ignore = "builds and runs the container image (10+ min, docker or podman): run with --ignored"]
fn the_image_builds_starts_without_compiling_and_serves_health() {
    let engine = engine().unwrap_or_else(|why| {
        panic!("no container engine answers, so the image cannot be built: {why}")
    });
    let image = format!("localhost/llmchat-test:{}", std::process::id());
    let mut cleanup = Cleanup {
        engine,
        container: None,
        image: image.clone(),
    };
    let root = repo_root();
    let started = Instant::now();
    // podman writes OCI images unless told otherwise, and OCI images drop HEALTHCHECK.
    let format: &[&str] = if engine == "podman" {
        &["--format", "docker"]
    } else {
        &[]
    };
    let build = Command::new(engine)
        .args(["build", "-t", &image])
        .args(format)
        .arg(&root)
        .output()
        .expect("running the build");
    assert!(
        build.status.success(),
        "{engine} build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let size: u64 = stdout(&run(
        engine,
        &["image", "inspect", "--format", "{{.Size}}", &image],
    ))
    .parse()
    .expect("the image size");
    println!(
        "built {image} with {engine} in {:.0} s: {:.1} MB",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );

    let started = Instant::now();
    let id = stdout(&run(
        engine,
        &["run", "-d", "-p", "127.0.0.1::8080", &image],
    ));
    cleanup.container = Some(id.clone());
    let port = stdout(&run(engine, &["port", &id, "8080"]));
    let address = port
        .lines()
        .next()
        .expect("a published address")
        .to_string();
    let url = |path: &str| format!("http://{address}{path}");
    poll_until(Duration::from_secs(60), "/health to answer 200", || {
        let response = client().get(url("/health")).send().ok()?;
        (response.status() == 200).then_some(())
    });
    println!(
        "the container served /health {:.2} s after `{engine} run`",
        started.elapsed().as_secs_f64()
    );
    let ready: serde_json::Value = client()
        .get(url("/ready"))
        .send()
        .expect("GET /ready")
        .json()
        .expect("JSON");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["redis"], "not configured", "{ready}");
    let hello = client().get(url("/hello")).send().expect("GET /hello");
    assert_eq!(hello.status(), 200, "the default app's /hello");
    assert_eq!(
        stdout(&run(engine, &["exec", &id, "id", "-u"])),
        "10001",
        "the container runs as the image's user"
    );

    // The image's HEALTHCHECK passes: podman runs it on demand; docker on its interval.
    if engine == "podman" {
        run(engine, &["healthcheck", "run", &id]);
    } else {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = stdout(&run(
                engine,
                &["inspect", "--format", "{{.State.Health.Status}}", &id],
            ));
            if status == "healthy" {
                break;
            }
            assert!(Instant::now() < deadline, "the HEALTHCHECK says `{status}`");
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    run(engine, &["stop", "-t", "30", &id]);
    let exit = stdout(&run(
        engine,
        &["inspect", "--format", "{{.State.ExitCode}}", &id],
    ));
    let logs = run(engine, &["logs", &id]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert_eq!(exit, "0", "SIGTERM must end the host with 0:\n{log}");
    assert!(
        !log.contains("compiling component"),
        "the image's artifact cache should hold every component:\n{log}"
    );
    assert!(log.contains("llmchat stopped"), "{log}");
}
