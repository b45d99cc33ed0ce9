//! Headless Chromium for browser tests: load a page, let its timers run, read back the DOM.
//!
//! A page under test publishes its state as `data-*` attributes (the browser's console is not
//! visible from here), so a serialised DOM and Chromium's own log are all a test needs: no
//! WebDriver, no DevTools protocol, no extra crates. Like `redis-server`, Chromium is not
//! optional: a missing binary fails the test with the command that installs it.
//!
//! A test that must click uses [`Browser`] instead: a live Chromium driven over the DevTools
//! protocol (one WebSocket), which clicks with real mouse events and records every request
//! and console message the page made.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

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
            kill_group(&mut child);
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

/// Every URL-valued attribute of `page` is a `data:` URI or a path on this host.
pub fn assert_local_url_attributes(page: &str) {
    const URL_ATTRIBUTES: [&str; 7] = [
        "src",
        "href",
        "action",
        "formaction",
        "poster",
        "srcset",
        "data",
    ];
    for (tag, attrs) in start_tags(page) {
        for name in URL_ATTRIBUTES {
            if let Some(url) = attrs.get(name) {
                let local =
                    url.starts_with("data:") || (url.starts_with('/') && !url.starts_with("//"));
                assert!(local, "<{tag} {name}={url:?}> points outside the host");
            }
        }
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

/// How long one DevTools call may take before the test fails instead of hanging.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The DevTools events a [`Browser`] keeps: requests, console messages, exceptions, log entries.
const KEPT_EVENTS: [&str; 4] = [
    "Network.requestWillBeSent",
    "Runtime.consoleAPICalled",
    "Runtime.exceptionThrown",
    "Log.entryAdded",
];

/// A live headless Chromium with one page, driven over the DevTools protocol; killed on drop.
///
/// Unlike [`load`], it runs in real time and can click: [`Browser::click`] sends the mouse
/// events a user's click makes at the element's centre, so the browser's hit testing, focus
/// and disabled buttons all apply. It is kept off the network like [`load`].
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// The [`KEPT_EVENTS`] received so far, in order.
    events: Vec<Value>,
    /// Chromium's stderr so far, filled by a thread.
    log: Arc<Mutex<String>>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `about:blank` and attaches to its page, with the network, runtime,
    /// log and page events on.
    pub fn launch() -> Browser {
        let binary = binary();
        let profile = tempfile::tempdir().expect("temp dir for the Chromium profile");
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            // Port 0: Chromium picks a free one and prints it on stderr.
            .args([
                "--remote-debugging-port=0",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args([
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ])
            .args([
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args(["--no-first-run", "--no-default-browser-check"])
            .args(["--window-size=1280,1600", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e})", binary.display()));
        let stderr = child.stderr.take().expect("Chromium's stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(browser_url) = rx.recv_timeout(CALL_TIMEOUT) else {
            kill_group(&mut child);
            panic!(
                "Chromium printed no DevTools address within {CALL_TIMEOUT:?}; its log:\n{}",
                log.lock().unwrap_or_else(|p| p.into_inner())
            );
        };
        let socket = match connect_to_page(&browser_url) {
            Ok(socket) => socket,
            Err(e) => {
                kill_group(&mut child);
                panic!("attaching to Chromium's page at {browser_url}: {e}");
            }
        };
        let mut browser = Browser {
            child,
            socket,
            next_id: 0,
            events: Vec::new(),
            log,
            _profile: profile,
        };
        for domain in ["Network", "Runtime", "Log", "Page", "Performance"] {
            browser.call(&format!("{domain}.enable"), json!({}));
        }
        browser
    }

    /// Sends one DevTools command and returns its result, keeping the events read meanwhile.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        if let Err(e) = self.socket.send(Message::text(command.to_string())) {
            panic!("DevTools {method}: sending failed: {e}{}", self.log_tail());
        }
        loop {
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => {
                    panic!("DevTools closed during {method}{}", self.log_tail())
                }
                Ok(_) => continue,
                Err(e) => panic!("DevTools {method}: no answer ({e}){}", self.log_tail()),
            };
            let message: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("DevTools {method} failed: {error}");
                }
                return message["result"].clone();
            }
            if KEPT_EVENTS.contains(&message["method"].as_str().unwrap_or_default()) {
                self.events.push(message);
            }
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = result.get("errorText") {
            panic!("Chromium could not open {url}: {error}");
        }
        self.wait_for(
            CALL_TIMEOUT,
            &format!("{url} to load"),
            "document.readyState === 'complete'",
        );
    }

    /// The value of the JavaScript `expression` in the page (awaited if it is a promise).
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy, and returns that value; fails after
    /// `timeout` with `what` and the page's text.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.evaluate(expression);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.evaluate("document.body ? document.body.innerText : ''");
                panic!(
                    "timed out after {timeout:?} waiting for {what}; the page reads:\n{}{}",
                    text.as_str().unwrap_or_default(),
                    self.log_tail()
                );
            }
            // Pacing between reads of the page, not synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks the first element matching the CSS `selector` as a user would: scrolls it into
    /// view, then presses and releases the left button at its centre.
    pub fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).expect("a string serialises");
        let point = self.evaluate(&format!(
            "(() => {{ const e = document.querySelector({quoted}); if (!e) return null; \
             e.scrollIntoView({{ block: 'center' }}); const r = e.getBoundingClientRect(); \
             return {{ x: r.left + r.width / 2, y: r.top + r.height / 2 }}; }})()"
        ));
        let (Some(x), Some(y)) = (point["x"].as_f64(), point["y"].as_f64()) else {
            let text = self.evaluate("document.body ? document.body.innerText : ''");
            panic!(
                "nothing to click: no element matches {selector:?}; the page reads:\n{}",
                text.as_str().unwrap_or_default()
            );
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": "mouseMoved", "x": x, "y": y }),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            );
        }
    }

    /// Clicks the element matching `selector`, then types `text` into it as keyboard input.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.call("Input.insertText", json!({ "text": text }));
    }

    /// Chromium's live counts for the page after a full garbage collection: `Nodes`,
    /// `JSEventListeners`, `Documents`, `JSHeapUsedSize` and the others of `Performance`.
    pub fn counts_after_gc(&mut self) -> BTreeMap<String, f64> {
        self.call("HeapProfiler.collectGarbage", json!({}));
        let metrics = self.call("Performance.getMetrics", json!({}));
        metrics["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["value"].as_f64()?)))
            .collect()
    }

    /// Every URL the page requested, in order.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }

    /// Console errors and warnings, uncaught exceptions and error or warning log entries
    /// (failed loads, CSP violations), as text.
    pub fn console_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for event in &self.events {
            let params = &event["params"];
            match event["method"].as_str().unwrap_or_default() {
                "Runtime.consoleAPICalled"
                    if matches!(
                        params["type"].as_str(),
                        Some("error" | "warning" | "assert")
                    ) =>
                {
                    let kind = params["type"].as_str().unwrap_or_default();
                    problems.push(format!("console.{kind}: {}", params["args"]));
                }
                "Runtime.exceptionThrown" => {
                    problems.push(format!("exception: {}", params["exceptionDetails"]));
                }
                "Log.entryAdded"
                    if matches!(params["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    problems.push(format!("log: {}", params["entry"]));
                }
                _ => {}
            }
        }
        problems
    }

    /// Chromium's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn log_tail(&self) -> String {
        format!("\nChromium's log:\n{}", self.log())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills Chromium with its renderer and GPU children (its own process group).
///
/// The `--` matters: without it procps-ng 4.0.2 reads `kill -KILL -19083` as
/// `kill(-1, SIGKILL)` (only the first digit), which kills every process it may signal.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

/// A WebSocket to the page target of the Chromium whose browser endpoint is `browser_url`
/// (`ws://127.0.0.1:PORT/devtools/browser/ID`), found through its `/json/list`.
fn connect_to_page(browser_url: &str) -> Result<WebSocket<TcpStream>, String> {
    let authority = browser_url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("unexpected DevTools address {browser_url:?}"))?;
    let targets: Value = reqwest::blocking::get(format!("http://{authority}/json/list"))
        .and_then(|r| r.json())
        .map_err(|e| format!("listing targets: {e}"))?;
    let page_url = targets
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .ok_or_else(|| format!("no page target in {targets}"))?;
    let stream = TcpStream::connect(authority).map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_read_timeout(Some(CALL_TIMEOUT))
        .map_err(|e| format!("setting a read timeout: {e}"))?;
    let (socket, _) =
        tungstenite::client(page_url, stream).map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(socket)
}
