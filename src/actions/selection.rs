//! Which objects a deleting action works on: one by `name`, or every one with `detect: true`
//! minus `exclude`; and the one-line message of such a run.

use crate::error::{Error, Result};
use crate::k8s::names::check_subdomain;

/// One object by name, or a scan of all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The object of this name.
    Name(String),
    /// Every object but those named.
    Detect {
        /// Names left alone.
        exclude: Vec<String>,
    },
}

impl Selection {
    /// Checks the options `name`, `detect` and `exclude`: exactly one of name and detect, and
    /// exclude only with detect, every name a DNS subdomain. `what` names the object in the
    /// error, e.g. `an APIService`.
    pub fn from_options(
        name: Option<String>,
        detect: bool,
        exclude: Vec<String>,
        what: &str,
    ) -> Result<Self> {
        match (name, detect) {
            (Some(_), true) => Err(Error::InvalidOption {
                option: "name".into(),
                problem: "name and detect are mutually exclusive".into(),
            }),
            (None, false) => Err(Error::InvalidOption {
                option: "name".into(),
                problem: format!("give the name of {what}, or detect: true to scan them all"),
            }),
            (Some(name), false) => {
                check_subdomain("name", &name)?;
                if !exclude.is_empty() {
                    return Err(Error::InvalidOption {
                        option: "exclude".into(),
                        problem: "only applies with detect: true".into(),
                    });
                }
                Ok(Self::Name(name))
            }
            (None, true) => {
                for (index, name) in exclude.iter().enumerate() {
                    check_subdomain(&format!("exclude[{index}]"), name)?;
                }
                Ok(Self::Detect { exclude })
            }
        }
    }

    /// Whether a scan leaves the object `name` alone.
    #[must_use]
    pub fn excludes(&self, name: &str) -> bool {
        match self {
            Self::Name(_) => false,
            Self::Detect { exclude } => exclude.iter().any(|e| e == name),
        }
    }

    /// The run's message: what was (would be) deleted, or that nothing was. `kind` names the
    /// objects (`webhook configuration`, `APIService`), `deleted` each deleted one
    /// (`apiservice "v1.x"`).
    #[must_use]
    pub fn message(
        &self,
        kind: &str,
        considered: usize,
        deleted: &[String],
        check: bool,
    ) -> String {
        if let Self::Name(name) = self
            && considered == 0
        {
            return format!("no {kind} named {name:?} (nothing to do)");
        }
        if deleted.is_empty() {
            return format!("nothing stale: left {considered} {kind}(s) alone");
        }
        format!(
            "{} {}",
            if check { "would delete" } else { "deleted" },
            deleted.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(name: Option<&str>, detect: bool, exclude: &[&str]) -> Result<Selection> {
        let exclude = exclude.iter().map(|e| (*e).to_owned()).collect();
        Selection::from_options(name.map(str::to_owned), detect, exclude, "an object")
    }

    #[test]
    fn name_or_detect_is_required_and_not_both() {
        assert!(select(None, false, &[]).is_err());
        assert!(select(Some("x"), true, &[]).is_err());
        assert!(select(Some("x"), false, &["y"]).is_err());
        assert!(select(Some("Not_Valid"), false, &[]).is_err());
        assert!(select(None, true, &["ok", "Bad!"]).is_err());
        assert_eq!(
            select(Some("newrelic"), false, &[]).unwrap(),
            Selection::Name("newrelic".into())
        );
        let scan = select(None, true, &["cert-manager-webhook"]).unwrap();
        assert!(scan.excludes("cert-manager-webhook"));
        assert!(!scan.excludes("other"));
    }

    #[test]
    fn the_message_names_what_was_deleted_or_why_nothing_was() {
        let one = Selection::Name("v1.x".into());
        assert_eq!(
            one.message("APIService", 0, &[], false),
            "no APIService named \"v1.x\" (nothing to do)"
        );
        let scan = Selection::Detect { exclude: vec![] };
        assert_eq!(
            scan.message("APIService", 3, &[], false),
            "nothing stale: left 3 APIService(s) alone"
        );
        let deleted = ["apiservice \"v1.x\"".to_owned()];
        assert_eq!(
            scan.message("APIService", 3, &deleted, true),
            "would delete apiservice \"v1.x\""
        );
    }
}
