//! The rustyline helper of the REPL: tab completion (builtins, variables, script functions,
//! `:commands`, and file paths inside string literals), multi-line input while brackets are open, and
//! bracket matching.

use std::borrow::Cow;

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter, MatchingBracketHighlighter};
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use super::COMMANDS;

/// The REPL's rustyline helper. `names` is refreshed by the REPL after every evaluation.
pub struct ReplHelper {
    /// Builtins, stdlib recipes, script functions and variables, sorted.
    pub names: Vec<String>,
    files: FilenameCompleter,
    brackets: MatchingBracketHighlighter,
    /// A bare engine, only for lexing (bracket depth ignores brackets inside strings and comments).
    lexer: rhai::Engine,
}

impl ReplHelper {
    /// A helper completing `names`.
    pub fn new(names: Vec<String>) -> Self {
        ReplHelper {
            names,
            files: FilenameCompleter::new(),
            brackets: MatchingBracketHighlighter::new(),
            lexer: rhai::Engine::new_raw(),
        }
    }
}

/// Whether byte offset `pos` of `line` lies inside a `"` string literal (escapes honoured); returns the
/// offset just after its opening quote.
pub fn open_string(line: &str, pos: usize) -> Option<usize> {
    let b = line.as_bytes();
    let mut start = None;
    let mut i = 0;
    while i < pos.min(b.len()) {
        match (b[i], start) {
            (b'\\', Some(_)) => i += 1,
            (b'"', None) => start = Some(i + 1),
            (b'"', Some(_)) => start = None,
            (b'/', None) if b.get(i + 1) == Some(&b'/') => return None,
            _ => {}
        }
        i += 1;
    }
    start
}

/// The start of the identifier (or `:command`) that ends at `pos`.
fn word_start(line: &str, pos: usize) -> usize {
    let before = &line[..pos];
    let start = before.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map(|i| i + 1).unwrap_or(0);
    if start > 0 && before[..start].ends_with(':') && before[..start - 1].trim().is_empty() {
        start - 1
    } else {
        start
    }
}

/// Completion candidates for `line` with the cursor at `pos` (the start offset of the replaced word
/// and the candidates): `:commands` at the start of a line, file paths inside a string, else the
/// known names beginning with the word. The file-path case is left to rustyline's filename completer.
pub fn complete_names(names: &[String], line: &str, pos: usize) -> (usize, Vec<String>) {
    let start = word_start(line, pos);
    let word = &line[start..pos];
    if word.starts_with(':') {
        // `:help NAME` completes names after the command; the command itself here.
        let v = COMMANDS.iter().map(|(c, _)| *c).filter(|c| c.starts_with(word)).map(String::from).collect();
        return (start, v);
    }
    if word.is_empty() {
        return (start, Vec::new());
    }
    (start, names.iter().filter(|n| n.starts_with(word)).cloned().collect())
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        if let Some(s) = open_string(line, pos) {
            // Complete the path written so far inside the string.
            let (start, pairs) = self.files.complete_path_unsorted(&line[s..pos], pos - s)?;
            let mut pairs = pairs;
            pairs.sort_by(|a, b| a.display.cmp(&b.display));
            return Ok((s + start, pairs));
        }
        if line.trim_start().starts_with(":load ") {
            return self.files.complete(line, pos, ctx);
        }
        let (start, v) = complete_names(&self.names, line, pos);
        Ok((start, v.into_iter().map(|n| Pair { display: n.clone(), replacement: n }).collect()))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}

impl Highlighter for ReplHelper {
    fn highlight<'l>(&self, line: &'l str, pos: usize) -> Cow<'l, str> {
        self.brackets.highlight(line, pos)
    }

    fn highlight_char(&self, line: &str, pos: usize, kind: CmdKind) -> bool {
        self.brackets.highlight_char(line, pos, kind)
    }
}

impl Validator for ReplHelper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if input.trim_start().starts_with(':') {
            return Ok(ValidationResult::Valid(None));
        }
        if crate::dsl::prepass::open_brackets(&self.lexer, input) > 0 {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

impl Helper for ReplHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_words() {
        assert_eq!(open_string(r#"load("data/av"#, 13), Some(6));
        assert_eq!(open_string(r#"load("a.nii") + x"#, 17), None);
        assert_eq!(open_string(r#"print("say \"hi"#, 15), Some(7));
        assert_eq!(open_string(r#"x // "comment"#, 13), None);
        let names: Vec<String> = ["load", "load_transform", "lncc", "smooth"].iter().map(|s| s.to_string()).collect();
        assert_eq!(complete_names(&names, "let a = lo", 10), (8, vec!["load".into(), "load_transform".into()]));
        assert_eq!(complete_names(&names, ":he", 3), (0, vec![":help".into()]));
        assert_eq!(complete_names(&names, "x + ", 4).1, Vec::<String>::new());
    }
}
