//! What runs a component: HTTP routes, queues and schedules. Each kind is one type that
//! implements [`TriggerKind`]: its table as written (a manifest's `[[trigger.KIND]]`, a
//! deploy's `triggers.KIND`, what `llmchat deploy` sends) is its `Config`, and the type itself
//! is the same checked, with every default filled in, as the host runs it.
//!
//! `trigger_kinds!` is the one list of kinds. It makes the two containers,
//! [`TriggerConfigs`] (as written) and [`Triggers`] (checked), and every operation over all
//! kinds, so that a new kind of trigger is one type, one `TriggerKind` impl, one line in that
//! list, and one runner in `crate::triggers`.

mod http;
mod queue;

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use super::ComponentSpec;
use super::schedule::ScheduleTrigger;

pub use http::{HttpTrigger, HttpTriggerConfig};
pub use queue::{
    KeepJobs, MAX_CONCURRENCY, MAX_KEEP, MAX_REPEATS, QueueTrigger, QueueTriggerConfig, Repeat,
    RepeatConfig,
};

/// The export a component must have to be the target of a kind of trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Export {
    /// `wasi:http/incoming-handler@0.2.x`
    Http,
    /// `llmchat:runtime/processor@0.1.0`
    Processor,
    /// `llmchat:runtime/monitoring@0.1.0`
    Monitor,
}

/// One kind of trigger: the rules that turn its table as written into the checked trigger
/// the host runs, and what a set of them must not repeat.
pub trait TriggerKind: Debug + Clone + Send + Sync + Sized + 'static {
    /// The table as written.
    type Config: Debug + Clone + PartialEq + Serialize + DeserializeOwned;
    /// What two triggers of this kind may not share (routes and methods, queue names,
    /// schedule names), gathered over a set of them.
    type Seen: Default;
    /// The export its component must have.
    const EXPORT: Export;

    /// How the manifest's errors name a table as written: `route "/x"`.
    fn label(config: &Self::Config) -> String;

    /// The trigger `config` checked against `components` and the triggers of its kind `seen`
    /// so far; `deployed` is the component of a deploy's triggers (see [`component_of`]).
    fn validate(
        config: Self::Config,
        deployed: Option<&str>,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<Self>;

    /// The rules again, for a trigger already checked, against another set of components
    /// and triggers: what a deploy's application is about to become.
    fn check(
        &self,
        components: &BTreeMap<String, ComponentSpec>,
        seen: &mut Self::Seen,
    ) -> Result<()>;

    /// The component it runs.
    fn component(&self) -> &str;

    /// How errors about a checked trigger name it: `route "/x"`, `queue "q"`.
    fn describe(&self) -> String;

    /// Why `self` cannot join an application where `theirs` (of another component) runs, if
    /// it takes something `theirs` holds: `route "/x" belongs to component `b``.
    fn clash(&self, theirs: &Self) -> Option<String>;

    /// A short JSON description: what the admin API lists for a component.
    fn summary(&self) -> serde_json::Value;
}

/// A kind listed in [`trigger_kinds!`]: its name and where [`Triggers`] keeps it.
pub trait Registered: TriggerKind {
    /// `http` of `[[trigger.http]]`; also the key in a deploy's `triggers` and the admin
    /// API's listing.
    const KIND: &'static str;

    /// The triggers of this kind in `triggers`.
    fn of(triggers: &Triggers) -> &[Self];
}

/// The one list of trigger kinds, `field: Type`, where the field is the kind's name.
macro_rules! trigger_kinds {
    ($($kind:ident: $ty:ty),+ $(,)?) => {
        /// Triggers as written: the manifest's `[trigger]` tables, or a component's triggers
        /// in a deploy, where each entry leaves out `component`.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TriggerConfigs {
            $(
                #[serde(default)]
                pub $kind: Vec<<$ty as TriggerKind>::Config>,
            )+
        }

        /// The triggers of an application or of one component, checked.
        #[derive(Debug, Clone, Default)]
        pub struct Triggers {
            $(pub $kind: Vec<$ty>,)+
        }

        $(
            impl Registered for $ty {
                const KIND: &'static str = stringify!($kind);

                fn of(triggers: &Triggers) -> &[Self] {
                    &triggers.$kind
                }
            }
        )+

        impl Triggers {
            /// Every kind's name, as listed.
            pub const KINDS: &'static [&'static str] = &[$(stringify!($kind)),+];

            /// How many triggers of kind `kind` there are.
            pub fn count(&self, kind: &str) -> usize {
                match kind {
                    $(stringify!($kind) => self.$kind.len(),)+
                    _ => 0,
                }
            }

            /// The triggers of component `name`.
            pub fn of_component(&self, name: &str) -> Triggers {
                Triggers {
                    $($kind: self.$kind.iter().filter(|t| t.component() == name).cloned().collect(),)+
                }
            }

            /// Removes the triggers of component `name`.
            pub fn remove_component(&mut self, name: &str) {
                $(self.$kind.retain(|t| t.component() != name);)+
            }

            /// Adds `more`.
            pub fn extend(&mut self, more: Triggers) {
                $(self.$kind.extend(more.$kind);)+
            }

            /// Checks every trigger against `components` and the others of its kind, as at
            /// load time: what a deploy runs on the application it is about to become.
            pub fn check(&self, components: &BTreeMap<String, ComponentSpec>) -> Result<()> {
                $(check_all(&self.$kind, components)?;)+
                Ok(())
            }

            /// The first thing `mine` (the triggers of component `name`) takes that a trigger
            /// of another component here holds.
            pub fn clash(&self, name: &str, mine: &Triggers) -> Option<String> {
                None$(.or_else(|| clash_of(&self.$kind, name, &mine.$kind)))+
            }

            /// The exports the triggers of component `name` need.
            pub fn exports_of(&self, name: &str) -> Vec<Export> {
                let mut exports = Vec::new();
                $(exports.extend(exports_of(&self.$kind, name));)+
                exports.sort();
                exports.dedup();
                exports
            }

            /// The triggers of component `name`, described by kind: what the admin API lists.
            pub fn summary(&self, name: &str) -> serde_json::Value {
                let mut kinds = serde_json::Map::new();
                $(kinds.insert(stringify!($kind).into(), summary_of(&self.$kind, name));)+
                serde_json::Value::Object(kinds)
            }
        }

        impl TriggerConfigs {
            /// Every table checked: `deployed` is `None` for a manifest (each table names its
            /// component), and the deployed component for a deploy's triggers.
            fn validate_all(
                self,
                deployed: Option<&str>,
                components: &BTreeMap<String, ComponentSpec>,
            ) -> Result<Triggers> {
                Ok(Triggers {
                    $($kind: validate_each::<$ty>(self.$kind, deployed, components)?,)+
                })
            }
        }
    };
}

trigger_kinds! {
    http: HttpTrigger,
    queue: QueueTrigger,
    schedule: ScheduleTrigger,
}

impl TriggerConfigs {
    /// The manifest's triggers, checked against its `components`; errors name the table
    /// (`in [[trigger.http]] #2 (route "/x")`).
    pub(super) fn validate_manifest(
        self,
        components: &BTreeMap<String, ComponentSpec>,
    ) -> Result<Triggers> {
        self.validate_all(None, components)
    }

    /// The triggers of deployed component `name`, checked as the manifest's are, each against
    /// the others of the set and `components` (which holds `name`).
    pub fn validate_deployed(
        self,
        name: &str,
        components: &BTreeMap<String, ComponentSpec>,
    ) -> Result<Triggers> {
        self.validate_all(Some(name), components)
    }
}

fn validate_each<T: Registered>(
    configs: Vec<T::Config>,
    deployed: Option<&str>,
    components: &BTreeMap<String, ComponentSpec>,
) -> Result<Vec<T>> {
    let mut seen = T::Seen::default();
    let mut triggers = Vec::with_capacity(configs.len());
    for (i, config) in configs.into_iter().enumerate() {
        let label = match deployed {
            None => format!(
                "in [[trigger.{}]] #{} ({})",
                T::KIND,
                i + 1,
                T::label(&config)
            ),
            Some(_) => format!("{} trigger", T::KIND),
        };
        triggers.push(T::validate(config, deployed, components, &mut seen).context(label)?);
    }
    Ok(triggers)
}

fn check_all<T: TriggerKind>(
    triggers: &[T],
    components: &BTreeMap<String, ComponentSpec>,
) -> Result<()> {
    let mut seen = T::Seen::default();
    for t in triggers {
        t.check(components, &mut seen)
            .with_context(|| t.describe())?;
    }
    Ok(())
}

fn clash_of<T: TriggerKind>(held: &[T], name: &str, mine: &[T]) -> Option<String> {
    mine.iter().find_map(|t| {
        held.iter()
            .filter(|h| h.component() != name)
            .find_map(|h| t.clash(h))
    })
}

fn exports_of<T: TriggerKind>(triggers: &[T], name: &str) -> Option<Export> {
    triggers
        .iter()
        .any(|t| t.component() == name)
        .then_some(T::EXPORT)
}

fn summary_of<T: TriggerKind>(triggers: &[T], name: &str) -> serde_json::Value {
    triggers
        .iter()
        .filter(|t| t.component() == name)
        .map(TriggerKind::summary)
        .collect()
}

/// The component a trigger runs: in a manifest, the table's own `component`; in a deploy, the
/// component deployed (`deployed`), which the table may repeat but not contradict.
pub(super) fn component_of(written: Option<String>, deployed: Option<&str>) -> Result<String> {
    match (written, deployed) {
        (Some(c), Some(d)) if c != d => bail!(
            "field `component`: the triggers of a deploy run the component deployed (`{d}`), not {c:?}"
        ),
        (_, Some(d)) => Ok(d.to_string()),
        (Some(c), None) => Ok(c),
        (None, None) => bail!("missing field `component`"),
    }
}

/// The component of a checked trigger must be declared.
pub(super) fn check_declared(
    component: &str,
    components: &BTreeMap<String, ComponentSpec>,
) -> Result<()> {
    if !components.contains_key(component) {
        bail!("field `component`: no component named {component:?} is declared");
    }
    Ok(())
}

/// Writes a value with its `Display`, which its `FromStr` (and so its `Deserialize`) reads
/// back: rates (`100/min`) and backoffs (`fixed:1s`).
fn as_text<T: Display, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::manifest::ByteSize;

    fn components() -> BTreeMap<String, ComponentSpec> {
        let spec = ComponentSpec {
            name: "app".into(),
            source: "/app.wasm".into(),
            memory_limit: ByteSize::mib(64),
            timeout: Duration::from_secs(1),
            max_instances: 1,
            max_resources: 16,
            allowed_outbound_hosts: Vec::new(),
            environment: BTreeMap::new(),
            kv_namespace: "app".into(),
            config: BTreeMap::new(),
            secrets: BTreeMap::new(),
        };
        BTreeMap::from([("app".to_string(), spec)])
    }

    #[test]
    fn a_deploys_triggers_run_the_component_deployed() {
        let configs: TriggerConfigs = serde_json::from_value(serde_json::json!({
            "http": [{ "route": "/x", "methods": ["GET"] }],
            "queue": [{ "queue": "q", "concurrency": 2, "backoff": "fixed:10ms" }],
            "schedule": [{ "every": "1h" }]
        }))
        .unwrap();
        let t = configs.validate_deployed("app", &components()).unwrap();
        assert_eq!(t.http[0].component, "app");
        assert_eq!(t.http[0].max_body_size, ByteSize::mib(1));
        assert_eq!((t.queue[0].concurrency, t.queue[0].max_attempts), (2, 3));
        assert_eq!(t.schedule[0].name, "app");

        let other = TriggerConfigs {
            http: vec![HttpTriggerConfig {
                component: Some("other".into()),
                ..HttpTriggerConfig::route("/x")
            }],
            ..Default::default()
        };
        let e = format!(
            "{:#}",
            other.validate_deployed("app", &components()).unwrap_err()
        );
        assert!(e.starts_with("http trigger: field `component`"), "{e}");
    }

    #[test]
    fn a_deploy_route_on_a_host_path_is_refused_as_in_a_manifest() {
        for route in ["/admin/...", "/metrics"] {
            let configs = TriggerConfigs {
                http: vec![HttpTriggerConfig::route(route)],
                ..Default::default()
            };
            let e = format!(
                "{:#}",
                configs.validate_deployed("app", &components()).unwrap_err()
            );
            assert!(
                e.contains(&format!("route {route:?} of component `app` is reserved")),
                "{e}"
            );
        }
    }

    #[test]
    fn unset_fields_are_left_out_and_the_rest_reads_back() {
        let config = QueueTriggerConfig {
            concurrency: Some(3),
            backoff: Some("exponential:100ms..30s".parse().unwrap()),
            rate: Some("50/s".parse().unwrap()),
            ..QueueTriggerConfig::queue("q")
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "queue": "q", "concurrency": 3, "backoff": "exponential:100ms..30s", "rate": "50/s"
            })
        );
        assert_eq!(
            serde_json::from_value::<QueueTriggerConfig>(json).unwrap(),
            config
        );
        let http = HttpTriggerConfig {
            rate_limit: Some("100/min".parse().unwrap()),
            ..HttpTriggerConfig::route("/x")
        };
        let json = serde_json::to_value(&http).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "route": "/x", "rate_limit": "100/min" })
        );
    }

    fn two_components() -> BTreeMap<String, ComponentSpec> {
        let mut components = components();
        let mut other = components["app"].clone();
        other.name = "other".into();
        components.insert("other".into(), other);
        components
    }

    fn deployed(name: &str, json: serde_json::Value) -> Triggers {
        let configs: TriggerConfigs = serde_json::from_value(json).unwrap();
        configs.validate_deployed(name, &two_components()).unwrap()
    }

    #[test]
    fn every_kind_listed_is_a_table_of_the_manifest_and_a_key_of_a_deploy() {
        let json = serde_json::to_value(TriggerConfigs::default()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut kinds = Triggers::KINDS.to_vec();
        kinds.sort_unstable();
        assert_eq!(keys, kinds);
        assert_eq!(<HttpTrigger as Registered>::KIND, "http");
        assert_eq!(<ScheduleTrigger as Registered>::KIND, "schedule");
    }

    #[test]
    fn a_component_s_triggers_are_taken_out_put_back_and_summarised_by_kind() {
        let mut app = deployed(
            "app",
            serde_json::json!({
                "http": [{ "route": "/a", "methods": ["GET"] }],
                "queue": [{ "queue": "q" }],
            }),
        );
        app.extend(deployed(
            "other",
            serde_json::json!({ "schedule": [{ "every": "1m" }] }),
        ));
        assert_eq!(
            (app.count("http"), app.count("schedule"), app.count("x")),
            (1, 1, 0)
        );
        assert_eq!(app.exports_of("app"), [Export::Http, Export::Processor]);
        assert_eq!(app.exports_of("other"), [Export::Monitor]);
        assert_eq!(
            app.summary("app"),
            serde_json::json!({
                "http": [{ "route": "/a", "methods": ["GET"] }],
                "queue": [{ "queue": "q", "concurrency": 5 }],
                "schedule": [],
            })
        );
        let mine = app.of_component("app");
        app.remove_component("app");
        assert_eq!(
            (app.count("http"), app.count("queue"), app.count("schedule")),
            (0, 0, 1)
        );
        app.extend(mine);
        assert_eq!(app.count("queue"), 1);
        app.check(&two_components()).unwrap();
        let e = format!("{:#}", app.check(&components()).unwrap_err());
        assert_eq!(
            e,
            "schedule `other`: field `component`: no component named \"other\" is declared"
        );
    }

    #[test]
    fn a_deploy_may_not_take_what_another_component_holds() {
        let app = deployed(
            "app",
            serde_json::json!({
                "http": [{ "route": "/a", "methods": ["GET"] }],
                "queue": [{ "queue": "q" }],
                "schedule": [{ "name": "tick", "every": "1m" }],
            }),
        );
        let clash = |json| app.clash("other", &deployed("other", json));
        assert_eq!(
            clash(serde_json::json!({ "http": [{ "route": "/a", "methods": ["POST"] }] })),
            None
        );
        assert_eq!(
            clash(serde_json::json!({ "http": [{ "route": "/a" }] })).as_deref(),
            Some("route \"/a\" belongs to component `app`")
        );
        assert_eq!(
            clash(serde_json::json!({ "queue": [{ "queue": "q" }] })).as_deref(),
            Some("queue `q` is processed by component `app`")
        );
        assert_eq!(
            clash(serde_json::json!({ "schedule": [{ "name": "tick", "every": "1h" }] }))
                .as_deref(),
            Some("schedule `tick` belongs to component `app`")
        );
        // A component's own triggers are never a clash: a redeploy replaces them.
        assert_eq!(app.clash("app", &app), None);
    }
}
