//! Kubernetes object names, checked before any API call so that a bad one is refused naming
//! the option.

use crate::error::{Error, Result};

/// Kubernetes names: RFC 1123 DNS subdomain (ClusterRoles, webhook configurations,
/// deployments) — lower-case alphanumerics, `-` and `.`, starting and ending alphanumeric, at
/// most 253 characters.
pub fn check_subdomain(option: &str, value: &str) -> Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: option.to_owned(),
            problem: format!(
                "{} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters)",
                quoted(value)
            ),
        })
    }
}

/// Kubernetes namespace and ServiceAccount-style names: RFC 1123 label, at most 63 characters.
pub fn check_label(option: &str, value: &str) -> Result<()> {
    if value.len() <= 63 && !value.contains('.') && check_subdomain(option, value).is_ok() {
        Ok(())
    } else {
        Err(Error::InvalidOption {
            option: option.to_owned(),
            problem: format!(
                "{} is not a valid Kubernetes name (lower-case letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters)",
                quoted(value)
            ),
        })
    }
}

/// Longest quoted value in a message, in characters; the rest is summarized.
pub const QUOTE_LIMIT: usize = 80;

/// A value for a message: Debug-quoted, cut after [`QUOTE_LIMIT`] characters with the total
/// length said, so that a megabyte of input never becomes a megabyte of message.
#[must_use]
pub fn quoted(value: &str) -> String {
    let count = value.chars().count();
    if count <= QUOTE_LIMIT {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTE_LIMIT).collect();
    format!("{head:?}... ({count} characters)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_are_checked() {
        assert!(check_subdomain("name", "calico-kube-controllers").is_ok());
        assert!(check_subdomain("name", "a.b-c.d").is_ok());
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b", &"x".repeat(254)] {
            assert!(check_subdomain("name", bad).is_err(), "{bad:?}");
        }
        assert!(check_label("namespace", "kube-system").is_ok());
        assert!(check_label("namespace", "a.b").is_err());
        assert!(check_label("namespace", &"x".repeat(64)).is_err());
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "a".repeat(1024 * 1024);
        let err = check_subdomain("name", &format!("{long}_"))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400, "{} characters", err.len());
        assert!(err.contains("(1048577 characters)"), "{err}");
        assert_eq!(quoted("short"), "\"short\"");
    }
}
