//! The event queue.
//!
//! ## Ordering contract
//! Events pop in increasing time; events scheduled for the **same** time pop in the order they
//! were pushed. After every event of a time `t` has been handled, the simulator runs its
//! scheduling pass for `t`, so an instance that becomes idle at `t` sees every arrival of `t`
//! (Vidur's "schedule last"). Scheduling into the past is a bug and panics with the event and the
//! current time.
//!
//! The push order is an [`EventKey`]: when the event was pushed, in which phase of that time
//! (event handling, then the scheduling pass) and its place in the phase (the push count while
//! handling, the instance index in the scheduling pass). Pushes in time order give increasing
//! keys, so this is the push order; it also lets the simulator place an iteration end it did not
//! push as an event (a step inside a decode run, see [`crate::sim::instance::DecodeRun`]) exactly
//! where the step-by-step path would have: [`EventQueue::push_scheduled`] pushes with the key of
//! an earlier scheduling pass.

use crate::time::SimTime;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Where an event sits in the pop order: by time, then by push order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey {
    /// When the event happens.
    pub at: SimTime,
    /// When it was pushed.
    pub pushed_at: SimTime,
    /// 0: pushed while handling an event; 1: by the scheduling pass that follows them.
    pub phase: u8,
    /// Place within the phase: the push count while handling, the instance index in the
    /// scheduling pass.
    pub index: u64,
}

impl EventKey {
    /// The key of an iteration end at `at` pushed by the scheduling pass at `pushed_at` for
    /// instance `inst` (an iteration that started then).
    pub fn step_end(at: SimTime, pushed_at: SimTime, inst: usize) -> EventKey {
        EventKey {
            at,
            pushed_at,
            phase: 1,
            index: inst as u64,
        }
    }
}

struct Entry<E> {
    key: EventKey,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

/// A min-queue of events ordered by `(time, sequence number)`.
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<Entry<E>>>,
    next_seq: u64,
    /// Push indices reserved for [`EventQueue::push_initial`].
    reserved: u64,
    now: SimTime,
}

impl<E: std::fmt::Debug> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            reserved: 0,
            now: SimTime::ZERO,
        }
    }

    /// Reserves push indices `0..n` for [`EventQueue::push_initial`]: the first `n` pushes at
    /// time zero, made lazily.
    ///
    /// # Panics
    /// If anything was pushed already.
    pub fn reserve_initial(&mut self, n: u64) {
        assert_eq!(self.next_seq, 0, "initial pushes are reserved before any other");
        self.reserved = n;
        self.next_seq = n;
    }

    /// Schedules `event` at `at`.
    ///
    /// # Panics
    /// If `at` is before the time of the last popped event.
    pub fn push(&mut self, at: SimTime, event: E) {
        let key = EventKey {
            at,
            pushed_at: self.now,
            phase: 0,
            index: self.next_seq,
        };
        self.push_keyed(key, event);
    }

    /// Schedules `event`, an iteration end of instance `inst` at `at`, as the scheduling pass at
    /// `pushed_at` (≤ `at`; earlier than now for the end of a decode run) would have.
    ///
    /// # Panics
    /// If `at` is before the time of the last popped event or `pushed_at` after `at`.
    pub fn push_scheduled(&mut self, at: SimTime, pushed_at: SimTime, inst: usize, event: E) {
        assert!(pushed_at <= at, "event {event:?} at {at} pushed later, at {pushed_at}");
        self.push_keyed(EventKey::step_end(at, pushed_at, inst), event);
    }

    /// Schedules `event` with the key a push at time zero, as the `index`-th push, would have had
    /// (sources that feed events lazily, in time order, keep the order of pushing them all at the
    /// start).
    ///
    /// # Panics
    /// If `at` is before the time of the last popped event.
    pub fn push_initial(&mut self, at: SimTime, index: u64, event: E) {
        assert!(index < self.reserved, "initial push {index} not reserved");
        let key = EventKey {
            at,
            pushed_at: SimTime::ZERO,
            phase: 0,
            index,
        };
        self.push_keyed(key, event);
    }

    fn push_keyed(&mut self, key: EventKey, event: E) {
        assert!(
            key.at >= self.now,
            "event {event:?} scheduled at {} before now {}",
            key.at,
            self.now
        );
        self.heap.push(Reverse(Entry {
            key,
            seq: self.next_seq,
            event,
        }));
        self.next_seq += 1;
    }

    /// Removes the earliest event.
    pub fn pop(&mut self) -> Option<(SimTime, E)> {
        self.pop_keyed().map(|(k, e)| (k.at, e))
    }

    /// Removes the earliest event, with its key.
    pub fn pop_keyed(&mut self) -> Option<(EventKey, E)> {
        let Reverse(e) = self.heap.pop()?;
        debug_assert!(e.key.at >= self.now);
        self.now = e.key.at;
        Some((e.key, e.event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<SimTime> {
        self.heap.peek().map(|Reverse(e)| e.key.at)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

impl<E: std::fmt::Debug> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_time_then_insertion() {
        let mut q = EventQueue::new();
        q.push(SimTime(5), "b");
        q.push(SimTime(1), "a");
        q.push(SimTime(5), "c");
        q.push(SimTime(5), "d");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            vec![
                (SimTime(1), "a"),
                (SimTime(5), "b"),
                (SimTime(5), "c"),
                (SimTime(5), "d")
            ]
        );
    }

    #[test]
    fn scheduled_pushes_sort_after_handling_pushes_of_their_time() {
        let mut q = EventQueue::new();
        q.push(SimTime(1), "start");
        q.pop();
        // At t = 1: handling pushes two events for t = 9, the scheduling pass one for instance 2
        // and one for instance 0; a decode run's step end "pushed" by the pass at t = 1 too.
        q.push(SimTime(9), "h1");
        q.push_scheduled(SimTime(9), SimTime(1), 2, "s2");
        q.push(SimTime(9), "h2");
        q.push_scheduled(SimTime(9), SimTime(1), 0, "s0");
        // Pushed at t = 1 but as if by the pass at t = 0: before everything pushed at t = 1.
        q.push_scheduled(SimTime(9), SimTime(0), 5, "early");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|x| x.1)).collect();
        assert_eq!(order, ["early", "h1", "h2", "s0", "s2"]);
    }

    #[test]
    #[should_panic(expected = "before now")]
    fn past_events_panic() {
        let mut q = EventQueue::new();
        q.push(SimTime(5), "a");
        q.pop();
        q.push(SimTime(4), "late");
    }
}
