//! A model's answer to the title prompt, made fit to show: trimmed, on one line (runs of
//! whitespace, newlines included, become one space), without the quotes models like to
//! wrap a title in, and at most [`MAX_CHARS`] characters.
//!
//! The prompt asks for the title only, but the answer is still free text; this is the
//! one place that bounds what ends up at `title:{id}`.

/// The longest title stored, in characters (not bytes), so a cut never splits one.
pub const MAX_CHARS: usize = 80;

/// Characters stripped when they open and close the title: straight, typographic and
/// angle quotes and the backtick, in any combination (`“Title"` is common enough).
const QUOTES: &[char] = &['"', '\'', '`', '“', '”', '„', '‘', '’', '‚', '«', '»'];

/// The title in `answer`; empty when the answer holds nothing but space and quotes.
pub fn clean(answer: &str) -> String {
    let one_line = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut title = one_line.as_str();
    while let Some(inner) = unquote(title) {
        title = inner.trim();
    }
    let title = match title.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => title[..cut].trim_end(),
        None => title,
    };
    title.to_owned()
}

/// `text` without its first and last character when both are quotes.
fn unquote(text: &str) -> Option<&str> {
    let inner = text.strip_prefix(QUOTES)?;
    inner.strip_suffix(QUOTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_answer_is_only_trimmed() {
        assert_eq!(
            clean("  Planning a trip to Kyoto \n"),
            "Planning a trip to Kyoto"
        );
        assert_eq!(clean("Rust's borrow checker"), "Rust's borrow checker");
    }

    #[test]
    fn the_title_is_one_line() {
        assert_eq!(clean("Trip\n to\tKyoto"), "Trip to Kyoto");
        assert_eq!(clean("\"Trip to\r\n Kyoto\"\n"), "Trip to Kyoto");
    }

    #[test]
    fn surrounding_quotes_are_stripped() {
        assert_eq!(clean("\"Planning a trip\""), "Planning a trip");
        assert_eq!(clean(" 'Planning a trip' "), "Planning a trip");
        assert_eq!(clean("“Planning a trip”"), "Planning a trip");
        assert_eq!(clean("«Planen einer Reise»"), "Planen einer Reise");
        assert_eq!(clean("“Mixed quotes\""), "Mixed quotes");
        assert_eq!(clean("\" 'Nested' \""), "Nested");
    }

    #[test]
    fn quotes_inside_or_on_one_side_stay() {
        assert_eq!(clean("The \"best\" pizza"), "The \"best\" pizza");
        assert_eq!(clean("\"Quoted\" advice"), "\"Quoted\" advice");
        assert_eq!(clean("The users'"), "The users'");
    }

    #[test]
    fn nothing_but_space_and_quotes_is_empty() {
        assert_eq!(clean(""), "");
        assert_eq!(clean(" \n "), "");
        assert_eq!(clean("\"\""), "");
        assert_eq!(clean("\" \""), "");
        // A lone quote is not a pair, so it is kept.
        assert_eq!(clean("\""), "\"");
    }

    #[test]
    fn long_titles_are_cut_to_80_characters() {
        let exact = "a".repeat(MAX_CHARS);
        assert_eq!(clean(&exact), exact);
        assert_eq!(clean(&format!("\"{}\"", "b".repeat(100))), "b".repeat(80));
    }

    #[test]
    fn the_cut_counts_characters_and_keeps_them_whole() {
        // 3-byte and 4-byte characters: a byte cut at 80 would split one.
        let long = "会话标题".repeat(30);
        let title = clean(&long);
        assert_eq!(title.chars().count(), MAX_CHARS);
        assert!(long.starts_with(&title));
        let emoji = "🦀".repeat(81);
        assert_eq!(clean(&emoji), "🦀".repeat(80));
    }

    #[test]
    fn a_cut_does_not_leave_trailing_space() {
        let long = format!("{} tail", "x".repeat(MAX_CHARS - 1));
        assert_eq!(clean(&long), "x".repeat(MAX_CHARS - 1));
    }
}
