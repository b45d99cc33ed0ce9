//! The floors of the host crate, and the guard that keeps imports running downward.
//!
//! Each top-level module sits on one floor. A module may use modules on lower floors, never
//! one on its own floor or above: so no two modules can need each other, and each floor can
//! be read, tested and changed knowing only the ones below. [`FLOORS`] is the table; the
//! test below reads every `crate::` path in `host/src` (comments stripped) and fails on an
//! import that does not run down, unless it is one of the few [`KNOWN_UPWARD`] imports still
//! to be removed, and fails as well when one of those is gone, so the list only shrinks.

/// Bottom first. `timers` and `floors` are the time floor and this guard.
const FLOORS: &[&[&str]] = &[
    // Config and time: values read from the manifest, clocks and the one owner of timers.
    &["manifest", "timers", "floors"],
    // Trace spans and their export; knows nothing of what the spans describe.
    &["telemetry"],
    // Collects numbers; knows nothing of what produces them.
    &["metrics"],
    // The one task that runs periodic duties.
    &["scheduler"],
    // The Redis pool, then the backends built on it or beside it.
    &["redis"],
    &["kv", "limits", "llm", "queue"],
    // wasmtime: compile, pool, cache, ticker, memory budget, long lane.
    &["engine"],
    // The WIT imports and exports, generic over the store.
    &["capabilities"],
    // The store's data, the linker, one invoke; then the loaded components.
    &["runtime"],
    &["registry"],
    // The ways a component is invoked: HTTP routes, queues, schedules.
    &["triggers"],
    // The application: deploys, the admin API, the dashboard, and the HTTP server that
    // mounts the admin API, the host's endpoints and the HTTP trigger.
    &["deploy"],
    &["admin", "dashboard"],
    &["http"],
];

/// Imports that still run up or sideways, as `(from, to)`: each is a known cycle to undo.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::{FLOORS, KNOWN_UPWARD};

    fn floor_of(module: &str) -> Option<usize> {
        FLOORS.iter().position(|floor| floor.contains(&module))
    }

    /// The top-level modules named by `crate::NAME` paths in `text`, comments left out.
    fn crate_paths(text: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                let after = &rest[at + "crate::".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let preceded_by_ident = rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if !name.is_empty() && !preceded_by_ident {
                    found.insert(name);
                }
                rest = after;
            }
        }
        found
    }

    /// Every `(from, to)` import between different top-level modules of `host/src`.
    fn imports() -> BTreeSet<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut edges = BTreeSet::new();
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("reading host/src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let rel = path.strip_prefix(&src).expect("under host/src");
                let first = rel.components().next().expect("a path");
                let module = first
                    .as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string();
                // The binary and the crate root are above every floor; this guard's own
                // samples are not imports.
                if ["main", "lib", "cli", "floors"].contains(&module.as_str()) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("reading a source file");
                for to in crate_paths(&text) {
                    if to != module {
                        edges.insert((module.clone(), to));
                    }
                }
            }
        }
        edges
    }

    #[test]
    fn every_module_is_on_a_floor() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&src).expect("reading host/src").flatten() {
            let name = entry
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if ["main", "lib", "cli"].contains(&name.as_str()) {
                continue;
            }
            assert!(
                floor_of(&name).is_some(),
                "module `{name}` is on no floor: add it to floors::FLOORS"
            );
        }
    }

    #[test]
    fn imports_run_down_the_floors() {
        let mut upward = Vec::new();
        let mut known_seen = BTreeSet::new();
        for (from, to) in imports() {
            let (Some(f), Some(t)) = (floor_of(&from), floor_of(&to)) else {
                continue;
            };
            if t < f {
                continue;
            }
            if KNOWN_UPWARD.contains(&(from.as_str(), to.as_str())) {
                known_seen.insert((from, to));
            } else {
                upward.push(format!("{from} -> {to}"));
            }
        }
        assert!(
            upward.is_empty(),
            "imports that do not run down the floors (see floors::FLOORS): {upward:?}"
        );
        let gone: Vec<_> = KNOWN_UPWARD
            .iter()
            .filter(|(f, t)| !known_seen.contains(&(f.to_string(), t.to_string())))
            .collect();
        assert!(
            gone.is_empty(),
            "these known upward imports are gone: remove them from floors::KNOWN_UPWARD: {gone:?}"
        );
    }

    #[test]
    fn the_path_reader_ignores_comments_and_longer_names() {
        let text = "use crate::engine::X; // crate::admin\n let y = foo_crate::http::Z;\n\
                    crate::timers::sleep(d)";
        let found: Vec<String> = crate_paths(text).into_iter().collect();
        assert_eq!(found, ["engine", "timers"]);
    }
}
