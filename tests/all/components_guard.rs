//! Every component under `components/` must be run by at least one test: its package name
//! appears quoted in a test, or the default manifest (which the tests run) loads it.

use std::path::Path;

use crate::support::repo_root;

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

#[test]
fn every_component_has_a_test() {
    let root = repo_root().join("components");
    let mut dirs = Vec::new();
    for parent in [root.clone(), root.join("fixtures")] {
        for entry in std::fs::read_dir(&parent)
            .expect("reading components/")
            .flatten()
        {
            if entry.path().join("Cargo.toml").is_file() {
                dirs.push(entry.path());
            }
        }
    }
    assert!(dirs.len() >= 6, "found only {dirs:?}");
    let tests: String = std::fs::read_dir(repo_root().join("tests/all"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    let default_manifest = std::fs::read_to_string(root.join("llmchat.toml")).unwrap();
    let components: Vec<String> = dirs.iter().filter_map(|d| component_name(d)).collect();
    assert!(
        components.len() >= 6,
        "found only {components:?} in {dirs:?}"
    );
    let untested: Vec<String> = components
        .into_iter()
        .filter(|name| {
            let wasm = format!("/{}.wasm", name.replace('-', "_"));
            !tests.contains(&format!("\"{name}\"")) && !default_manifest.contains(&wasm)
        })
        .collect();
    assert!(
        untested.is_empty(),
        "components without a test: {untested:?}"
    );
}
