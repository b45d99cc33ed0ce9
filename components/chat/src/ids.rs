//! Conversation ids: fresh ones for new conversations, and the shape a client may send
//! (shared with the processors through `conversation-store`, since ids end up in kv keys).

use crate::error::ApiError;
use std::fmt::Write as _;

pub use conversation_store::ID_RULE;

/// A new id: 128 random bits from `wasi:random`, as 32 lowercase hex digits.
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    wstd::rand::get_random_bytes(&mut bytes);
    bytes
        .iter()
        .fold(String::with_capacity(32), |mut id, byte| {
            write!(id, "{byte:02x}").expect("writing to a String cannot fail");
            id
        })
}

/// Whether a client-supplied id is 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn is_valid(id: &str) -> bool {
    conversation_store::is_valid_id(id)
}

/// An id taken from a path, or the 400 that quotes it.
pub fn from_path(id: &str) -> Result<&str, ApiError> {
    if is_valid(id) {
        Ok(id)
    } else {
        Err(ApiError::BadRequest(format!(
            "conversation id must be {ID_RULE}, got {id:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_checked_like_body_ids() {
        assert_eq!(from_path("c-1").expect("valid"), "c-1");
        let error = from_path("a:b").expect_err("`:` is not key-safe");
        assert_eq!(
            error.message(),
            "conversation id must be 1 to 128 characters of A-Z, a-z, 0-9, `_` or `-`, got \"a:b\""
        );
    }
}
