//! The agents a client can talk to, read from the component config key `agents`.
//!
//! The config is operator-written JSON, so it is parsed strictly (unknown fields are
//! errors that name the field) and a bad value fails every request with a 500 that says
//! what is wrong, rather than serving a half-configured API.

use crate::bindings::config;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};

const KEY: &str = "agents";

/// One configured agent. The system prompt stays inside the component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

/// What clients see of an agent: everything but the system prompt.
#[derive(Debug, Serialize)]
pub struct PublicAgent<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
}

impl Agent {
    pub fn public(&self) -> PublicAgent<'_> {
        PublicAgent {
            id: &self.id,
            name: &self.name,
            description: &self.description,
            model: self.model.as_deref(),
        }
    }
}

/// The configured agents, in config order.
pub fn load() -> Result<Vec<Agent>, ApiError> {
    parse(config::get(KEY).as_deref())
}

/// The agent called `id`, or the 404 that names it.
pub fn find(agents: Vec<Agent>, id: &str) -> Result<Agent, ApiError> {
    agents
        .into_iter()
        .find(|agent| agent.id == id)
        .ok_or_else(|| ApiError::UnknownAgent(id.to_owned()))
}

fn parse(raw: Option<&str>) -> Result<Vec<Agent>, ApiError> {
    let invalid = |reason: String| ApiError::Config { key: KEY, reason };
    let raw = raw.ok_or_else(|| invalid("it is not set".to_owned()))?;
    let agents: Vec<Agent> = serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?;
    for (index, agent) in agents.iter().enumerate() {
        if agent.id.is_empty() {
            return Err(invalid(format!("agent #{index} has an empty `id`")));
        }
        if agents[..index].iter().any(|other| other.id == agent.id) {
            return Err(invalid(format!("agent id `{}` appears twice", agent.id)));
        }
    }
    Ok(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<Vec<Agent>, ApiError>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.message(),
        }
    }

    #[test]
    fn parses_agents_with_optional_fields() {
        let agents = parse(Some(
            r#"[{"id":"general","name":"General","description":"d","system_prompt":"be nice"},
                {"id":"coder","name":"Coder","model":"m1"}]"#,
        ))
        .expect("valid config");
        assert_eq!(agents.len(), 2);
        assert_eq!(agents[0].system_prompt.as_deref(), Some("be nice"));
        assert_eq!(agents[1].description, "");
        assert_eq!(agents[1].model.as_deref(), Some("m1"));
    }

    #[test]
    fn public_view_hides_the_system_prompt() {
        let agents = parse(Some(r#"[{"id":"a","name":"A","system_prompt":"secret"}]"#))
            .expect("valid config");
        let json = serde_json::to_string(&agents[0].public()).expect("serializes");
        assert_eq!(json, r#"{"id":"a","name":"A","description":""}"#);
    }

    #[test]
    fn missing_or_bad_config_names_the_key_and_the_problem() {
        assert_eq!(
            message(parse(None)),
            "component config `agents` is invalid: it is not set"
        );
        assert!(message(parse(Some("{}"))).starts_with("component config `agents` is invalid: "));
        assert!(message(parse(Some(r#"[{"id":"a"}]"#))).contains("missing field `name`"));
        assert!(
            message(parse(Some(r#"[{"id":"a","name":"A","prompt":"x"}]"#)))
                .contains("unknown field `prompt`")
        );
        assert!(
            message(parse(Some(
                r#"[{"id":"a","name":"A"},{"id":"a","name":"B"}]"#
            )))
            .contains("`a` appears twice")
        );
    }

    #[test]
    fn find_reports_the_unknown_id() {
        let agents = parse(Some(r#"[{"id":"a","name":"A"}]"#)).expect("valid config");
        let error = find(agents, "b").expect_err("b is not configured");
        assert_eq!(error.message(), "unknown agent `b`");
    }
}
