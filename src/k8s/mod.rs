//! The Kubernetes vocabulary every action shares: names, durations, label selectors, paging,
//! nodes, slim views of the built-in objects read, the backend behind a Service reference, leases,
//! events, access reviews, ownership (GitOps, Helm, kubectl apply), safe deletes,
//! optimistic-concurrency retries and watches of one object.
//!
//! Nothing here knows any action; actions and the runbook (diagnose) build on it.

pub mod access;
pub mod backend;
pub mod delete;
pub mod duration;
pub mod events;
pub mod lease;
pub mod lock;
pub mod names;
pub mod nodes;
pub mod objects;
pub mod ownership;
pub mod paging;
pub mod retry;
pub mod selector;
pub mod watch;

/// Field manager recorded on every write kubemend makes.
pub const FIELD_MANAGER: &str = "kubemend";
