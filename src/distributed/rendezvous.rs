//! Where the threads of an [`InProcess`](super::InProcess) group meet:
//! one slot per collective, filled by every rank, reduced once, read by
//! every rank; a failure flag checked under the same lock, so that no
//! rank waits for a rank that has gone.

use super::Buffer;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

/// What a collective computes from the ranks' buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// The element-wise sum, added in rank order.
    AllReduceSum,
    /// The buffer of the given root rank.
    Broadcast(usize),
    /// Every rank's buffer.
    AllGather,
    /// Nothing (a meeting point).
    Barrier,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AllReduceSum => "all_reduce",
            Op::Broadcast(_) => "broadcast",
            Op::AllGather => "all_gather",
            Op::Barrier => "barrier",
        }
    }
}

/// The result of a complete collective.
#[derive(Clone)]
pub(super) enum Outcome {
    /// One buffer for every rank (all-reduce, broadcast, barrier).
    Same(Buffer),
    /// Every rank's buffer, in rank order (all-gather).
    Each(Vec<Buffer>),
}

/// One collective: the buffers the ranks brought, then its outcome.
struct Slot {
    op: Op,
    parts: Vec<Option<Buffer>>,
    arrived: usize,
    outcome: Option<Outcome>,
    collected: usize,
}

/// Everything behind the lock.
struct State {
    /// Why the group failed (naming the rank), once it has.
    failure: Option<String>,
    /// Ranks whose communicator was dropped.
    left: Vec<bool>,
    /// Collectives in progress, by sequence number.
    slots: HashMap<u64, Slot>,
}

/// The meeting place of a group of `world` ranks.
pub(super) struct Rendezvous {
    world: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl Rendezvous {
    pub(super) fn new(world: usize) -> Self {
        Rendezvous {
            world,
            state: Mutex::new(State {
                failure: None,
                left: vec![false; world],
                slots: HashMap::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the group failed with `why` (the first reason wins) and wakes
    /// every waiting rank.
    pub(super) fn fail(&self, why: String) {
        let mut state = self.lock();
        state.failure.get_or_insert(why);
        self.changed.notify_all();
    }

    /// Rank `rank` has dropped its communicator (`panicking`: while its
    /// thread panicked, which fails the group).
    pub(super) fn leave(&self, rank: usize, panicking: bool) {
        let mut state = self.lock();
        state.left[rank] = true;
        if panicking {
            state.failure.get_or_insert(format!("rank {rank} panicked"));
        }
        self.changed.notify_all();
    }

    /// Rank `rank` brings `buf` to collective number `seq`; the last rank
    /// to arrive computes the outcome.
    pub(super) fn join(&self, seq: u64, rank: usize, op: Op, buf: Buffer) -> Result<()> {
        let mut state = self.lock();
        let world = self.world;
        if let Some(why) = &state.failure {
            return Err(failed(op, why));
        }
        let slot = state.slots.entry(seq).or_insert_with(|| Slot {
            op,
            parts: vec![None; world],
            arrived: 0,
            outcome: None,
            collected: 0,
        });
        if let Some(why) = mismatch(slot, seq, rank, op, &buf) {
            state.failure.get_or_insert(why.clone());
            self.changed.notify_all();
            return Err(failed(op, &why));
        }
        slot.parts[rank] = Some(buf);
        slot.arrived += 1;
        if slot.arrived == world {
            let parts: Vec<Buffer> = slot.parts.iter_mut().filter_map(Option::take).collect();
            match outcome(op, parts) {
                Ok(out) => slot.outcome = Some(out),
                Err(e) => {
                    state
                        .failure
                        .get_or_insert(format!("collective #{seq}: {e}"));
                    self.changed.notify_all();
                    return Err(e);
                }
            }
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Waits until collective `seq` is complete (or the group failed) and
    /// returns its outcome for rank `rank`.
    pub(super) fn collect(&self, seq: u64, rank: usize, op: Op) -> Result<Outcome> {
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.failure {
                return Err(failed(op, why));
            }
            let left = state.left.clone();
            let slot = state
                .slots
                .get_mut(&seq)
                .ok_or_else(|| Error::Distributed {
                    op: op.name(),
                    msg: format!("rank {rank} waits for collective #{seq}, which it never joined"),
                })?;
            if let Some(outcome) = &slot.outcome {
                let out = outcome.clone();
                slot.collected += 1;
                if slot.collected == self.world {
                    state.slots.remove(&seq);
                }
                return Ok(out);
            }
            let gone = (0..self.world).find(|&r| slot.parts[r].is_none() && left[r]);
            if let Some(r) = gone {
                let why = format!(
                    "rank {r} left the group (its communicator was dropped) before joining \
                     collective #{seq} ({})",
                    op.name()
                );
                state.failure.get_or_insert(why);
                self.changed.notify_all();
                continue;
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn failed(op: Op, why: &str) -> Error {
    Error::Distributed {
        op: op.name(),
        msg: why.to_string(),
    }
}

/// Why rank `rank` bringing `buf` to `slot` as `op` is wrong, if it is.
fn mismatch(slot: &Slot, seq: u64, rank: usize, op: Op, buf: &Buffer) -> Option<String> {
    if slot.op != op {
        return Some(format!(
            "collective #{seq}: rank {rank} called {op:?}, another rank {:?}; every rank must \
             call the same collectives in the same order",
            slot.op
        ));
    }
    if slot.parts[rank].is_some() || slot.outcome.is_some() {
        return Some(format!("collective #{seq}: rank {rank} joined twice"));
    }
    let first = slot
        .parts
        .iter()
        .enumerate()
        .find_map(|(r, p)| Some((r, p.as_ref()?)));
    let (other, theirs) = first?;
    let same_len = matches!(op, Op::AllGather) || theirs.len() == buf.len();
    if theirs.dtype() != buf.dtype() || !same_len {
        return Some(format!(
            "collective #{seq} ({}): rank {rank} brought {} {:?} elements, rank {other} {} {:?}",
            op.name(),
            buf.len(),
            buf.dtype(),
            theirs.len(),
            theirs.dtype()
        ));
    }
    None
}

/// The outcome of `op` over every rank's buffer, in rank order.
fn outcome(op: Op, parts: Vec<Buffer>) -> Result<Outcome> {
    Ok(match op {
        Op::AllReduceSum => {
            let mut parts = parts.into_iter();
            let mut sum = parts.next().unwrap_or_default();
            for p in parts {
                sum.add_assign(&p)?;
            }
            Outcome::Same(sum)
        }
        Op::Broadcast(root) => Outcome::Same(parts.into_iter().nth(root).unwrap_or_default()),
        Op::AllGather => Outcome::Each(parts),
        Op::Barrier => Outcome::Same(Buffer::default()),
    })
}
