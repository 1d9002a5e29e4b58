//! The access keys the emulator accepts, and whose they are: the fixtures' long-term keys of
//! IAM users, and the temporary keys of the role sessions AssumeRole issued. `sts` issues
//! sessions into the registry; `sigv4` only looks up the key a request names.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use time::OffsetDateTime;

use super::fixtures::KeyFixture;

/// Sessions kept; the oldest go first. Expired ones are kept too, so they answer
/// `ExpiredToken` rather than `InvalidClientTokenId` for as long as they are held.
const MAX_SESSIONS: usize = 100_000;

/// What the emulator knows about an access key.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo {
    /// The account the key acts as: the user's, or the assumed role's.
    pub(crate) account: String,
    pub(crate) secret: String,
    pub(crate) session_token: Option<String>,
    pub(crate) holder: KeyHolder,
}

/// Whose key it is: a long-term key of an IAM user (from the fixtures), or the temporary
/// key of a role session (from AssumeRole).
#[derive(Clone, Debug)]
pub(crate) enum KeyHolder {
    User { name: String },
    Session(Arc<Session>),
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub(crate) access_key_id: String,
    pub(crate) account: String,
    pub(crate) holder: KeyHolder,
}

/// One session tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    pub(crate) key: String,
    pub(crate) value: String,
}

/// A role session AssumeRole handed out.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: String,
    /// The role's account: the one the session acts as.
    pub(crate) account: String,
    pub(crate) role_arn: String,
    pub(crate) role_name: String,
    pub(crate) role_id: String,
    pub(crate) session_name: String,
    /// `arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub(crate) assumed_role_arn: String,
    pub(crate) source_identity: Option<String>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) created: OffsetDateTime,
    pub(crate) expiration: OffsetDateTime,
}

impl Session {
    /// `AssumedRoleId`: the role id and the session name (`AROA...:SESSION`).
    pub(crate) fn assumed_role_id(&self) -> String {
        format!("{}:{}", self.role_id, self.session_name)
    }
}

#[derive(Debug, Default)]
struct Sessions {
    by_key: HashMap<String, Arc<Session>>,
    /// Access key ids, oldest first, to bound `by_key`.
    order: VecDeque<String>,
}

/// The fixtures' keys and the issued sessions, by access key id.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    users: RwLock<HashMap<String, KeyInfo>>,
    sessions: Mutex<Sessions>,
}

impl Keys {
    pub(crate) fn new(fixtures: &[KeyFixture]) -> Self {
        let keys = Keys::default();
        keys.seed(fixtures);
        keys
    }

    /// Adds (or replaces) long-term keys.
    pub(crate) fn seed(&self, fixtures: &[KeyFixture]) {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        for k in fixtures {
            users.insert(
                k.access_key_id.clone(),
                KeyInfo {
                    account: k.account.clone(),
                    secret: k.secret_access_key.clone(),
                    session_token: k.session_token.clone(),
                    holder: KeyHolder::User {
                        name: k.user_name().to_owned(),
                    },
                },
            );
        }
    }

    /// Back to `fixtures` only, with no sessions.
    pub(crate) fn reset(&self, fixtures: &[KeyFixture]) {
        self.users
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        *self.sessions.lock().unwrap_or_else(PoisonError::into_inner) = Sessions::default();
        self.seed(fixtures);
    }

    /// A fixture key, or else an issued session's key.
    pub(crate) fn lookup(&self, access_key_id: &str) -> Option<KeyInfo> {
        if let Some(key) = self
            .users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(access_key_id)
        {
            return Some(key.clone());
        }
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.by_key.get(access_key_id)?;
        Some(KeyInfo {
            account: session.account.clone(),
            secret: session.secret_access_key.clone(),
            session_token: Some(session.session_token.clone()),
            holder: KeyHolder::Session(session.clone()),
        })
    }

    /// Makes `session`'s key sign requests, forgetting the oldest sessions beyond the bound.
    pub(crate) fn add_session(&self, session: Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        while sessions.order.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.order.pop_front() {
                sessions.by_key.remove(&oldest);
            }
        }
        sessions.order.push_back(session.access_key_id.clone());
        sessions
            .by_key
            .insert(session.access_key_id.clone(), session);
    }

    /// Each long-term key's account, for the admin API's state (never a secret).
    pub(crate) fn accounts(&self) -> BTreeMap<String, String> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.account.clone()))
            .collect()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }
}
