//! `llmchat new NAME --lang rust|ts|python --kind http|queue|monitor [--dir DIR]`: scaffolds
//! a component folder that builds, tests and deploys on its own.
//!
//! The folder holds the component's source for that kind and language (using the llmchat
//! imports a little: kv, config, log, probe), its build recipe (`build.sh build` makes
//! `NAME.wasm`, `build.sh test` runs the unit tests of its pure logic), a README with the
//! steps from here to `llmchat deploy`, and a copy of the llmchat WIT (embedded in this
//! binary), so that it needs nothing from the llmchat repository.
//!
//! TypeScript and Python scaffolds build the way `components/js` and `components/python` do,
//! and carry those folders' toolchain files (embedded too): `js.wit` and the WASI of the
//! StarlingMonkey engine, and componentize-py's pinned `requirements.txt` and `python.wit`.
//! The templates are in `templates/`, with `@@KEY@@` placeholders ([`fill`]).
//!
//! Refused with exit 2 before anything is written: a NAME that is not 1 to 64 of a-z, 0-9,
//! '-' and '_' (clap), and a folder that exists and is not empty.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::UsageError;

#[derive(clap::Args)]
pub struct NewArgs {
    /// The component's name, also its deploy name: 1 to 64 of a-z, 0-9, '-' and '_'.
    #[arg(value_parser = parse_name)]
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// What it does: answer HTTP requests, process a queue's jobs, or monitor on a schedule.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The folder to create; it must not exist or be empty [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with wit-bindgen (and wstd for HTTP); cargo and the wasm32-wasip2 target.
    Rust,
    /// TypeScript, with jco componentize (StarlingMonkey); node and npm.
    #[value(alias = "typescript")]
    Ts,
    /// Python, with componentize-py; python3 and pip.
    #[value(alias = "py")]
    Python,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// An HTTP handler (`wasi:http/incoming-handler`), deployed with `--route`.
    Http,
    /// A queue processor (`llmchat:runtime/processor`), deployed with `--queue`.
    Queue,
    /// A monitor (`llmchat:runtime/monitoring`), deployed with `--every` or `--cron`.
    Monitor,
}

impl Lang {
    fn arg(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Ts => "ts",
            Lang::Python => "python",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Ts => "TypeScript",
            Lang::Python => "Python",
        }
    }
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Queue => "queue",
            Kind::Monitor => "monitor",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Kind::Http => "HTTP handler",
            Kind::Queue => "queue processor",
            Kind::Monitor => "monitor",
        }
    }

    /// The world of `wit/llmchat.wit` a component of this kind targets.
    fn world(self) -> &'static str {
        match self {
            Kind::Http => "llmchat:runtime/http-handler",
            Kind::Queue => "llmchat:runtime/queue-processor",
            Kind::Monitor => "llmchat:runtime/monitor",
        }
    }
}

/// Component names, by the host's rule: what `llmchat deploy` accepts.
fn parse_name(name: &str) -> Result<String, String> {
    llmchat_host::manifest::check_name(name).map(|()| name.to_string())
}

/// One file of a scaffold: its path inside the folder, its text, and whether it is a script.
#[derive(Debug)]
struct File {
    path: String,
    text: String,
    executable: bool,
}

/// The llmchat WIT, as in the repository's `wit/` when this binary was built.
const WIT: &[(&str, &str)] = &[
    ("wit/config.wit", include_str!("../../../wit/config.wit")),
    ("wit/kv.wit", include_str!("../../../wit/kv.wit")),
    ("wit/llm.wit", include_str!("../../../wit/llm.wit")),
    ("wit/llmchat.wit", include_str!("../../../wit/llmchat.wit")),
    ("wit/log.wit", include_str!("../../../wit/log.wit")),
    ("wit/monitor.wit", include_str!("../../../wit/monitor.wit")),
    ("wit/queue.wit", include_str!("../../../wit/queue.wit")),
    (
        "wit/deps/cli.wit",
        include_str!("../../../wit/deps/cli.wit"),
    ),
    (
        "wit/deps/clocks.wit",
        include_str!("../../../wit/deps/clocks.wit"),
    ),
    (
        "wit/deps/filesystem.wit",
        include_str!("../../../wit/deps/filesystem.wit"),
    ),
    (
        "wit/deps/http.wit",
        include_str!("../../../wit/deps/http.wit"),
    ),
    ("wit/deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    (
        "wit/deps/random.wit",
        include_str!("../../../wit/deps/random.wit"),
    ),
    (
        "wit/deps/sockets.wit",
        include_str!("../../../wit/deps/sockets.wit"),
    ),
];

const README: &str = include_str!("templates/README.md.tmpl");
/// Where the README's prose is wrapped.
const README_WIDTH: usize = 90;

mod rust {
    pub const CARGO_TOML: &str = include_str!("templates/rust/Cargo.toml.tmpl");
    pub const BUILD_SH: &str = include_str!("templates/rust/build.sh.tmpl");
    pub const HTTP: &str = include_str!("templates/rust/http.rs.tmpl");
    pub const QUEUE: &str = include_str!("templates/rust/queue.rs.tmpl");
    pub const MONITOR: &str = include_str!("templates/rust/monitor.rs.tmpl");
}

mod ts {
    pub const PACKAGE_JSON: &str = include_str!("templates/ts/package.json.tmpl");
    pub const TSCONFIG: &str = include_str!("templates/ts/tsconfig.json.tmpl");
    pub const BUNDLE_CONFIG: &str = include_str!("templates/ts/bundle.config.js.tmpl");
    pub const BUILD_SH: &str = include_str!("templates/ts/build.sh.tmpl");
    pub const HTTP: &str = include_str!("templates/ts/http.ts.tmpl");
    pub const HTTP_LOGIC: &str = include_str!("templates/ts/http.logic.ts.tmpl");
    pub const HTTP_TEST: &str = include_str!("templates/ts/http.test.mjs.tmpl");
    pub const QUEUE: &str = include_str!("templates/ts/queue.ts.tmpl");
    pub const QUEUE_LOGIC: &str = include_str!("templates/ts/queue.logic.ts.tmpl");
    pub const QUEUE_TEST: &str = include_str!("templates/ts/queue.test.mjs.tmpl");
    pub const MONITOR: &str = include_str!("templates/ts/monitor.ts.tmpl");
    pub const MONITOR_LOGIC: &str = include_str!("templates/ts/monitor.logic.ts.tmpl");
    pub const MONITOR_TEST: &str = include_str!("templates/ts/monitor.test.mjs.tmpl");

    /// Put before `js.wit`, whose own comments speak of `components/js`.
    pub const WORLDS_NOTE: &str = "\
// Copied by `llmchat new` from the llmchat repository (components/js/wit/js.wit, and its
// deps/ beside it). Here the llmchat interfaces come from this folder's `wit/`: build.sh
// puts both together in `build/wit` and builds one of the worlds below with jco.

";

    /// What jco builds against, as `components/js` does: the worlds of `js.wit` and the
    /// StarlingMonkey engine's own WASI (0.2.10), which it requires.
    pub const WIT_JS: &[(&str, &str)] = &[
        (
            "wit-js/worlds.wit",
            include_str!("../../../components/js/wit/js.wit"),
        ),
        (
            "wit-js/deps/cli.wit",
            include_str!("../../../components/js/wit/deps/cli.wit"),
        ),
        (
            "wit-js/deps/clocks.wit",
            include_str!("../../../components/js/wit/deps/clocks.wit"),
        ),
        (
            "wit-js/deps/filesystem.wit",
            include_str!("../../../components/js/wit/deps/filesystem.wit"),
        ),
        (
            "wit-js/deps/http.wit",
            include_str!("../../../components/js/wit/deps/http.wit"),
        ),
        (
            "wit-js/deps/io.wit",
            include_str!("../../../components/js/wit/deps/io.wit"),
        ),
        (
            "wit-js/deps/random.wit",
            include_str!("../../../components/js/wit/deps/random.wit"),
        ),
        (
            "wit-js/deps/sockets.wit",
            include_str!("../../../components/js/wit/deps/sockets.wit"),
        ),
    ];
}

mod python {
    pub const BUILD_SH: &str = include_str!("templates/python/build.sh.tmpl");
    /// The toolchain pin of `components/python` (componentize-py, with its hashes).
    pub const REQUIREMENTS: &str = include_str!("../../../components/python/requirements.txt");
    /// The world an HTTP handler is intersected with, so that it does not import outbound
    /// HTTP (see the file).
    pub const WIT_PYTHON: &str = include_str!("../../../components/python/wit/python.wit");
    /// Put before `python.wit`, whose own comments speak of `components/python`.
    pub const WIT_PYTHON_NOTE: &str = "\
// Copied by `llmchat new` from the llmchat repository (components/python/wit/python.wit).
// build.sh builds this handler with `-i llmchat:python/http-handler-no-outbound`; to send
// outbound HTTP, drop that flag and deploy with `--allow-outbound URL`.

";
    pub const HTTP: &str = include_str!("templates/python/http.py.tmpl");
    pub const HTTP_LOGIC: &str = include_str!("templates/python/http.logic.py.tmpl");
    pub const HTTP_TEST: &str = include_str!("templates/python/http.test.py.tmpl");
    pub const QUEUE: &str = include_str!("templates/python/queue.py.tmpl");
    pub const QUEUE_LOGIC: &str = include_str!("templates/python/queue.logic.py.tmpl");
    pub const QUEUE_TEST: &str = include_str!("templates/python/queue.test.py.tmpl");
    pub const MONITOR: &str = include_str!("templates/python/monitor.py.tmpl");
    pub const MONITOR_LOGIC: &str = include_str!("templates/python/monitor.logic.py.tmpl");
    pub const MONITOR_TEST: &str = include_str!("templates/python/monitor.test.py.tmpl");
}

/// `template` with every `@@KEY@@` of `vars` replaced by its value.
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut text = template.to_string();
    for (key, value) in vars {
        text = text.replace(&format!("@@{key}@@"), value);
    }
    text
}

/// The Rust package name: the component's name, unless it starts with a digit (which cargo
/// refuses).
fn crate_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("llmchat-{name}")
    } else {
        name.to_string()
    }
}

/// Every file of the scaffold of `name` in `lang` of `kind`, in the order they are listed.
fn scaffold_files(name: &str, lang: Lang, kind: Kind) -> Vec<File> {
    let crate_name = crate_name(name);
    let vars = [
        ("NAME", name.to_string()),
        ("LANG", lang.arg().to_string()),
        ("KIND", kind.arg().to_string()),
        ("LANG_TEXT", lang.text().to_string()),
        ("KIND_TEXT", kind.text().to_string()),
        ("WORLD", kind.world().to_string()),
        ("WORLD_SHORT", short_world(kind).to_string()),
        (
            "TARGET",
            wrap(
                &match lang {
                    Lang::Ts => format!(
                        "The component targets world `llmchat:js/{0}` of `wit-js/worlds.wit`: \
                         the llmchat imports and exports of `{1}`, over the WASI of the JS \
                         engine.",
                        short_world(kind),
                        kind.world()
                    ),
                    Lang::Rust | Lang::Python => {
                        format!("The component targets world `{}`.", kind.world())
                    }
                },
                README_WIDTH,
            ),
        ),
        ("CRATE", crate_name.clone()),
        (
            "NPM_NAME",
            // npm refuses a package name starting with '_'.
            if name.starts_with('_') {
                format!("llmchat-{name}")
            } else {
                name.to_string()
            },
        ),
        (
            "PY_WIT",
            match kind {
                Kind::Http => "-d ../../wit -d ../../wit-python".to_string(),
                Kind::Queue | Kind::Monitor => "-d ../../wit".to_string(),
            },
        ),
        (
            "PY_INTERSECT",
            match kind {
                Kind::Http => "-i llmchat:python/http-handler-no-outbound ".to_string(),
                Kind::Queue | Kind::Monitor => String::new(),
            },
        ),
        ("CRATE_FILE", crate_name.replace('-', "_")),
        (
            "EXTRA_DEPS",
            match kind {
                // wstd exports `wasi:http/incoming-handler` with `#[wstd::http_server]`.
                Kind::Http => "wstd = \"=0.6.8\"\n".to_string(),
                Kind::Queue | Kind::Monitor => String::new(),
            },
        ),
    ];
    let file = |path: &str, template: &str| File {
        path: path.to_string(),
        text: fill(template, &vars),
        executable: false,
    };
    let script = |path: &str, template: &str| File {
        executable: true,
        ..file(path, template)
    };
    let mut files = Vec::new();
    let mut listed: Vec<(&str, &str)>;
    match lang {
        Lang::Rust => {
            let source = match kind {
                Kind::Http => rust::HTTP,
                Kind::Queue => rust::QUEUE,
                Kind::Monitor => rust::MONITOR,
            };
            files.push(file("Cargo.toml", rust::CARGO_TOML));
            files.push(script("build.sh", rust::BUILD_SH));
            files.push(file("src/lib.rs", source));
            listed = vec![
                (
                    "Cargo.toml",
                    "the crate: a `cdylib` in its own workspace, wit-bindgen 0.61.1",
                ),
                (
                    "build.sh",
                    "`./build.sh build` (→ `NAME.wasm`), `./build.sh test` (`cargo test`)",
                ),
                (
                    "src/lib.rs",
                    "the component, and the unit tests of its pure logic (`#[cfg(test)]`)",
                ),
            ];
        }
        Lang::Ts => {
            let (source, logic, test) = match kind {
                Kind::Http => (ts::HTTP, ts::HTTP_LOGIC, ts::HTTP_TEST),
                Kind::Queue => (ts::QUEUE, ts::QUEUE_LOGIC, ts::QUEUE_TEST),
                Kind::Monitor => (ts::MONITOR, ts::MONITOR_LOGIC, ts::MONITOR_TEST),
            };
            files.push(file("package.json", ts::PACKAGE_JSON));
            files.push(file("tsconfig.json", ts::TSCONFIG));
            files.push(file("bundle.config.js", ts::BUNDLE_CONFIG));
            files.push(script("build.sh", ts::BUILD_SH));
            files.push(file("src/component.ts", source));
            files.push(file("src/logic.ts", logic));
            files.push(file("test/logic.test.mjs", test));
            for (path, text) in ts::WIT_JS {
                let text = if *path == "wit-js/worlds.wit" {
                    format!("{}{text}", ts::WORLDS_NOTE)
                } else {
                    (*text).to_string()
                };
                files.push(File {
                    path: (*path).to_string(),
                    text,
                    executable: false,
                });
            }
            listed = vec![
                (
                    "package.json",
                    "the toolchain: jco, componentize-js and typescript (dev dependencies)",
                ),
                ("tsconfig.json", "type checking of `src/`"),
                (
                    "bundle.config.js",
                    "keeps the `llmchat:` imports out of jco's bundle",
                ),
                (
                    "build.sh",
                    "`./build.sh build` (type check, then `jco componentize` → `NAME.wasm`), `./build.sh test` (node:test); `npm run build` and `npm test` run them",
                ),
                (
                    "src/component.ts",
                    "the component: its exports and its calls to the llmchat imports",
                ),
                ("src/logic.ts", "the pure logic, which runs anywhere"),
                (
                    "test/logic.test.mjs",
                    "the unit tests of `src/logic.ts` (node:test, no other dependency)",
                ),
                (
                    "wit-js/",
                    "the worlds jco builds (`worlds.wit`) and the WASI version of its JS engine (`deps/`); `build.sh` adds the llmchat interfaces of `wit/` into `build/wit`",
                ),
            ];
        }
        Lang::Python => {
            let (source, logic, test) = match kind {
                Kind::Http => (python::HTTP, python::HTTP_LOGIC, python::HTTP_TEST),
                Kind::Queue => (python::QUEUE, python::QUEUE_LOGIC, python::QUEUE_TEST),
                Kind::Monitor => (python::MONITOR, python::MONITOR_LOGIC, python::MONITOR_TEST),
            };
            files.push(script("build.sh", python::BUILD_SH));
            files.push(file("requirements.txt", python::REQUIREMENTS));
            files.push(file("app.py", source));
            files.push(file("logic.py", logic));
            files.push(file("test_app.py", test));
            if kind == Kind::Http {
                files.push(File {
                    path: "wit-python/python.wit".to_string(),
                    text: format!("{}{}", python::WIT_PYTHON_NOTE, python::WIT_PYTHON),
                    executable: false,
                });
            }
            listed = vec![
                (
                    "build.sh",
                    "`./build.sh build` (`componentize-py` → `NAME.wasm`), `./build.sh test` (unittest)",
                ),
                (
                    "requirements.txt",
                    "the toolchain: componentize-py, pinned with hashes, installed by `build.sh build` into `.venv/`",
                ),
                (
                    "app.py",
                    "the component: its exports and its calls to the llmchat imports",
                ),
                ("logic.py", "the pure logic, which runs anywhere"),
                ("test_app.py", "the unit tests of `logic.py` (unittest)"),
            ];
            if kind == Kind::Http {
                listed.push((
                    "wit-python/python.wit",
                    "the world the handler is intersected with, so that it imports no outbound HTTP",
                ));
            }
        }
    }
    files.push(File {
        path: ".gitignore".to_string(),
        text: gitignore(name, lang),
        executable: false,
    });
    let listed: String = listed
        .iter()
        .map(|(path, what)| format!("| `{path}` | {} |\n", what.replace("NAME", name)))
        .collect();
    let readme_vars = [
        ("ABOUT", wrap(about(kind), README_WIDTH)),
        ("FILES", listed.trim_end().to_string()),
        (
            "PREREQS",
            indent(
                &wrap(
                    &format!("Prerequisites: {}", prerequisites(lang)),
                    README_WIDTH - 3,
                ),
                3,
            )
            .trim_start()
            .to_string(),
        ),
        ("DEPLOY", deploy_command(name, kind)),
        ("TRY", indent(&fill(try_it(kind), &vars), 3)),
        ("METRICS", indent(&fill(metrics(kind), &vars), 3)),
    ];
    files.push(File {
        path: "README.md".to_string(),
        text: fill(&fill(README, &readme_vars), &vars),
        executable: false,
    });
    for (path, text) in WIT {
        files.push(File {
            path: (*path).to_string(),
            text: (*text).to_string(),
            executable: false,
        });
    }
    files
}

/// What git should not keep: build outputs and installed tools.
fn gitignore(name: &str, lang: Lang) -> String {
    let own = match lang {
        Lang::Rust => "/target/\n",
        Lang::Ts => "/node_modules/\n/build/\n",
        Lang::Python => "/.venv/\n/build/\n__pycache__/\n",
    };
    format!("{own}/{name}.wasm\n")
}

/// The world's name inside its package, e.g. `http-handler`.
fn short_world(kind: Kind) -> &'static str {
    kind.world()
        .rsplit('/')
        .next()
        .unwrap_or_else(|| kind.world())
}

/// What the component does, for its README (wrapped there).
fn about(kind: Kind) -> &'static str {
    match kind {
        Kind::Http => {
            r#"It answers every request with JSON, `{"hits", "message", "path"}`, counting the hits of each path in kv (`kv.increment`: there is one fresh instance per request, so nothing survives in memory), and 503 with `{"error"}` when kv fails. The greeting comes from its config, `greeting` (default "Hello")."#
        }
        Kind::Queue => {
            r#"It processes the jobs of a queue, one fresh instance per job. A payload is JSON, `{"text": "...", "fail_first"?: n}`: it counts the words of `text` and stores the count in kv under `words:{job id}`. A payload that is not JSON or has no string `text` fails the job (dead-lettered at once: retrying cannot fix it); a kv outage retries it after the queue's backoff; `fail_first: n` retries the first n attempts on purpose, to watch the backoff."#
        }
        Kind::Monitor => {
            r#"It runs once per schedule tick, on a fresh instance: it asks the host's `probe` for every queue's backlog and reports one sample, `backlog` (the jobs of all queues not yet run: waiting or delayed), and a warning alert when that is above its config's `backlog_warn` (a whole number, default 100; a malformed one fails the tick, naming it)."#
        }
    }
}

fn prerequisites(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => {
            "Rust 1.85 or later (edition 2024) and the `wasm32-wasip2` target (`build.sh` adds it with `rustup target add wasm32-wasip2` when it is missing)."
        }
        Lang::Ts => {
            "Node.js 20.19 or later and npm. `build.sh` runs `npm install` the first time (`@bytecodealliance/jco`, `@bytecodealliance/componentize-js` and `typescript`); after that it needs no network. The component carries its JavaScript engine (StarlingMonkey, about 13 MB), so the host takes several seconds to compile it when it is deployed (once: compiled components are cached)."
        }
        Lang::Python => {
            "Python 3.10 or later. `build.sh build` creates `.venv/` and installs `componentize-py` into it the first time (after that it needs no network); `build.sh test` needs nothing but python3. The component carries CPython (about 18 MB), so the host takes several seconds to compile it when it is deployed (once: compiled components are cached)."
        }
    }
}

fn deploy_command(name: &str, kind: Kind) -> String {
    match kind {
        Kind::Http => format!("llmchat deploy {name} {name}.wasm --route /{name}"),
        Kind::Queue => format!("llmchat deploy {name} {name}.wasm --queue {name}"),
        Kind::Monitor => {
            format!("llmchat deploy {name} {name}.wasm --every 30s --config backlog_warn=100")
        }
    }
}

/// Commands that show the deployed component at work, for its README.
fn try_it(kind: Kind) -> &'static str {
    match kind {
        Kind::Http => {
            r#"curl -s localhost:3001/@@NAME@@
# {"hits":1,"message":"Hello from @@NAME@@","path":"/@@NAME@@"}
curl -s localhost:3001/@@NAME@@
# {"hits":2,...}"#
        }
        Kind::Queue => {
            r#"# ok: "counted 3 words" in the host's log
llmchat enqueue @@NAME@@ '{"text": "hello queue world"}'
# retried twice after the backoff, then ok
llmchat enqueue @@NAME@@ '{"text": "try again", "fail_first": 2}'
# fail: dead-lettered at once ("payload has no string `text`")
llmchat enqueue @@NAME@@ '{"txt": "typo"}'
# processed 2, failed 1, retried 2, dead 1
llmchat queues
# the dead job and why
llmchat dead @@NAME@@"#
        }
        Kind::Monitor => {
            r#"# the first tick is at the next multiple of 30 s
sleep 30
llmchat components
# an alert: lower the threshold (a deploy without --every keeps the schedule), then
# delay a job on one of the host's queues (`llmchat queues` lists them)
llmchat deploy @@NAME@@ @@NAME@@.wasm --config backlog_warn=0
llmchat enqueue QUEUE '{...}' --delay 5m"#
        }
    }
}

/// What to look for in `/metrics`, for its README.
fn metrics(kind: Kind) -> &'static str {
    match kind {
        Kind::Http => {
            r#"curl -s localhost:3001/metrics | grep 'component="@@NAME@@"'
# llmchat_component_invocations_total{component="@@NAME@@",trigger="http"} 2
# llmchat_component_duration_seconds_count{component="@@NAME@@"} 2"#
        }
        Kind::Queue => {
            r#"curl -s localhost:3001/metrics | grep -E 'component="@@NAME@@"|queue="@@NAME@@"'
# llmchat_component_invocations_total{component="@@NAME@@",trigger="queue"} 5
# llmchat_component_errors_total{component="@@NAME@@",kind="guest"} 3
# llmchat_queue_processed_total{queue="@@NAME@@"} 2"#
        }
        Kind::Monitor => {
            r#"curl -s localhost:3001/metrics | grep -E 'monitor="@@NAME@@"|schedule="@@NAME@@"'
# llmchat_monitor_sample{monitor="@@NAME@@",sample="backlog"} 0.0
# llmchat_schedule_ticks_total{schedule="@@NAME@@",outcome="ok"} 1
# llmchat_monitor_alerts_total{monitor="@@NAME@@",severity="warning"} 1 (after an alert)
# the alerts themselves: the host's log and /dashboard"#
        }
    }
}

/// `text` as lines of at most `width` characters (a longer word stays whole).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

/// `text` with every non-empty line indented by `spaces`.
fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{}{line}", " ".repeat(spaces))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Refuses (exit 2) a `dir` that exists and is not an empty folder.
fn check_target(dir: &Path) -> Result<(), UsageError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(UsageError(format!(
                    "`{}` exists and is not empty; choose another --dir or name",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() && !dir.is_dir() => Err(UsageError(format!(
            "`{}` exists and is not a folder",
            dir.display()
        ))),
        // Unreadable for another reason: let the writing say why.
        Err(_) => Ok(()),
    }
}

fn write_files(dir: &Path, files: &[File]) -> Result<()> {
    for file in files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating `{}`", parent.display()))?;
        }
        std::fs::write(&path, &file.text)
            .with_context(|| format!("writing `{}`", path.display()))?;
        #[cfg(unix)]
        if file.executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making `{}` executable", path.display()))?;
        }
    }
    Ok(())
}

/// What `new` prints: the files made (each WIT folder in one line) and the next steps.
fn summary(name: &str, lang: Lang, kind: Kind, dir: &Path, files: &[File]) -> String {
    let mut out = format!(
        "created {name}, a {} {}, in {}:\n",
        lang.text(),
        kind.text(),
        dir.display()
    );
    let mut wit_folders: Vec<(&str, usize)> = Vec::new();
    for file in files {
        match file.path.split_once('/') {
            Some((folder, _)) if folder.starts_with("wit") => {
                match wit_folders.iter_mut().find(|(f, _)| *f == folder) {
                    Some((_, count)) => *count += 1,
                    None => wit_folders.push((folder, 1)),
                }
            }
            _ => out.push_str(&format!("  {}\n", file.path)),
        }
    }
    for (folder, count) in wit_folders {
        out.push_str(&format!("  {folder}/ ({count} WIT files)\n"));
    }
    out.push_str(&format!(
        "next:\n  cd {}\n  ./build.sh test\n  ./build.sh build\n  {}\n",
        dir.display(),
        deploy_command(name, kind)
    ));
    out
}

pub fn scaffold(args: NewArgs) -> Result<()> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    check_target(&dir)?;
    let files = scaffold_files(&args.name, args.lang, args.kind);
    write_files(&dir, &files)?;
    print!(
        "{}",
        summary(&args.name, args.lang, args.kind, &dir, &files)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Parser, ValueEnum};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        new: NewArgs,
    }

    fn parse(args: &[&str]) -> Result<NewArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("llmchat-new").chain(args.iter().copied()))
            .map(|c| c.new)
    }

    fn combinations() -> impl Iterator<Item = (Lang, Kind)> {
        Lang::value_variants()
            .iter()
            .flat_map(|&lang| Kind::value_variants().iter().map(move |&kind| (lang, kind)))
    }

    fn find<'a>(files: &'a [File], path: &str) -> &'a File {
        files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
    }

    /// The repository's `wit/` folder, as (path from the repository root, text).
    fn repo_wit() -> Vec<(String, String)> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "wit") {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((rel, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = Vec::new();
        walk(&root.join("wit"), &root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn names_follow_the_component_name_rule() {
        for good in ["a", "demo-http", "q_1", "9lives", &"x".repeat(64)] {
            assert_eq!(parse_name(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "Demo",
            "a.b",
            "a/b",
            "../x",
            "é",
            "a b",
            &"x".repeat(65),
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?} was accepted");
        }
        let error = parse(&["Bad", "--lang", "rust", "--kind", "http"])
            .err()
            .unwrap();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        // clap's usage errors exit 2, like a `UsageError`.
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn lang_and_kind_are_required_and_checked() {
        let args = parse(&["demo", "--lang", "typescript", "--kind", "queue"]).unwrap();
        assert_eq!((args.lang, args.kind), (Lang::Ts, Kind::Queue));
        assert_eq!(args.dir, None);
        let args = parse(&["demo", "--lang", "py", "--kind", "monitor", "--dir", "x/y"]).unwrap();
        assert_eq!(
            (args.lang, args.dir),
            (Lang::Python, Some(PathBuf::from("x/y")))
        );
        assert!(parse(&["demo", "--lang", "go", "--kind", "http"]).is_err());
        assert!(parse(&["demo", "--lang", "rust", "--kind", "cron"]).is_err());
        assert!(parse(&["demo", "--kind", "http"]).is_err());
        assert!(parse(&["demo", "--lang", "rust"]).is_err());
    }

    #[test]
    fn every_combination_renders_completely() {
        for (lang, kind) in combinations() {
            let files = scaffold_files("demo-x", lang, kind);
            let what = format!("{lang:?} {kind:?}");
            for file in &files {
                assert!(
                    !file.text.contains("@@"),
                    "{what}: {} keeps a placeholder",
                    file.path
                );
                assert!(!file.text.is_empty(), "{what}: {} is empty", file.path);
            }
            let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            paths.sort();
            let count = paths.len();
            paths.dedup();
            assert_eq!(paths.len(), count, "{what}: a path twice");

            let build = find(&files, "build.sh");
            assert!(build.executable, "{what}: build.sh is not executable");
            assert!(build.text.starts_with("#!/usr/bin/env bash\n"));
            assert!(build.text.contains("demo-x.wasm"), "{what}: build.sh");
            assert!(build.text.contains("build)") && build.text.contains("test)"));
            let readme = &find(&files, "README.md").text;
            assert!(readme.contains("./build.sh test"), "{what}");
            assert!(readme.contains("./build.sh build"), "{what}");
            assert!(readme.contains(&deploy_command("demo-x", kind)), "{what}");
            assert!(readme.contains("/metrics"), "{what}");
            for (path, _) in WIT {
                find(&files, path);
            }
            assert!(find(&files, ".gitignore").text.contains("/demo-x.wasm"));
            // The source targets the kind's world.
            let (source, test) = match lang {
                Lang::Rust => ("src/lib.rs", "src/lib.rs"),
                Lang::Ts => ("src/component.ts", "test/logic.test.mjs"),
                Lang::Python => ("app.py", "test_app.py"),
            };
            let source = &find(&files, source).text;
            let export = match (lang, kind) {
                (Lang::Rust, Kind::Http) => "#[wstd::http_server]",
                (Lang::Rust, Kind::Queue) => "impl Guest for Processor",
                (Lang::Rust, Kind::Monitor) => "impl Guest for Monitor",
                (Lang::Ts, Kind::Http) => "addEventListener('fetch'",
                (Lang::Ts, Kind::Queue) => "export const processor",
                (Lang::Ts, Kind::Monitor) => "export const monitoring",
                (Lang::Python, Kind::Http) => "class IncomingHandler(exports.IncomingHandler)",
                (Lang::Python, Kind::Queue) => "class Processor(exports.Processor)",
                (Lang::Python, Kind::Monitor) => "class Monitoring(exports.Monitoring)",
            };
            assert!(source.contains(export), "{what}: no {export}");
            let import = match kind {
                Kind::Http | Kind::Queue => "kv",
                Kind::Monitor => "probe",
            };
            assert!(source.contains(import), "{what}: does not use {import}");
            let test = &find(&files, test).text;
            let marker = match lang {
                Lang::Rust => "#[test]",
                Lang::Ts => "from 'node:test'",
                Lang::Python => "unittest.TestCase",
            };
            assert!(test.contains(marker), "{what}: no test");
        }
    }

    #[test]
    fn the_rust_crate_builds_on_its_own_with_the_workspace_bindgen() {
        let components: toml::Table = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/Cargo.toml"),
        )
        .unwrap()
        .parse()
        .unwrap();
        let bindgen = &components["workspace"]["dependencies"]["wit-bindgen"];
        for kind in Kind::value_variants() {
            let files = scaffold_files("9lives", Lang::Rust, *kind);
            let cargo: toml::Table = find(&files, "Cargo.toml").text.parse().unwrap();
            assert_eq!(cargo["package"]["name"].as_str(), Some("llmchat-9lives"));
            assert!(cargo["workspace"].is_table(), "no [workspace]");
            assert_eq!(
                cargo["lib"]["crate-type"].as_array().unwrap()[0].as_str(),
                Some("cdylib")
            );
            assert_eq!(&cargo["dependencies"]["wit-bindgen"], bindgen);
            assert_eq!(
                cargo["dependencies"].get("wstd").is_some(),
                *kind == Kind::Http
            );
            assert_eq!(
                cargo["package"]["metadata"]["llmchat"]["world"].as_str(),
                Some(kind.world())
            );
            let lib = &find(&files, "src/lib.rs").text;
            assert!(lib.contains("path: \"wit\""));
            assert!(lib.contains(&format!(
                "world: \"{}\"",
                match kind {
                    Kind::Http => "llmchat:runtime/capabilities",
                    _ => kind.world(),
                }
            )));
            let build = &find(&files, "build.sh").text;
            assert!(build.contains("release/llmchat_9lives.wasm 9lives.wasm"));
        }
        assert_eq!(crate_name("demo-http"), "demo-http");
    }

    #[test]
    fn the_ts_and_python_manifests_are_well_formed() {
        for kind in Kind::value_variants() {
            let files = scaffold_files("_demo", Lang::Ts, *kind);
            let package: serde_json::Value =
                serde_json::from_str(&find(&files, "package.json").text).unwrap();
            assert_eq!(package["name"], "llmchat-_demo");
            assert_eq!(package["type"], "module");
            for tool in ["@bytecodealliance/jco", "@bytecodealliance/componentize-js"] {
                assert!(package["devDependencies"][tool].is_string(), "{tool}");
            }
            let worlds = &find(&files, "wit-js/worlds.wit").text;
            assert!(worlds.contains(&format!("world {} {{", short_world(*kind))));
            let build = &find(&files, "build.sh").text;
            assert!(build.contains(&format!("world={}", short_world(*kind))));

            let files = scaffold_files("demo", Lang::Python, *kind);
            assert!(
                find(&files, "requirements.txt")
                    .text
                    .contains("componentize-py==")
            );
            let build = &find(&files, "build.sh").text;
            assert!(build.contains(&format!("world={}", kind.world())));
            let intersected = files.iter().any(|f| f.path == "wit-python/python.wit");
            assert_eq!(intersected, *kind == Kind::Http);
            assert_eq!(build.contains("-i llmchat:python/"), *kind == Kind::Http);
            assert!(python::WIT_PYTHON.contains("world http-handler-no-outbound {"));
        }
    }

    #[test]
    fn the_embedded_wit_is_the_repositorys() {
        let embedded: Vec<(String, String)> = WIT
            .iter()
            .map(|(path, text)| ((*path).to_string(), (*text).to_string()))
            .collect();
        let mut embedded_sorted = embedded.clone();
        embedded_sorted.sort();
        assert_eq!(
            embedded_sorted,
            repo_wit(),
            "wit/ changed: list its files in `WIT`"
        );
    }

    #[test]
    fn a_folder_that_exists_and_is_not_empty_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(check_target(&tmp.path().join("new")).is_ok());
        assert!(check_target(tmp.path()).is_ok(), "an empty folder is fine");
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let error = check_target(tmp.path()).unwrap_err();
        assert!(error.0.contains("not empty"), "{error}");
        let error = check_target(&tmp.path().join("file")).unwrap_err();
        assert!(error.0.contains("not a folder"), "{error}");
    }

    #[test]
    fn scaffold_writes_the_folder_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/demo");
        let args = |dir: &Path| NewArgs {
            name: "demo".to_string(),
            lang: Lang::Rust,
            kind: Kind::Queue,
            dir: Some(dir.to_path_buf()),
        };
        scaffold(args(&dir)).unwrap();
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("queue-processor"));
        assert!(dir.join("wit/deps/http.wit").is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("build.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        // A second time: refused as bad input (exit 2), nothing overwritten.
        std::fs::write(dir.join("src/lib.rs"), "mine").unwrap();
        let error = scaffold(args(&dir)).unwrap_err();
        assert!(error.is::<UsageError>(), "{error:#}");
        assert_eq!(
            std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn the_summary_names_the_files_and_the_next_steps() {
        let files = scaffold_files("demo", Lang::Python, Kind::Http);
        let out = summary("demo", Lang::Python, Kind::Http, Path::new("demo"), &files);
        assert!(out.starts_with("created demo, a Python HTTP handler, in demo:\n"));
        assert!(out.contains("\n  app.py\n"));
        assert!(out.contains("\n  wit/ (14 WIT files)\n"));
        assert!(out.contains("\n  wit-python/ (1 WIT files)\n"));
        assert!(out.ends_with("llmchat deploy demo demo.wasm --route /demo\n"));
    }

    #[test]
    fn prose_is_wrapped_and_indented() {
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc");
        assert_eq!(wrap("a-very-long-word b", 4), "a-very-long-word\nb");
        assert_eq!(indent("a\n\nb", 2), "  a\n\n  b");
        for (lang, kind) in combinations() {
            let files = scaffold_files("demo", lang, kind);
            let readme = &find(&files, "README.md").text;
            for line in readme.lines().filter(|l| !l.starts_with('|')) {
                assert!(
                    line.chars().count() <= README_WIDTH,
                    "{lang:?} {kind:?}: {line:?}"
                );
            }
        }
    }
}
