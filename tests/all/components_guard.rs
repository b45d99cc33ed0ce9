//! Every component under `components/` must be run by at least one test: its name appears
//! quoted in a test, a test names its built `.wasm`, or the default manifest (which the tests
//! run) loads it. That holds for the Rust crates, the TypeScript components of
//! `components/js/` and the Python ones of `components/python/`, each found the way its build
//! finds it.

use std::path::Path;

use crate::support::repo_root;

/// A guest component: its name, and where its build writes it, relative to `components/`.
#[derive(Debug)]
struct Guest {
    name: String,
    built: String,
}

/// The package name of the component crate in `dir`; `None` for a helper library, which is
/// not a component (only `cdylib` crates are).
fn component_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let value: toml::Table = text.parse().ok()?;
    let crate_types = value.get("lib")?.get("crate-type")?.as_array()?;
    if !crate_types.iter().any(|t| t.as_str() == Some("cdylib")) {
        return None;
    }
    Some(value.get("package")?.get("name")?.as_str()?.to_string())
}

/// The Rust components: the `cdylib` crates of `components/` and `components/fixtures/`.
fn rust_guests(root: &Path) -> Vec<Guest> {
    let mut guests = Vec::new();
    for parent in [root.to_path_buf(), root.join("fixtures")] {
        for entry in std::fs::read_dir(&parent)
            .expect("reading components/")
            .flatten()
        {
            if let Some(name) = component_name(&entry.path()) {
                let built = format!(
                    "target/wasm32-wasip2/release/{}.wasm",
                    name.replace('-', "_")
                );
                guests.push(Guest { name, built });
            }
        }
    }
    guests
}

/// The TypeScript components: the `components=(...)` table of `components/js/build.sh`, one
/// `"NAME ENTRY WORLD"` line each, built into `target/js/NAME.wasm`. Every folder holding a
/// `main.ts` (a component or a fixture) must be the folder of an entry there, or it is never
/// built.
fn js_guests(root: &Path) -> Vec<Guest> {
    let js = root.join("js");
    let script = std::fs::read_to_string(js.join("build.sh")).expect("reading js/build.sh");
    let table: Vec<(String, String)> = script
        .lines()
        .skip_while(|line| line.trim() != "components=(")
        .skip(1)
        .take_while(|line| line.trim() != ")")
        .filter_map(|line| {
            let mut words = line.trim().trim_matches('"').split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect();
    let mut folders = Vec::new();
    for parent in [js.clone(), js.join("fixtures")] {
        for entry in std::fs::read_dir(&parent)
            .expect("reading components/js/")
            .flatten()
        {
            if entry.path().join("main.ts").is_file() {
                let folder = entry.path().strip_prefix(&js).unwrap().to_path_buf();
                folders.push(folder.to_string_lossy().into_owned());
            }
        }
    }
    let unbuilt: Vec<&String> = folders
        .iter()
        .filter(|folder| {
            !table
                .iter()
                .any(|(_, entry)| *entry == format!("{folder}/main.ts"))
        })
        .collect();
    assert!(
        unbuilt.is_empty(),
        "TypeScript components that components/js/build.sh does not build: {unbuilt:?}"
    );
    table
        .into_iter()
        .map(|(name, _)| Guest {
            built: format!("target/js/{name}.wasm"),
            name,
        })
        .collect()
}

/// The Python components: the folders of `components/python/` with an `app.py` and a
/// `world` (as `build.sh list` finds them), built into `target/python/NAME.wasm`.
fn python_guests(root: &Path) -> Vec<Guest> {
    std::fs::read_dir(root.join("python"))
        .expect("reading components/python/")
        .flatten()
        .filter(|e| e.path().join("app.py").is_file() && e.path().join("world").is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Guest {
                built: format!("target/python/{name}.wasm"),
                name,
            }
        })
        .collect()
}

#[test]
fn every_component_has_a_test() {
    let root = repo_root().join("components");
    let (rust, js, python) = (rust_guests(&root), js_guests(&root), python_guests(&root));
    // Floors that catch a guard that finds nothing (a moved folder, a changed build.sh).
    assert!(rust.len() >= 6, "found only {rust:?}");
    assert!(js.len() >= 3, "found only {js:?} in components/js/build.sh");
    assert!(python.len() >= 3, "found only {python:?}");
    let tests: String = std::fs::read_dir(repo_root().join("tests/all"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let default_manifest = std::fs::read_to_string(root.join("llmchat.toml")).unwrap();
    let untested: Vec<String> = rust
        .into_iter()
        .chain(js)
        .chain(python)
        .filter(|guest| {
            let built = format!("{}\"", guest.built);
            !tests.contains(&format!("\"{}\"", guest.name))
                && !tests.contains(&built)
                && !default_manifest.contains(&format!("\"{built}"))
        })
        .map(|guest| guest.built)
        .collect();
    assert!(
        untested.is_empty(),
        "components without a test: {untested:?}"
    );
}
