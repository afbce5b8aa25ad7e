//! Finding `crate::` paths in Rust source without a full parser: comments, string and character
//! literals are blanked first (so doc links and messages never count), then every `crate::` that
//! is not `$crate::` is read as a path, and a `crate::{a::b, c::{d, e}}` group yields each of its
//! first-level names (`a`, `c`), each on the line where it is written.

/// One top-level module named by a `crate::` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// 1-based line of the module's name.
    pub line: usize,
    /// The first segment after `crate::` (`status` in `crate::status::qos`).
    pub module: String,
}

/// The top-level modules `source` names through `crate::`, in source order.
#[must_use]
pub fn references(source: &str) -> Vec<Reference> {
    let code = blank_non_code(source);
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = find_word(&code, "crate", at) {
        at = found + "crate".len();
        if found > 0 && code[found - 1] == '$' {
            continue;
        }
        let Some(after) = expect(&code, skip_space(&code, at), "::") else {
            continue;
        };
        let start = skip_space(&code, after);
        match code.get(start) {
            Some('{') => group(&code, start, &mut out),
            Some(_) => {
                if let Some((name, _)) = ident(&code, start) {
                    push(&code, start, name, &mut out);
                }
            }
            None => {}
        }
    }
    out
}

/// The first-level names of the group opening at `open` (`{`).
fn group(code: &[char], open: usize, out: &mut Vec<Reference>) {
    let mut depth = 0_usize;
    let mut expecting_name = true;
    let mut i = open;
    while i < code.len() {
        match code[i] {
            '{' => {
                depth += 1;
                expecting_name = depth == 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
                i += 1;
            }
            ',' if depth == 1 => {
                expecting_name = true;
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            _ => {
                if let Some((name, end)) = ident(code, i) {
                    if expecting_name && depth == 1 && name != "self" {
                        push(code, i, name, out);
                    }
                    expecting_name = false;
                    i = end;
                } else {
                    expecting_name = false;
                    i += 1;
                }
            }
        }
    }
}

fn push(code: &[char], at: usize, module: String, out: &mut Vec<Reference>) {
    let line = 1 + code[..at].iter().filter(|c| **c == '\n').count();
    out.push(Reference { line, module });
}

fn is_ident(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The identifier starting at `at` (a raw `r#name` counts as `name`), and where it ends.
fn ident(code: &[char], at: usize) -> Option<(String, usize)> {
    let start = if code.get(at) == Some(&'r') && code.get(at + 1) == Some(&'#') {
        at + 2
    } else {
        at
    };
    let first = *code.get(start)?;
    if !(first == '_' || first.is_alphabetic()) {
        return None;
    }
    let end = (start..code.len())
        .find(|&i| !is_ident(code[i]))
        .unwrap_or(code.len());
    Some((code[start..end].iter().collect(), end))
}

fn skip_space(code: &[char], mut at: usize) -> usize {
    while code.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    at
}

fn expect(code: &[char], at: usize, text: &str) -> Option<usize> {
    let mut i = at;
    for want in text.chars() {
        (code.get(i) == Some(&want)).then_some(())?;
        i += 1;
    }
    Some(i)
}

/// The next occurrence of `word` at or after `from` that is a whole identifier.
fn find_word(code: &[char], word: &str, from: usize) -> Option<usize> {
    let word: Vec<char> = word.chars().collect();
    (from..code.len().saturating_sub(word.len() - 1)).find(|&i| {
        code[i..i + word.len()] == word[..]
            && (i == 0 || !is_ident(code[i - 1]))
            && code.get(i + word.len()).is_none_or(|c| !is_ident(*c))
    })
}

/// `source` with comments and string, byte-string and character literals replaced by spaces;
/// newlines stay, so positions keep their line numbers.
fn blank_non_code(source: &str) -> Vec<char> {
    let mut code: Vec<char> = source.chars().collect();
    let mut i = 0;
    while i < code.len() {
        let literal_end = match code[i] {
            '/' if code.get(i + 1) == Some(&'/') => Some(
                (i..code.len())
                    .find(|&j| code[j] == '\n')
                    .unwrap_or(code.len()),
            ),
            '/' if code.get(i + 1) == Some(&'*') => Some(block_comment_end(&code, i)),
            '"' => Some(string_end(&code, i + 1)),
            'r' | 'b' if starts_literal(&code, i) => Some(prefixed_literal_end(&code, i)),
            '\'' => char_literal_end(&code, i),
            _ => None,
        };
        let Some(end) = literal_end else {
            i += 1;
            continue;
        };
        for c in &mut code[i..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = end.max(i + 1);
    }
    code
}

fn block_comment_end(code: &[char], open: usize) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i + 1 < code.len() {
        if code[i] == '/' && code[i + 1] == '*' {
            depth += 1;
            i += 2;
        } else if code[i] == '*' && code[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    code.len()
}

/// The end of a plain string whose body starts at `body` (after the opening quote).
fn string_end(code: &[char], body: usize) -> usize {
    let mut i = body;
    while i < code.len() {
        match code[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    code.len()
}

/// Whether `r"`, `r#"`, `b"`, `br"`, `b'` ... starts at `at` (and is not the end of a name).
fn starts_literal(code: &[char], at: usize) -> bool {
    if at > 0 && is_ident(code[at - 1]) {
        return false;
    }
    let mut i = at;
    if code[i] == 'b' {
        i += 1;
        if code.get(i) == Some(&'\'') || code.get(i) == Some(&'"') {
            return true;
        }
    }
    if code.get(i) != Some(&'r') {
        return false;
    }
    i += 1;
    while code.get(i) == Some(&'#') {
        i += 1;
    }
    code.get(i) == Some(&'"')
}

fn prefixed_literal_end(code: &[char], at: usize) -> usize {
    let mut i = at;
    if code[i] == 'b' {
        i += 1;
        match code.get(i) {
            Some('"') => return string_end(code, i + 1),
            Some('\'') => return char_literal_end(code, i).unwrap_or(i + 1),
            _ => {}
        }
    }
    // A raw string: r, hashes, quote, body, quote, the same hashes.
    i += 1;
    let hashes = (i..code.len()).take_while(|&j| code[j] == '#').count();
    let body = i + hashes + 1;
    (body..code.len())
        .find(|&j| code[j] == '"' && (1..=hashes).all(|h| code.get(j + h) == Some(&'#')))
        .map_or(code.len(), |j| j + 1 + hashes)
}

/// The end of a character literal at `at`, or `None` for a lifetime or label (`'a`).
fn char_literal_end(code: &[char], at: usize) -> Option<usize> {
    match code.get(at + 1)? {
        '\\' => (at + 2..code.len())
            .find(|&j| code[j] == '\'')
            .map(|j| j + 1),
        _ => (code.get(at + 2) == Some(&'\'')).then_some(at + 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(source: &str) -> Vec<(usize, String)> {
        references(source)
            .into_iter()
            .map(|r| (r.line, r.module))
            .collect()
    }

    fn expected(list: &[(usize, &str)]) -> Vec<(usize, String)> {
        list.iter().map(|(l, m)| (*l, (*m).to_owned())).collect()
    }

    #[test]
    fn plain_and_grouped_uses() {
        let source = "use crate::status::qos::QosClass;\n\
                      use crate::{\n    cgroup::{self, CgroupManager},\n    config::KubeletConfig,\n    node,\n};\n";
        assert_eq!(
            modules(source),
            expected(&[(1, "status"), (3, "cgroup"), (4, "config"), (5, "node")])
        );
    }

    #[test]
    fn nested_groups_count_only_their_first_level() {
        let source = "use crate::{a::b, c::{d, e::{f, g}}, h as i, self};";
        assert_eq!(modules(source), expected(&[(1, "a"), (1, "c"), (1, "h")]));
    }

    #[test]
    fn paths_in_code_count_too() {
        let source = "fn f() {\n    let x = crate::stats::summary::SwapStats::from(1);\n    \
                      let y: crate :: logs::LogRotation = todo!();\n}\n";
        assert_eq!(modules(source), expected(&[(2, "stats"), (3, "logs")]));
    }

    #[test]
    fn comments_strings_and_macro_crates_do_not_count() {
        let source = r##"//! See [`crate::server`].
/* crate::a /* crate::b */ crate::c */
let s = "crate::d";
let r = r#"crate::e "# ;
let b = b"crate::f";
let c = '"'; let l: &'static str = "x"; use crate::ok;
macro_rules! m { () => { $crate::g } }
let kernlet_crate = my_crate::h;
pub(crate) fn v() {}
"##;
        assert_eq!(modules(source), expected(&[(6, "ok")]));
    }

    #[test]
    fn raw_identifiers_read_as_their_name() {
        assert_eq!(modules("use crate::r#type::X;"), expected(&[(1, "type")]));
    }
}
