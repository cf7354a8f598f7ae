//! Continue-token paging of list calls, so memory does not grow with the cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;

/// Items per page of a list call.
pub const PAGE_SIZE: u32 = 500;

/// Continue-token paging of a list call, [`PAGE_SIZE`] items a page:
/// `while let Some(params) = pages.next() { list(params); pages.advance(&list.metadata) }`.
#[derive(Debug)]
pub struct Pages {
    params: ListParams,
    done: bool,
}

impl Pages {
    #[must_use]
    pub fn new(params: ListParams) -> Self {
        Self {
            params: params.limit(PAGE_SIZE),
            done: false,
        }
    }

    /// Parameters for the next page, or `None` after the last.
    #[must_use]
    pub fn next(&self) -> Option<&ListParams> {
        (!self.done).then_some(&self.params)
    }

    /// Moves on past a page that the server answered with `meta`.
    pub fn advance(&mut self, meta: &ListMeta) {
        match meta.continue_.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => self.params.continue_token = Some(token.to_owned()),
            None => self.done = true,
        }
    }
}
