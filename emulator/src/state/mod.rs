//! Datashares, grants and associations, as Redshift keeps them, and the transitions between
//! them. Each rule says whether it comes from the service model's documentation ("model") or
//! is an assumption (listed in docs/emulator.md, "Assumptions"); an unmarked rule is Redshift's
//! documented behaviour, as docs/emulator.md, "Operations and state", describes it.
//!
//! - `model`: what the store holds, and a share as each side sees it.
//! - `seed`: building the state from fixtures.
//! - `transitions`: the operations that read and change it.
//!
//! Locking: the index (`shares`) is a `RwLock` taken for reading on every call and for writing
//! only when seeding; each datashare has its own `Mutex`, so calls on unrelated datashares never
//! wait for each other.

mod model;
mod seed;
mod transitions;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::EmulatorError;
use crate::arn::{DataShareArn, NamespaceArn, Region};
use crate::fixtures::Fixtures;
use crate::protocol::AwsError;

pub(crate) use model::{DataShareView, Side, TargetParams};
use model::{Namespace, Share};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a share lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The emulator's whole datashare state for one region.
#[derive(Debug)]
pub(crate) struct Store {
    region: Region,
    namespaces: RwLock<HashMap<String, Namespace>>,
    shares: RwLock<BTreeMap<String, Arc<Mutex<Share>>>>,
}

/// The store's part of the admin API's state.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Sorted by ARN.
    pub(crate) namespaces: Vec<Namespace>,
    /// Sorted by ARN.
    pub(crate) datashares: Vec<Share>,
}

fn not_found(arn: &str) -> AwsError {
    // Real AWS's message, which the Terraform AWS provider matches on (docs/emulator.md,
    // "Operations and state").
    AwsError::invalid_datashare(format!(
        "The datashare {arn} can't be found because the ARN doesn't exist."
    ))
}

impl Store {
    pub(crate) fn new(region: Region, fixtures: &Fixtures) -> Result<Self, EmulatorError> {
        let store = Store {
            region,
            namespaces: RwLock::new(HashMap::new()),
            shares: RwLock::new(BTreeMap::new()),
        };
        store.seed(fixtures)?;
        Ok(store)
    }

    pub(crate) fn region(&self) -> &str {
        self.region.as_str()
    }

    /// Looks up a share by ARN text; a malformed ARN is reported like an unknown one
    /// (assumption: AWS's answer to a malformed ARN has not been observed).
    fn share(&self, arn: &str) -> Result<Arc<Mutex<Share>>, AwsError> {
        let parsed = DataShareArn::parse(arn).map_err(|_| not_found(arn))?;
        self.shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&parsed.to_string())
            .cloned()
            .ok_or_else(|| not_found(arn))
    }

    fn all_shares(&self) -> Vec<Arc<Mutex<Share>>> {
        self.shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// A namespace ARN that exists and belongs to `account`, else `InvalidNamespaceFault`
    /// (model: "The namespace isn't valid because the namespace doesn't exist"; that another
    /// account's namespace is treated the same is an assumption).
    fn own_namespace(&self, arn: &str, account: &str) -> Result<String, AwsError> {
        let bad = || {
            AwsError::invalid_namespace(format!(
                "The namespace {arn} isn't valid because the namespace doesn't exist. Provide a valid namespace."
            ))
        };
        let parsed = NamespaceArn::parse(arn).map_err(|_| bad())?;
        let namespaces = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match namespaces.get(parsed.guid().as_str()) {
            Some(ns) if ns.arn == parsed.to_string() && ns.account == account => Ok(ns.arn.clone()),
            _ => Err(bad()),
        }
    }

    /// Namespaces and datashares, for the admin API.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let namespaces: BTreeMap<String, Namespace> = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|n| (n.arn.clone(), n.clone()))
            .collect();
        Snapshot {
            namespaces: namespaces.into_values().collect(),
            datashares: self.all_shares().iter().map(|s| lock(s).clone()).collect(),
        }
    }
}
