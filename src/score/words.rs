//! Words, the unit of word perplexity.

/// Words as lm-evaluation-harness counts them: `len(re.split(r"\s+", text))`.
pub fn word_count(text: &str) -> usize {
    static SPLIT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SPLIT.get_or_init(|| regex::Regex::new(r"\s+").unwrap()).split(text).count()
}

#[cfg(test)]
mod tests {
    use super::word_count;

    #[test]
    fn words_follow_python_re_split() {
        // Python: len(re.split(r"\s+", s))
        assert_eq!(word_count("a b  c"), 3);
        assert_eq!(word_count(" a b "), 4);
        assert_eq!(word_count(""), 1);
        assert_eq!(word_count("one\n\ntwo\u{3000}three"), 3);
    }
}
