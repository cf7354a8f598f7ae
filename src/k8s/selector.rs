//! Label selectors checked the way the API server parses them, and field-selector escaping.

use crate::error::{Error, Result};
use crate::k8s::names::{check_subdomain, quoted};

/// Token of a label selector, as the API server's parser (apimachinery `labels.Parse`) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Equals,
    NotEquals,
    Not,
    Greater,
    Less,
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '=' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                }
                Token::Equals
            }
            '!' => {
                if chars.peek() == Some(&'=') {
                    chars.next();
                    Token::NotEquals
                } else {
                    Token::Not
                }
            }
            '>' => Token::Greater,
            '<' => Token::Less,
            '(' => Token::Open,
            ')' => Token::Close,
            ',' => Token::Comma,
            _ => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || "=!<>(),".contains(next) {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                Token::Word(word)
            }
        };
        tokens.push(token);
    }
    tokens
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a non-empty label-value name.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(|p| check_subdomain("", p).is_ok())
        && !name.is_empty()
        && is_label_value(name)
}

/// Checks a label selector the way the API server parses it (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
/// `a in (b,c)`, `a notin (b)`, `a>1`, `a<1`, joined by commas).
pub fn check_label_selector(option: &str, text: &str) -> Result<()> {
    let invalid = |problem: String| Error::InvalidOption {
        option: option.to_owned(),
        problem: format!("{} is not a valid label selector: {problem}", quoted(text)),
    };
    let tokens = tokenize(text);
    let mut i = 0;
    let key_at = |i: usize| -> Result<&str> {
        match tokens.get(i) {
            Some(Token::Word(key)) if is_label_key(key) => Ok(key),
            Some(Token::Word(key)) => {
                Err(invalid(format!("{} is not a valid label key", quoted(key))))
            }
            _ => Err(invalid("expected a label key".into())),
        }
    };
    let value_ok = |value: &str| -> Result<()> {
        if is_label_value(value) {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} is not a valid label value",
                quoted(value)
            )))
        }
    };
    if tokens.is_empty() {
        return Ok(());
    }
    loop {
        if tokens.get(i) == Some(&Token::Not) {
            key_at(i + 1)?;
            i += 2;
        } else {
            key_at(i)?;
            i += 1;
            match tokens.get(i) {
                None | Some(Token::Comma) => {}
                Some(Token::Equals | Token::NotEquals) => {
                    i += 1;
                    if let Some(Token::Word(value)) = tokens.get(i) {
                        value_ok(value)?;
                        i += 1;
                    }
                }
                Some(Token::Greater | Token::Less) => {
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Word(n)) if n.parse::<i64>().is_ok() => i += 1,
                        _ => return Err(invalid("'>' and '<' need an integer".into())),
                    }
                }
                Some(Token::Word(op)) if op == "in" || op == "notin" => {
                    i += 1;
                    if tokens.get(i) != Some(&Token::Open) {
                        return Err(invalid(format!("expected '(' after {op}")));
                    }
                    i += 1;
                    loop {
                        if let Some(Token::Word(value)) = tokens.get(i) {
                            value_ok(value)?;
                            i += 1;
                        }
                        match tokens.get(i) {
                            Some(Token::Comma) => i += 1,
                            Some(Token::Close) => {
                                i += 1;
                                break;
                            }
                            _ => return Err(invalid(format!("unclosed value list after {op}"))),
                        }
                    }
                }
                Some(_) => {
                    return Err(invalid(
                        "expected an operator (=, ==, !=, in, notin, >, <) or ',' after a key"
                            .into(),
                    ));
                }
            }
        }
        match tokens.get(i) {
            None => return Ok(()),
            Some(Token::Comma) if i + 1 < tokens.len() => i += 1,
            Some(Token::Comma) => return Err(invalid("nothing after the last ','".into())),
            Some(_) => return Err(invalid("expected ',' between requirements".into())),
        }
    }
}

/// Escapes a value for a field selector (`\`, `,` and `=` are special).
#[must_use]
pub fn escape_field_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_are_checked_like_the_api_server_parses_them() {
        for good in [
            "app=web",
            "app==web,tier!=db",
            "app",
            "!app",
            "app in (web, api),env notin (prod)",
            "kubemend.io/test=x-1_2.3",
            "app=",
            "app in ()",
            "n>3,n<10",
            " app = web ",
        ] {
            check_label_selector("label_selector", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "app in (web",
            "app=web,",
            ",app",
            "app web",
            "app=we b",
            "Bad_Prefix/x=y",
            "app=-web",
            "app in web",
            "n>x",
            "=web",
            "app=(web)",
            &format!("app={}", "v".repeat(64)),
        ] {
            let err = check_label_selector("label_selector", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { option, .. } if option == "label_selector"),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn field_selector_values_are_escaped() {
        assert_eq!(escape_field_value("plain-name"), "plain-name");
        assert_eq!(escape_field_value(r"a,b=c\d"), r"a\,b\=c\\d");
    }
}
