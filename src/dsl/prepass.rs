//! The source pre-pass that gives the DSL keyword arguments and the `|>` pipe, over Rhai's own token
//! stream (so strings, comments and interpolations are never touched), with a map from rewritten to
//! original byte offsets so errors point into the user's text.
//!
//! Rewrites (only insertions and the `=` of a keyword argument change; no line breaks are added):
//!
//! | written | run as |
//! |---|---|
//! | `f(a, k=v, j=w)` | `f(a, #{k: v, j: w})` |
//! | `x \|> f(a, k=v)` | `x \|> (\|__pipe\| f(__pipe, a, #{k: v}))` |
//! | `x \|> f` | unchanged: `\|>` applies the function value `f` (a bare builtin name is one) |
//!
//! A keyword argument is `name = value` right after the `(` or a `,` of a call; assignment is never an
//! expression in Rhai, so the form is unambiguous. Keyword arguments come after the positional ones,
//! each name at most once.

use rhai::{Engine, Token};

/// The name of the closure parameter that carries the piped value.
pub const PIPE_VAR: &str = "__pipe";

/// A rewritten source and its offset map.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The text Rhai compiles.
    pub text: String,
    /// Rewritten byte offsets to original byte offsets.
    pub map: OffsetMap,
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Start in the rewritten text.
    rw: usize,
    /// Length in the rewritten text.
    len: usize,
    /// Start in the original text (for an insertion: the original offset it was inserted at).
    orig: usize,
    /// Copied from the original (else inserted).
    copied: bool,
}

/// Maps byte offsets of the rewritten text back to the original text. Offsets inside inserted text map
/// to the original offset where it was inserted.
#[derive(Clone, Debug, Default)]
pub struct OffsetMap {
    segments: Vec<Segment>,
    orig_len: usize,
}

impl OffsetMap {
    /// The map of an unchanged text of `len` bytes.
    pub fn identity(len: usize) -> Self {
        OffsetMap { segments: vec![Segment { rw: 0, len, orig: 0, copied: true }], orig_len: len }
    }

    /// The original byte offset of rewritten byte offset `rw` (clamped to the original length).
    pub fn to_original(&self, rw: usize) -> usize {
        let i = self.segments.partition_point(|s| s.rw <= rw);
        let Some(s) = i.checked_sub(1).and_then(|i| self.segments.get(i)) else { return 0 };
        let o = if s.copied { s.orig + (rw - s.rw).min(s.len) } else { s.orig };
        o.min(self.orig_len)
    }
}

/// A pre-pass error: a misuse of keyword arguments, at an original byte span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepassError {
    /// Byte offset in the original text.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// What is wrong.
    pub message: String,
}

/// Byte offset of a Rhai position (1-based line, 1-based column counted in chars; column 0 is the
/// start of the line) in `text`; the end of the text when past it.
pub fn byte_offset(text: &str, line: usize, col: usize) -> usize {
    let mut start = 0;
    for _ in 1..line.max(1) {
        match text[start..].find('\n') {
            Some(n) => start += n + 1,
            None => return text.len(),
        }
    }
    let line_text = &text[start..];
    let c = col.saturating_sub(1);
    line_text.char_indices().nth(c).map(|(b, _)| start + b).unwrap_or_else(|| {
        let end = line_text.find('\n').unwrap_or(line_text.len());
        start + end
    })
}

/// (line, column) of a byte offset, as Rhai counts them (1-based, columns in chars).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Paren,
    Bracket,
    Brace,
}

struct Frame {
    open: Open,
    call: bool,
    kw_open: bool,
    kw_names: Vec<String>,
    pipe_close: bool,
    interp: bool,
}

struct Edit {
    at: usize,
    remove: usize,
    insert: String,
}

/// The tokens of `text` with their original byte offsets; `None` on a lexical error (Rhai then
/// reports it itself).
fn tokens(engine: &Engine, text: &str) -> Option<Vec<(Token, usize)>> {
    let inputs = [text];
    let (it, control) = engine.lex(&inputs);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut interp: Vec<usize> = Vec::new();
    let mut pending_interp = false;
    for (tok, pos) in it {
        let off = byte_offset(text, pos.line().unwrap_or(1), pos.position().unwrap_or(0));
        match &tok {
            Token::EOF => break,
            Token::LexError(_) => return None,
            Token::InterpolatedString(_) => pending_interp = true,
            Token::LeftBrace | Token::MapStart => {
                depth += 1;
                if pending_interp && matches!(tok, Token::LeftBrace) {
                    interp.push(depth);
                    pending_interp = false;
                }
            }
            Token::RightBrace => {
                if interp.last() == Some(&depth) {
                    interp.pop();
                    // As Rhai's parser does: the text of the string goes on after the interpolation.
                    control.borrow_mut().is_within_text = true;
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        out.push((tok, off));
    }
    Some(out)
}

fn is_pipe(t: &Token) -> bool {
    matches!(t, Token::Reserved(s) | Token::Custom(s) if s.as_str() == "|>")
}

/// Rewrites keyword arguments and `|>` calls (see the module documentation).
///
/// Errors: a positional argument after a keyword argument; a keyword given twice.
pub fn rewrite(engine: &Engine, text: &str) -> Result<Rewritten, PrepassError> {
    let Some(toks) = tokens(engine, text) else {
        return Ok(Rewritten { text: text.to_string(), map: OffsetMap::identity(text.len()) });
    };
    let mut frames: Vec<Frame> = Vec::new();
    let mut edits: Vec<Edit> = Vec::new();
    let mut pipe_paren = false;
    let ident = |i: usize| match toks.get(i) {
        Some((Token::Identifier(s), _)) => Some(s.to_string()),
        _ => None,
    };
    // Inside a closure's parameter list (`|a, b|`), whose commas separate no arguments.
    let mut in_params = false;
    for i in 0..toks.len() {
        let (tok, off) = (&toks[i].0, toks[i].1);
        let next_is = |k: usize, f: &dyn Fn(&Token) -> bool| toks.get(i + k).is_some_and(|(t, _)| f(t));
        if in_params {
            in_params = !matches!(tok, Token::Pipe);
            continue;
        }
        let opens_closure = matches!(tok, Token::Pipe)
            && (i == 0
                || matches!(
                    toks[i - 1].0,
                    Token::Equals | Token::LeftParen | Token::Comma | Token::LeftBracket | Token::Colon
                ));
        if opens_closure {
            in_params = true;
            continue;
        }
        match tok {
            Token::LeftParen => {
                let call = i > 0 && matches!(toks[i - 1].0, Token::Identifier(_));
                frames.push(Frame {
                    open: Open::Paren,
                    call,
                    kw_open: false,
                    kw_names: Vec::new(),
                    pipe_close: std::mem::take(&mut pipe_paren),
                    interp: false,
                });
            }
            Token::LeftBracket => frames.push(Frame {
                open: Open::Bracket,
                call: false,
                kw_open: false,
                kw_names: Vec::new(),
                pipe_close: false,
                interp: false,
            }),
            Token::LeftBrace | Token::MapStart => frames.push(Frame {
                open: Open::Brace,
                call: false,
                kw_open: false,
                kw_names: Vec::new(),
                pipe_close: false,
                interp: i > 0 && matches!(toks[i - 1].0, Token::InterpolatedString(_)),
            }),
            Token::RightParen | Token::RightBracket | Token::RightBrace => {
                let want = match tok {
                    Token::RightParen => Open::Paren,
                    Token::RightBracket => Open::Bracket,
                    _ => Open::Brace,
                };
                // Unbalanced input: leave it to the parser.
                if frames.last().map(|f| f.open) != Some(want) {
                    return Ok(Rewritten { text: text.to_string(), map: OffsetMap::identity(text.len()) });
                }
                if let Some(f) = frames.pop() {
                    if f.kw_open {
                        edits.push(Edit { at: off, remove: 0, insert: "}".into() });
                    }
                    if f.pipe_close {
                        edits.push(Edit { at: off + 1, remove: 0, insert: ")".into() });
                    }
                    let _ = f.interp;
                }
            }
            Token::Identifier(name) => {
                let in_call = frames.last().is_some_and(|f| f.open == Open::Paren && f.call);
                let after_sep = i > 0 && matches!(toks[i - 1].0, Token::LeftParen | Token::Comma);
                if in_call && after_sep && next_is(1, &|t| matches!(t, Token::Equals)) {
                    let f = frames.last_mut().unwrap_or_else(|| unreachable!());
                    if f.kw_names.iter().any(|n| n == name.as_str()) {
                        return Err(PrepassError {
                            offset: off,
                            len: name.len(),
                            message: format!("keyword argument `{name}` is given twice"),
                        });
                    }
                    f.kw_names.push(name.to_string());
                    if !f.kw_open {
                        f.kw_open = true;
                        edits.push(Edit { at: off, remove: 0, insert: "#{".into() });
                    }
                    edits.push(Edit { at: toks[i + 1].1, remove: 1, insert: ":".into() });
                }
            }
            Token::Comma => {
                let kw = frames.last().is_some_and(|f| f.open == Open::Paren && f.call && f.kw_open);
                if kw {
                    let next_kw = ident(i + 1).is_some() && next_is(2, &|t| matches!(t, Token::Equals));
                    let trailing = next_is(1, &|t| matches!(t, Token::RightParen));
                    if !next_kw && !trailing {
                        let at = toks.get(i + 1).map(|t| t.1).unwrap_or(text.len());
                        return Err(PrepassError {
                            offset: at,
                            len: 1,
                            message: "a positional argument after keyword arguments".into(),
                        });
                    }
                }
            }
            t if is_pipe(t) => {
                if ident(i + 1).is_some() && next_is(2, &|t| matches!(t, Token::Unit)) {
                    // `x |> f()`: Rhai lexes `()` as one token.
                    edits.push(Edit { at: toks[i + 1].1, remove: 0, insert: format!("(|{PIPE_VAR}| ") });
                    edits.push(Edit { at: toks[i + 2].1 + 1, remove: 0, insert: PIPE_VAR.into() });
                    edits.push(Edit { at: toks[i + 2].1 + 2, remove: 0, insert: ")".into() });
                } else if ident(i + 1).is_some() && next_is(2, &|t| matches!(t, Token::LeftParen)) {
                    let name_at = toks[i + 1].1;
                    let paren_at = toks[i + 2].1;
                    let empty = next_is(3, &|t| matches!(t, Token::RightParen));
                    edits.push(Edit { at: name_at, remove: 0, insert: format!("(|{PIPE_VAR}| ") });
                    let sep = if empty { "" } else { ", " };
                    edits.push(Edit { at: paren_at + 1, remove: 0, insert: format!("{PIPE_VAR}{sep}") });
                    pipe_paren = true;
                }
            }
            _ => {}
        }
    }
    Ok(apply(text, edits))
}

fn apply(text: &str, mut edits: Vec<Edit>) -> Rewritten {
    // Stable: edits at the same offset keep the order they were made in.
    edits.sort_by_key(|e| e.at);
    let mut out = String::with_capacity(text.len() + 16 * edits.len());
    let mut segments = Vec::new();
    let mut pos = 0;
    for e in edits {
        if e.at > pos {
            segments.push(Segment { rw: out.len(), len: e.at - pos, orig: pos, copied: true });
            out.push_str(&text[pos..e.at]);
            pos = e.at;
        }
        if !e.insert.is_empty() {
            segments.push(Segment { rw: out.len(), len: e.insert.len(), orig: e.at, copied: false });
            out.push_str(&e.insert);
        }
        pos += e.remove;
    }
    if pos < text.len() {
        segments.push(Segment { rw: out.len(), len: text.len() - pos, orig: pos, copied: true });
        out.push_str(&text[pos..]);
    }
    Rewritten { text: out, map: OffsetMap { segments, orig_len: text.len() } }
}

/// How many brackets (`(`, `[`, `{`, `#{`) are still open at the end of `text`, counted over Rhai's
/// tokens (brackets inside strings and comments do not count). A front end reading input line by line
/// (the REPL) asks for more while this is positive. A text Rhai cannot lex counts as closed (the
/// parser then reports the error).
pub fn open_brackets(engine: &Engine, text: &str) -> usize {
    let Some(toks) = tokens(engine, text) else { return 0 };
    let mut depth = 0i64;
    for (t, _) in &toks {
        match t {
            Token::LeftParen | Token::LeftBracket | Token::LeftBrace | Token::MapStart => depth += 1,
            Token::RightParen | Token::RightBracket | Token::RightBrace => depth -= 1,
            _ => {}
        }
    }
    depth.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut e = Engine::new_raw();
        e.register_custom_operator("|>", 5).unwrap();
        e
    }

    fn rw(s: &str) -> String {
        rewrite(&engine(), s).unwrap().text
    }

    #[test]
    fn keyword_arguments_become_a_trailing_map() {
        assert_eq!(rw("f(a, k=1)"), "f(a, #{k:1})");
        assert_eq!(rw("f(a, k = 1, j=\"x\")"), "f(a, #{k : 1, j:\"x\"})");
        assert_eq!(rw("f(k=1)"), "f(#{k:1})");
        assert_eq!(rw("f(a, b)"), "f(a, b)");
        assert_eq!(rw("f(a == 1, b != 2)"), "f(a == 1, b != 2)");
        // nested calls, each with its own map
        assert_eq!(rw("f(g(x, s=2), k=h(y, t=3))"), "f(g(x, #{s:2}), #{k:h(y, #{t:3})})");
        // arrays and maps inside values; a hand-written map is left alone
        assert_eq!(rw("f(a, k=[1, 2], m=#{x: 1})"), "f(a, #{k:[1, 2], m:#{x: 1}})");
        assert_eq!(rw("f(a, #{k: 1})"), "f(a, #{k: 1})");
        // methods
        assert_eq!(rw("x.f(k=1)"), "x.f(#{k:1})");
        // trailing comma
        assert_eq!(rw("f(a, k=1,)"), "f(a, #{k:1,})");
        // a closure's parameters are no arguments; keyword arguments inside its body are its calls'
        assert_eq!(rw("f(a, loss=|n, b| g(n, b, s=1), k=2)"), "f(a, #{loss:|n, b| g(n, b, #{s:1}), k:2})");
        assert_eq!(rw("f(|a, b| a + b, k=1)"), "f(|a, b| a + b, #{k:1})");
        assert_eq!(rw("let c = |x, y| x | y;"), "let c = |x, y| x | y;");
    }

    #[test]
    fn strings_and_comments_are_untouched() {
        assert_eq!(rw("f(\"k=1 |> g(x)\") // k=2 |> h(y)"), "f(\"k=1 |> g(x)\") // k=2 |> h(y)");
        assert_eq!(rw("f(a, /* k=1 */ s=\"a=b\")"), "f(a, /* k=1 */ #{s:\"a=b\"})");
        assert_eq!(rw("let s = `x=${f(a, k=1)} |> y(z=2)`;"), "let s = `x=${f(a, #{k:1})} |> y(z=2)`;");
        assert_eq!(rw("let x = 1; x = 2; if x == 2 { y = (3) }"), "let x = 1; x = 2; if x == 2 { y = (3) }");
    }

    #[test]
    fn pipes_become_closures() {
        assert_eq!(
            rw("init(m, f) |> iso(cr_patch, scales=5) |> warp"),
            "init(m, f) |> (|__pipe| iso(__pipe, cr_patch, #{scales:5})) |> warp"
        );
        assert_eq!(rw("x |> f()"), "x |> (|__pipe| f(__pipe))");
        assert_eq!(rw("x |> f(k=1)"), "x |> (|__pipe| f(__pipe, #{k:1}))");
        assert_eq!(rw("x |> g(h(y) |> k(z))"), "x |> (|__pipe| g(__pipe, h(y) |> (|__pipe| k(__pipe, z))))");
        let multi = "let r = init(m, f)\n    |> iso(mi, scales=2)\n    |> warp;";
        assert_eq!(rw(multi), "let r = init(m, f)\n    |> (|__pipe| iso(__pipe, mi, #{scales:2}))\n    |> warp;");
    }

    #[test]
    fn offsets_map_back_to_the_original() {
        let src = "x |> iso(mi, scales=5) |> warp";
        let r = rewrite(&engine(), src).unwrap();
        // every original character keeps its text at the mapped offset
        for (o, _) in src.char_indices() {
            let needle = &src[o..o + 1];
            let rw_off = (0..r.text.len()).find(|&k| r.map.to_original(k) == o && &r.text[k..k + 1] == needle);
            assert!(rw_off.is_some() || needle == "=", "offset {o} ({needle}) lost");
        }
        let at = |t: &str| r.map.to_original(r.text.find(t).unwrap());
        assert_eq!(at("iso"), src.find("iso").unwrap());
        assert_eq!(at("warp"), src.find("warp").unwrap());
        assert_eq!(at("scales"), src.find("scales").unwrap());
        assert_eq!(at("#{"), src.find("scales").unwrap());
        assert_eq!(at(":5"), src.find("=5").unwrap());
        assert_eq!(at("__pipe,"), src.find("mi").unwrap());
    }

    #[test]
    fn misuse_is_reported_at_the_original_span() {
        let e = rewrite(&engine(), "f(a, k=1, 2)").unwrap_err();
        assert_eq!((e.offset, e.message.as_str()), (10, "a positional argument after keyword arguments"));
        let e = rewrite(&engine(), "f(a, k=1, k=2)").unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(e.message.contains("twice"));
    }

    #[test]
    fn positions_and_offsets() {
        let t = "ab\nxé z\n";
        assert_eq!(byte_offset(t, 2, 3), 6);
        assert_eq!(byte_offset(t, 2, 4), 7);
        assert_eq!(line_col(t, 7), (2, 4));
        assert_eq!(byte_offset(t, 9, 1), t.len());
    }

    #[test]
    fn lexical_errors_are_left_to_the_parser() {
        assert_eq!(rw("f(k=\"unterminated"), "f(k=\"unterminated");
    }
}
