//! Calico's IPAM objects as the Kubernetes datastore stores them, and Calico's own algorithms
//! on them, applied to the stored JSON so that an object keeps exactly the fields it had (a
//! v3.13 block never gains a field v3.23 added).
//!
//! Sources: libcalico-go/lib/backend/model/block.go (the block's fields),
//! libcalico-go/lib/ipam/ipam_block.go `release` and `deleteAttributes` (freeing ordinals),
//! libcalico-go/lib/ipam/ipam_handle.go `decrementBlock` and
//! libcalico-go/lib/backend/k8s/resources/ipam_handle.go `DeleteKVP` (handles), all
//! projectcalico/calico@v3.32.1; the same in projectcalico/libcalico-go@release-v3.13 without
//! sequence numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::{Value, json};

/// A block's or a pool's CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.1.2.0/26` or `fd00::/122`; the address must be the network's first.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (ip, prefix) = text.split_once('/')?;
        let base: IpAddr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let bits = Self::bits_of(base);
        if prefix > bits {
            return None;
        }
        let cidr = Self { base, prefix };
        (cidr.host_bits() == 0 || Self::to_u128(base) & cidr.host_mask() == 0).then_some(cidr)
    }

    fn bits_of(ip: IpAddr) -> u8 {
        if ip.is_ipv4() { 32 } else { 128 }
    }

    fn host_bits(self) -> u8 {
        Self::bits_of(self.base) - self.prefix
    }

    fn host_mask(self) -> u128 {
        match self.host_bits() {
            128 => u128::MAX,
            n => (1_u128 << n) - 1,
        }
    }

    fn to_u128(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        }
    }

    /// How many addresses it holds (saturating for a /0 of IPv6).
    #[must_use]
    pub fn size(self) -> u128 {
        self.host_mask().saturating_add(1)
    }

    /// The address at `ordinal`, if inside.
    #[must_use]
    pub fn ip(self, ordinal: usize) -> Option<IpAddr> {
        let ordinal = u128::try_from(ordinal).ok()?;
        if ordinal > self.host_mask() {
            return None;
        }
        let n = Self::to_u128(self.base) + ordinal;
        Some(match self.base {
            IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).ok()?.into()),
            IpAddr::V6(_) => IpAddr::V6(n.into()),
        })
    }

    /// The ordinal of `ip`, if inside.
    #[must_use]
    pub fn ordinal(self, ip: IpAddr) -> Option<usize> {
        if ip.is_ipv4() != self.base.is_ipv4() {
            return None;
        }
        let offset = Self::to_u128(ip).checked_sub(Self::to_u128(self.base))?;
        (offset <= self.host_mask())
            .then(|| usize::try_from(offset).ok())
            .flatten()
    }

    /// Whether `ip` is inside.
    #[must_use]
    pub fn contains(self, ip: IpAddr) -> bool {
        self.ordinal(ip).is_some()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// libcalico-go's `sanitizeHandle`: handles written by a host-local migration carry `\r...`.
#[must_use]
pub fn sanitize_handle(handle: &str) -> &str {
    handle.split('\r').next().unwrap_or(handle)
}

/// The handle of the Windows reserved addresses, never released
/// (libcalico-go/lib/ipam/ipam.go `WindowsReservedHandle`).
pub const WINDOWS_RESERVED_HANDLE: &str = "windows-reserved-ipam-handle";

/// One attribute of a block: the handle and the owner it records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attribute {
    /// `handle_id`, sanitized.
    pub handle: Option<String>,
    /// `secondary`: `node`, `namespace`, `pod`, `type` (tunnel addresses), as written.
    pub owner: BTreeMap<String, String>,
}

/// An IPAMBlock as read.
#[derive(Debug, Clone)]
pub struct Block {
    /// Object name (the CIDR with `.`, `:` and `/` as `-`).
    pub name: String,
    /// UID.
    pub uid: String,
    /// The resourceVersion read, the compare-and-swap's precondition.
    pub resource_version: String,
    /// `spec.cidr`.
    pub cidr: Cidr,
    /// `spec.affinity`, e.g. `host:k8s01`.
    pub affinity: Option<String>,
    /// `spec.deleted`.
    pub deleted: bool,
    /// `spec.allocations`: for each ordinal, the index of its attribute, or free.
    pub allocations: Vec<Option<usize>>,
    /// `spec.unallocated`.
    pub unallocated: Vec<usize>,
    /// `spec.attributes`.
    pub attributes: Vec<Attribute>,
    /// `spec.sequenceNumberForAllocation` (v3.23+), when the block has the field.
    pub sequence: Option<BTreeMap<String, u64>>,
    /// The whole object as read.
    pub object: Value,
}

/// One allocated address of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// Its ordinal in the block.
    pub ordinal: usize,
    /// Its handle (sanitized), if its attribute has one.
    pub handle: Option<String>,
    /// Its owner attributes.
    pub owner: BTreeMap<String, String>,
    /// Its sequence number (v3.23+ blocks).
    pub sequence: Option<u64>,
}

impl Allocation {
    /// The node the allocation records (`secondary.node`), if any.
    #[must_use]
    pub fn node(&self) -> Option<&str> {
        self.owner.get("node").map(String::as_str)
    }

    /// `namespace/pod` of the allocation's pod, when it records one.
    #[must_use]
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.owner.get("namespace")?, self.owner.get("pod")?))
    }
}

impl Block {
    /// Reads a block from its stored JSON. `Err` says why the block is invalid (it is then
    /// reported and never written).
    pub fn from_object(object: Value) -> Result<Self, String> {
        let meta = &object["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let spec = &object["spec"];
        let cidr_text = spec["cidr"].as_str().ok_or("spec.cidr is missing")?;
        let cidr = Cidr::parse(cidr_text)
            .ok_or_else(|| format!("spec.cidr {cidr_text:?} is not a CIDR"))?;
        let size = usize::try_from(cidr.size())
            .ok()
            .filter(|s| *s <= 1 << 20)
            .ok_or_else(|| format!("spec.cidr {cidr} is larger than a Calico block can be"))?;
        let attributes: Vec<Attribute> = match &spec["attributes"] {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|a| Attribute {
                    handle: a["handle_id"]
                        .as_str()
                        .map(|h| sanitize_handle(h).to_owned()),
                    owner: a["secondary"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
            _ => return Err("spec.attributes is not a list".into()),
        };
        let allocations: Vec<Option<usize>> = match &spec["allocations"] {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(ordinal, v)| match v {
                    Value::Null => Ok(None),
                    v => v
                        .as_u64()
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|i| *i < attributes.len())
                        .map(Some)
                        .ok_or_else(|| {
                            format!("allocation {ordinal} points at no attribute ({v})")
                        }),
                })
                .collect::<Result<_, String>>()?,
            _ => return Err("spec.allocations is not a list".into()),
        };
        if allocations.len() != size {
            return Err(format!(
                "spec.allocations has {} entries for the {size} addresses of {cidr}",
                allocations.len()
            ));
        }
        let mut unallocated = Vec::new();
        for v in spec["unallocated"].as_array().into_iter().flatten() {
            let ordinal = v
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < size)
                .ok_or_else(|| format!("spec.unallocated holds {v}, not an ordinal of {cidr}"))?;
            unallocated.push(ordinal);
        }
        let free: BTreeSet<usize> = unallocated.iter().copied().collect();
        if free.len() != unallocated.len() {
            return Err("spec.unallocated lists an ordinal twice".into());
        }
        if let Some(both) = free.iter().find(|o| allocations[**o].is_some()) {
            return Err(format!(
                "ordinal {both} is both allocated and in spec.unallocated"
            ));
        }
        let sequence = match &spec["sequenceNumberForAllocation"] {
            Value::Null => None,
            Value::Object(map) => Some(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect(),
            ),
            _ => return Err("spec.sequenceNumberForAllocation is not a mapping".into()),
        };
        Ok(Self {
            name: text(&meta["name"]),
            uid: text(&meta["uid"]),
            resource_version: text(&meta["resourceVersion"]),
            cidr,
            affinity: spec["affinity"].as_str().map(str::to_owned),
            deleted: spec["deleted"].as_bool().unwrap_or(false),
            allocations,
            unallocated,
            attributes,
            sequence,
            object,
        })
    }

    /// The node of `host:<node>` affinity.
    #[must_use]
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity.as_deref()?.strip_prefix("host:")
    }

    /// Every allocated address.
    pub fn allocated(&self) -> impl Iterator<Item = Allocation> + '_ {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(|(ordinal, index)| {
                let attribute = &self.attributes[(*index)?];
                Some(Allocation {
                    ip: self.cidr.ip(ordinal)?,
                    ordinal,
                    handle: attribute.handle.clone(),
                    owner: attribute.owner.clone(),
                    sequence: self
                        .sequence
                        .as_ref()
                        .and_then(|s| s.get(&ordinal.to_string()).copied()),
                })
            })
    }

    /// How many addresses are allocated.
    #[must_use]
    pub fn allocated_count(&self) -> usize {
        self.allocations.iter().flatten().count()
    }

    /// Frees `releases` the way libcalico-go's `release` does, and returns the new object (to
    /// update with this block's resourceVersion): each ordinal must still be allocated under
    /// the same handle (and, where the block has sequence numbers, the same number), else
    /// nothing is changed and the mismatch is returned. The ordinal is nulled and appended to
    /// `unallocated`; attributes no longer referenced are dropped and the remaining
    /// allocations re-indexed; the ordinal's sequence entry is removed where that field
    /// exists. Every other field of the object is kept as read.
    pub fn release(&self, releases: &[Release]) -> Result<Value, String> {
        let mut freed: BTreeMap<usize, &Release> = BTreeMap::new();
        for r in releases {
            freed.insert(r.ordinal, r);
        }
        let mut released_refs: BTreeMap<usize, usize> = BTreeMap::new();
        for (ordinal, r) in &freed {
            let index = self
                .allocations
                .get(*ordinal)
                .copied()
                .flatten()
                .ok_or_else(|| {
                    format!("ordinal {ordinal} of {} is no longer allocated", self.cidr)
                })?;
            let handle = self.attributes[index].handle.as_deref();
            if handle != Some(r.handle.as_str()) {
                return Err(format!(
                    "ordinal {ordinal} of {} is now under handle {handle:?}, not {:?}",
                    self.cidr, r.handle
                ));
            }
            let sequence = self
                .sequence
                .as_ref()
                .and_then(|s| s.get(&ordinal.to_string()).copied());
            if sequence != r.sequence && self.sequence.is_some() {
                return Err(format!(
                    "ordinal {ordinal} of {} has sequence number {sequence:?}, not {:?}: it was \
                     allocated again",
                    self.cidr, r.sequence
                ));
            }
            *released_refs.entry(index).or_default() += 1;
        }
        let mut refs: BTreeMap<usize, usize> = BTreeMap::new();
        for index in self.allocations.iter().flatten() {
            *refs.entry(*index).or_default() += 1;
        }
        let dropped: BTreeSet<usize> = released_refs
            .iter()
            .filter(|(index, n)| refs.get(index) == Some(n))
            .map(|(index, _)| *index)
            .collect();
        // deleteAttributes: old index -> new index of the attributes kept.
        let mut new_index = vec![None; self.attributes.len()];
        let mut next = 0;
        for (old, slot) in new_index.iter_mut().enumerate() {
            if !dropped.contains(&old) {
                *slot = Some(next);
                next += 1;
            }
        }
        let mut object = self.object.clone();
        let spec = object
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or("the block has no spec")?;
        if let Some(Value::Array(attributes)) = spec.get_mut("attributes") {
            let kept: Vec<Value> = attributes
                .drain(..)
                .enumerate()
                .filter(|(i, _)| !dropped.contains(i))
                .map(|(_, a)| a)
                .collect();
            *attributes = kept;
        }
        let allocations: Vec<Value> = self
            .allocations
            .iter()
            .enumerate()
            .map(|(ordinal, index)| match index {
                Some(_) if freed.contains_key(&ordinal) => Value::Null,
                Some(i) => new_index[*i].map_or(Value::Null, |n| json!(n)),
                None => Value::Null,
            })
            .collect();
        spec.insert("allocations".into(), Value::Array(allocations));
        let mut unallocated = self.unallocated.clone();
        unallocated.extend(freed.keys());
        spec.insert("unallocated".into(), json!(unallocated));
        if let Some(Value::Object(sequence)) = spec.get_mut("sequenceNumberForAllocation") {
            for ordinal in freed.keys() {
                sequence.remove(&ordinal.to_string());
            }
        }
        Ok(object)
    }
}

/// One address to free in a block, with what it must still be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its ordinal.
    pub ordinal: usize,
    /// The handle it must still be allocated under.
    pub handle: String,
    /// The sequence number it must still have (blocks with sequence numbers).
    pub sequence: Option<u64>,
}

/// An IPAMHandle as read.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Object name (the handle id, lower-cased).
    pub name: String,
    /// UID, for the delete's precondition.
    pub uid: String,
    /// resourceVersion, for the update's and the delete's precondition.
    pub resource_version: String,
    /// `spec.handleID`.
    pub handle_id: String,
    /// `spec.block`: block CIDR → addresses the handle holds there.
    pub blocks: BTreeMap<String, i64>,
    /// `spec.deleted`.
    pub deleted: bool,
    /// `metadata.creationTimestamp`, in Unix seconds.
    pub created: Option<i64>,
    /// The whole object as read.
    pub object: Value,
}

impl Handle {
    /// Reads a handle from its stored JSON.
    #[must_use]
    pub fn from_object(object: Value) -> Self {
        let meta = &object["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let spec = &object["spec"];
        Self {
            name: text(&meta["name"]),
            uid: text(&meta["uid"]),
            resource_version: text(&meta["resourceVersion"]),
            handle_id: spec["handleID"]
                .as_str()
                .map_or_else(|| text(&meta["name"]), |h| sanitize_handle(h).to_owned()),
            blocks: spec["block"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_i64()?)))
                        .collect()
                })
                .unwrap_or_default(),
            deleted: spec["deleted"].as_bool().unwrap_or(false),
            created: meta["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(k8s_openapi::jiff::Timestamp::as_second),
            object,
        }
    }

    /// How many addresses the handle says it holds.
    #[must_use]
    pub fn total(&self) -> i64 {
        self.blocks.values().sum()
    }

    /// libcalico-go's `decrementBlock` of `count` addresses in `block` (a CIDR): the new object
    /// and whether the handle is now empty (then libcalico-go marks it deleted and deletes it).
    pub fn decrement(&self, block: &str, count: i64) -> Result<(Value, bool), String> {
        let current = *self.blocks.get(block).ok_or_else(|| {
            format!(
                "handle {:?} holds no address in block {block}",
                self.handle_id
            )
        })?;
        let left = current - count;
        if left < 0 {
            return Err(format!(
                "handle {:?} holds {current} address(es) in block {block}, fewer than the {count} \
                 released",
                self.handle_id
            ));
        }
        let mut object = self.object.clone();
        let blocks = object["spec"]
            .as_object_mut()
            .ok_or("the handle has no spec")?
            .entry("block")
            .or_insert_with(|| json!({}));
        if let Some(map) = blocks.as_object_mut() {
            if left == 0 {
                map.remove(block);
            } else {
                map.insert(block.to_owned(), json!(left));
            }
        }
        let empty = self
            .blocks
            .iter()
            .all(|(b, n)| b == block && left == 0 || *n == 0);
        Ok((object, empty))
    }

    /// The object marked `spec.deleted: true`, the update `DeleteKVP` sends before the delete
    /// (v3.32); a handle without that field (v3.13's IPAMHandleSpec has none) does not gain it
    /// and the update writes it as it is.
    #[must_use]
    pub fn marked_deleted(object: &Value) -> Value {
        let mut object = object.clone();
        if let Some(spec) = object["spec"].as_object_mut()
            && spec.contains_key("deleted")
        {
            spec.insert("deleted".into(), Value::Bool(true));
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3.13 block of 10.1.2.0/30 (4 addresses): .0 and .1 under handle a (one attribute),
    /// .2 under b, .3 free.
    fn v313_block() -> Value {
        json!({
            "apiVersion": "crd.projectcalico.org/v1", "kind": "IPAMBlock",
            "metadata": {"name": "10-1-2-0-30", "uid": "u1", "resourceVersion": "7"},
            "spec": {
                "cidr": "10.1.2.0/30", "affinity": "host:k8s02", "strictAffinity": false,
                "allocations": [0, 0, 1, null], "unallocated": [3],
                "attributes": [
                    {"handle_id": "k8s-pod-network.a", "secondary": {"namespace": "ci", "node": "k8s02", "pod": "pa"}},
                    {"handle_id": "k8s-pod-network.b", "secondary": {"namespace": "ci", "node": "k8s02", "pod": "pb"}}
                ],
                "deleted": false
            }
        })
    }

    fn release(ordinal: usize, handle: &str) -> Release {
        Release {
            ordinal,
            handle: handle.into(),
            sequence: None,
        }
    }

    #[test]
    fn cidr_maps_ordinals_to_addresses_both_ways() {
        let cidr = Cidr::parse("10.1.2.64/26").expect("a cidr");
        assert_eq!(cidr.size(), 64);
        assert_eq!(cidr.ip(5), Some("10.1.2.69".parse().expect("ip")));
        assert_eq!(cidr.ordinal("10.1.2.69".parse().expect("ip")), Some(5));
        assert_eq!(cidr.ip(64), None);
        assert!(!cidr.contains("10.1.2.128".parse().expect("ip")));
        assert!(!cidr.contains("fd00::1".parse().expect("ip")));
        let v6 = Cidr::parse("fd00:1::/122").expect("a cidr");
        assert_eq!(v6.ip(3), Some("fd00:1::3".parse().expect("ip")));
        assert_eq!(
            Cidr::parse("10.1.2.1/26"),
            None,
            "not the network's first address"
        );
        assert_eq!(Cidr::parse("10.1.2.0/33"), None);
        assert_eq!(cidr.to_string(), "10.1.2.64/26");
    }

    #[test]
    fn releasing_the_last_reference_drops_the_attribute_and_reindexes_the_rest() {
        let block = Block::from_object(v313_block()).expect("valid");
        assert_eq!(block.allocated_count(), 3);
        let after = block
            .release(&[
                release(0, "k8s-pod-network.a"),
                release(1, "k8s-pod-network.a"),
            ])
            .expect("released");
        let spec = &after["spec"];
        assert_eq!(spec["allocations"], json!([null, null, 0, null]));
        assert_eq!(spec["unallocated"], json!([3, 0, 1]));
        assert_eq!(
            spec["attributes"],
            json!([{"handle_id": "k8s-pod-network.b", "secondary": {"namespace": "ci", "node": "k8s02", "pod": "pb"}}])
        );
        // A v3.13 block gains no field.
        assert!(spec.get("sequenceNumberForAllocation").is_none(), "{spec}");
        assert_eq!(spec["affinity"], "host:k8s02");
        // Reads back valid.
        let again = Block::from_object(after).expect("valid after release");
        assert_eq!(again.allocated_count(), 1);
        assert_eq!(
            again.allocated().next().map(|a| a.handle),
            Some(Some("k8s-pod-network.b".into()))
        );
    }

    #[test]
    fn releasing_one_of_two_references_keeps_the_attribute() {
        let block = Block::from_object(v313_block()).expect("valid");
        let after = block
            .release(&[release(1, "k8s-pod-network.a")])
            .expect("released");
        assert_eq!(after["spec"]["allocations"], json!([0, null, 1, null]));
        assert_eq!(
            after["spec"]["attributes"].as_array().map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn an_address_now_under_another_handle_is_never_released() {
        let block = Block::from_object(v313_block()).expect("valid");
        let err = block
            .release(&[release(2, "k8s-pod-network.a")])
            .expect_err("a conflict");
        assert!(err.contains("now under handle"), "{err}");
        let err = block
            .release(&[release(3, "k8s-pod-network.a")])
            .expect_err("free already");
        assert!(err.contains("no longer allocated"), "{err}");
    }

    #[test]
    fn sequence_numbers_must_match_and_their_entry_goes() {
        let mut object = v313_block();
        object["spec"]["sequenceNumber"] = json!(12);
        object["spec"]["sequenceNumberForAllocation"] = json!({"0": 9, "1": 10, "2": 11});
        let block = Block::from_object(object).expect("valid");
        let stale = Release {
            sequence: Some(4),
            ..release(2, "k8s-pod-network.b")
        };
        assert!(
            block
                .release(&[stale])
                .expect_err("reallocated")
                .contains("allocated again")
        );
        let fresh = Release {
            sequence: Some(11),
            ..release(2, "k8s-pod-network.b")
        };
        let after = block.release(&[fresh]).expect("released");
        assert_eq!(
            after["spec"]["sequenceNumberForAllocation"],
            json!({"0": 9, "1": 10})
        );
        assert_eq!(after["spec"]["sequenceNumber"], json!(12));
    }

    #[test]
    fn invalid_blocks_say_why() {
        let mut object = v313_block();
        object["spec"]["allocations"] = json!([0, 0, 5, null]);
        assert!(
            Block::from_object(object)
                .expect_err("invalid")
                .contains("points at no attribute")
        );
        let mut object = v313_block();
        object["spec"]["unallocated"] = json!([3, 2]);
        assert!(
            Block::from_object(object)
                .expect_err("invalid")
                .contains("both allocated")
        );
        let mut object = v313_block();
        object["spec"]["allocations"] = json!([0, 0, 1]);
        assert!(
            Block::from_object(object)
                .expect_err("invalid")
                .contains("3 entries")
        );
    }

    #[test]
    fn handle_decrement_removes_the_block_entry_at_zero() {
        let handle = Handle::from_object(json!({
            "metadata": {"name": "k8s-pod-network.a", "uid": "h1", "resourceVersion": "3",
                         "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"handleID": "k8s-pod-network.a", "block": {"10.1.2.0/30": 2}, "deleted": false}
        }));
        assert_eq!(handle.total(), 2);
        assert_eq!(handle.created, Some(1_796_083_200));
        let (object, empty) = handle.decrement("10.1.2.0/30", 1).expect("decremented");
        assert!(!empty);
        assert_eq!(object["spec"]["block"], json!({"10.1.2.0/30": 1}));
        let (object, empty) = handle.decrement("10.1.2.0/30", 2).expect("decremented");
        assert!(empty);
        assert_eq!(object["spec"]["block"], json!({}));
        assert_eq!(
            Handle::marked_deleted(&object)["spec"]["deleted"],
            json!(true)
        );
        assert!(
            handle
                .decrement("10.1.2.0/30", 3)
                .expect_err("too many")
                .contains("fewer")
        );
        assert!(
            handle
                .decrement("10.1.3.0/30", 1)
                .expect_err("no entry")
                .contains("no address")
        );
    }
}
