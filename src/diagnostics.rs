//! Script errors as `miette` reports: a code, a message, a labelled span in the named ORIGINAL source
//! (through the pre-pass's offset map), and help.
//!
//! Rhai reports the position where an error happened; errors inside script functions (and inside the
//! closures `|>` makes) come wrapped, and are unwrapped to the innermost position in the user's text
//! (frames inside the stdlib are named in the help instead). Errors raised by builtins
//! ([`HostError`], which carries the library error's code and help) point at the call, or at the
//! keyword argument they are about.

use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use rhai::{EvalAltResult, ParseError, Position};

use crate::dsl::options::HostError;
use crate::dsl::prepass::{byte_offset, line_col, OffsetMap, PrepassError};

/// A source as the user wrote it, the text Rhai compiled, and the map between them.
#[derive(Clone, Debug)]
pub struct SourceText {
    /// The name errors show (a file path, `<expr>`, `stdlib/register.rhai`).
    pub name: String,
    /// The user's text.
    pub original: Arc<str>,
    /// The text after the pre-pass.
    pub rewritten: String,
    /// Rewritten to original byte offsets.
    pub map: OffsetMap,
}

impl SourceText {
    /// A source record.
    pub fn new(name: &str, original: &str, rewritten: String, map: OffsetMap) -> Self {
        SourceText { name: name.into(), original: original.into(), rewritten, map }
    }

    /// Whether this is a stdlib source (whose frames are named in the help rather than shown).
    pub fn is_stdlib(&self) -> bool {
        self.name.starts_with("stdlib/")
            || std::env::var_os("REGSH_STDLIB").is_some_and(|d| self.name.starts_with(&*d.to_string_lossy()))
    }

    /// The original byte offset of a Rhai position in the rewritten text.
    pub fn offset_of(&self, pos: Position) -> Option<usize> {
        let line = pos.line()?;
        let rw = byte_offset(&self.rewritten, line, pos.position().unwrap_or(0));
        Some(self.map.to_original(rw))
    }
}

/// A script error ready to render (see [`render`]).
#[derive(Debug)]
pub struct ScriptError {
    /// A stable code, e.g. `regsh::dsl::syntax`, `regsh::io::not_found`.
    pub code: String,
    /// The message.
    pub message: String,
    /// Help (suggestions, the signature of the builtin, stdlib frames).
    pub help: Option<String>,
    /// The labelled span (byte offset, length) in `source`.
    pub span: Option<(usize, usize)>,
    /// The label text.
    pub label: String,
    /// The named original source.
    pub source: Option<NamedSource<String>>,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ScriptError {}

impl Diagnostic for ScriptError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (o, l) = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new(Some(self.label.clone()), o, l))))
    }
}

impl ScriptError {
    /// An error without a source span.
    pub fn bare(code: &str, message: impl Into<String>) -> Self {
        ScriptError {
            code: code.into(),
            message: message.into(),
            help: None,
            span: None,
            label: String::new(),
            source: None,
        }
    }

    fn at(
        src: &SourceText,
        span: (usize, usize),
        code: &str,
        message: String,
        label: String,
        help: Option<String>,
    ) -> Self {
        ScriptError {
            code: code.into(),
            message,
            help,
            span: Some(span),
            label,
            source: Some(NamedSource::new(src.name.clone(), src.original.to_string())),
        }
    }

    /// The labelled text of the original source, if any.
    pub fn span_text(&self) -> Option<&str> {
        let (o, l) = self.span?;
        self.source.as_ref().and_then(|s| s.inner().get(o..o + l))
    }
}

/// Renders a report without colours (`unicode`: box-drawing characters, else ASCII) at `width`.
pub fn render(e: &ScriptError, unicode: bool, width: usize) -> String {
    let theme = if unicode { GraphicalTheme::unicode_nocolor() } else { GraphicalTheme::none() };
    let mut out = String::new();
    let _ = GraphicalReportHandler::new_themed(theme).with_width(width).render_report(&mut out, e);
    out
}

/// Renders a report for a terminal: colours and box-drawing characters when `colour`.
pub fn render_terminal(e: &ScriptError, colour: bool) -> String {
    if !colour {
        return render(e, true, 100);
    }
    let mut out = String::new();
    let _ = GraphicalReportHandler::new_themed(GraphicalTheme::unicode()).with_width(100).render_report(&mut out, e);
    out
}

// ---------------------------------------------------------------------------------------------------
// Spans in the original text
// ---------------------------------------------------------------------------------------------------

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The end (exclusive) of the string literal opening at `start` (`"`, `` ` `` or `'`); the end of the
/// text when unterminated.
fn string_end(text: &str, start: usize) -> usize {
    let b = text.as_bytes();
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != q {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    (i + 1).min(b.len())
}

/// The end (exclusive) of the bracketed group opening at `start`, skipping strings
/// and comments inside; `None` when unterminated.
fn group_end(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0i32;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'"' | b'`' | b'\'' => {
                i = string_end(text, i) - 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The span to label at original offset `off`: a whole call `f(...)`, an identifier, `|> name`, a
/// string literal, or an operator.
pub fn span_at(text: &str, off: usize) -> (usize, usize) {
    if off >= text.len() {
        return (text.len(), 0);
    }
    let rest = &text[off..];
    let first = rest.chars().next().unwrap_or(' ');
    if let Some(after) = rest.strip_prefix("|>") {
        let ws = after.len() - after.trim_start().len();
        let id = after.trim_start().chars().take_while(|c| is_ident(*c)).map(char::len_utf8).sum::<usize>();
        return (off, 2 + ws + id);
    }
    if is_ident(first) {
        let id: usize = rest.chars().take_while(|c| is_ident(*c)).map(char::len_utf8).sum();
        let after = &rest[id..];
        let ws = after.len() - after.trim_start().len();
        if after.trim_start().starts_with('(') {
            if let Some(end) = group_end(text, off + id + ws) {
                return (off, end - off);
            }
        }
        return (off, id);
    }
    if matches!(first, '"' | '`') {
        return (off, string_end(text, off) - off);
    }
    let ops: usize = rest.chars().take(2).take_while(|c| "+-*/%<>=!&|^".contains(*c)).map(char::len_utf8).sum();
    (off, ops.max(first.len_utf8()))
}

/// The span `key=value` of keyword argument `key` inside the call span `call`, if written there.
pub fn key_span(text: &str, call: (usize, usize), key: &str) -> Option<(usize, usize)> {
    let region = text.get(call.0..call.0 + call.1)?;
    let mut from = 0;
    while let Some(i) = region[from..].find(key) {
        let s = from + i;
        from = s + key.len();
        let before = region[..s].chars().next_back();
        if before.is_some_and(is_ident) {
            continue;
        }
        let after = region[s + key.len()..].trim_start();
        let is_kw = (after.starts_with('=') && !after.starts_with("==")) || after.starts_with(':');
        if !is_kw {
            continue;
        }
        // The value runs to the next `,` or `)` at this depth.
        let b = region.as_bytes();
        let mut j = region.len() - after.len() + 1;
        let mut depth = 0i32;
        while j < b.len() {
            match b[j] {
                b'"' | b'`' => {
                    j = string_end(region, j) - 1;
                }
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' if depth == 0 => break,
                b')' | b']' | b'}' => depth -= 1,
                b',' if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let end = s + region[s..j].trim_end().len();
        return Some((call.0 + s, end - s));
    }
    None
}

// ---------------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------------

/// A pre-pass error (keyword-argument misuse) as a report.
pub fn from_prepass(src: &SourceText, e: &PrepassError) -> ScriptError {
    ScriptError::at(
        src,
        (e.offset, e.len),
        "regsh::dsl::keyword_arguments",
        e.message.clone(),
        "here".into(),
        Some("keyword arguments (name=value) come after the positional ones, each once".into()),
    )
}

/// A syntax error as a report.
pub fn from_parse(src: &SourceText, e: &ParseError) -> ScriptError {
    let off = src.offset_of(e.1).unwrap_or(src.original.len());
    let span = span_at(&src.original, off);
    // A syntax error labels the token where parsing stopped, not a whole call.
    let span = (
        span.0,
        span.1.min(
            src.original[span.0..].chars().take_while(|c| !c.is_whitespace()).map(char::len_utf8).sum::<usize>().max(1),
        ),
    );
    let span = if span.0 >= src.original.len() { (src.original.len(), 0) } else { span };
    ScriptError::at(src, span, "regsh::dsl::syntax", format!("syntax error: {}", e.0), "here".into(), None)
}

/// Plain names for Rhai's type names in signatures.
fn pretty_types(sig: &str) -> String {
    sig.replace("&str | ImmutableString | String", "string")
        .replace("ImmutableString", "string")
        .replace("rhai::Map", "map")
        .replace("rhai::Array", "array")
        .replace("i64", "int")
        .replace("f64", "float")
        .replace("Dynamic", "any")
}

struct Frame<'a> {
    source: String,
    pos: Position,
    func: Option<&'a str>,
}

fn unwrap_frames<'a>(err: &'a EvalAltResult, source: &str, out: &mut Vec<Frame<'a>>) -> &'a EvalAltResult {
    match err {
        EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
            out.push(Frame { source: source.to_string(), pos: *pos, func: Some(name.as_str()) });
            let inner_src = if src.is_empty() { source } else { src.as_str() };
            unwrap_frames(inner, inner_src, out)
        }
        other => {
            out.push(Frame { source: source.to_string(), pos: other.position(), func: None });
            other
        }
    }
}

/// What a report says about an error: its code, message, help line, the keyword argument it is about
/// and the label of its span.
struct Described {
    code: String,
    message: String,
    help: Option<String>,
    key: Option<String>,
    label: Option<String>,
}

/// The report's words for the innermost error `inner` (`names`: the names "did you mean" chooses
/// from).
fn describe(inner: &EvalAltResult, names: &[String]) -> Described {
    let names_ref = || names.iter().map(String::as_str);
    let (code, message, help, key, label): (String, String, Option<String>, Option<String>, Option<String>) =
        match inner {
            EvalAltResult::ErrorRuntime(v, _) => match v.clone().try_cast::<HostError>() {
                Some(h) => (h.code, h.message, h.help, h.key, None),
                None => ("regsh::dsl::thrown".into(), v.to_string(), None, None, None),
            },
            EvalAltResult::ErrorFunctionNotFound(sig, _) => {
                let name = sig.split(" (").next().unwrap_or(sig).trim().to_string();
                let args = sig.get(name.len()..).map(|a| pretty_types(a.trim())).unwrap_or_default();
                if name == "|>" {
                    (
                        "regsh::dsl::pipe".into(),
                        format!("the right side of `|>` must be a function, got {args}"),
                        Some("write `x |> f` (a function name) or `x |> f(a, k=v)` (meaning f(x, a, k=v))".into()),
                        None,
                        Some("this pipe".into()),
                    )
                } else if let Some(h) = crate::dsl::help::help(&name) {
                    (
                        "regsh::dsl::argument_types".into(),
                        format!("`{name}` cannot take {args}"),
                        Some(format!("{}\n{}", h.signature, h.summary)),
                        None,
                        Some("wrong argument types".into()),
                    )
                } else if names_ref().any(|n| n == name) {
                    (
                        "regsh::dsl::argument_types".into(),
                        format!("`{name}` cannot take {args}"),
                        None,
                        None,
                        Some("wrong number or types of arguments".into()),
                    )
                } else {
                    let s = crate::names::suggest(&name, names_ref());
                    (
                        "regsh::dsl::unknown_function".into(),
                        format!("unknown function `{name}`"),
                        s.map(|s| format!("did you mean `{s}`?")),
                        None,
                        Some("not a builtin or script function".into()),
                    )
                }
            }
            EvalAltResult::ErrorVariableNotFound(name, _) => {
                let s = crate::names::suggest(name, names_ref());
                (
                    "regsh::dsl::unknown_variable".into(),
                    format!("unknown variable `{name}`"),
                    s.map(|s| format!("did you mean `{s}`?")),
                    None,
                    Some("not defined".into()),
                )
            }
            EvalAltResult::ErrorTerminated(..) => {
                ("regsh::dsl::cancelled".into(), "cancelled".into(), None, None, None)
            }
            EvalAltResult::ErrorMismatchDataType(want, got, _)
            | EvalAltResult::ErrorMismatchOutputType(want, got, _) => (
                "regsh::dsl::type".into(),
                format!("expected {}, got {}", pretty_types(want), pretty_types(got)),
                None,
                None,
                None,
            ),
            EvalAltResult::ErrorParsing(pe, _) => {
                ("regsh::dsl::syntax".into(), format!("syntax error: {pe}"), None, None, None)
            }
            other => {
                let mut m = other.to_string();
                if let Some(i) = m.rfind(" (line ") {
                    m.truncate(i);
                }
                ("regsh::dsl::runtime".into(), m, None, None, None)
            }
        };
    Described { code, message, help, key, label }
}

/// A Rhai evaluation error as a report on the user's text.
///
/// - `current`: the source being evaluated; `others`: other sources frames may be in (the stdlib,
///   earlier REPL lines);
/// - `names`: names for "did you mean" (builtins, script functions, variables).
pub fn from_eval(err: &EvalAltResult, current: &SourceText, others: &[&SourceText], names: &[String]) -> ScriptError {
    let mut frames = Vec::new();
    let inner = unwrap_frames(err, &current.name, &mut frames);
    let lookup = |name: &str| -> Option<&SourceText> {
        if name == current.name {
            Some(current)
        } else {
            others.iter().copied().find(|s| s.name == name)
        }
    };
    // The deepest frame in a user's source; deeper stdlib frames go into the help.
    let chosen = frames
        .iter()
        .rposition(|f| !f.pos.is_none() && lookup(&f.source).is_some_and(|s| !s.is_stdlib()))
        .or_else(|| frames.iter().rposition(|f| !f.pos.is_none() && lookup(&f.source).is_some()));
    let mut notes = Vec::new();
    if let Some(c) = chosen {
        for f in &frames[c + 1..] {
            if let (Some(s), Some(l)) = (lookup(&f.source), f.pos.line()) {
                if s.is_stdlib() {
                    let (line, col) = s.offset_of(f.pos).map(|o| line_col(&s.original, o)).unwrap_or((l, 0));
                    notes.push(format!("inside {} at {}:{line}:{col}", frames_fn_name(&frames, f), s.name));
                }
            }
        }
    }

    let Described { code, message, mut help, key, label } = describe(inner, names);
    if !notes.is_empty() {
        let n = notes.join("\n");
        help = Some(match help {
            Some(h) => format!("{h}\n{n}"),
            None => n,
        });
    }
    let Some(c) = chosen else {
        let mut e = ScriptError::bare(&code, message);
        e.help = help;
        return e;
    };
    let f = &frames[c];
    let Some(src) = lookup(&f.source) else { return ScriptError::bare(&code, message) };
    let off = src.offset_of(f.pos).unwrap_or(0);
    let call = span_at(&src.original, off);
    let span = key.as_deref().and_then(|k| key_span(&src.original, call, k)).unwrap_or(call);
    let label = match (&key, label) {
        (Some(k), _) if span != call => format!("keyword argument `{k}`"),
        (_, Some(l)) => l,
        _ => message.clone(),
    };
    ScriptError::at(src, span, &code, message, label, help)
}

fn frames_fn_name(frames: &[Frame], f: &Frame) -> String {
    // The function whose body a frame is in is the one named by the frame before it.
    let i = frames.iter().position(|x| std::ptr::eq(x, f)).unwrap_or(0);
    i.checked_sub(1).and_then(|j| frames[j].func).map(|n| format!("`{n}`")).unwrap_or_else(|| "a function".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let t = "let x = smooth(img, [1, 2], unit=\"mm\") |> warp;";
        assert_eq!(span_at(t, 8), (8, 30)); // smooth(...)
        assert_eq!(&t[8..38], "smooth(img, [1, 2], unit=\"mm\")");
        let p = t.find("|>").unwrap();
        assert_eq!(&t[p..p + span_at(t, p).1], "|> warp");
        assert_eq!(key_span(t, (8, 30), "unit").map(|(o, l)| &t[o..o + l]), Some("unit=\"mm\""));
        assert_eq!(key_span(t, (8, 30), "mm"), None);
        let m = "a - b";
        assert_eq!(span_at(m, 2), (2, 1));
        assert_eq!(span_at("x >= 1", 2), (2, 2));
    }
}
