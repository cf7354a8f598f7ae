//! Durations as operators write them in options (`90s`, `10m`, `1h30m`) and as reports show
//! them (`5m3s`), and the age of an API timestamp.
//!
//! [`Duration`] is the option type: it deserializes from the text, so a malformed, negative or
//! unit-less value is refused while the options are read, naming the option, and its schema
//! documents the format.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::k8s::names::quoted;

/// A duration option, e.g. `90s`, `10m`, `1h30m`: digits and a unit (`s`, `m`, `h`, `d`),
/// positive, at most a century. Keeps the text as given, for results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    seconds: i64,
    text: String,
}

impl Duration {
    /// Parses `text`, naming `option` in the error.
    pub fn parse(option: &str, text: &str) -> Result<Self> {
        Ok(Self {
            seconds: parse_duration(option, text)?,
            text: text.trim().to_owned(),
        })
    }

    /// A duration of whole seconds, shown like `5m`.
    #[must_use]
    pub fn from_secs(seconds: u32) -> Self {
        Self {
            seconds: i64::from(seconds),
            text: format_duration(i64::from(seconds)),
        }
    }

    /// Refuses a zero duration for `option`: a timeout, TTL or window of 0s would end at once.
    pub fn require_positive(&self, option: &str) -> Result<()> {
        if self.seconds > 0 {
            Ok(())
        } else {
            Err(Error::InvalidOption {
                option: option.to_owned(),
                problem: format!("must be longer than 0s, got {self}"),
            })
        }
    }

    /// In seconds.
    #[must_use]
    pub fn seconds(&self) -> i64 {
        self.seconds
    }

    /// As a std duration (never negative).
    #[must_use]
    pub fn std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds.unsigned_abs())
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Duration {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse("duration", text)
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        // The option's name is added by the caller (serde_path_to_error knows the path).
        Self::parse("", &text).map_err(|err| match err {
            Error::InvalidOption { problem, .. } => serde::de::Error::custom(problem),
            other => serde::de::Error::custom(other),
        })
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+[smhd])+\\s*$",
        })
    }
}

/// Parses a duration option: one or more `<digits><unit>` parts with unit `s`, `m`, `h` or `d`,
/// e.g. `90s`, `10m`, `1h`, `1h30m`. Returns seconds.
pub fn parse_duration(option: &str, text: &str) -> Result<i64> {
    let invalid = |problem: String| Error::InvalidOption {
        option: option.to_owned(),
        problem,
    };
    let trimmed = text.trim();
    let text = quoted(text);
    if trimmed.is_empty() {
        return Err(invalid(
            "must not be empty: write a duration like 90s, 10m or 1h".into(),
        ));
    }
    if trimmed.starts_with('-') {
        return Err(invalid(format!(
            "{text} is negative: write a duration like 90s, 10m or 1h"
        )));
    }
    let malformed = || {
        invalid(format!(
            "{text} is not a duration: write digits and a unit (s, m, h or d), like 90s, 10m, \
             1h or 1h30m"
        ))
    };
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(malformed()),
        };
        if digits.is_empty() {
            return Err(malformed());
        }
        let part = digits
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|s| total.checked_add(s))
            // A century is plenty, and keeps timestamp arithmetic far from overflowing.
            .filter(|s| *s <= 100 * 365 * 86_400)
            .ok_or_else(|| invalid(format!("{text} is too long a duration")))?;
        total = part;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid(format!(
            "{text} has no unit: write {digits}s, {digits}m or {digits}h"
        )));
    }
    Ok(total)
}

/// A std duration for people, like [`format_duration`] (whole seconds).
#[must_use]
pub fn format_std(duration: std::time::Duration) -> String {
    format_duration(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds for people: `45s`, `5m3s`, `2h5m`, `3d4h`.
#[must_use]
pub fn format_duration(seconds: i64) -> String {
    if seconds < 0 {
        return format!("-{}", format_duration(seconds.saturating_neg()));
    }
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    let mut out = String::new();
    for (value, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        // Two units are precise enough for an age.
        if value > 0 && out.matches(char::is_alphabetic).count() < 2 {
            let _ = write!(out, "{value}{unit}");
        } else if !out.is_empty() {
            break;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// Seconds from `then` to `now` (negative when `then` is in the future).
#[must_use]
pub fn seconds_since(then: Timestamp, now: Timestamp) -> i64 {
    now.as_second() - then.as_second()
}

/// An age from [`seconds_since`] for people: `5m3s ago`, or, when negative (a time the cluster
/// or a node wrote that lies ahead of this host's clock), `5m3s in the future (clock skew ...)`
/// rather than a `-5m3s ago` that reads like a typo.
#[must_use]
pub fn format_ago(seconds: i64) -> String {
    if seconds < 0 {
        format!(
            "{} in the future (clock skew: this host's clock and the cluster's differ)",
            format_duration(seconds.saturating_neg())
        )
    } else {
        format!("{} ago", format_duration(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_ages_read_as_clock_skew_not_as_minus_ago() {
        assert_eq!(format_ago(90), "1m30s ago");
        assert_eq!(format_ago(0), "0s ago");
        let ahead = format_ago(-86_400);
        assert!(ahead.starts_with("1d in the future (clock skew"), "{ahead}");
        assert!(!format_ago(i64::MIN).contains('-'));
    }

    #[test]
    fn durations_are_written_with_units() {
        assert_eq!(parse_duration("x", "90s").unwrap(), 90);
        assert_eq!(parse_duration("x", "10m").unwrap(), 600);
        assert_eq!(parse_duration("x", "1h").unwrap(), 3600);
        assert_eq!(parse_duration("x", "1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("x", "2d").unwrap(), 172_800);
        assert_eq!(parse_duration("x", " 0s ").unwrap(), 0);
    }

    #[test]
    fn negative_or_malformed_durations_are_refused_naming_the_option() {
        for bad in [
            "-5m",
            "",
            "  ",
            "10",
            "m",
            "10x",
            "1.5h",
            "10 m",
            "5ms",
            "1h-1m",
            "99999999999999d",
        ] {
            let err = parse_duration("pending_age", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption { option, .. } if option == "pending_age"),
                "{bad:?}: {err:?}"
            );
        }
        let negative = parse_duration("terminating_grace", "-5m").unwrap_err();
        assert!(negative.to_string().contains("negative"), "{negative}");
        let unitless = parse_duration("terminating_grace", "300").unwrap_err();
        assert!(unitless.to_string().contains("300s"), "{unitless}");
    }

    #[test]
    fn durations_are_shown_with_two_units_at_most() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(303), "5m3s");
        assert_eq!(format_duration(7500), "2h5m");
        assert_eq!(format_duration(3600), "1h");
        assert_eq!(format_duration(86_400 * 3 + 3600 * 4 + 7), "3d4h");
        assert_eq!(format_duration(-90), "-1m30s");
    }
}
