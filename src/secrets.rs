//! Secrets: the values that must never appear in results, messages or logs, and how they are
//! masked. Options marked no_log, the token, a kubeconfig's credentials are registered as soon
//! as they are known; results (JSON, [`mask`]) and log lines ([`mask_text`], [`mask_bearer`])
//! are masked against them. One home for both, so that a result and a log line hide a secret
//! the same way.

use std::sync::RwLock;

use serde_json::Value;

/// Replacement for a value that equals a `no_log` option's value (same text as `AnsibleModule`).
pub const NO_LOG_VALUE: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";

/// Replacement for a `no_log` value found inside a longer string.
pub const NO_LOG_MASK: &str = "********";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds values that must never appear in logs (empty ones are ignored).
pub fn register<I, S>(secrets: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut known = SECRETS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for secret in secrets {
        let secret = secret.into();
        if !secret.is_empty() && !known.contains(&secret) {
            known.push(secret);
        }
    }
}

/// Everything registered so far.
#[must_use]
pub fn registered() -> Vec<String> {
    SECRETS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Masks secrets everywhere in `value`: a string equal to one becomes [`NO_LOG_VALUE`], one
/// containing it has that part replaced by [`NO_LOG_MASK`]. Keys are masked too. Besides
/// `secrets`, the credentials cluster access found on its own (a kubeconfig's token, say) are
/// masked: [`registered`].
pub fn mask(value: &mut Value, secrets: &[String]) {
    let registered = registered();
    if registered.is_empty() {
        mask_with(value, secrets);
    } else {
        let mut all = secrets.to_vec();
        all.extend(registered.into_iter().filter(|s| !secrets.contains(s)));
        mask_with(value, &all);
    }
}

fn mask_with(value: &mut Value, secrets: &[String]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            if let Some(masked) = mask_str(s, secrets) {
                *s = masked;
            }
        }
        // As Ansible's remove_values: a number whose text is (or holds) a secret is masked too.
        Value::Number(n) => {
            if let Some(masked) = mask_str(&n.to_string(), secrets) {
                *value = Value::String(masked);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask_with(item, secrets)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                mask_with(&mut item, secrets);
                let key = mask_str(&key, secrets).unwrap_or(key);
                map.insert(key, item);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

fn mask_str(text: &str, secrets: &[String]) -> Option<String> {
    if secrets.iter().any(|secret| secret == text) {
        return Some(NO_LOG_VALUE.to_owned());
    }
    let mut out = None::<String>;
    // Longest first, so a secret that contains another is masked whole.
    let mut ordered: Vec<&String> = secrets.iter().collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in ordered {
        let current = out.as_deref().unwrap_or(text);
        if current.contains(secret.as_str()) {
            out = Some(current.replace(secret.as_str(), NO_LOG_MASK));
        }
    }
    out
}

/// `text` with every secret in it masked ([`NO_LOG_MASK`]), longest first.
#[must_use]
pub fn mask_text(text: &str, secrets: &[String]) -> String {
    let mut ordered: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_owned();
    for secret in ordered {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), NO_LOG_MASK);
        }
    }
    out
}

/// `Bearer <token>` (any case) with the token masked, whether or not it is a known secret.
#[must_use]
pub fn mask_bearer(text: &str) -> String {
    const WORD: &str = "bearer ";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(WORD) {
        let start = search + found + WORD.len();
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ';' | '\\'))
            .map_or(text.len(), |e| start + e);
        if end > start && &text[start..end] != NO_LOG_MASK {
            out.push_str(&text[last..start]);
            out.push_str(NO_LOG_MASK);
            last = end;
        }
        search = end.max(start);
    }
    out.push_str(&text[last..]);
    out
}
