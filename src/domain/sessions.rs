//! Which sessions are live, and with which role, answered from memory on every call.
//!
//! Access tokens stay stateless to verify, but the token alone would let a logged-out session, a
//! session whose password changed, or a demoted admin keep their rights until the token expires,
//! and a token naming an account that no longer exists would reach the handlers. So each replica
//! keeps what the database says about the sessions it has seen: the session's user, that user's
//! current role, or that the session has ended. A session is read from the database once per
//! replica; after that it costs a hash lookup. Logout, refresh-token reuse, password changes and
//! role changes write a `session_events` row in the same transaction as the change, and every
//! replica polls that table and forgets what the events name, so a revocation bites on every
//! replica within one poll interval.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use super::{
    Error,
    auth::{Principal, Role, SessionId, UserId},
    product::Timestamp,
};
use crate::{
    periodic::Ticks,
    store::{Db, StoreError, auth::SessionEventRow},
};

/// How often replicas read new session events: the bound on how long a revoked session works.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events are read again for this long after they were written, because an event committed
/// late (a slow transaction, a writer's clock behind ours) may carry a time already passed.
const LOOKBACK_MICROS: i64 = 10_000_000;
/// Events older than this are deleted: every replica has long applied them.
const KEEP_EVENTS_MICROS: i64 = 24 * 3600 * 1_000_000;
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Bound on remembered sessions; past it the memory starts over (each session then costs one
/// more database read).
const MAX_REMEMBERED: usize = 200_000;
const EVENTS_PER_POLL: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Live { user_id: UserId, role: Role },
    Ended,
}

#[derive(Default)]
struct Memory {
    sessions: HashMap<SessionId, Standing>,
    by_user: HashMap<UserId, Vec<SessionId>>,
    /// Bumped whenever events are applied. A database read that began before an event was
    /// applied may predate the change it names, so its answer is used once but not kept.
    epoch: u64,
}

impl Memory {
    /// Forgets what it knows of one session; the next call reads it from the database.
    fn forget_session(&mut self, session_id: SessionId) {
        self.epoch += 1;
        self.sessions.remove(&session_id);
    }

    /// Forgets every session of one user.
    fn forget_user(&mut self, user_id: UserId) {
        self.epoch += 1;
        for session in self.by_user.remove(&user_id).unwrap_or_default() {
            self.sessions.remove(&session);
        }
    }
}

#[derive(Clone)]
pub struct Sessions {
    db: Db,
    memory: Arc<RwLock<Memory>>,
}

const ENDED: &str = "the session has ended (logged out, password changed, or the account is gone); log in again";

impl Sessions {
    pub fn new(db: Db) -> Self {
        Self { db, memory: Arc::default() }
    }

    /// The caller behind a verified access token: its session must be live and belong to
    /// `user_id`, and the role is the user's current one, not the one the token was issued with.
    pub async fn principal(&self, user_id: UserId, session_id: SessionId) -> Result<Principal, Error> {
        let (known, epoch) = {
            let memory = self.memory.read().expect("sessions lock");
            (memory.sessions.get(&session_id).copied(), memory.epoch)
        };
        let standing = match known {
            Some(standing) => standing,
            None => self.load(session_id, epoch).await?,
        };
        match standing {
            Standing::Live { user_id: owner, role } if owner == user_id => {
                Ok(Principal::User { user_id, role, session_id })
            }
            _ => Err(Error::Unauthenticated(ENDED)),
        }
    }

    async fn load(&self, session_id: SessionId, epoch: u64) -> Result<Standing, Error> {
        let row = self.db.session_owner(&session_id.to_string()).await?;
        let standing = match row {
            Some((user, role, false)) => Standing::Live {
                user_id: user
                    .parse()
                    .map_err(|_| Error::Unexpected(anyhow::anyhow!("unreadable sessions.user_id `{user}`")))?,
                role: Role::parse(&role)
                    .ok_or_else(|| Error::Unexpected(anyhow::anyhow!("unreadable users.role `{role}`")))?,
            },
            Some((_, _, true)) | None => Standing::Ended,
        };
        let mut memory = self.memory.write().expect("sessions lock");
        if memory.epoch == epoch {
            if memory.sessions.len() >= MAX_REMEMBERED {
                memory.sessions.clear();
                memory.by_user.clear();
            }
            memory.sessions.insert(session_id, standing);
            if let Standing::Live { user_id, .. } = standing {
                memory.by_user.entry(user_id).or_default().push(session_id);
            }
        }
        Ok(standing)
    }

    /// Forgets a session on this replica at once; the others learn it from its event.
    pub fn forget_session(&self, session_id: SessionId) {
        self.memory.write().expect("sessions lock").forget_session(session_id);
    }

    /// Forgets every session of a user on this replica at once (role or password changed).
    pub fn forget_user(&self, user_id: UserId) {
        self.memory.write().expect("sessions lock").forget_user(user_id);
    }

    /// Forgets what `events` name. Unreadable ids are skipped: they name nothing we remember.
    fn apply(&self, events: &[SessionEventRow]) {
        let mut memory = self.memory.write().expect("sessions lock");
        for event in events {
            if let Some(session) = event.session_id.as_deref().and_then(|s| s.parse::<SessionId>().ok()) {
                memory.forget_session(session);
            }
            if let Some(user) = event.user_id.as_deref().and_then(|u| u.parse::<UserId>().ok()) {
                memory.forget_user(user);
            }
        }
    }

    /// Applies session events as they are written, until `stop`; prunes old ones now and then.
    pub async fn follow(self, stop: impl Future<Output = ()>) {
        let mut cursor = EventCursor::starting_at(Timestamp::now().0 - LOOKBACK_MICROS);
        let mut last_prune = tokio::time::Instant::now();
        let mut ticks = Ticks::new(POLL_INTERVAL, stop);
        while ticks.next().await {
            if let Err(e) = self.poll(&mut cursor).await {
                tracing::warn!(error = %e, "reading session events failed; retrying");
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                if let Err(e) = self.db.prune_session_events(Timestamp::now().0 - KEEP_EVENTS_MICROS).await {
                    tracing::warn!(error = %e, "pruning session events failed");
                }
            }
        }
    }

    async fn poll(&self, cursor: &mut EventCursor) -> Result<(), StoreError> {
        let rows = self.db.session_events_since(cursor.since, EVENTS_PER_POLL).await?;
        let fresh = cursor.take_unseen(rows);
        if !fresh.is_empty() {
            self.apply(&fresh);
        }
        Ok(())
    }
}

/// Which events have been applied, by id, over the lookback window.
struct EventCursor {
    since: i64,
    applied: HashMap<i64, i64>,
}

impl EventCursor {
    fn starting_at(since: i64) -> Self {
        Self { since, applied: HashMap::new() }
    }

    /// The rows not applied before, remembered as applied now; the window moves up to the
    /// newest event's time minus the lookback.
    fn take_unseen(&mut self, rows: Vec<SessionEventRow>) -> Vec<SessionEventRow> {
        let newest = rows.iter().map(|r| r.event_time).max();
        let fresh: Vec<_> = rows.into_iter().filter(|r| self.applied.insert(r.id, r.event_time).is_none()).collect();
        if let Some(newest) = newest {
            self.since = self.since.max(newest - LOOKBACK_MICROS);
        }
        let since = self.since;
        self.applied.retain(|_, time| *time >= since);
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, event_time: i64) -> SessionEventRow {
        SessionEventRow { id, event_time, session_id: None, user_id: None }
    }

    #[test]
    fn each_event_is_applied_once_and_late_commits_inside_the_window_still_count() {
        let mut cursor = EventCursor::starting_at(0);
        let ids = |rows: Vec<SessionEventRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(cursor.take_unseen(vec![row(1, 100), row(2, 200)])), [1, 2]);
        // Re-read within the window: nothing new, except an id that committed late.
        assert_eq!(ids(cursor.take_unseen(vec![row(1, 100), row(3, 150), row(2, 200)])), [3]);
        // Far later events move the window, and forget ids that fell out of it.
        let later = 200 + LOOKBACK_MICROS + 1_000;
        assert_eq!(ids(cursor.take_unseen(vec![row(4, later)])), [4]);
        assert_eq!(cursor.since, later - LOOKBACK_MICROS);
        assert!(!cursor.applied.contains_key(&1) && cursor.applied.contains_key(&4));
    }
}
