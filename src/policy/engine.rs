//! One loaded, validated policy set and the translation of a call into a Cedar request.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    Policy, PolicySet, PrincipalConstraint, Request, RestrictedExpression, Schema,
};

use crate::call::{ContextValue, Decision, FieldValue, PolicyInput, PolicyResource, Principal};
use crate::policy::Evaluation;
use crate::policy::load::Source;

/// The Cedar names the gateway uses; the schema must declare them.
pub(super) const PRINCIPAL_TYPE: &str = "Service";
pub(super) const DATASHARE_TYPE: &str = "DataShare";
pub(super) const CONSUMER_ACCOUNT_TYPE: &str = "ConsumerAccount";
pub(super) const APPROVAL_TYPE: &str = "Approval";
pub(super) const APPROVAL_LIST_TYPE: &str = "ApprovalList";
/// The one `ApprovalList` entity: every approval, which listing is about.
pub(super) const APPROVAL_LIST_ID: &str = "approvals";

/// An immutable, validated policy set, ready to evaluate. Swapped whole on reload.
///
/// Cedar evaluates every policy of a set for every request, so the set is sliced once at load by
/// what a policy's scope can match: the request's action (a policy for `Approve` never applies
/// to `AssociateConsumer`) and, for per-service rules (`principal == Service::"..."`, most of a
/// large org set), its principal. A call is evaluated against the slice for its action, with its
/// own principal's policies when some name it. Skipped policies cannot be satisfied and, their
/// scope failing first, cannot error either, so decisions and determining policies are unchanged.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// By action id: the policies that can apply to it and do not pin one principal.
    general: HashMap<String, PolicySet>,
    /// For each principal some policy pins, by action id: `general` plus the pinned policies
    /// that can apply to the action (only actions some pinned policy can apply to).
    by_principal: HashMap<EntityUid, HashMap<String, PolicySet>>,
    #[cfg(test)]
    full: PolicySet,
    schema: Schema,
    /// By id, the schema's action entities (each with all its groups as ancestors), the
    /// request's one added to its entities when some action belongs to an action group; empty
    /// otherwise. Without groups it changes nothing (`action in A` is then `action == A`, which
    /// Cedar decides without the entity). `action in G` needs only the action's own entity.
    grouped_actions: HashMap<String, Entity>,
    authorizer: Authorizer,
    ids: Vec<String>,
    /// Its files and fingerprint, for logs, `policy validate` and `policy_set_info`.
    source: Source,
    principal_type: EntityTypeName,
    datashare_type: EntityTypeName,
    consumer_account_type: EntityTypeName,
    approval_type: EntityTypeName,
    approval_list_type: EntityTypeName,
    /// The schema's actions by id, parsed once.
    action_uids: HashMap<String, EntityUid>,
    /// Each caller's entity, built once: callers are few and their groups fixed by the
    /// configuration, and building one evaluates its attributes. Replaced whole on insert, so
    /// that a call only ever reads it.
    principals: ArcSwap<HashMap<String, PrincipalEntity>>,
    /// Each (caller, action, resource) pair's entities, built once when the resource's
    /// attributes follow from its name (a datashare, a consumer account; not an approval, whose
    /// state changes): building them was a third of an evaluation. Replaced whole on insert.
    entities: ArcSwap<HashMap<EntitiesKey, CachedEntities>>,
    /// Each request context seen, built once: contexts are few (accounts, kinds, flags).
    contexts: ArcSwap<HashMap<Vec<(&'static str, ContextValue)>, Context>>,
}

/// A resource whose entity depends on its name only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum StableResource {
    DataShare(crate::arn::DataShareArn),
    ConsumerAccount(crate::arn::AccountId),
}

impl StableResource {
    fn of(resource: &PolicyResource) -> Option<Self> {
        match resource {
            PolicyResource::DataShare(share) => Some(StableResource::DataShare(share.clone())),
            PolicyResource::ConsumerAccount(account) => {
                Some(StableResource::ConsumerAccount(account.clone()))
            }
            PolicyResource::Approval(_) | PolicyResource::ApprovalList => None,
        }
    }
}

/// Caller id, action id, resource.
type EntitiesKey = (String, &'static str, StableResource);

/// A pair's entities, the caller's groups they were built with, and the resource's uid.
#[derive(Clone, Debug)]
struct CachedEntities {
    groups: Vec<String>,
    entities: Arc<Entities>,
    resource: EntityUid,
}

/// A caller's entity and the groups it was built with.
#[derive(Clone, Debug)]
struct PrincipalEntity {
    groups: Vec<String>,
    entity: Entity,
}

/// The most callers whose entities are kept: in insecure mode a caller can name itself anything,
/// and past this each call builds its own.
const PRINCIPAL_CACHE: usize = 1024;
/// The most (caller, action, resource) entity sets and contexts kept; past this each call builds
/// its own.
const REQUEST_CACHE: usize = 4096;

/// Why a call could not be turned into a Cedar request (a schema that does not fit the gateway).
/// Cedar's errors are large, so they are boxed.
#[derive(Debug, thiserror::Error)]
pub(super) enum BuildError {
    #[error("entity does not fit the schema: {0}")]
    Entities(#[source] Box<cedar_policy::entities_errors::EntitiesError>),
    #[error("entity attribute: {0}")]
    Attribute(#[source] Box<cedar_policy::EntityAttrEvaluationError>),
    #[error("context: {0}")]
    Context(#[source] Box<cedar_policy::ContextCreationError>),
    #[error("request does not fit the schema: {0}")]
    Request(#[source] Box<cedar_policy::RequestValidationError>),
    #[error("name: {0}")]
    Name(#[source] Box<cedar_policy::ParseErrors>),
    #[error("policy set: {0}")]
    Set(#[source] Box<cedar_policy::PolicySetError>),
    #[error("the schema declares no action {0:?}")]
    UnknownAction(&'static str),
}

macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for BuildError {
            fn from(err: $ty) -> Self {
                BuildError::$variant(Box::new(err))
            }
        })*
    };
}

boxed_from!(
    Entities(cedar_policy::entities_errors::EntitiesError),
    Attribute(cedar_policy::EntityAttrEvaluationError),
    Context(cedar_policy::ContextCreationError),
    Request(cedar_policy::RequestValidationError),
    Name(cedar_policy::ParseErrors),
    Set(cedar_policy::PolicySetError),
);

impl Snapshot {
    pub(super) fn new(set: PolicySet, schema: Schema, source: Source) -> Result<Self, BuildError> {
        let mut ids: Vec<String> = set.policies().map(|p| p.id().to_string()).collect();
        ids.sort();
        let action_entities = schema.action_entities()?;
        let action_uids: HashMap<String, EntityUid> = action_entities
            .iter()
            .map(|action| (action.uid().id().unescaped().to_owned(), action.uid()))
            .collect();
        let mut unpinned = Vec::new();
        let mut pinned: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for policy in set.policies() {
            match policy.principal_constraint() {
                PrincipalConstraint::Eq(uid) => pinned.entry(uid).or_default().push(policy.clone()),
                _ => unpinned.push(policy.clone()),
            }
        }
        let applying = |policies: &[Policy], action: &EntityUid| -> Vec<Policy> {
            policies
                .iter()
                .filter(|p| can_apply(p, action, &action_entities))
                .cloned()
                .collect()
        };
        // Each action's general policies, worked out once for the general slice and every
        // principal's.
        let general: HashMap<&String, Vec<Policy>> = action_uids
            .iter()
            .map(|(name, uid)| (name, applying(&unpinned, uid)))
            .collect();
        let mut by_principal = HashMap::with_capacity(pinned.len());
        for (principal, policies) in pinned {
            let mut by_action = HashMap::new();
            for (name, uid) in &action_uids {
                let own = applying(&policies, uid);
                if !own.is_empty() {
                    let slice = general[name].iter().cloned().chain(own);
                    by_action.insert(name.clone(), policy_set(slice)?);
                }
            }
            by_principal.insert(principal, by_action);
        }
        let general = general
            .into_iter()
            .map(|(name, policies)| Ok((name.clone(), policy_set(policies)?)))
            .collect::<Result<_, BuildError>>()?;
        Ok(Snapshot {
            general,
            by_principal,
            #[cfg(test)]
            full: set,
            grouped_actions: grouped_actions(&action_entities),
            schema,
            authorizer: Authorizer::new(),
            ids,
            source,
            principal_type: PRINCIPAL_TYPE.parse()?,
            datashare_type: DATASHARE_TYPE.parse()?,
            consumer_account_type: CONSUMER_ACCOUNT_TYPE.parse()?,
            approval_type: APPROVAL_TYPE.parse()?,
            approval_list_type: APPROVAL_LIST_TYPE.parse()?,
            action_uids,
            principals: ArcSwap::default(),
            entities: ArcSwap::default(),
            contexts: ArcSwap::default(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(super) fn ids(&self) -> &[String] {
        &self.ids
    }

    pub(super) fn summary(&self) -> super::SetSummary {
        super::SetSummary {
            ids: self.ids.clone(),
            files: self.source.files.clone(),
            sha256: self.source.sha256.clone(),
        }
    }

    pub(super) fn evaluate(&self, principal: &Principal, input: &PolicyInput) -> Evaluation {
        let entity = match self.principal_entity(principal) {
            Ok(entity) => entity,
            Err(err) => return refused(&err),
        };
        // Every action the schema declares has a general slice, even an empty one.
        let Some(general) = self.general.get(input.action) else {
            return refused(&BuildError::UnknownAction(input.action));
        };
        let set = self
            .by_principal
            .get(&entity.uid())
            .and_then(|by_action| by_action.get(input.action))
            .unwrap_or(general);
        match self.trusted_request(principal, entity, input) {
            Ok((request, entities)) => self.decide(set, &request, &entities),
            Err(err) => refused(&err),
        }
    }

    /// The schema's action ids, for tests that go through every action.
    #[cfg(test)]
    pub(super) fn action_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .action_uids
            .keys()
            .map(|name| &*Box::leak(name.clone().into_boxed_str()))
            .collect();
        names.sort_unstable();
        names
    }

    /// Evaluation against the whole, unsliced set: the reference the slicing is tested against.
    #[cfg(test)]
    pub(super) fn evaluate_unsliced(
        &self,
        principal: &Principal,
        input: &PolicyInput,
    ) -> Evaluation {
        // Built afresh, without the caches: the reference the cached path is tested against.
        let built = self
            .principal_entity(principal)
            .and_then(|entity| self.build_with(entity, input, Checks::Trusted));
        match built {
            Ok((request, entities)) => self.decide(&self.full, &request, &entities),
            Err(err) => refused(&err),
        }
    }

    /// The caller's entity: `Service::"<id>"` with its `groups`, from the cache when it holds
    /// one built with the same groups.
    fn principal_entity(&self, principal: &Principal) -> Result<Entity, BuildError> {
        if let Some(cached) = self.principals.load().get(&principal.id)
            && cached.groups == principal.groups
        {
            return Ok(cached.entity.clone());
        }
        let entity = self.new_principal_entity(principal)?;
        let cached = PrincipalEntity {
            groups: principal.groups.clone(),
            entity: entity.clone(),
        };
        remember(&self.principals, &principal.id, cached, PRINCIPAL_CACHE);
        Ok(entity)
    }

    fn new_principal_entity(&self, principal: &Principal) -> Result<Entity, BuildError> {
        let uid = EntityUid::from_type_name_and_id(
            self.principal_type.clone(),
            EntityId::new(&principal.id),
        );
        let groups = RestrictedExpression::new_set(
            principal
                .groups
                .iter()
                .cloned()
                .map(RestrictedExpression::new_string),
        );
        Ok(Entity::new(
            uid,
            HashMap::from([("groups".to_owned(), groups)]),
            HashSet::new(),
        )?)
    }

    /// The request for a call and its entities, unchecked (see [`Checks::Trusted`]), from the
    /// caches when they hold them.
    fn trusted_request(
        &self,
        principal: &Principal,
        principal_entity: Entity,
        input: &PolicyInput,
    ) -> Result<(Request, Arc<Entities>), BuildError> {
        let action = self
            .action_uids
            .get(input.action)
            .ok_or(BuildError::UnknownAction(input.action))?
            .clone();
        let principal_uid = principal_entity.uid();
        let stable = StableResource::of(&input.resource);
        let key = stable.map(|resource| (principal.id.clone(), input.action, resource));
        let cached = key.as_ref().and_then(|key| {
            self.entities
                .load()
                .get(key)
                .filter(|cached| cached.groups == principal.groups)
                .cloned()
        });
        let (entities, resource_uid) = match cached {
            Some(cached) => (cached.entities, cached.resource),
            None => {
                let resource_entity = self.resource_entity(&input.resource)?;
                let resource_uid = resource_entity.uid();
                let entities = Arc::new(self.trusted_entities(
                    principal_entity,
                    resource_entity,
                    input.action,
                )?);
                if let Some(key) = key {
                    let cached = CachedEntities {
                        groups: principal.groups.clone(),
                        entities: Arc::clone(&entities),
                        resource: resource_uid.clone(),
                    };
                    remember(&self.entities, &key, cached, REQUEST_CACHE);
                }
                (entities, resource_uid)
            }
        };
        let context = match self.contexts.load().get(input.context.as_slice()) {
            Some(context) => context.clone(),
            None => {
                let context = self.context(input)?;
                remember(
                    &self.contexts,
                    &input.context,
                    context.clone(),
                    REQUEST_CACHE,
                );
                context
            }
        };
        let schema = self.schema_for(Checks::Trusted);
        let request = Request::new(principal_uid, action, resource_uid, context, schema)?;
        Ok((request, entities))
    }

    fn schema_for(&self, checks: Checks) -> Option<&Schema> {
        match checks {
            Checks::AgainstSchema => Some(&self.schema),
            Checks::Trusted => None,
        }
    }

    /// The caller's and the resource's entities, and the action's when actions are grouped.
    fn trusted_entities(
        &self,
        principal: Entity,
        resource: Entity,
        action: &str,
    ) -> Result<Entities, BuildError> {
        Ok(Entities::from_entities(
            self.grouped_actions
                .get(action)
                .cloned()
                .into_iter()
                .chain([principal, resource]),
            None,
        )?)
    }

    fn context(&self, input: &PolicyInput) -> Result<Context, BuildError> {
        Ok(Context::from_pairs(input.context.iter().map(
            |(name, value)| {
                let value = match value {
                    ContextValue::String(s) => RestrictedExpression::new_string(s.clone()),
                    ContextValue::Bool(b) => RestrictedExpression::new_bool(*b),
                    ContextValue::Long(n) => RestrictedExpression::new_long(*n),
                };
                ((*name).to_owned(), value)
            },
        ))?)
    }

    /// Cedar's answer to `request` under `set`, with its determining policies and errors.
    fn decide(&self, set: &PolicySet, request: &Request, entities: &Entities) -> Evaluation {
        let response = self.authorizer.is_authorized(request, set, entities);
        let mut determining_policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        determining_policies.sort();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            tracing::warn!(errors = ?errors, "policies failed to evaluate and count as not satisfied");
        }
        Evaluation {
            decision: Decision {
                allowed: response.decision() == cedar_policy::Decision::Allow,
                determining_policies,
            },
            errors,
        }
    }

    /// The Cedar request and entities for a call, checked against the schema when `checks` says.
    pub(super) fn build(
        &self,
        principal: &Principal,
        input: &PolicyInput,
        checks: Checks,
    ) -> Result<(Request, Entities), BuildError> {
        self.build_with(self.new_principal_entity(principal)?, input, checks)
    }

    fn build_with(
        &self,
        principal_entity: Entity,
        input: &PolicyInput,
        checks: Checks,
    ) -> Result<(Request, Entities), BuildError> {
        let schema = self.schema_for(checks);
        let principal_uid = principal_entity.uid();
        let resource_entity = self.resource_entity(&input.resource)?;
        let resource_uid = resource_entity.uid();
        let entities = match schema {
            // The schema adds its action entities itself.
            Some(schema) => {
                Entities::from_entities([principal_entity, resource_entity], Some(schema))?
            }
            None => self.trusted_entities(principal_entity, resource_entity, input.action)?,
        };
        let context = self.context(input)?;
        let action = self
            .action_uids
            .get(input.action)
            .ok_or(BuildError::UnknownAction(input.action))?
            .clone();
        let cedar_request = Request::new(principal_uid, action, resource_uid, context, schema)?;
        Ok((cedar_request, entities))
    }

    fn resource_entity(&self, resource: &PolicyResource) -> Result<Entity, BuildError> {
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        Ok(match resource {
            PolicyResource::DataShare(share) => Entity::new(
                EntityUid::from_type_name_and_id(
                    self.datashare_type.clone(),
                    EntityId::new(share.to_string()),
                ),
                HashMap::from([
                    ("partition".to_owned(), string(share.partition.as_str())),
                    ("region".to_owned(), string(share.region.as_str())),
                    (
                        "producer_account".to_owned(),
                        string(share.account.as_str()),
                    ),
                    (
                        "producer_namespace".to_owned(),
                        string(share.namespace.as_str()),
                    ),
                    ("name".to_owned(), string(&share.name)),
                ]),
                HashSet::new(),
            )?,
            PolicyResource::ConsumerAccount(account) => Entity::new_no_attrs(
                EntityUid::from_type_name_and_id(
                    self.consumer_account_type.clone(),
                    EntityId::new(account.as_str()),
                ),
                HashSet::new(),
            ),
            PolicyResource::Approval(approval) => {
                let request = &approval.request;
                // The requester is an entity, so a policy can say `resource.requester == principal`.
                let requester =
                    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
                        self.principal_type.clone(),
                        EntityId::new(&approval.requester),
                    ));
                // Each semantic field is an attribute of the same name, so a policy reads an
                // approval of any operation as `resource.<field>` (the schema declares them).
                let mut attributes: HashMap<String, RestrictedExpression> = request
                    .fields
                    .iter()
                    .map(|field| {
                        let value = match &field.value {
                            FieldValue::Text(text) => string(text),
                            FieldValue::Flag(flag) => RestrictedExpression::new_bool(*flag),
                        };
                        (field.name.clone(), value)
                    })
                    .collect();
                attributes.extend([
                    ("requester".to_owned(), requester),
                    ("method".to_owned(), string(request.method)),
                    (
                        "required_approvals".to_owned(),
                        RestrictedExpression::new_long(i64::from(approval.required_approvals)),
                    ),
                    ("state".to_owned(), string(approval.state.as_str())),
                ]);
                Entity::new(
                    EntityUid::from_type_name_and_id(
                        self.approval_type.clone(),
                        EntityId::new(&approval.id),
                    ),
                    attributes,
                    HashSet::new(),
                )?
            }
            PolicyResource::ApprovalList => Entity::new_no_attrs(
                EntityUid::from_type_name_and_id(
                    self.approval_list_type.clone(),
                    EntityId::new(APPROVAL_LIST_ID),
                ),
                HashSet::new(),
            ),
        })
    }
}

/// Keeps `value` under `key` in a read-mostly cache (replaced whole, so readers never wait),
/// unless it already holds `bound` other entries.
fn remember<K, V>(cache: &ArcSwap<HashMap<K, V>>, key: &K, value: V, bound: usize)
where
    K: Clone + Eq + std::hash::Hash,
    V: Clone,
{
    cache.rcu(|all| {
        let mut all = HashMap::clone(all);
        if all.len() < bound || all.contains_key(key) {
            all.insert(key.clone(), value.clone());
        }
        all
    });
}

/// Fail closed: a call the schema cannot describe is denied, and the operator told.
fn refused(err: &BuildError) -> Evaluation {
    tracing::error!(error = %err, "cannot build the Cedar request; denying");
    Evaluation {
        decision: Decision {
            allowed: false,
            determining_policies: Vec::new(),
        },
        errors: vec![err.to_string()],
    }
}

/// Whether `policy`'s action scope can match requests for `action` (directly, or as a member of
/// a group it names).
fn can_apply(policy: &Policy, action: &EntityUid, actions: &Entities) -> bool {
    let is = |named: &EntityUid| {
        named == action
            || actions
                .ancestors(action)
                .is_some_and(|mut groups| groups.any(|group| group == named))
    };
    match policy.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(named) => named == *action,
        ActionConstraint::In(named) => named.iter().any(is),
    }
}

fn policy_set(policies: impl IntoIterator<Item = Policy>) -> Result<PolicySet, BuildError> {
    let mut set = PolicySet::new();
    for policy in policies {
        set.add(policy)?;
    }
    Ok(set)
}

fn grouped_actions(actions: &Entities) -> HashMap<String, Entity> {
    let grouped = actions.iter().any(|a| {
        actions
            .ancestors(&a.uid())
            .is_some_and(|mut parents| parents.next().is_some())
    });
    if grouped {
        actions
            .iter()
            .map(|action| (action.uid().id().unescaped().to_owned(), action.clone()))
            .collect()
    } else {
        HashMap::new()
    }
}

/// Whether [`Snapshot::build`] checks the request and entities against the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checks {
    /// Check everything: used once at load, on a probe request.
    AgainstSchema,
    /// Skip the checks. The request's shape (attribute names and types) is fixed by this code
    /// and only values vary, so the load-time probe proves every request conforms; the checks
    /// would cost more than evaluating a small policy set.
    Trusted,
}
