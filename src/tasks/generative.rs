//! Generated answers scored the lm-evaluation-harness way (`output_type: generate_until`): each
//! answer goes through the task's filter pipelines (`filter_list`: `regex`, `remove_whitespace`,
//! `take_first`), and each filtered answer is compared with the reference(s) by `exact_match`
//! (`lm_eval.api.metrics.exact_match_hf_evaluate`, HF evaluate's semantics: `regexes_to_ignore`
//! removed from both strings, then `ignore_case`, `ignore_punctuation`, `ignore_numbers`). A
//! document with several references (TriviaQA's aliases) scores 1 when any matches.
//!
//! The task files' regexes are Python `re` patterns; the ones the harness's tasks use mean the
//! same in Rust's `regex`, except `$`, which in Python also matches before a final newline
//! ([`PyRegex`] translates it).

use regex::Regex;

/// One step of a filter pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FilterStep {
    /// `RegexFilter`: `re.findall(pattern, answer)[group_select]` (a match with groups gives its
    /// first non-empty group), stripped; `fallback` when nothing matches.
    Regex { pattern: &'static str, group_select: isize, fallback: &'static str },
    /// The document's own `regex` (generic `gen` files), as `Regex` with group 0 and the
    /// fallback "[invalid]"; documents without one keep their answer.
    DocRegex,
    /// `WhitespaceFilter`: Python's `str.strip()`.
    RemoveWhitespace,
    /// `take_first`: the first of the repeats (perplex generates one answer per document).
    TakeFirst,
}

/// A named filter pipeline (`filter_list` entry); its name is the results' key suffix
/// (`exact_match,strict-match`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterPipeline {
    pub name: &'static str,
    pub steps: &'static [FilterStep],
}

/// `exact_match`'s options as the task's `metric_list` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExactMatch {
    pub regexes_to_ignore: &'static [&'static str],
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
    pub ignore_numbers: bool,
}

/// Everything about a generative task that its yaml fixes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationConfig {
    /// `generation_kwargs.until`.
    pub until: &'static [&'static str],
    /// `generation_kwargs.max_gen_toks`; None = the harness's default (256).
    pub max_gen_toks: Option<usize>,
    pub filters: &'static [FilterPipeline],
    pub metric: ExactMatch,
}

/// The harness's fallback for an answer a regex does not match.
pub const INVALID: &str = "[invalid]";

/// A Python `re` pattern compiled for Rust: a final unescaped `$` also matches before a final
/// newline (Python's `$` without MULTILINE), which is kept when the match is removed.
#[derive(Debug, Clone)]
pub struct PyRegex {
    regex: Regex,
    /// The pattern ended with `$`: group `__eol` holds the newline the match may end before.
    eol: bool,
}

impl PyRegex {
    pub fn new(pattern: &str) -> Result<PyRegex, String> {
        let ends_with_dollar = pattern.ends_with('$') && {
            let backslashes = pattern[..pattern.len() - 1].chars().rev().take_while(|&c| c == '\\').count();
            backslashes % 2 == 0
        };
        let translated = if ends_with_dollar {
            format!("(?:{})(?P<__eol>\n?)\\z", &pattern[..pattern.len() - 1])
        } else {
            pattern.to_string()
        };
        let regex = Regex::new(&translated).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))?;
        Ok(PyRegex { regex, eol: ends_with_dollar })
    }

    /// `re.sub(pattern, "", text)`.
    pub fn remove(&self, text: &str) -> String {
        if self.eol {
            self.regex.replace_all(text, "${__eol}").into_owned()
        } else {
            self.regex.replace_all(text, "").into_owned()
        }
    }

    /// `RegexFilter` on one answer: `re.findall(...)[group_select]`, the first non-empty group
    /// of a match with several groups, stripped; `fallback` when nothing matches.
    pub fn extract(&self, text: &str, group_select: isize, fallback: &str) -> String {
        let groups = self.regex.captures_len() - 1 - self.eol as usize;
        let matches: Vec<regex::Captures> = self.regex.captures_iter(text).collect();
        let index = if group_select < 0 { matches.len() as isize + group_select } else { group_select };
        let Some(captures) = usize::try_from(index).ok().and_then(|i| matches.get(i)) else {
            // An empty findall, or an index out of range (an IndexError in the harness: it only
            // happens with a group_select no task uses).
            return fallback.to_string();
        };
        let found = match groups {
            0 => captures.get(0).map_or("", |m| m.as_str()).to_string(),
            // findall gives the one group's text, "" when it did not take part.
            1 => captures.get(1).map_or("", |m| m.as_str()).to_string(),
            _ => match (1..=groups).filter_map(|g| captures.get(g)).map(|m| m.as_str()).find(|s| !s.is_empty()) {
                Some(s) => s.to_string(),
                None => fallback.to_string(),
            },
        };
        crate::score::python_strip(&found).to_string()
    }
}

/// Runs one pipeline on a generated answer. `doc_regex` is the document's own pattern (`gen`).
pub fn apply_filters(steps: &[FilterStep], answer: &str, doc_regex: Option<&PyRegex>) -> Result<String, String> {
    let mut text = answer.to_string();
    for step in steps {
        text = match *step {
            FilterStep::Regex { pattern, group_select, fallback } => PyRegex::new(pattern)?.extract(&text, group_select, fallback),
            FilterStep::DocRegex => match doc_regex {
                Some(regex) => regex.extract(&text, 0, INVALID),
                None => text,
            },
            FilterStep::RemoveWhitespace => crate::score::python_strip(&text).to_string(),
            FilterStep::TakeFirst => text,
        };
    }
    Ok(text)
}

/// Python's `string.punctuation`.
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

impl ExactMatch {
    fn normalise(&self, text: &str, ignore: &[PyRegex]) -> String {
        let mut text = text.to_string();
        for regex in ignore {
            text = regex.remove(&text);
        }
        if self.ignore_case {
            text = text.to_lowercase();
        }
        if self.ignore_punctuation {
            text.retain(|c| !PUNCTUATION.contains(c));
        }
        if self.ignore_numbers {
            text.retain(|c| !c.is_ascii_digit());
        }
        text
    }

    /// 1 when the prediction equals any reference after the normalisation, else 0.
    pub fn score(&self, prediction: &str, references: &[String]) -> Result<f64, String> {
        let ignore: Vec<PyRegex> = self.regexes_to_ignore.iter().map(|p| PyRegex::new(p)).collect::<Result<_, _>>()?;
        let prediction = self.normalise(prediction, &ignore);
        Ok(references.iter().any(|r| self.normalise(r, &ignore) == prediction) as u8 as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_matches_before_a_final_newline_like_python() {
        let dot = PyRegex::new(r"\.$").unwrap();
        assert_eq!(dot.remove("18."), "18");
        assert_eq!(dot.remove("18.\n"), "18\n");
        assert_eq!(dot.remove("18.\n\n"), "18.\n\n");
        assert_eq!(dot.remove("1.8"), "1.8");
        assert_eq!(PyRegex::new(r"a\$").unwrap().remove("a$b"), "b");
    }

    #[test]
    fn the_harness_patterns_compile() {
        for p in [r"#### (\-?[0-9\.\,]+)", r"(-?[$0-9.,]{2,})|(-?[0-9]+)", r"The answer is (\-?[0-9\.\,]+).", r"\$", r"(?s).*#### "] {
            PyRegex::new(p).unwrap();
        }
    }
}
