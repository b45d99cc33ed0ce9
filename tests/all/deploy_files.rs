//! The packaging files agree with the binary and with each other: `Dockerfile`,
//! `deploy/compose.yaml` and `deploy/k8s/*.yaml`. Every YAML document is parsed; the
//! Kubernetes objects reference each other correctly (selectors, ports, Secret and ConfigMap
//! keys); the probes hit `/health` and `/ready` on the port the Service targets and the host
//! listens on; the pod outlives the host's shutdown; every environment variable named is one
//! the binary or its manifest reads; and the ConfigMap's manifest is run by the real binary on
//! a private Redis until `/ready` says so. Building and running the image is
//! `container_image.rs`.

mod files;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::redis::RedisServer;
use crate::support::{Host, client, poll_until, repo_root};
use files::{
    assert_read_by_binary_or_manifest, compose, configmap_manifest, default_manifest, dockerfile,
    duration, env_of, k8s_objects, listen_port, llmchat_container, llmchat_services,
    manifest_variables, object, resolve_port, str_of,
};

/// After the grace period the host gives the runtime up to 5 s to cancel what is left
/// (`RUNTIME_SHUTDOWN` in main.rs) and its tasks 1 s to settle.
const AFTER_GRACE: Duration = Duration::from_secs(6);

#[test]
fn every_kubernetes_object_is_named_and_references_what_exists() {
    let objects = k8s_objects();
    let mut seen = BTreeSet::new();
    for (file, o) in &objects {
        for field in [&o["apiVersion"], &o["kind"], &o["metadata"]["name"]] {
            assert!(
                field.as_str().is_some_and(|s| !s.is_empty()),
                "deploy/k8s/{file}: a document without apiVersion, kind or metadata.name: {o}"
            );
        }
        assert!(
            seen.insert((o["kind"].to_string(), o["metadata"]["name"].to_string())),
            "deploy/k8s/{file}: {} `{}` is defined twice",
            o["kind"],
            o["metadata"]["name"]
        );
    }
    for (kind, name) in [
        ("Deployment", "llmchat"),
        ("Service", "llmchat"),
        ("ConfigMap", "llmchat-manifest"),
        ("Secret", "llmchat"),
        ("PodDisruptionBudget", "llmchat"),
        ("Deployment", "redis"),
        ("Service", "redis"),
    ] {
        object(&objects, kind, name);
    }

    // Selectors pick the pods of their Deployment.
    for (selector_of, deployment) in [
        (("Service", "llmchat"), "llmchat"),
        (("PodDisruptionBudget", "llmchat"), "llmchat"),
        (("Service", "redis"), "redis"),
    ] {
        let deployment = object(&objects, "Deployment", deployment);
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let owner = object(&objects, selector_of.0, selector_of.1);
        let selector = owner["spec"]["selector"]
            .get("matchLabels")
            .unwrap_or(&owner["spec"]["selector"]);
        let selector = selector.as_object().expect("a selector");
        assert!(!selector.is_empty(), "{selector_of:?} selects every pod");
        for (k, v) in selector {
            assert_eq!(
                &labels[k], v,
                "{selector_of:?} selects label {k}={v}, which the pods lack"
            );
        }
        let own = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        for (k, v) in own {
            assert_eq!(
                &labels[k], v,
                "a Deployment's selector must match its template"
            );
        }
    }
    let llmchat = object(&objects, "Deployment", "llmchat");
    let replicas = llmchat["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(replicas, 2, "two llmchat replicas");
    let pdb = object(&objects, "PodDisruptionBudget", "llmchat");
    let min_available = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(
        (1..replicas).contains(&min_available),
        "the PodDisruptionBudget must keep a pod up and still let a drain evict one"
    );

    // Every Secret and ConfigMap key a pod reads exists.
    let spec = &llmchat["spec"]["template"]["spec"];
    for container in spec["containers"].as_array().into_iter().flatten() {
        for (name, value) in env_of(container) {
            if let Some(key) = value.get("secretKeyRef") {
                let secret = object(
                    &objects,
                    "Secret",
                    str_of(&key["name"], "secretKeyRef.name"),
                );
                let k = str_of(&key["key"], "secretKeyRef.key");
                assert!(
                    secret["stringData"]
                        .get(k)
                        .or(secret["data"].get(k))
                        .is_some(),
                    "{name} reads key `{k}`, which Secret `{}` lacks",
                    key["name"]
                );
            }
        }
    }
    configmap_manifest(&objects);
}

#[test]
fn the_deployment_probes_health_and_ready_on_the_port_the_service_targets_and_the_host_listens_on()
{
    let objects = k8s_objects();
    let deployment = object(&objects, "Deployment", "llmchat");
    let container = llmchat_container(&deployment);
    let service = object(&objects, "Service", "llmchat");
    let ports = service["spec"]["ports"]
        .as_array()
        .expect("the Service's ports");
    assert_eq!(ports.len(), 1, "one Service port");
    let target = resolve_port(&container, &ports[0]["targetPort"]);

    let env = env_of(&container);
    let listen = str_of(&env["LLMCHAT_LISTEN"], "LLMCHAT_LISTEN");
    assert!(
        listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
        "in a pod the host must listen on every address, not `{listen}`"
    );
    assert_eq!(
        listen_port(listen),
        target,
        "the Service targets another port than LLMCHAT_LISTEN's"
    );

    for (probe, path) in [
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
        ("startupProbe", "/health"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} must GET {path}");
        assert_eq!(
            resolve_port(&container, &get["port"]),
            target,
            "{probe} probes another port than the Service targets"
        );
    }

    // Hardened, and every folder the host writes is a volume.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .map(|u| u.to_string()),
        Some(
            dockerfile()
                .user
                .split(':')
                .next()
                .expect("a uid")
                .to_string()
        ),
        "the pod runs as another uid than the image's USER"
    );
    for c in pod["containers"]
        .as_array()
        .into_iter()
        .chain(pod["initContainers"].as_array())
        .flatten()
    {
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{}",
            c["name"]
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{}",
            c["name"]
        );
    }
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].is_string(),
                "the llmchat container sets no {kind}.{resource}"
            );
        }
    }
    let image = dockerfile();
    let written = [
        env.get("LLMCHAT_CACHE_DIR")
            .and_then(Value::as_str)
            .unwrap_or(&image.env["LLMCHAT_CACHE_DIR"]),
        env.get("LLMCHAT_STATE_DIR")
            .and_then(Value::as_str)
            .unwrap_or(&image.env["LLMCHAT_STATE_DIR"]),
        "/tmp",
    ];
    let volumes = pod["volumes"].as_array().expect("volumes");
    for path in written {
        let mount = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| {
                panic!("the host writes `{path}`, which is not a volume on a read-only root")
            });
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        assert!(
            volume.get("emptyDir").is_some(),
            "`{path}` should be an emptyDir"
        );
    }
}

#[test]
fn pods_and_compose_containers_outlive_the_hosts_shutdown() {
    let objects = k8s_objects();
    let deployment = object(&objects, "Deployment", "llmchat");
    let container = llmchat_container(&deployment);
    let manifest: toml::Table =
        toml::from_str(&configmap_manifest(&objects)).expect("the ConfigMap's TOML");
    let grace = duration(
        manifest["http"]["shutdown_grace"]
            .as_str()
            .expect("[http] shutdown_grace"),
    );
    let pre_stop = match container["lifecycle"]["preStop"]["exec"]["command"].as_array() {
        Some(command) => {
            assert_eq!(
                command[0], "sleep",
                "a preStop that only waits for the endpoint's removal"
            );
            Duration::from_secs(
                str_of(&command[1], "the sleep's seconds")
                    .parse()
                    .expect("seconds"),
            )
        }
        None => Duration::ZERO,
    };
    let termination = Duration::from_secs(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds"),
    );
    assert!(
        termination > pre_stop + grace + AFTER_GRACE,
        "terminationGracePeriodSeconds {termination:?} must exceed the preStop sleep {pre_stop:?} \
         + shutdown_grace {grace:?} + {AFTER_GRACE:?}, or the kubelet kills the host mid-drain"
    );

    // compose runs the image's default manifest.
    let (_, default) = default_manifest();
    let grace = duration(
        default["http"]["shutdown_grace"]
            .as_str()
            .expect("[http] shutdown_grace"),
    );
    let compose = compose();
    for (name, service) in llmchat_services(&compose) {
        let stop = duration(str_of(&service["stop_grace_period"], "stop_grace_period"));
        assert!(
            stop > grace + AFTER_GRACE,
            "compose service {name}: stop_grace_period {stop:?} must exceed shutdown_grace {grace:?} + {AFTER_GRACE:?}"
        );
    }
}

#[test]
fn every_variable_the_deployment_sets_is_read_and_every_one_the_manifest_needs_is_set() {
    let objects = k8s_objects();
    let deployment = object(&objects, "Deployment", "llmchat");
    let env = env_of(&llmchat_container(&deployment));
    let manifest = configmap_manifest(&objects);
    assert_read_by_binary_or_manifest(env.keys(), &manifest, "the llmchat Deployment");
    for (name, has_default) in manifest_variables(&manifest) {
        assert!(
            has_default || env.contains_key(&name),
            "the ConfigMap's manifest needs `{name}`, which the Deployment does not set: pods would not start"
        );
    }
}

/// The ConfigMap's manifest is the one the pods run; the real binary starts on it with a
/// private Redis (as REDIS_URL, as in the Deployment) and turns ready.
#[test]
fn the_configmap_manifest_runs_on_redis_and_turns_ready() {
    let objects = k8s_objects();
    let manifest = configmap_manifest(&objects);

    // The pods run the image's components, the ones its build compiled: those of the
    // default manifest.
    let ours: toml::Table = toml::from_str(&manifest).expect("the ConfigMap's TOML");
    let (_, default) = default_manifest();
    let sources = |manifest: &toml::Table| -> BTreeSet<String> {
        manifest["component"]
            .as_table()
            .expect("[component]")
            .values()
            .map(|c| c["source"].as_str().expect("source").to_string())
            .collect()
    };
    let in_image = sources(&default);
    for source in sources(&ours) {
        assert!(
            in_image.contains(&source),
            "the ConfigMap's manifest runs `{source}`, which the image does not hold"
        );
    }

    // In the image the manifest sits beside target/; here the components are in components/.
    let target = repo_root().join("components/target");
    let runnable = manifest.replace(
        "source = \"target/",
        &format!("source = \"{}/", target.display()),
    );
    let redis = RedisServer::start();
    let host = Host::try_start(
        &runnable,
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("OPENAI_API_KEY", "sk-test"),
        ],
    )
    .unwrap_or_else(|log| panic!("llmchat refused the ConfigMap's manifest:\n{log}"));
    let components = ours["component"].as_table().expect("[component]").len();
    let ready = poll_until(Duration::from_secs(30), "/ready to answer 200", || {
        let response = client().get(host.url("/ready")).send().ok()?;
        (response.status() == 200).then(|| response.json::<Value>().expect("JSON"))
    });
    assert_eq!(ready["redis"], "ok", "{ready}");
    assert_eq!(ready["components"], components, "{ready}");
    let health = client()
        .get(host.url("/health"))
        .send()
        .expect("GET /health");
    assert_eq!(health.status(), 200);
    let (status, log) = host.terminate_and_log();
    assert!(
        status.success(),
        "SIGTERM must end the host with 0: {status}\n{log}"
    );
}

#[test]
fn compose_runs_two_hosts_on_one_redis_with_variables_the_binary_reads() {
    let compose = compose();
    let image = dockerfile();
    let (default_manifest, _) = default_manifest();
    let mut published = BTreeSet::new();
    for (name, service) in llmchat_services(&compose) {
        let context = repo_root()
            .join("deploy")
            .join(str_of(&service["build"]["context"], "build.context"));
        let dockerfile = service["build"]["dockerfile"]
            .as_str()
            .unwrap_or("Dockerfile");
        assert!(
            context.join(dockerfile).is_file(),
            "{name} builds from `{}`, which has no {dockerfile}",
            context.display()
        );
        let env = service["environment"]
            .as_object()
            .expect("environment as a map");
        let listen = env
            .get("LLMCHAT_LISTEN")
            .and_then(Value::as_str)
            .unwrap_or(&image.env["LLMCHAT_LISTEN"]);
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name} listens on `{listen}`"
        );
        let ports = service["ports"].as_array().expect("ports");
        assert_eq!(ports.len(), 1, "{name} publishes one port");
        let (host_port, container_port) = str_of(&ports[0], "a port mapping")
            .rsplit_once(':')
            .expect("HOST:CONTAINER");
        assert_eq!(
            container_port.parse::<u64>().ok(),
            Some(listen_port(listen)),
            "{name}"
        );
        assert!(
            published.insert(host_port.to_string()),
            "both hosts publish port {host_port}"
        );

        let redis_url = str_of(&env["REDIS_URL"], "REDIS_URL");
        let redis_host = redis_url
            .trim_start_matches("redis://")
            .split([':', '/'])
            .next()
            .expect("a Redis host");
        assert!(
            compose["services"].get(redis_host).is_some(),
            "{name}'s REDIS_URL `{redis_url}` names no compose service"
        );
        assert_eq!(
            service["depends_on"][redis_host]["condition"], "service_healthy",
            "{name} must wait for a healthy Redis"
        );
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{name} has no healthcheck"
        );
        assert!(
            compose["services"][redis_host]["healthcheck"]["test"].is_array(),
            "the Redis service has no healthcheck"
        );
        assert_eq!(
            env.get("LLMCHAT_MANIFEST")
                .and_then(Value::as_str)
                .unwrap_or(&image.env["LLMCHAT_MANIFEST"]),
            image.env["LLMCHAT_MANIFEST"],
            "{name} names a manifest the image does not hold"
        );
        let names: Vec<String> = env.keys().cloned().collect();
        assert_read_by_binary_or_manifest(
            &names,
            &default_manifest,
            &format!("compose service {name}"),
        );
    }
}

#[test]
fn the_dockerfile_agrees_with_the_manifest_compose_and_kubernetes() {
    let image = dockerfile();
    let has = |instruction: &str| image.instructions.iter().any(|(i, _)| i == instruction);
    let listen = &image.env["LLMCHAT_LISTEN"];
    assert!(
        listen.starts_with("0.0.0.0:"),
        "the image listens on `{listen}`"
    );
    assert_eq!(
        image.expose,
        vec![listen_port(listen)],
        "EXPOSE and LLMCHAT_LISTEN disagree"
    );
    assert!(
        image
            .user
            .split(':')
            .next()
            .and_then(|u| u.parse::<u32>().ok())
            .is_some_and(|u| u > 0),
        "the image runs as root or as a user name (`{}`), which runAsNonRoot cannot verify",
        image.user
    );
    assert!(has("HEALTHCHECK"), "no HEALTHCHECK");
    assert!(
        image
            .instructions
            .iter()
            .any(|(i, a)| i == "STOPSIGNAL" && a == "SIGTERM"),
        "STOPSIGNAL SIGTERM: the signal the host drains on"
    );
    let volumes: BTreeSet<&str> = image.volumes.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        image.env["LLMCHAT_CACHE_DIR"].as_str(),
        image.env["LLMCHAT_STATE_DIR"].as_str(),
    ]
    .into();
    assert_eq!(
        volumes, expected,
        "the VOLUMEs are the artifact cache and the state folder"
    );
    assert_read_by_binary_or_manifest(image.env.keys(), "", "the Dockerfile");

    // The default app is copied where LLMCHAT_MANIFEST says, and compiled into the cache at
    // build time, as the image's user and before VOLUME (which would drop what it wrote).
    let manifest = &image.env["LLMCHAT_MANIFEST"];
    assert!(
        image
            .instructions
            .iter()
            .any(|(i, a)| i == "COPY" && a == &format!("components/llmchat.toml {manifest}")),
        "the Dockerfile does not copy components/llmchat.toml to {manifest}"
    );
    let position =
        |pred: &dyn Fn(&(String, String)) -> bool| image.instructions.iter().position(pred);
    let compile = position(&|(i, a)| i == "RUN" && a.contains("llmchat compile -f"))
        .expect("a RUN llmchat compile -f");
    let user = position(&|(i, _)| i == "USER").expect("a USER");
    let volume = position(&|(i, _)| i == "VOLUME").expect("a VOLUME");
    assert!(
        user < compile && compile < volume,
        "USER, then RUN llmchat compile, then VOLUME"
    );

    // Every component of the default manifest is built and copied to its `source`.
    let (_, default) = default_manifest();
    let base = Path::new(manifest).parent().expect("the manifest's folder");
    // A RUN of `tool` with `word` among its arguments.
    let runs = |tool: &str, word: &str| {
        image
            .instructions
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains(tool) && a.split_whitespace().any(|w| w == word))
    };
    for (name, spec) in default["component"].as_table().expect("[component]") {
        let source = spec["source"].as_str().expect("source");
        let file = Path::new(source)
            .file_name()
            .expect("a file name")
            .to_string_lossy();
        let folder = base.join(Path::new(source).parent().expect("a folder"));
        let stem = file.trim_end_matches(".wasm");
        let built = match source.split('/').nth(1) {
            Some("wasm32-wasip2") => {
                runs("cargo build", &stem.replace('_', "-"))
                    && runs(
                        "cargo build",
                        &format!("target/wasm32-wasip2/release/{file}"),
                    )
            }
            Some("js") => runs("components/js/build.sh", stem),
            Some("python") => runs("components/python/build.sh", stem),
            _ => false,
        };
        assert!(
            built,
            "the Dockerfile does not build component `{name}` ({source})"
        );
        assert!(
            image.instructions.iter().any(|(i, a)| i == "COPY"
                && a.ends_with(&format!(" {}/", folder.display()))
                && (a.contains(&*file) || a.starts_with("--from=rust /out/wasm/"))),
            "the Dockerfile does not copy `{file}` to {}",
            folder.display()
        );
    }

    // Kubernetes and compose run what the image says.
    let objects = k8s_objects();
    let container = llmchat_container(&object(&objects, "Deployment", "llmchat"));
    let env = env_of(&container);
    for name in [
        "LLMCHAT_LISTEN",
        "LLMCHAT_MANIFEST",
        "LLMCHAT_CACHE_DIR",
        "LLMCHAT_STATE_DIR",
    ] {
        if let Some(value) = env.get(name) {
            assert_eq!(
                value, &image.env[name],
                "the Deployment's {name} differs from the image's"
            );
        }
    }
    let ports = container["ports"].as_array().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["containerPort"].as_u64() == image.expose.first().copied()),
        "the container does not declare the image's EXPOSE port"
    );
}
