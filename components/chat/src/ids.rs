//! Conversation ids: the shape a client may send, and fresh ones for new conversations.
//!
//! An id ends up inside a kv key (`conversation:{id}`), so it is restricted to a short,
//! key-safe alphabet.

use std::fmt::Write as _;

const MAX_LEN: usize = 128;

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
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::is_valid;

    #[test]
    fn accepts_key_safe_ids_up_to_128_characters() {
        assert!(is_valid("a"));
        assert!(is_valid("Conv_1-x"));
        assert!(is_valid(&"z".repeat(128)));
    }

    #[test]
    fn rejects_empty_long_or_unsafe_ids() {
        assert!(!is_valid(""));
        assert!(!is_valid(&"z".repeat(129)));
        assert!(!is_valid("a:b"));
        assert!(!is_valid("a b"));
        assert!(!is_valid("é"));
    }
}
