//! Headless Chromium for browser tests: load a page, let its timers run, read back the DOM.
//!
//! A page under test publishes its state as `data-*` attributes (the browser's console is not
//! visible from here), so a serialised DOM and Chromium's own log are all a test needs: no
//! WebDriver, no DevTools protocol, no extra crates. Like `redis-server`, Chromium is not
//! optional: a missing binary fails the test with the command that installs it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary: `$LLMCHAT_CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LLMCHAT_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "LLMCHAT_CHROMIUM={} is not a file",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "this browser test needs Chromium and found none (looked for $LLMCHAT_CHROMIUM, then \
         `chromium` and `chromium-browser` on PATH); install it with \
         `just deps` (or `apt-get install --no-install-recommends chromium`), or point \
         LLMCHAT_CHROMIUM at a Chromium or Chrome binary"
    );
}

/// What a headless Chromium left after loading a page: the serialised DOM and its log.
pub struct Page {
    pub dom: String,
    pub stderr: String,
}

/// Loads `url` in a fresh headless Chromium (its own temp profile), lets the page's timers run
/// for `virtual_time` of virtual time (Chromium fast-forwards idle waits, and pauses the clock
/// while a request is pending), and returns the DOM as it is then.
///
/// Chromium is kept off the network except for the page: no proxy, no background or component
/// update traffic, and every host but 127.0.0.1 (where the test hosts listen) fails to
/// resolve.
pub fn load(url: &str, virtual_time: Duration) -> Page {
    let binary = binary();
    let dir = tempfile::tempdir().expect("temp dir for the Chromium profile");
    let dom_path = dir.path().join("dom.html");
    let log_path = dir.path().join("stderr.txt");
    let mut command = Command::new(&binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!(
            "--virtual-time-budget={}",
            virtual_time.as_millis()
        ))
        .args(["--enable-logging=stderr", "--v=0"])
        .args([
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .args(["--no-first-run", "--no-default-browser-check"])
        .args(["--window-size=1280,1600", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).expect("creating dom.html"))
        .stderr(std::fs::File::create(&log_path).expect("creating stderr.txt"));
    // Its own process group, so that a hung run is killed with its renderer and GPU children.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} ({e})", binary.display()));

    let deadline = Instant::now() + virtual_time + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for Chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.wait();
            panic!(
                "Chromium did not finish loading {url} within a minute of its time budget; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let page = Page {
        dom: std::fs::read_to_string(&dom_path).expect("reading the dumped DOM"),
        stderr: std::fs::read_to_string(&log_path).expect("reading Chromium's log"),
    };
    assert!(
        status.success() && page.dom.contains("</html>"),
        "Chromium exited with {status} and no DOM for {url}; its log:\n{}",
        page.stderr
    );
    page
}

impl Page {
    /// The attributes of the first `<tag>` element, or of the one whose `id` is `id`.
    pub fn element(&self, tag: &str, id: Option<&str>) -> Option<BTreeMap<String, String>> {
        start_tags(&self.dom)
            .into_iter()
            .find(|(name, attrs)| {
                name == tag && id.is_none_or(|id| attrs.get("id").map(String::as_str) == Some(id))
            })
            .map(|(_, attrs)| attrs)
    }

    /// Messages the page wrote to the console. Chromium logs them as `INFO:CONSOLE` lines
    /// whatever their level (warn, error, uncaught exception alike), so callers can only ask
    /// for none at all.
    pub fn console_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|line| line.contains(":CONSOLE"))
            .collect()
    }
}

/// Every start tag of an HTML document in order, as (lower-case name, attributes), with
/// entities in attribute values decoded. Comments, doctypes and the raw text of `<script>`
/// and `<style>` are skipped, so code that mentions `<canvas` is not taken for an element.
/// Enough for HTML that a browser serialised or that this project wrote; not a full parser.
pub fn start_tags(html: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let bytes = html.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        i += offset;
        if html[i..].starts_with("<!--") {
            i = html[i..].find("-->").map_or(bytes.len(), |end| i + end + 3);
            continue;
        }
        if !bytes.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
            continue;
        }
        let name_end = html[i + 1..]
            .find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/')
            .map_or(bytes.len(), |end| i + 1 + end);
        let name = html[i + 1..name_end].to_ascii_lowercase();
        let (attrs, after) = attributes(html, name_end);
        i = after;
        if name == "script" || name == "style" {
            let close = format!("</{name}");
            i = html[i..]
                .to_ascii_lowercase()
                .find(&close)
                .map_or(bytes.len(), |end| i + end);
        }
        tags.push((name, attrs));
    }
    tags
}

/// Parses attributes from `i` to the end of the tag; returns them and the index after `>`.
fn attributes(html: &str, mut i: usize) -> (BTreeMap<String, String>, usize) {
    let bytes = html.as_bytes();
    let mut attrs = BTreeMap::new();
    loop {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' {
            return (attrs, i + 1);
        }
        let name_end = html[i..]
            .find(|c: char| c.is_ascii_whitespace() || c == '=' || c == '>' || c == '/')
            .map_or(bytes.len(), |end| i + end);
        let name = html[i..name_end].to_ascii_lowercase();
        i = name_end;
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            let (start, end) = match bytes.get(i) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let end = html[i + 1..]
                        .find(quote as char)
                        .map_or(bytes.len(), |e| i + 1 + e);
                    (i + 1, end)
                }
                _ => {
                    let end = html[i..]
                        .find(|c: char| c.is_ascii_whitespace() || c == '>')
                        .map_or(bytes.len(), |e| i + e);
                    (i, end)
                }
            };
            value = decode_entities(&html[start..end]);
            i = if end < bytes.len() && matches!(bytes[end], b'"' | b'\'') {
                end + 1
            } else {
                end
            };
        }
        attrs.insert(name, value);
    }
}

/// The entities a serialiser writes in attribute values.
fn decode_entities(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}
