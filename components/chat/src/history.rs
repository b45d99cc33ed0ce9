//! Conversation history, summaries and titles in the kv capability, bounded in length and
//! expiring by TTL.
//!
//! Key `conversation:{id}` holds a JSON array of `{role, content}` (the layout is shared
//! with the processors, see `conversation-store`). Every save rewrites the whole (short)
//! array with a fresh TTL, so an active conversation stays and an idle one disappears
//! without a clean-up job. Keys `summary:{id}` and `title:{id}` are written by the
//! summarizer; chat only reads them.

use crate::bindings::{kv, llm};
use crate::error::ApiError;
use crate::log;
use crate::settings::HistorySettings;
use conversation_store::{history_key, summary_key, title_key};

pub use conversation_store::{Message as StoredMessage, Role};

/// A stored message as the llm capability takes it.
pub fn to_llm(message: &StoredMessage) -> llm::Message {
    let role = match message.role {
        Role::System => llm::Role::System,
        Role::User => llm::Role::User,
        Role::Assistant => llm::Role::Assistant,
    };
    llm::Message {
        role,
        content: message.content.clone(),
    }
}

/// The stored messages of a conversation; empty when it is new or has expired.
pub fn load(conversation_id: &str) -> Result<Vec<StoredMessage>, ApiError> {
    Ok(find(conversation_id)?.unwrap_or_default())
}

/// The stored messages of a conversation, or none when there is no history key.
///
/// A value that no longer parses (written by another version, say) is logged and read as
/// empty rather than failing every later request of that conversation; the next save
/// replaces it.
pub fn find(conversation_id: &str) -> Result<Option<Vec<StoredMessage>>, ApiError> {
    let Some(bytes) = kv::get(&history_key(conversation_id)).map_err(ApiError::Kv)? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(messages) => Ok(Some(messages)),
        Err(error) => {
            log::warn(&format!(
                "conversation `{conversation_id}` has unreadable history, starting afresh: {error}"
            ));
            Ok(Some(Vec::new()))
        }
    }
}

/// The summary the summarizer stored for a conversation, if any.
pub fn summary(conversation_id: &str) -> Result<Option<String>, ApiError> {
    text(conversation_id, "summary", &summary_key(conversation_id))
}

/// The title the summarizer stored for a conversation after its first exchange, if any.
pub fn title(conversation_id: &str) -> Result<Option<String>, ApiError> {
    text(conversation_id, "title", &title_key(conversation_id))
}

/// The UTF-8 text at `key`, if any.
///
/// A value that is not UTF-8 is logged and treated as absent: showing mangled text would
/// be worse than showing none.
fn text(conversation_id: &str, what: &str, key: &str) -> Result<Option<String>, ApiError> {
    let Some(bytes) = kv::get(key).map_err(ApiError::Kv)? else {
        return Ok(None);
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(error) => {
            log::warn(&format!(
                "conversation `{conversation_id}` has a {what} that is not UTF-8, ignoring it: {error}"
            ));
            Ok(None)
        }
    }
}

/// Appends one exchange, keeps the newest `max_messages` and stores them with the TTL.
/// Returns how many messages the conversation now holds.
pub fn save_exchange(
    conversation_id: &str,
    messages: Vec<StoredMessage>,
    user: &str,
    assistant: &str,
    settings: HistorySettings,
) -> Result<usize, ApiError> {
    let messages = append_exchange(messages, user, assistant, settings.max_messages);
    let value = serde_json::to_vec(&messages).expect("stored messages always serialize");
    kv::set(&history_key(conversation_id), &value, Some(settings.ttl_ms)).map_err(ApiError::Kv)?;
    Ok(messages.len())
}

/// `messages` with one exchange appended, keeping the newest `max_messages`: what
/// [`save_exchange`] stores.
pub fn append_exchange(
    mut messages: Vec<StoredMessage>,
    user: &str,
    assistant: &str,
    max_messages: usize,
) -> Vec<StoredMessage> {
    messages.push(StoredMessage::user(user));
    messages.push(StoredMessage::assistant(assistant));
    keep_newest(&mut messages, max_messages);
    messages
}

fn keep_newest(messages: &mut Vec<StoredMessage>, max: usize) {
    let excess = messages.len().saturating_sub(max);
    messages.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_messages() {
        let mut messages: Vec<_> = (0..5)
            .map(|i| StoredMessage::user(&i.to_string()))
            .collect();
        keep_newest(&mut messages, 3);
        let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["2", "3", "4"]);
        keep_newest(&mut messages, 10);
        assert_eq!(messages.len(), 3);
    }

    #[test]
    fn an_exchange_is_appended_then_bounded() {
        let messages = append_exchange(vec![StoredMessage::user("0")], "q", "a", 20);
        assert_eq!(
            messages,
            [
                StoredMessage::user("0"),
                StoredMessage::user("q"),
                StoredMessage::assistant("a")
            ]
        );
        let messages = append_exchange(messages, "q2", "a2", 1);
        assert_eq!(messages, [StoredMessage::assistant("a2")]);
    }

    #[test]
    fn roles_map_to_llm_roles() {
        let message = to_llm(&StoredMessage::assistant("a"));
        assert_eq!(
            (message.role, message.content.as_str()),
            (llm::Role::Assistant, "a")
        );
        assert_eq!(to_llm(&StoredMessage::user("u")).role, llm::Role::User);
    }
}
