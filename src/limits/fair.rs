//! Fair shares of a pool of call slots: each caller holds at most `per_caller` slots and waits in
//! a queue of its own, and a freed slot goes to the next caller in turn (round robin over the
//! callers that wait and are under their share), so one caller's flood costs the others at most
//! its share of the pool, never the pool.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The sizes of a pool, from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSizes {
    /// Calls in the pool at once.
    pub slots: usize,
    /// Slots one caller may hold at once.
    pub per_caller: usize,
    /// Calls one caller may have waiting; more are refused at once.
    pub queued_per_caller: usize,
}

/// A pool of call slots shared fairly between callers.
#[derive(Debug)]
pub struct FairShares {
    state: Mutex<State>,
    sizes: PoolSizes,
}

#[derive(Debug)]
struct State {
    free: usize,
    callers: HashMap<String, Caller>,
    /// Callers with calls waiting that are under their share, in the order they get a slot.
    turns: VecDeque<String>,
}

#[derive(Debug, Default)]
struct Caller {
    in_flight: usize,
    /// One sender per waiting call; a call that stopped waiting leaves a closed one behind,
    /// skipped when its turn comes.
    waiting: VecDeque<oneshot::Sender<()>>,
    in_turns: bool,
}

/// One slot of the pool, held by one call: given back when dropped.
#[derive(Debug)]
pub struct Share {
    shares: Arc<FairShares>,
    caller: String,
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shares.release(&self.caller);
    }
}

/// What a call asking for a slot gets.
#[derive(Debug)]
pub enum Admission {
    /// A slot, at once.
    Now(Share),
    /// A place in the caller's queue.
    Queued(Waiting),
    /// The caller's queue is full.
    QueueFull,
}

/// A call's place in its caller's queue. Dropped before its slot comes (a timeout, a caller who
/// left), it leaves the queue; a slot handed to it in that instant is given back.
#[derive(Debug)]
pub struct Waiting {
    granted: Option<oneshot::Receiver<()>>,
    shares: Arc<FairShares>,
    caller: String,
}

impl Waiting {
    /// Waits for the slot. `None` cannot happen while the pool keeps its promise (a waiting
    /// call's sender leaves the queue only when it is sent), and is refused like a full pool.
    pub async fn granted(mut self) -> Option<Share> {
        let granted = self.granted.as_mut()?.await;
        self.granted = None;
        granted.ok().map(|()| Share {
            shares: self.shares.clone(),
            caller: std::mem::take(&mut self.caller),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut granted) = self.granted.take() {
            // After `close`, a grant either arrived before (and is given back) or cannot come.
            granted.close();
            if granted.try_recv().is_ok() {
                self.shares.release(&self.caller);
            }
        }
    }
}

impl FairShares {
    /// A pool of `sizes.slots` slots, at most `sizes.per_caller` per caller.
    pub fn new(sizes: PoolSizes) -> Arc<Self> {
        Arc::new(FairShares {
            state: Mutex::new(State {
                free: sizes.slots,
                callers: HashMap::new(),
                turns: VecDeque::new(),
            }),
            sizes,
        })
    }

    /// The pool's sizes.
    pub fn sizes(&self) -> PoolSizes {
        self.sizes
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one call of `caller`: at once when one is free and the caller is under its
    /// share with nothing of its own waiting ahead, else a place in its queue.
    pub fn admit(self: &Arc<Self>, caller: &str) -> Admission {
        let mut guard = self.state();
        let state = &mut *guard;
        let free = state.free;
        let caller_state = state.callers.entry(caller.to_owned()).or_default();
        if free > 0
            && caller_state.in_flight < self.sizes.per_caller
            && caller_state.waiting.is_empty()
        {
            caller_state.in_flight += 1;
            state.free -= 1;
            return Admission::Now(Share {
                shares: self.clone(),
                caller: caller.to_owned(),
            });
        }
        caller_state.waiting.retain(|sender| !sender.is_closed());
        if caller_state.waiting.len() >= self.sizes.queued_per_caller {
            return Admission::QueueFull;
        }
        let (sender, granted) = oneshot::channel();
        caller_state.waiting.push_back(sender);
        let join_turns = !caller_state.in_turns && caller_state.in_flight < self.sizes.per_caller;
        if join_turns {
            caller_state.in_turns = true;
        }
        if join_turns {
            state.turns.push_back(caller.to_owned());
        }
        // A queue of only closed places can leave a free slot unclaimed: hand it out now.
        state.dispatch(self.sizes.per_caller);
        Admission::Queued(Waiting {
            granted: Some(granted),
            shares: self.clone(),
            caller: caller.to_owned(),
        })
    }

    /// Whether `caller` holds its whole share: a call of it that waited in vain waited for its
    /// own calls, not for the pool.
    pub fn holds_its_share(&self, caller: &str) -> bool {
        self.state()
            .callers
            .get(caller)
            .is_some_and(|c| c.in_flight >= self.sizes.per_caller)
    }

    /// Calls waiting for a slot, of every caller (places left by calls that stopped waiting
    /// count until their turn comes).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().callers.values().map(|c| c.waiting.len()).sum()
    }

    fn release(&self, caller: &str) {
        let mut guard = self.state();
        let state = &mut *guard;
        state.free += 1;
        if let Some(caller_state) = state.callers.get_mut(caller) {
            caller_state.in_flight -= 1;
            let rejoin = !caller_state.waiting.is_empty() && !caller_state.in_turns;
            let idle = caller_state.in_flight == 0 && caller_state.waiting.is_empty();
            if rejoin {
                caller_state.in_turns = true;
                state.turns.push_back(caller.to_owned());
            } else if idle {
                state.callers.remove(caller);
            }
        }
        state.dispatch(self.sizes.per_caller);
    }
}

impl State {
    /// Hands free slots to waiting calls, one caller at a time in turn.
    fn dispatch(&mut self, per_caller: usize) {
        while self.free > 0 {
            let Some(name) = self.turns.pop_front() else {
                return;
            };
            let Some(caller) = self.callers.get_mut(&name) else {
                continue;
            };
            caller.in_turns = false;
            if caller.in_flight >= per_caller {
                // It rejoins when one of its calls ends.
                continue;
            }
            while let Some(sender) = caller.waiting.pop_front() {
                if sender.send(()).is_ok() {
                    caller.in_flight += 1;
                    self.free -= 1;
                    break;
                }
            }
            if !caller.waiting.is_empty() && caller.in_flight < per_caller {
                caller.in_turns = true;
                self.turns.push_back(name);
            } else if caller.in_flight == 0 && caller.waiting.is_empty() {
                self.callers.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(slots: usize, per_caller: usize, queued_per_caller: usize) -> Arc<FairShares> {
        FairShares::new(PoolSizes {
            slots,
            per_caller,
            queued_per_caller,
        })
    }

    fn now(admission: Admission) -> Share {
        match admission {
            Admission::Now(share) => share,
            other => panic!("expected a slot at once, got {other:?}"),
        }
    }

    fn queued(admission: Admission) -> Waiting {
        match admission {
            Admission::Queued(waiting) => waiting,
            other => panic!("expected a place in the queue, got {other:?}"),
        }
    }

    /// Whether the waiting call has its slot, without waiting for it.
    fn has_slot(waiting: &mut Waiting) -> bool {
        waiting
            .granted
            .as_mut()
            .is_some_and(|granted| !granted.is_empty())
    }

    #[test]
    fn a_caller_holds_at_most_its_share_while_the_pool_has_room() {
        let pool = pool(4, 2, 10);
        let _a1 = now(pool.admit("a"));
        let _a2 = now(pool.admit("a"));
        let _a3 = queued(pool.admit("a"));
        assert!(pool.holds_its_share("a"));
        let _b1 = now(pool.admit("b"));
        assert!(!pool.holds_its_share("b"));
    }

    #[test]
    fn freed_slots_go_round_robin_to_the_callers_that_wait() {
        let pool = pool(2, 2, 10);
        let a1 = now(pool.admit("flood"));
        let a2 = now(pool.admit("flood"));
        let mut flood: Vec<Waiting> = (0..5).map(|_| queued(pool.admit("flood"))).collect();
        let mut other = queued(pool.admit("other"));
        drop(a1);
        // The flood's calls waited first, but while it held its whole share only the other
        // caller could take a slot: the slot the flood frees goes to the other caller.
        assert!(has_slot(&mut other));
        assert!(!has_slot(&mut flood[0]));
        drop(a2);
        assert!(has_slot(&mut flood[0]), "then the flood's turn");
        assert!(!has_slot(&mut flood[1]));
    }

    #[test]
    fn a_caller_over_its_queue_is_refused_at_once_and_others_are_not() {
        let pool = pool(1, 1, 2);
        let _held = now(pool.admit("a"));
        let _q1 = queued(pool.admit("a"));
        let _q2 = queued(pool.admit("a"));
        assert!(matches!(pool.admit("a"), Admission::QueueFull));
        let _b = queued(pool.admit("b"));
    }

    #[test]
    fn a_call_that_stops_waiting_leaves_the_queue_and_a_slot_handed_to_it_comes_back() {
        let pool = pool(1, 1, 2);
        let held = now(pool.admit("a"));
        let gave_up = queued(pool.admit("b"));
        drop(gave_up);
        let mut next = queued(pool.admit("c"));
        drop(held);
        assert!(has_slot(&mut next), "the place left behind is skipped");
        // Granted and then dropped before it was taken: the slot is back in the pool.
        drop(next);
        let _d = now(pool.admit("d"));
        assert_eq!(pool.waiting(), 0);
    }

    #[test]
    fn places_left_behind_do_not_fill_a_queue() {
        let pool = pool(1, 1, 2);
        let _held = now(pool.admit("a"));
        for _ in 0..10 {
            drop(queued(pool.admit("b")));
        }
        let _still = queued(pool.admit("b"));
        assert!(pool.waiting() <= 2);
    }

    #[tokio::test]
    async fn a_waiting_call_gets_its_slot_when_one_frees() {
        let pool = pool(1, 1, 1);
        let held = now(pool.admit("a"));
        let waiting = queued(pool.admit("b"));
        let task = tokio::spawn(waiting.granted());
        drop(held);
        let share = task.await.unwrap().expect("granted");
        assert!(pool.holds_its_share("b"));
        drop(share);
        assert!(!pool.holds_its_share("b"));
        let _again = now(pool.admit("a"));
    }

    #[test]
    fn every_slot_comes_back_when_every_call_ends() {
        let pool = pool(3, 2, 100);
        let mut shares = Vec::new();
        let mut waits = Vec::new();
        for round in 0..50 {
            let caller = ["a", "b", "c", "d"][round % 4];
            match pool.admit(caller) {
                Admission::Now(share) => shares.push(share),
                Admission::Queued(waiting) => waits.push(waiting),
                Admission::QueueFull => {}
            }
            if round % 3 == 0 && !shares.is_empty() {
                shares.remove(0);
            }
            if round % 5 == 0 && !waits.is_empty() {
                waits.remove(0);
            }
        }
        drop(shares);
        drop(waits);
        let state = pool.state();
        assert_eq!(state.free, 3);
        assert!(state.callers.is_empty(), "{:?}", state.callers);
    }
}
