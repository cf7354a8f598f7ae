//! The backend behind a Service reference, as admission webhooks and aggregated APIs
//! (APIServices) name it: whether the Service exists, exposes the port called, and has a ready
//! endpoint for that port in its EndpointSlices.
//!
//! It is the evidence both stale_webhook and stale_apiservice judge on, read once per Service
//! and run ([`Backends`] caches what it read).
//!
//! # What counts
//! The Service port is found by number, as the API server does when it calls a webhook or an
//! aggregated API (kube-aggregator's availability controller, `staging/src/k8s.io/
//! kube-aggregator/pkg/controllers/status/remote/remote_available_controller.go`, compares
//! `port.Port` with the APIService's port and then looks for EndpointSlice ports of that
//! port's name). An endpoint whose ready condition is unset counts as ready (the
//! EndpointSlice API's rule, which the aggregator follows too).

use std::collections::BTreeMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use crate::client::Cluster;
use crate::error::Result;
use crate::k8s::objects::Service;

/// A Service reference: where a webhook or an aggregated API is called.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceRef {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port called (443 when the reference leaves it out).
    pub port: i32,
}

impl ServiceRef {
    /// `service namespace/name`, as evidence names it.
    #[must_use]
    pub fn label(&self) -> String {
        format!("service {}/{}", self.namespace, self.name)
    }
}

/// What stands behind a Service reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The Service does not exist.
    Missing,
    /// The Service is of type ExternalName: its backend is outside what the cluster shows.
    ExternalName,
    /// The Service exists but does not expose the port.
    NoPort,
    /// The Service exposes the port; this many endpoints for it are ready (0: none).
    Endpoints(usize),
}

impl Backend {
    /// Whether this is evidence that the backend is gone: no Service, no such port, or no
    /// ready endpoint for it.
    #[must_use]
    pub fn gone(&self) -> bool {
        matches!(self, Self::Missing | Self::NoPort | Self::Endpoints(0))
    }

    /// The evidence in words, e.g. `service a/b has no ready endpoint for port 443`.
    #[must_use]
    pub fn describe(&self, reference: &ServiceRef) -> String {
        let (label, port) = (reference.label(), reference.port);
        match self {
            Self::Missing => format!("{label} does not exist"),
            Self::ExternalName => format!("{label} is of type ExternalName"),
            Self::NoPort => format!("{label} has no port {port}"),
            Self::Endpoints(0) => format!("{label} has no ready endpoint for port {port}"),
            Self::Endpoints(ready) => {
                format!("{label} has {ready} ready endpoint(s) for port {port}")
            }
        }
    }
}

/// Ready endpoints serving `port_name` (`None`: the Service port is unnamed) in `slices`.
#[must_use]
pub fn ready_endpoints(slices: &[EndpointSlice], port_name: Option<&str>) -> usize {
    slices
        .iter()
        .filter(|slice| {
            // No ports listed means "all ports"; otherwise the Service port's name must appear.
            slice.ports.as_ref().is_none_or(|ports| {
                ports
                    .iter()
                    .any(|p| p.name.as_deref().unwrap_or("") == port_name.unwrap_or(""))
            })
        })
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|endpoint| {
            // A nil ready condition means unknown, which consumers treat as ready.
            endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true)
        })
        .count()
}

/// Reads Services and their EndpointSlices, once per Service.
#[derive(Debug)]
pub struct Backends<'a> {
    cluster: &'a Cluster,
    services: BTreeMap<(String, String), Option<Service>>,
    slices: BTreeMap<(String, String), Vec<EndpointSlice>>,
}

impl<'a> Backends<'a> {
    /// Nothing read yet.
    #[must_use]
    pub fn new(cluster: &'a Cluster) -> Self {
        Self {
            cluster,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
        }
    }

    /// What stands behind `reference`.
    pub async fn read(&mut self, reference: &ServiceRef) -> Result<Backend> {
        let key = (reference.namespace.clone(), reference.name.clone());
        let Some(service) = self.service(&key).await? else {
            return Ok(Backend::Missing);
        };
        let spec = service.spec.unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            return Ok(Backend::ExternalName);
        }
        let Some(service_port) = spec
            .ports
            .iter()
            .flatten()
            .find(|p| p.port == reference.port)
        else {
            return Ok(Backend::NoPort);
        };
        let slices = self.slices(&key).await?;
        Ok(Backend::Endpoints(ready_endpoints(
            slices,
            service_port.name.as_deref(),
        )))
    }

    async fn service(&mut self, key: &(String, String)) -> Result<Option<Service>> {
        if let Some(found) = self.services.get(key) {
            return Ok(found.clone());
        }
        let api: Api<Service> = Api::namespaced(self.cluster.client.clone(), &key.0);
        let found = api.get_opt(&key.1).await.map_err(
            self.cluster
                .error("get", format!("service {}/{}", key.0, key.1)),
        )?;
        self.services.insert(key.clone(), found.clone());
        Ok(found)
    }

    async fn slices(&mut self, key: &(String, String)) -> Result<&[EndpointSlice]> {
        if !self.slices.contains_key(key) {
            let api: Api<EndpointSlice> = Api::namespaced(self.cluster.client.clone(), &key.0);
            let params =
                ListParams::default().labels(&format!("kubernetes.io/service-name={}", key.1));
            let list = api.list(&params).await.map_err(self.cluster.error(
                "list",
                format!("endpointslices of service {}/{}", key.0, key.1),
            ))?;
            self.slices.insert(key.clone(), list.items);
        }
        Ok(self.slices.get(key).map(Vec::as_slice).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn slice(port: Option<&str>, ready: &[Option<bool>]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: ready
                .iter()
                .map(|r| Endpoint {
                    addresses: vec!["10.1.0.1".into()],
                    conditions: Some(EndpointConditions {
                        ready: *r,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                name: port.map(str::to_owned),
                port: Some(8443),
                ..EndpointPort::default()
            }]),
            ..EndpointSlice::default()
        }
    }

    #[test]
    fn only_ready_endpoints_on_the_called_port_count() {
        assert_eq!(ready_endpoints(&[], None), 0);
        assert_eq!(ready_endpoints(&[slice(None, &[Some(false)])], None), 0);
        assert_eq!(
            ready_endpoints(&[slice(None, &[Some(true), None])], None),
            2
        );
        assert_eq!(
            ready_endpoints(&[slice(Some("metrics"), &[Some(true)])], Some("https")),
            0
        );
        assert_eq!(
            ready_endpoints(&[slice(Some("https"), &[Some(true)])], Some("https")),
            1
        );
    }

    #[test]
    fn a_backend_is_gone_without_service_port_or_ready_endpoint_and_says_which() {
        let reference = ServiceRef {
            namespace: "newrelic".into(),
            name: "nri".into(),
            port: 443,
        };
        let gone = [Backend::Missing, Backend::NoPort, Backend::Endpoints(0)];
        assert!(gone.iter().all(Backend::gone));
        assert!(!Backend::Endpoints(2).gone());
        assert!(!Backend::ExternalName.gone());
        assert_eq!(
            Backend::Missing.describe(&reference),
            "service newrelic/nri does not exist"
        );
        assert_eq!(
            Backend::NoPort.describe(&reference),
            "service newrelic/nri has no port 443"
        );
        assert_eq!(
            Backend::Endpoints(0).describe(&reference),
            "service newrelic/nri has no ready endpoint for port 443"
        );
        assert_eq!(
            Backend::Endpoints(2).describe(&reference),
            "service newrelic/nri has 2 ready endpoint(s) for port 443"
        );
    }
}
