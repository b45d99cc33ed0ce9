//! The host's only door to tokio's timers, so that they can be counted, and its one wall
//! clock, [`now_ms`].
//!
//! Invariant 2 of the design says the number of host tasks and timers does not grow with
//! queues × concurrency × monitors. Tokio does not report armed timers, so every timer the
//! host arms goes through [`sleep`], [`sleep_until`], [`timeout`] or [`timeout_at`], which
//! count themselves in [`armed`] for as long as they exist (`llmchat_timers_armed` in
//! /metrics). Periodic work does not arm timers at all: it is an entry of the
//! [`crate::scheduler`], whose one task holds one sleep.
//!
//! Two guards keep it so. Clippy's `disallowed-methods` and `disallowed-types` (the root
//! `clippy.toml`) refuse tokio's timer functions and `Interval` anywhere in the workspace but
//! in the wrappers here, whatever the import. `just test`, which CI runs, has a text guard
//! below that flags calls and imports of those functions in `host/src`.
//!
//! Timers inside libraries (hyper's keep-alive, the Redis client's reconnect) are not
//! counted; they are per connection, and connections are bounded elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

static ARMED: AtomicUsize = AtomicUsize::new(0);

/// Milliseconds since the Unix epoch: the wall clock, for times that are stored, shown or
/// compared across hosts (job due times, schedule ticks, deploys, alerts). 0 before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Timers armed by the host now.
pub fn armed() -> usize {
    ARMED.load(Ordering::Relaxed)
}

/// Counts one armed timer from creation to drop.
struct Armed;

impl Armed {
    fn new() -> Self {
        ARMED.fetch_add(1, Ordering::Relaxed);
        Armed
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A tokio timer future, counted while it exists. The future stays inline (no box):
    /// every invocation's deadline is one of these.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        armed: Armed,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

fn counted<F: Future>(inner: F) -> Counted<F> {
    Counted {
        inner,
        armed: Armed::new(),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the one door to tokio's timers: the timer is counted"
)]
pub fn sleep(duration: Duration) -> Counted<tokio::time::Sleep> {
    counted(tokio::time::sleep(duration))
}

#[expect(
    clippy::disallowed_methods,
    reason = "the one door to tokio's timers: the timer is counted"
)]
pub fn sleep_until(deadline: Instant) -> Counted<tokio::time::Sleep> {
    counted(tokio::time::sleep_until(deadline))
}

#[expect(
    clippy::disallowed_methods,
    reason = "the one door to tokio's timers: the timer is counted"
)]
pub fn timeout<F: Future>(duration: Duration, future: F) -> Counted<tokio::time::Timeout<F>> {
    counted(tokio::time::timeout(duration, future))
}

#[expect(
    clippy::disallowed_methods,
    reason = "the one door to tokio's timers: the timer is counted"
)]
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Counted<tokio::time::Timeout<F>> {
    counted(tokio::time::timeout_at(deadline, future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timer_counts_while_it_exists() {
        // Other tests arm timers concurrently, hence a thousand and bounds, not equality.
        let sleeping: Vec<_> = (0..1000).map(|_| sleep(Duration::from_secs(60))).collect();
        assert!(armed() >= 1000, "{}", armed());
        drop(sleeping);
        assert!(armed() < 1000, "{}", armed());
        assert_eq!(timeout(Duration::from_secs(1), async { 7 }).await, Ok(7));
    }

    /// tokio's functions that arm a timer, as named in `tokio::time`.
    const TIMER_FNS: [&str; 6] = [
        "sleep",
        "sleep_until",
        "timeout",
        "timeout_at",
        "interval",
        "interval_at",
    ];

    fn is_ident(c: char) -> bool {
        c.is_alphanumeric() || c == '_'
    }

    /// The 1-based lines of `text` (a Rust source file) that arm a tokio timer or bring one of
    /// tokio's timer functions into scope: a `time::sleep`-style path (a call, a value or a
    /// single import), an import of them inside a `use` tree (`use tokio::time::{Instant,
    /// sleep};`), a glob or renamed import of `tokio::time`, and any `interval(` call. Clippy's
    /// `disallowed-methods` is the compiler's version of this check; this one runs in
    /// `just test`.
    fn timer_offences(text: &str) -> Vec<usize> {
        let lines: Vec<&str> = text.lines().collect();
        let mut offences = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if path_arms_a_timer(line) || use_arms_a_timer(&lines[i..]) {
                offences.push(i + 1);
            }
        }
        offences
    }

    /// `time::NAME` as a whole path segment pair, or a call of `interval`/`interval_at` that
    /// is not a method call.
    fn path_arms_a_timer(line: &str) -> bool {
        let segment_at = |at: usize, len: usize| {
            !line[..at].ends_with(is_ident) && !line[at + len..].starts_with(is_ident)
        };
        let timer_path = TIMER_FNS.iter().any(|f| {
            let path = format!("time::{f}");
            line.match_indices(&path)
                .any(|(at, _)| segment_at(at, path.len()))
        });
        let interval_call = ["interval(", "interval_at("].iter().any(|call| {
            line.match_indices(call)
                .any(|(at, _)| !line[..at].ends_with(|c: char| is_ident(c) || c == '.'))
        });
        timer_path || interval_call
    }

    /// Whether a `use` declaration starts on the first of `lines` and imports a timer
    /// function of `tokio::time`, globs it, or renames the module.
    fn use_arms_a_timer(lines: &[&str]) -> bool {
        let first = lines[0].trim_start();
        let first = first
            .strip_prefix("pub(crate) ")
            .or_else(|| first.strip_prefix("pub(super) "))
            .or_else(|| first.strip_prefix("pub "))
            .unwrap_or(first);
        let Some(rest) = first.strip_prefix("use ") else {
            return false;
        };
        // The declaration runs to its `;`, possibly over several lines; comments are dropped.
        let mut decl = String::new();
        for line in std::iter::once(rest).chain(lines[1..].iter().copied()) {
            let code = line.split("//").next().unwrap_or_default();
            match code.split_once(';') {
                Some((code, _)) => {
                    decl.push_str(code);
                    break;
                }
                None => {
                    decl.push_str(code);
                    decl.push(' ');
                }
            }
        }
        let tokens = use_tokens(&decl);
        let mut leaves = Vec::new();
        use_tree(&tokens, &mut 0, Vec::new(), &mut leaves);
        leaves.iter().any(|(path, renamed)| {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match path.as_slice() {
                ["tokio", "time", "*"] => true,
                ["tokio", "time"] => *renamed,
                ["tokio", "time", f] => TIMER_FNS.contains(f),
                _ => false,
            }
        })
    }

    /// Identifiers, `::` and the punctuation of a use tree.
    fn use_tokens(decl: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        let mut chars = decl.chars().peekable();
        while let Some(c) = chars.next() {
            if is_ident(c) {
                let mut ident = String::from(c);
                while let Some(&c) = chars.peek().filter(|c| is_ident(**c)) {
                    ident.push(c);
                    chars.next();
                }
                tokens.push(ident);
            } else if c == ':' && chars.peek() == Some(&':') {
                chars.next();
                tokens.push("::".to_string());
            } else if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
        tokens
    }

    /// Parses one use tree from `tokens[*at..]` under `prefix`, pushing every imported path
    /// (with whether it is renamed with `as`). A leading `::` is dropped, `self` names the
    /// prefix.
    fn use_tree(
        tokens: &[String],
        at: &mut usize,
        mut prefix: Vec<String>,
        leaves: &mut Vec<(Vec<String>, bool)>,
    ) {
        let next = |at: &usize| tokens.get(*at).map(String::as_str);
        loop {
            match next(at) {
                Some("::") => *at += 1,
                Some("{") => {
                    *at += 1;
                    loop {
                        match next(at) {
                            Some("}") => {
                                *at += 1;
                                return;
                            }
                            Some(",") => *at += 1,
                            None => return,
                            Some(_) => use_tree(tokens, at, prefix.clone(), leaves),
                        }
                    }
                }
                Some("*") => {
                    *at += 1;
                    prefix.push("*".to_string());
                    leaves.push((prefix, false));
                    return;
                }
                Some("self") => *at += 1,
                Some(segment) if segment.starts_with(is_ident) && segment != "as" => {
                    prefix.push(segment.to_string());
                    *at += 1;
                }
                Some("as") => {
                    *at += 2;
                    leaves.push((prefix, true));
                    return;
                }
                _ => {
                    leaves.push((prefix, false));
                    return;
                }
            }
        }
    }

    #[test]
    fn the_text_guard_catches_calls_imports_globs_and_renames() {
        let caught = [
            "tokio::time::sleep(Duration::from_secs(1)).await;",
            "use tokio::time::sleep;\nfn f() { sleep(Duration::ZERO) }",
            "use tokio::time::{Instant, sleep};",
            "use tokio::time::{\n    Instant,\n    timeout_at, // the deadline\n};",
            "use tokio::{sync::Notify, time::{self, interval_at}};",
            "pub(crate) use ::tokio::time::sleep_until as nap;",
            "use tokio::time;\nasync fn f() { time::timeout(d, x).await }",
            "use tokio::time::*;",
            "use tokio::time as clock;",
            "use tokio::{time as clock};",
            "let every = interval(Duration::from_secs(1));",
            "stream.map(tokio::time::sleep)",
        ];
        for text in caught {
            assert!(!timer_offences(text).is_empty(), "not caught: {text}");
        }
        assert_eq!(
            timer_offences("use std::io;\nuse tokio::time::sleep;\nsleep(d);"),
            [2]
        );
        let allowed = [
            "use tokio::time::Instant;",
            "use tokio::{sync::Notify, time::Instant};",
            "use crate::timers::{sleep, timeout};\nsleep(d).await;",
            "crate::timers::timeout_at(deadline, work).await",
            "let client = reqwest::Client::builder().timeout(d);",
            "let d = settings.sweep_interval(); let t = sometime::sleep;",
            "use std::time::{Duration, Instant};",
        ];
        for text in allowed {
            assert!(timer_offences(text).is_empty(), "flagged: {text}");
        }
    }

    /// Every timer of the host goes through this module, and nothing keeps an interval: the
    /// guard behind the count above, for `just test` (clippy enforces the same in `just lint`).
    #[test]
    fn no_module_arms_a_tokio_timer_directly() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("timers.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let lines: Vec<&str> = text.lines().collect();
                    for line in timer_offences(&text) {
                        offenders.push(format!(
                            "{}:{line}: {}",
                            path.display(),
                            lines[line - 1].trim()
                        ));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "timers armed outside crate::timers:\n{}",
            offenders.join("\n")
        );
    }
}
