//! Readers of the packaging files for `deploy_files`: YAML documents as JSON values, the
//! Kubernetes objects of `deploy/k8s/`, the compose file, the Dockerfile's instructions, and
//! the environment variables a manifest or the binary reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use llmchat_host::manifest::HumanDuration;

use crate::support::repo_root;

/// The default manifest, `components/llmchat.toml`: its text and its TOML.
pub fn default_manifest() -> (String, toml::Table) {
    let text = std::fs::read_to_string(repo_root().join("components/llmchat.toml"))
        .expect("reading components/llmchat.toml");
    let table = toml::from_str(&text).expect("components/llmchat.toml is TOML");
    (text, table)
}

/// The documents of a YAML file (`---`-separated, merge keys applied), as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading `{}`: {e}", path.display()));
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let mut yaml = <serde_norway::Value as serde::Deserialize>::deserialize(document)
            .unwrap_or_else(|e| panic!("`{}` is not valid YAML: {e}", path.display()));
        yaml.apply_merge()
            .unwrap_or_else(|e| panic!("`{}`: bad merge key: {e}", path.display()));
        if yaml.is_null() {
            continue;
        }
        documents.push(
            serde_json::to_value(&yaml)
                .unwrap_or_else(|e| panic!("`{}`: not JSON-shaped: {e}", path.display())),
        );
    }
    documents
}

/// Every Kubernetes object of `deploy/k8s/`, with the file it is in.
pub fn k8s_objects() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading `{}`: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.ends_with(".yaml"),
            "deploy/k8s/{name}: `kubectl apply -f deploy/k8s/` would apply it; only .yaml files belong there"
        );
        for document in yaml_documents(&file) {
            objects.push((name.clone(), document));
        }
    }
    objects
}

pub fn object(objects: &[(String, Value)], kind: &str, name: &str) -> Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("deploy/k8s/ has no {kind} `{name}`"))
        .clone()
}

pub fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

/// The llmchat container of the llmchat Deployment.
pub fn llmchat_container(deployment: &Value) -> Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the Deployment's containers")
        .iter()
        .find(|c| c["name"] == "llmchat")
        .expect("a container named `llmchat`")
        .clone()
}

/// A container's `env` as name → value (`valueFrom` entries as their JSON).
pub fn env_of(container: &Value) -> BTreeMap<String, Value> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    let value = e.get("value").unwrap_or(&e["valueFrom"]).clone();
                    (str_of(&e["name"], "an env name").to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container port `port` (a number or a port name) means in `container`.
pub fn resolve_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "a port");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("the container has no port named `{name}`"))
}

/// The port of a `HOST:PORT` listen address.
pub fn listen_port(listen: &str) -> u64 {
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("LLMCHAT_LISTEN `{listen}` has no port"))
}

pub fn duration(text: &str) -> Duration {
    HumanDuration::from_str(text)
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// The manifest the pods run, from the ConfigMap the Deployment mounts at LLMCHAT_MANIFEST.
pub fn configmap_manifest(objects: &[(String, Value)]) -> String {
    let deployment = object(objects, "Deployment", "llmchat");
    let container = llmchat_container(&deployment);
    let manifest_path = env_of(&container)
        .get("LLMCHAT_MANIFEST")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| dockerfile().env["LLMCHAT_MANIFEST"].clone());
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == manifest_path.as_str())
        .unwrap_or_else(|| panic!("nothing is mounted at LLMCHAT_MANIFEST `{manifest_path}`"))
        .clone();
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the manifest's volume")
        .clone();
    let configmap = object(
        objects,
        "ConfigMap",
        str_of(&volume["configMap"]["name"], "configMap.name"),
    );
    let key = str_of(&mount["subPath"], "the manifest mount's subPath");
    str_of(&configmap["data"][key], "the ConfigMap's manifest").to_string()
}

/// Environment variable names a manifest reads: `${NAME}` / `${NAME:-default}`, and the
/// variables `api_key_env` and `password_env` name. With whether each has a default.
pub fn manifest_variables(manifest: &str) -> BTreeMap<String, bool> {
    let mut names = BTreeMap::new();
    for line in manifest.lines() {
        let line = line.split_once('#').map_or(line, |(code, _)| code);
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            let inner = &rest[start + 2..];
            let end = inner.find('}').expect("a closed ${...}");
            let (name, has_default) = match inner[..end].split_once(":-") {
                Some((name, _)) => (name, true),
                None => (&inner[..end], false),
            };
            names.insert(name.to_string(), has_default);
            rest = &inner[end..];
        }
        for key in ["api_key_env", "password_env"] {
            if let Some((k, v)) = line.split_once('=')
                && k.trim() == key
            {
                names.insert(v.trim().trim_matches('"').to_string(), false);
            }
        }
    }
    names
}

/// Asserts that the binary reads every variable in `names`, or that `manifest` does.
pub fn assert_read_by_binary_or_manifest<'a>(
    names: impl IntoIterator<Item = &'a String>,
    manifest: &str,
    context: &str,
) {
    let help = Command::new(env!("CARGO_BIN_EXE_llmchat"))
        .args(["up", "--help"])
        .output()
        .expect("running llmchat up --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let binary = std::fs::read(env!("CARGO_BIN_EXE_llmchat")).expect("reading the llmchat binary");
    let from_manifest = manifest_variables(manifest);
    for name in names {
        let in_help = help.contains(&format!("[env: {name}="));
        // Variables read outside clap (REDIS_URL, LLMCHAT_ADMIN_TOKEN, RUST_LOG) are string
        // literals in the binary.
        let in_binary = || binary.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(
            in_help || from_manifest.contains_key(name.as_str()) || in_binary(),
            "{context} sets `{name}`, which neither llmchat nor its manifest reads"
        );
    }
}

pub fn compose() -> Value {
    let mut documents = yaml_documents(&repo_root().join("deploy/compose.yaml"));
    assert_eq!(documents.len(), 1, "deploy/compose.yaml is one document");
    documents.remove(0)
}

/// The compose services that run the llmchat image.
pub fn llmchat_services(compose: &Value) -> Vec<(String, Value)> {
    let services: Vec<_> = compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("llmchat"))
        })
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    assert_eq!(
        services.len(),
        2,
        "two llmchat services in deploy/compose.yaml"
    );
    services
}

/// What the tests read from the Dockerfile: the runtime stage's ENV, EXPOSE, USER and
/// VOLUME, and every instruction of the file in order.
pub struct Dockerfile {
    pub instructions: Vec<(String, String)>,
    pub env: BTreeMap<String, String>,
    pub expose: Vec<u64>,
    pub user: String,
    pub volumes: Vec<String>,
}

pub fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("reading Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(trimmed);
                let (instruction, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                instructions.push((instruction.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    let runtime = &instructions[last_from..];
    let mut env = BTreeMap::new();
    let mut expose = Vec::new();
    let mut user = String::new();
    let mut volumes = Vec::new();
    for (instruction, args) in runtime {
        match instruction.as_str() {
            "ENV" => {
                for pair in args.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    env.insert(k.to_string(), v.to_string());
                }
            }
            "EXPOSE" => expose.extend(args.split_whitespace().map(|p| {
                p.trim_end_matches("/tcp")
                    .parse::<u64>()
                    .expect("an EXPOSE port")
            })),
            "USER" => user = args.clone(),
            "VOLUME" => {
                let list: Vec<String> = serde_json::from_str(args).expect("VOLUME as a JSON array");
                volumes.extend(list);
            }
            _ => {}
        }
    }
    Dockerfile {
        instructions,
        env,
        expose,
        user,
        volumes,
    }
}
