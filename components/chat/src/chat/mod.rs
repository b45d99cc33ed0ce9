//! `POST /api/chat`: one user message to an agent, answered whole (JSON) or streamed (SSE).
//!
//! Both paths share the same steps — validate, resolve the agent, load the history, ask the
//! llm — and save the exchange only once the answer is complete, so a failed or broken
//! answer never leaves half a turn in the history. A conversation whose first exchange
//! was just saved is queued for a title, one that has grown long enough for a summary (see
//! [`crate::jobs`]).

mod request;
mod stream;
mod usage;

use crate::agents::{self, Agent};
use crate::bindings::llm;
use crate::error::ApiError;
use crate::history::{self, StoredMessage};
use crate::settings::{self, HistorySettings, SummarySettings};
use crate::{ids, jobs, log, response, sse};
use serde::Serialize;
use wstd::http::{Body, Request, Response, StatusCode};

pub async fn handle(request: Request<Body>) -> Result<Response<Body>, ApiError> {
    let chat = request::parse(&request::read_body(request).await?)?;
    let agent = agents::find(agents::load()?, &chat.agent)?;
    let settings = settings::history()?;
    let summary = settings::summary()?;
    let title_queue = settings::title_queue()?;
    let conversation_id = chat.conversation_id.unwrap_or_else(ids::generate);
    let history = history::load(&conversation_id)?;
    let llm_request = llm_request(&agent, &history, &chat.message);
    log::info(&format!(
        "chat agent=`{}` conversation=`{conversation_id}` stream={}",
        agent.id, chat.stream
    ));
    let exchange = Exchange {
        conversation_id,
        agent: agent.id,
        history,
        user_message: chat.message,
        settings,
        summary,
        title_queue,
    };
    if chat.stream {
        answer_streamed(exchange, &llm_request)
    } else {
        answer_whole(exchange, &llm_request)
    }
}

/// What is needed to answer and then record one turn of a conversation.
struct Exchange {
    conversation_id: String,
    agent: String,
    history: Vec<StoredMessage>,
    user_message: String,
    settings: HistorySettings,
    summary: SummarySettings,
    /// The queue that titles a conversation after its first exchange.
    title_queue: String,
}

impl Exchange {
    /// Stores the history with this turn appended, then asks for a title and a summary if
    /// they are due; call once, after a complete answer. Only the save can fail the answer.
    fn save(&mut self, answer: &str) -> Result<(), ApiError> {
        let previous = self.history.len();
        let stored = history::save_exchange(
            &self.conversation_id,
            std::mem::take(&mut self.history),
            &self.user_message,
            answer,
            self.settings,
        )?;
        jobs::request_title(&self.conversation_id, previous, &self.title_queue);
        jobs::request_summary(
            &self.conversation_id,
            &self.agent,
            stored,
            self.settings.max_messages,
            &self.summary,
        );
        Ok(())
    }
}

/// The system prompt (if any), then the stored history, then the new message.
fn llm_request(agent: &Agent, history: &[StoredMessage], message: &str) -> llm::Request {
    let system = agent.system_prompt.iter().map(|prompt| llm::Message {
        role: llm::Role::System,
        content: prompt.clone(),
    });
    let user = llm::Message {
        role: llm::Role::User,
        content: message.to_owned(),
    };
    llm::Request {
        model: agent.model.clone(),
        messages: system
            .chain(history.iter().map(history::to_llm))
            .chain([user])
            .collect(),
        max_tokens: None,
        temperature: None,
        // The agent's tokens count against its budget ([quotas] agent_tokens).
        agent: Some(agent.id.clone()),
    }
}

/// Token counts as the API reports them (`null` when the provider did not say).
#[derive(Debug, PartialEq, Eq, Serialize)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
}

impl From<llm::Usage> for Usage {
    fn from(usage: llm::Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }
    }
}

/// The body of a non-streamed answer.
#[derive(Serialize)]
struct Answer<'a> {
    conversation_id: &'a str,
    agent: &'a str,
    message: StoredMessage,
    model: &'a str,
    provider: &'a str,
    usage: Option<Usage>,
}

fn answer_whole(
    mut exchange: Exchange,
    llm_request: &llm::Request,
) -> Result<Response<Body>, ApiError> {
    let completion = llm::complete(llm_request).map_err(ApiError::Llm)?;
    exchange.save(&completion.content)?;
    usage::record(completion.usage.as_ref());
    let answer = Answer {
        conversation_id: &exchange.conversation_id,
        agent: &exchange.agent,
        message: StoredMessage::assistant(&completion.content),
        model: &completion.model,
        provider: &completion.provider,
        usage: completion.usage.map(Usage::from),
    };
    Ok(response::json(StatusCode::OK, &answer))
}

/// Fails with a JSON error while nothing is sent yet; after that, errors become SSE events.
fn answer_streamed(
    exchange: Exchange,
    llm_request: &llm::Request,
) -> Result<Response<Body>, ApiError> {
    let completion = llm::complete_streaming(llm_request).map_err(ApiError::Llm)?;
    let events = stream::AnswerEvents::new(exchange, completion);
    Ok(response::event_stream(sse::body(events)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(system_prompt: Option<&str>) -> Agent {
        Agent {
            id: "a".to_owned(),
            name: "A".to_owned(),
            description: String::new(),
            system_prompt: system_prompt.map(str::to_owned),
            model: Some("m".to_owned()),
        }
    }

    fn roles(request: &llm::Request) -> Vec<(llm::Role, &str)> {
        request
            .messages
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect()
    }

    #[test]
    fn request_is_system_prompt_then_history_then_message() {
        let history = [StoredMessage::user("q1"), StoredMessage::assistant("a1")];
        let request = llm_request(&agent(Some("sys")), &history, "q2");
        assert_eq!(request.model.as_deref(), Some("m"));
        assert_eq!(
            roles(&request),
            [
                (llm::Role::System, "sys"),
                (llm::Role::User, "q1"),
                (llm::Role::Assistant, "a1"),
                (llm::Role::User, "q2"),
            ]
        );
    }

    #[test]
    fn no_system_message_without_a_prompt() {
        let request = llm_request(&agent(None), &[], "q");
        assert_eq!(roles(&request), [(llm::Role::User, "q")]);
    }

    #[test]
    fn answer_fields_in_api_order_and_null_usage() {
        let answer = Answer {
            conversation_id: "c",
            agent: "a",
            message: StoredMessage::assistant("hi"),
            model: "m",
            provider: "p",
            usage: None,
        };
        assert_eq!(
            serde_json::to_string(&answer).expect("serializes"),
            r#"{"conversation_id":"c","agent":"a","message":{"role":"assistant","content":"hi"},"model":"m","provider":"p","usage":null}"#
        );
        let usage = Usage::from(llm::Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        });
        assert_eq!(
            serde_json::to_string(&Some(usage)).expect("serializes"),
            r#"{"prompt_tokens":3,"completion_tokens":4}"#
        );
    }
}
