//! Optimistic concurrency: read, plan, write with the resourceVersion read, and on a conflict
//! (409) read and plan again, a bounded number of times.

use std::future::Future;

use crate::error::{Error, Result};

/// How many read-plan-write rounds before giving up on an object that keeps changing.
pub const MAX_ATTEMPTS: u32 = 5;

/// The result of one round.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Finished (written, or nothing to write).
    Done(T),
    /// The write met a conflict: read and plan again.
    Conflict,
}

/// Runs `round(attempt)` (attempt counts from 1) until it is [`Attempt::Done`], at most
/// [`MAX_ATTEMPTS`] times; then fails naming `object`.
pub async fn on_conflict<T, F, Fut>(object: &str, mut round: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Attempt<T>>>,
{
    for attempt in 1..=MAX_ATTEMPTS {
        match round(attempt).await? {
            Attempt::Done(value) => return Ok(value),
            Attempt::Conflict => {
                tracing::info!(attempt, object, "changed meanwhile (409), re-planning");
            }
        }
    }
    Err(Error::ConflictRetriesExhausted {
        object: object.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conflicts_are_retried_then_given_up_naming_the_object() {
        let mut calls = 0;
        let done = on_conflict("clusterrole \"x\"", |attempt| {
            calls += 1;
            async move {
                Ok(if attempt < 3 {
                    Attempt::Conflict
                } else {
                    Attempt::Done(attempt)
                })
            }
        })
        .await
        .unwrap();
        assert_eq!((done, calls), (3, 3));
        let err = on_conflict::<(), _, _>("clusterrole \"x\"", |_| async { Ok(Attempt::Conflict) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("clusterrole \"x\""), "{err}");
    }
}
