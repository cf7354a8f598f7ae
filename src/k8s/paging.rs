//! Continue-token paging of list calls, so memory does not grow with the cluster, and bounded,
//! so a server whose `continue` token never ends (a proxy, a compromised apiserver) cannot make
//! a list go on for ever.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use kube::api::ListParams;

use crate::error::{Error, Result};

/// Items per page of a list call.
pub const PAGE_SIZE: u32 = 500;

/// Most items one list may hold: over three times the pods Kubernetes supports in one cluster
/// (150,000).
pub const MAX_ITEMS: usize = 500_000;

/// Most pages one list may take: twice what [`MAX_ITEMS`] needs in full pages, for servers that
/// fill their pages less.
pub const MAX_PAGES: usize = 2 * MAX_ITEMS / PAGE_SIZE as usize;

/// Continue-token paging of a list call, [`PAGE_SIZE`] items a page:
/// `while let Some(params) = pages.next() { list(params); pages.advance(&list.metadata, n)? }`.
#[derive(Debug)]
pub struct Pages {
    params: ListParams,
    what: String,
    done: bool,
    page_count: usize,
    item_count: usize,
    max_items: usize,
}

impl Pages {
    /// Pages through the list of `what` (`nodes`, `pods in kube-system`) for messages.
    #[must_use]
    pub fn new(params: ListParams, what: impl Into<String>) -> Self {
        Self {
            params: params.limit(PAGE_SIZE),
            what: what.into(),
            done: false,
            page_count: 0,
            item_count: 0,
            max_items: MAX_ITEMS,
        }
    }

    /// A lower bound on the items than [`MAX_ITEMS`] (and on the pages in proportion), for
    /// lists whose items are all kept (Nodes: Kubernetes supports 5,000).
    #[must_use]
    pub fn max_items(mut self, max: usize) -> Self {
        self.max_items = max.min(MAX_ITEMS);
        self
    }

    /// Parameters for the next page, or `None` after the last.
    #[must_use]
    pub fn next(&self) -> Option<&ListParams> {
        (!self.done).then_some(&self.params)
    }

    /// Moves on past a page of `items` items that the server answered with `meta`.
    ///
    /// # Errors
    /// [`Error::UntrustedAnswer`] when the list grows past its bound of items or pages, or the
    /// server hands back the token it was just given (a real apiserver never repeats one).
    pub fn advance(&mut self, meta: &ListMeta, items: usize) -> Result<()> {
        self.page_count += 1;
        self.item_count = self.item_count.saturating_add(items);
        let max_pages = (2 * self.max_items).div_ceil(PAGE_SIZE as usize).max(2);
        let token = meta.continue_.as_deref().filter(|t| !t.is_empty());
        let problem = if self.item_count > self.max_items {
            Some(format!(
                "it went past {} items ({} pages)",
                self.max_items, self.page_count
            ))
        } else if token.is_some() && self.page_count >= max_pages {
            Some(format!(
                "it had not ended after {} pages ({} items)",
                self.page_count, self.item_count
            ))
        } else if token.is_some() && token == self.params.continue_token.as_deref() {
            Some(format!(
                "page {} gave back the continue token it was asked with",
                self.page_count
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            self.done = true;
            return Err(Error::UntrustedAnswer {
                object: format!("the list of {}", self.what),
                problem,
                hint: "a real API server ends its lists: check that host or the kubeconfig \
                       points at the cluster's API server (not a proxy that loops)"
                    .into(),
            });
        }
        match token {
            Some(token) => self.params.continue_token = Some(token.to_owned()),
            None => self.done = true,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(token: Option<&str>) -> ListMeta {
        ListMeta {
            continue_: token.map(str::to_owned),
            ..ListMeta::default()
        }
    }

    #[test]
    fn pages_follow_the_continue_token_until_the_last() {
        let mut pages = Pages::new(ListParams::default(), "pods");
        assert_eq!(pages.next().unwrap().limit, Some(PAGE_SIZE));
        pages.advance(&page(Some("a")), 500).unwrap();
        assert_eq!(pages.next().unwrap().continue_token.as_deref(), Some("a"));
        pages.advance(&page(Some("")), 3).unwrap();
        assert!(pages.next().is_none());
    }

    #[test]
    fn an_endless_continue_token_stops_at_the_page_bound() {
        let mut pages = Pages::new(ListParams::default(), "pods");
        let mut asked = 0;
        let err = loop {
            assert!(pages.next().is_some());
            asked += 1;
            // Empty pages, a new token each time: never the item bound.
            if let Err(err) = pages.advance(&page(Some(&format!("t{asked}"))), 0) {
                break err;
            }
            assert!(asked <= MAX_PAGES, "still paging after {asked} pages");
        };
        assert_eq!(asked, MAX_PAGES);
        assert!(pages.next().is_none());
        let text = err.to_string();
        assert!(text.contains("the list of pods"), "{text}");
        assert!(err.hint().is_some());
    }

    #[test]
    fn full_pages_that_never_end_stop_at_the_item_bound() {
        let mut pages = Pages::new(ListParams::default(), "nodes").max_items(5_000);
        let mut asked = 0;
        while pages.next().is_some() {
            asked += 1;
            if pages
                .advance(&page(Some(&format!("t{asked}"))), PAGE_SIZE as usize)
                .is_err()
            {
                break;
            }
        }
        assert_eq!(asked, 11);
    }

    #[test]
    fn a_continue_token_given_back_unchanged_stops_at_once() {
        let mut pages = Pages::new(ListParams::default(), "nodes");
        pages.advance(&page(Some("same")), 1).unwrap();
        let err = pages.advance(&page(Some("same")), 1).unwrap_err();
        assert!(err.to_string().contains("gave back"), "{err}");
    }
}
