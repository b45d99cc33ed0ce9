//! `llmchat deploy`, `llmchat components` and `llmchat rollback`: deploying components to a
//! running host, listing them, and going back to a component's previous version.
//!
//! `deploy` checks what it can before any request (the name, the file, the units, the
//! routes, a `--config` pair, `--every` against `--cron`) so that a typo exits 2; it sends the
//! host's own [`DeploySpec`] and checks by the host's own rules, so it refuses nothing the
//! host would take. The host checks everything again, and refuses a deploy that it cannot
//! serve without changing what runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;

use llmchat_host::manifest::{
    ByteSize, ComponentConfig, ConfigValue, DeploySpec, HttpTriggerConfig, HumanDuration,
    MAX_CONCURRENCY, MAX_INSTANCES, MAX_RESOURCES, MIN_RESOURCES, QueueTriggerConfig,
    ScheduleTriggerConfig, TriggerConfigs, check_method, check_name, check_outbound_host,
    check_route, host_path, parse_cron,
};
use llmchat_host::timers::now_ms;

use super::client::AdminClient;
use super::{HostArg, UsageError, table};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("schedule").multiple(false))]
pub struct DeployArgs {
    /// The component's name: 1 to 64 of a-z, 0-9, '-' and '_'. An existing one is replaced.
    #[arg(value_parser = parse_name)]
    pub name: String,
    /// The component's .wasm file.
    pub file: PathBuf,
    /// Serve this HTTP route: "/x" exactly, or "/x/..." for it and everything below;
    /// repeatable.
    #[arg(long = "route", value_name = "ROUTE", value_parser = parse_route)]
    pub routes: Vec<String>,
    /// Methods every --route answers, comma-separated, e.g. GET,POST [default: all].
    #[arg(
        long,
        value_name = "METHODS",
        value_delimiter = ',',
        value_parser = parse_method,
        requires = "routes"
    )]
    pub methods: Vec<String>,
    /// Process the jobs of this queue; repeatable.
    #[arg(long = "queue", value_name = "QUEUE", value_parser = parse_name)]
    pub queues: Vec<String>,
    /// Jobs of every --queue processed at once by each host [default: the host's].
    #[arg(
        long,
        value_name = "N",
        requires = "queues",
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY))
    )]
    pub concurrency: Option<u32>,
    /// Run the component at every multiple of this period, e.g. 30s.
    #[arg(long, value_name = "DURATION", group = "schedule", value_parser = |s: &str| s.parse::<HumanDuration>())]
    pub every: Option<HumanDuration>,
    /// Run the component at every match of this cron expression (UTC), e.g. "0 3 * * *".
    #[arg(long, value_name = "EXPR", group = "schedule", value_parser = parse_cron_flag)]
    pub cron: Option<String>,
    /// Wall-clock limit of one scheduled run [default: the host's].
    #[arg(long, value_name = "DURATION", requires = "schedule", value_parser = |s: &str| s.parse::<HumanDuration>())]
    pub schedule_timeout: Option<HumanDuration>,
    /// Cap on the memory of one instance, e.g. 64MiB [default: the current version's].
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| s.parse::<ByteSize>())]
    pub memory: Option<ByteSize>,
    /// Wall-clock limit of one invocation, e.g. 10s [default: the current version's].
    #[arg(long, value_name = "DURATION", value_parser = |s: &str| s.parse::<HumanDuration>())]
    pub timeout: Option<HumanDuration>,
    /// How many instances may run at once [default: the current version's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_INSTANCES)))]
    pub max_instances: Option<u32>,
    /// How many resource handles one instance may hold at once [default: the current
    /// version's, or 10000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(i64::from(MIN_RESOURCES)..=i64::from(MAX_RESOURCES)))]
    pub max_resources: Option<u32>,
    /// The kv namespace the component reads and writes [default: its name].
    #[arg(long, value_name = "NS", value_parser = parse_name)]
    pub kv_namespace: Option<String>,
    /// Let the component send HTTP requests to this "scheme://host:port"; repeatable.
    #[arg(long = "allow-outbound", value_name = "URL", value_parser = parse_outbound)]
    pub allow_outbound: Vec<String>,
    /// A setting the component reads through its `config` interface; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    pub config: Vec<(String, String)>,
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
pub struct ComponentsArgs {
    #[command(flatten)]
    pub host: HostArg,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The component to return to its previous version.
    #[arg(value_parser = parse_name)]
    pub name: String,
    #[command(flatten)]
    pub host: HostArg,
}

/// Component, queue and kv namespace names, by the host's rule; checked here so that they go
/// into a URL path as they are.
fn parse_name(name: &str) -> Result<String, String> {
    check_name(name).map(|()| name.to_string())
}

/// A route by the host's rules: well formed, and not on one of the host's own paths.
fn parse_route(route: &str) -> Result<String, String> {
    check_route(route)?;
    if let Some(path) = host_path(route) {
        return Err(format!(
            "{route:?} is reserved for the host's own endpoint {path}"
        ));
    }
    Ok(route.to_string())
}

/// An HTTP method, upper-cased: `get` is taken for `GET`.
fn parse_method(method: &str) -> Result<String, String> {
    let upper = method.trim().to_ascii_uppercase();
    check_method(&upper).map_err(|_| format!("{method:?} is not an HTTP method"))?;
    Ok(upper)
}

fn parse_cron_flag(expr: &str) -> Result<String, String> {
    parse_cron(expr).map(|_| expr.to_string())
}

fn parse_outbound(url: &str) -> Result<String, String> {
    check_outbound_host(url).map(|()| url.to_string())
}

/// `KEY=VALUE`, split at the first `=`; the value may be empty, the key may not.
fn parse_config(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        Some(_) => Err(format!("{pair:?} has an empty key")),
        None => Err(format!("{pair:?} is not of the form KEY=VALUE")),
    }
}

/// The `spec` part of a deploy: only what the flags give, so that the rest keeps the current
/// version's values on the host. A trigger flag sends the whole trigger set, which then
/// replaces every trigger of the component; without one, the component keeps its triggers.
/// A `--config` key given twice is refused.
fn build_spec(args: &DeployArgs) -> Result<DeploySpec, UsageError> {
    let mut config = BTreeMap::new();
    for (key, value) in &args.config {
        if config
            .insert(key.clone(), ConfigValue(value.clone()))
            .is_some()
        {
            return Err(UsageError(format!("--config {key} is given twice")));
        }
    }
    let has_triggers = !args.routes.is_empty()
        || !args.queues.is_empty()
        || args.every.is_some()
        || args.cron.is_some();
    let triggers = has_triggers.then(|| TriggerConfigs {
        http: args
            .routes
            .iter()
            .map(|route| HttpTriggerConfig {
                methods: args.methods.clone(),
                ..HttpTriggerConfig::route(route)
            })
            .collect(),
        queue: args
            .queues
            .iter()
            .map(|queue| QueueTriggerConfig {
                concurrency: args.concurrency,
                ..QueueTriggerConfig::queue(queue)
            })
            .collect(),
        schedule: if args.every.is_some() || args.cron.is_some() {
            vec![ScheduleTriggerConfig {
                every: args.every,
                cron: args.cron.clone(),
                timeout: args.schedule_timeout,
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
    });
    Ok(DeploySpec {
        component: ComponentConfig {
            memory_limit: args.memory,
            timeout: args.timeout,
            max_instances: args.max_instances,
            max_resources: args.max_resources,
            kv_namespace: args.kv_namespace.clone(),
            allowed_outbound_hosts: (!args.allow_outbound.is_empty())
                .then(|| args.allow_outbound.clone()),
            config: (!config.is_empty()).then_some(config),
            ..Default::default()
        },
        triggers,
    })
}

/// A `multipart/form-data` body with the parts `wasm` and `spec`, and its content type.
fn multipart(wasm: &[u8], file_name: &str, spec: &str) -> (String, Vec<u8>) {
    let boundary = loop {
        let b = format!(
            "llmchat-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let needle = b.as_bytes();
        let inside = |data: &[u8]| data.windows(needle.len()).any(|w| w == needle);
        if !inside(wasm) && !inside(spec.as_bytes()) {
            break b;
        }
    };
    // A file name is only informative; keep it from breaking out of its quotes.
    let file_name: String = file_name
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut body = Vec::with_capacity(wasm.len() + spec.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"wasm\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/wasm\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(wasm);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\
             Content-Type: application/json\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(spec.as_bytes());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The answer to a deploy and to a rollback.
#[derive(Deserialize)]
struct Deployed {
    name: String,
    hash: String,
    version: String,
    #[serde(default)]
    triggers: Value,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    elapsed_ms: Option<f64>,
}

pub async fn deploy(args: DeployArgs) -> Result<()> {
    let spec = build_spec(&args)?;
    let wasm = std::fs::read(&args.file)
        .map_err(|e| UsageError(format!("cannot read `{}`: {e}", args.file.display())))?;
    let client = AdminClient::new(&args.host.url)?;
    let spec = serde_json::to_string(&spec)?;
    let (content_type, body) = multipart(&wasm, &file_name(&args.file), &spec);
    drop(wasm);
    let path = format!("/admin/components/{}", args.name);
    let answer: Deployed = client.put_bytes(&path, &content_type, body).await?;
    print!("{}", deployed_report(&answer));
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component.wasm".to_string())
}

/// `deployed NAME version V (hash H) in N ms; previous: V0|none`, then a line per trigger.
fn deployed_report(d: &Deployed) -> String {
    let elapsed = d
        .elapsed_ms
        .map(|ms| format!(" in {ms:.0} ms"))
        .unwrap_or_default();
    let mut out = format!(
        "deployed {} version {} (hash {}){elapsed}; previous: {}\n",
        d.name,
        d.version,
        short_hash(&d.hash),
        d.previous.as_deref().unwrap_or("none")
    );
    let triggers = trigger_summary(&d.triggers);
    if triggers.is_empty() {
        out.push_str("  no triggers\n");
    }
    for t in triggers {
        out.push_str(&format!("  {t}\n"));
    }
    out
}

fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// One short item per trigger: `GET,POST /x` (`* /x` for every method), `queue q`, and a
/// schedule's `when` as the host words it (`every 30s`, `cron "0 3 * * *" (UTC)`). Lenient
/// about the shape, since it is only shown.
fn trigger_summary(triggers: &Value) -> Vec<String> {
    let list = |kind: &str| {
        triggers
            .get(kind)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for t in list("http") {
        let route = t.get("route").map(text).unwrap_or_else(|| "?".to_string());
        let methods: Vec<String> = t
            .get("methods")
            .and_then(Value::as_array)
            .map(|m| m.iter().map(text).collect())
            .unwrap_or_default();
        let methods = if methods.is_empty() {
            "*".to_string()
        } else {
            methods.join(",")
        };
        out.push(format!("{methods} {route}"));
    }
    for t in list("queue") {
        let queue = t.get("queue").map(text).unwrap_or_else(|| "?".to_string());
        out.push(format!("queue {queue}"));
    }
    for t in list("schedule") {
        let when = match (t.get("when"), t.get("every"), t.get("cron")) {
            // The host's own wording: `every 30s` or `cron "0 3 * * *" (UTC)`.
            (Some(Value::String(when)), _, _) => when.clone(),
            (_, Some(every), _) if !every.is_null() => format!("every {}", text(every)),
            (_, _, Some(cron)) if !cron.is_null() => format!("cron {:?}", text(cron)),
            _ => "schedule".to_string(),
        };
        out.push(when);
    }
    out
}

#[derive(Deserialize)]
struct ComponentList {
    components: Vec<ComponentRow>,
}

#[derive(Deserialize)]
struct ComponentRow {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    deployed_at_ms: Option<u64>,
    #[serde(default)]
    exports: Vec<String>,
    #[serde(default)]
    triggers: Value,
    #[serde(default)]
    invocations: Option<u64>,
}

pub async fn components(args: ComponentsArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let list: ComponentList = client.get("/admin/components").await?;
    if list.components.is_empty() {
        println!("no components");
        return Ok(());
    }
    print!("{}", components_table(&list, now_ms()));
    Ok(())
}

fn components_table(list: &ComponentList, now_ms: u64) -> String {
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = list
        .components
        .iter()
        .map(|c| {
            let triggers = trigger_summary(&c.triggers);
            vec![
                c.name.clone(),
                c.version.clone().unwrap_or_else(dash),
                c.origin.clone().unwrap_or_else(dash),
                if c.exports.is_empty() {
                    dash()
                } else {
                    c.exports.join(",")
                },
                if triggers.is_empty() {
                    dash()
                } else {
                    triggers.join("; ")
                },
                c.invocations.map(|n| n.to_string()).unwrap_or_else(dash),
                c.deployed_at_ms
                    .map(|t| ago(now_ms, t))
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    let headers = [
        "NAME",
        "VERSION",
        "ORIGIN",
        "EXPORTS",
        "TRIGGERS",
        "INVOCATIONS",
        "DEPLOYED",
    ];
    table::render(&headers, &rows)
}

/// How long before `now_ms` the instant `then_ms` was, in its largest whole unit: `42s ago`,
/// `5m ago`, `3h ago`, `2d ago`; an instant ahead of this clock is `just now`.
fn ago(now_ms: u64, then_ms: u64) -> String {
    let Some(secs) = now_ms.checked_sub(then_ms).map(|ms| ms / 1000) else {
        return "just now".to_string();
    };
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub async fn rollback(args: RollbackArgs) -> Result<()> {
    let client = AdminClient::new(&args.host.url)?;
    let path = format!("/admin/components/{}/rollback", args.name);
    let answer: Deployed = client.post_empty(&path).await?;
    println!(
        "rolled back {} to version {} (hash {})",
        answer.name,
        answer.version,
        short_hash(&answer.hash)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployArgs,
    }

    fn parse(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let argv = ["llmchat-deploy", "hello2", "hello.wasm"]
            .iter()
            .chain(args)
            .copied();
        Cli::try_parse_from(argv).map(|c| c.deploy)
    }

    fn spec_json(args: &[&str]) -> Value {
        serde_json::to_value(build_spec(&parse(args).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_plain_redeploy_sends_an_empty_spec_and_keeps_the_triggers() {
        assert_eq!(spec_json(&[]), json!({}));
    }

    #[test]
    fn the_spec_carries_every_flag_in_the_manifest_units() {
        let spec = spec_json(&[
            "--route",
            "/hello2",
            "--route",
            "/h/...",
            "--methods",
            "get,POST",
            "--queue",
            "q",
            "--concurrency",
            "5",
            "--cron",
            "0 3 * * *",
            "--schedule-timeout",
            "2m",
            "--memory",
            "65536KiB",
            "--timeout",
            "1500ms",
            "--max-instances",
            "8",
            "--kv-namespace",
            "chat",
            "--allow-outbound",
            "http://127.0.0.1:8080",
            "--config",
            "greeting=hi=there",
            "--config",
            "empty=",
        ]);
        assert_eq!(
            spec,
            json!({
                "memory_limit": "64MiB",
                "timeout": "1500ms",
                "max_instances": 8,
                "kv_namespace": "chat",
                "allowed_outbound_hosts": ["http://127.0.0.1:8080"],
                "config": {"greeting": "hi=there", "empty": ""},
                "triggers": {
                    "http": [
                        {"route": "/hello2", "methods": ["GET", "POST"]},
                        {"route": "/h/...", "methods": ["GET", "POST"]}
                    ],
                    "queue": [{"queue": "q", "concurrency": 5}],
                    "schedule": [{"cron": "0 3 * * *", "timeout": "120s"}]
                }
            })
        );
    }

    #[test]
    fn any_trigger_flag_sends_the_whole_trigger_set() {
        assert_eq!(
            spec_json(&["--every", "30s"]),
            json!({"triggers": {"http": [], "queue": [], "schedule": [{"every": "30s"}]}})
        );
        assert_eq!(
            spec_json(&["--route", "/x"]),
            json!({"triggers": {"http": [{"route": "/x"}], "queue": [], "schedule": []}})
        );
    }

    #[test]
    fn bad_flags_are_refused_before_any_request() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).err().map(|e| e.kind());
        assert_eq!(
            kind(&["--every", "30s", "--cron", "0 3 * * *"]),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind(&["--methods", "GET"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            kind(&["--concurrency", "2"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            kind(&["--schedule-timeout", "5s"]),
            Some(ErrorKind::MissingRequiredArgument)
        );
        for bad in [
            &["--config", "novalue"][..],
            &["--config", "=v"],
            &["--route", "x"],
            &["--route", "/a/.../b"],
            &["--methods", "G E T", "--route", "/x"],
            &["--every", "30"],
            &["--cron", "every day"],
            &["--memory", "64mb"],
            &["--queue", "Q"],
            &["--allow-outbound", "127.0.0.1:8080"],
            &["--max-instances", "0"],
        ] {
            assert_eq!(kind(bad), Some(ErrorKind::ValueValidation), "{bad:?}");
        }
        assert!(Cli::try_parse_from(["d", "Hello", "x.wasm"]).is_err());
        let twice = parse(&["--config", "k=1", "--config", "k=2"]).unwrap();
        assert_eq!(
            build_spec(&twice).unwrap_err().0,
            "--config k is given twice"
        );
    }

    #[test]
    fn routes_on_the_hosts_own_paths_are_refused_before_any_request() {
        for route in [
            "/admin",
            "/admin/...",
            "/metrics",
            "/health",
            "/ready",
            "/dashboard",
        ] {
            let error = parse(&["--route", route]).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("reserved for the host's own endpoint")),
                "{route}: {error:?}"
            );
        }
        assert!(parse(&["--route", "/..."]).is_ok());
    }

    #[test]
    fn config_pairs_split_at_the_first_equals_sign() {
        assert_eq!(parse_config("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_config("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_config("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_config("a").is_err());
        assert!(parse_config(" =b").is_err());
    }

    #[test]
    fn the_multipart_body_has_both_parts_and_a_boundary_not_in_them() {
        let wasm = b"\0asm\x01\0\0\0--llmchat-".to_vec();
        let (content_type, body) = multipart(&wasm, "a\"b.wasm", r#"{"timeout":"10s"}"#);
        let boundary = content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let expected = [
            format!("--{boundary}\r\n").into_bytes(),
            b"Content-Disposition: form-data; name=\"wasm\"; filename=\"a_b.wasm\"\r\n".to_vec(),
            b"Content-Type: application/wasm\r\n\r\n".to_vec(),
            wasm,
            format!("\r\n--{boundary}\r\n").into_bytes(),
            b"Content-Disposition: form-data; name=\"spec\"\r\n".to_vec(),
            b"Content-Type: application/json\r\n\r\n{\"timeout\":\"10s\"}".to_vec(),
            format!("\r\n--{boundary}--\r\n").into_bytes(),
        ]
        .concat();
        assert_eq!(body, expected);
    }

    #[test]
    fn triggers_are_summarized_one_short_item_each() {
        let triggers = json!({
            "http": [
                {"route": "/hello", "methods": ["GET"], "max_body_size": "1MiB"},
                {"route": "/api/...", "methods": []}
            ],
            "queue": [{"queue": "q", "concurrency": 5}],
            "schedule": [
                {"name": "health", "when": "every 30s", "timeout": "10s"},
                {"name": "cleanup", "when": "cron \"0 3 * * *\" (UTC)", "timeout": "300s"},
                {"every": "1m"},
                {"cron": "0 3 * * *"}
            ]
        });
        assert_eq!(
            trigger_summary(&triggers),
            [
                "GET /hello",
                "* /api/...",
                "queue q",
                "every 30s",
                "cron \"0 3 * * *\" (UTC)",
                "every 1m",
                "cron \"0 3 * * *\""
            ]
        );
        assert!(trigger_summary(&Value::Null).is_empty());
        assert!(trigger_summary(&json!({"http": [], "queue": []})).is_empty());
    }

    #[test]
    fn the_component_table_shows_one_row_per_component() {
        let now = 1_700_000_000_000;
        let answer = json!({"components": [
            {"name": "hello", "hash": "ab", "version": "m1", "origin": "manifest",
             "deployed_at_ms": null, "exports": ["http"],
             "triggers": {"http": [{"route": "/hello", "methods": []}], "queue": [], "schedule": []},
             "memory_limit": "16MiB", "timeout": "5s", "max_instances": 64,
             "invocations": 12, "versions": 1},
            {"name": "hello2", "hash": "cd", "version": "v7", "origin": "deployed",
             "deployed_at_ms": now - 125_000, "exports": ["http", "processor"],
             "triggers": {"http": [{"route": "/hello2", "methods": ["GET"]}],
                          "queue": [{"queue": "q"}], "schedule": [{"when": "every 30s"}]},
             "invocations": 0, "versions": 2},
            {"name": "idle", "version": "v1", "origin": "deployed",
             "deployed_at_ms": now, "exports": [], "triggers": {}, "invocations": 3}
        ]});
        let list: ComponentList = serde_json::from_value(answer).unwrap();
        assert_eq!(
            components_table(&list, now),
            "NAME    VERSION  ORIGIN    EXPORTS         TRIGGERS                         INVOCATIONS  DEPLOYED\n\
             hello   m1       manifest  http            * /hello                         12           -\n\
             hello2  v7       deployed  http,processor  GET /hello2; queue q; every 30s  0            2m ago\n\
             idle    v1       deployed  -               -                                3            0s ago\n"
        );
    }

    #[test]
    fn relative_times_use_the_largest_whole_unit() {
        let now = 10_000_000_000;
        assert_eq!(ago(now, now - 42_000), "42s ago");
        assert_eq!(ago(now, now - 3_599_999), "59m ago");
        assert_eq!(ago(now, now - 7_200_000), "2h ago");
        assert_eq!(ago(now, now - 3 * 86_400_000), "3d ago");
        assert_eq!(ago(now, now + 5_000), "just now");
    }

    #[test]
    fn the_deploy_report_names_the_version_hash_and_triggers() {
        let answer: Deployed = serde_json::from_value(json!({
            "name": "hello2", "hash": "0123456789abcdef0123", "version": "v2",
            "deployed_at_ms": 1, "exports": ["http"],
            "triggers": {"http": [{"route": "/hello2", "methods": []}], "queue": [], "schedule": []},
            "previous": null, "elapsed_ms": 37
        }))
        .unwrap();
        assert_eq!(
            deployed_report(&answer),
            "deployed hello2 version v2 (hash 0123456789ab) in 37 ms; previous: none\n  * /hello2\n"
        );
        let redeploy: Deployed = serde_json::from_value(json!({
            "name": "hello2", "hash": "ff", "version": "v3", "triggers": {},
            "previous": "v2", "elapsed_ms": 4.6
        }))
        .unwrap();
        assert_eq!(
            deployed_report(&redeploy),
            "deployed hello2 version v3 (hash ff) in 5 ms; previous: v2\n  no triggers\n"
        );
    }
}
