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

/// A pending iteration end (an instance's slot). Keys are unique among pending events (see
/// [`EventQueue`]), so they alone order them.
struct Entry<E> {
    key: EventKey,
    event: E,
}

/// A heap event (pushed while handling, or an initial push): phase 0, so its key is
/// (at, pushed_at, 0, index), and for these the order of (at, index) is the order of that key —
/// an index is the push count, which grows with the push time (`pushed_at`), and the initial
/// pushes' reserved indices precede every other. The heap compares one `u128` (at, index) and
/// moves 40 bytes per entry.
struct HeapEntry<E> {
    /// `at << 64 | index`.
    order: u128,
    pushed_at: SimTime,
    event: E,
}

impl<E> HeapEntry<E> {
    fn key(&self) -> EventKey {
        EventKey {
            at: SimTime((self.order >> 64) as u64),
            pushed_at: self.pushed_at,
            phase: 0,
            index: self.order as u64,
        }
    }
}

impl<E> PartialEq for HeapEntry<E> {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}
impl<E> Eq for HeapEntry<E> {}
impl<E> PartialOrd for HeapEntry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for HeapEntry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order.cmp(&other.order)
    }
}

/// A min-queue of events ordered by `(time, sequence number)`.
///
/// Iteration ends ([`EventQueue::push_scheduled`]) do not enter the heap: each instance has at
/// most one iteration in flight, so its end sits in that instance's slot, and a tournament tree
/// over the slots keeps the earliest at its root. Replacing or cancelling an instance's end (a
/// decode run cut short) is then O(log instances) and leaves nothing stale behind, and the heap
/// holds only the other events (arrivals, handoffs, transfers). The pop order is that of one heap
/// holding every event. Every pending key is unique: a heap event's index is its push count
/// (or a reserved initial index), a slot's is its instance, and the phases tell the two apart.
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<HeapEntry<E>>>,
    /// Per instance: its pending iteration end.
    slots: Vec<Option<Entry<E>>>,
    /// Tournament tree over `slots` (leaves from `tree.len() / 2`): each node holds the slot with
    /// the earliest entry below it, or [`NO_SLOT`].
    tree: Vec<u32>,
    next_seq: u64,
    /// Push indices reserved for [`EventQueue::push_initial`].
    reserved: u64,
    now: SimTime,
}

/// An empty subtree of [`EventQueue::tree`].
const NO_SLOT: u32 = u32::MAX;

impl<E: std::fmt::Debug> EventQueue<E> {
    /// An empty queue at time zero.
    pub fn new() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            tree: Vec::new(),
            next_seq: 0,
            reserved: 0,
            now: SimTime::ZERO,
        }
    }

    /// The slot with the earlier entry of `a` and `b` (either may be [`NO_SLOT`]).
    #[inline]
    fn earlier(&self, a: u32, b: u32) -> u32 {
        match (self.slot(a), self.slot(b)) {
            (Some(x), Some(y)) => {
                if y.key < x.key {
                    b
                } else {
                    a
                }
            }
            (Some(_), None) => a,
            (None, Some(_)) => b,
            (None, None) => NO_SLOT,
        }
    }

    #[inline]
    fn slot(&self, i: u32) -> Option<&Entry<E>> {
        if i == NO_SLOT {
            return None;
        }
        self.slots[i as usize].as_ref()
    }

    /// Sets instance `inst`'s slot and updates the tree above it.
    fn set_slot(&mut self, inst: usize, entry: Option<Entry<E>>) {
        if inst >= self.slots.len() {
            let n = (inst + 1).next_power_of_two();
            self.slots.resize_with(n, || None);
            // Rebuild: leaves n..2n, then every internal node.
            self.tree = vec![NO_SLOT; 2 * n];
            for (i, s) in self.slots.iter().enumerate() {
                if s.is_some() {
                    self.tree[n + i] = i as u32;
                }
            }
            for node in (1..n).rev() {
                self.tree[node] = self.earlier(self.tree[2 * node], self.tree[2 * node + 1]);
            }
        }
        let n = self.slots.len();
        self.tree[n + inst] = if entry.is_some() { inst as u32 } else { NO_SLOT };
        self.slots[inst] = entry;
        let mut node = (n + inst) / 2;
        while node >= 1 {
            self.tree[node] = self.earlier(self.tree[2 * node], self.tree[2 * node + 1]);
            node /= 2;
        }
    }

    /// The earliest pending iteration end's slot, if any.
    fn first_slot(&self) -> Option<usize> {
        let root = *self.tree.get(1)?;
        (root != NO_SLOT).then_some(root as usize)
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
    ///
    /// # Panics
    /// Also if instance `inst` has an iteration end pending ([`EventQueue::cancel_scheduled`]
    /// it first).
    pub fn push_scheduled(&mut self, at: SimTime, pushed_at: SimTime, inst: usize, event: E) {
        assert!(pushed_at <= at, "event {event:?} at {at} pushed later, at {pushed_at}");
        let key = EventKey::step_end(at, pushed_at, inst);
        self.check_not_past(key, &event);
        assert!(
            self.slots.get(inst).is_none_or(|s| s.is_none()),
            "instance {inst} already has an iteration end pending; {event:?} at {at}"
        );
        self.next_seq += 1;
        self.set_slot(inst, Some(Entry { key, event }));
    }

    /// Removes instance `inst`'s pending iteration end (a decode run cut short), returning it.
    pub fn cancel_scheduled(&mut self, inst: usize) -> Option<(EventKey, E)> {
        let e = self.slots.get_mut(inst)?.take()?;
        self.set_slot(inst, None);
        Some((e.key, e.event))
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

    fn check_not_past(&self, key: EventKey, event: &E) {
        assert!(
            key.at >= self.now,
            "event {event:?} scheduled at {} before now {}",
            key.at,
            self.now
        );
    }

    /// Pushes a phase-0 event (see [`HeapEntry`] for why (at, index) orders these).
    fn push_keyed(&mut self, key: EventKey, event: E) {
        self.check_not_past(key, &event);
        debug_assert_eq!(key.phase, 0, "heap events are pushed while handling");
        debug_assert!(
            key.index < self.reserved || (key.index == self.next_seq && key.pushed_at == self.now),
            "a heap event's index is its push count or a reserved initial index"
        );
        self.heap.push(Reverse(HeapEntry {
            order: (key.at.0 as u128) << 64 | key.index as u128,
            pushed_at: key.pushed_at,
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
        let from_slot = match (self.heap.peek(), self.first_slot()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(Reverse(h)), Some(i)) => self.slots[i].as_ref().expect("tree root is set").key < h.key(),
        };
        let (key, event) = if from_slot {
            let i = self.first_slot().expect("checked");
            let e = self.slots[i].take().expect("tree root is set");
            self.set_slot(i, None);
            (e.key, e.event)
        } else {
            let e = self.heap.pop()?.0;
            (e.key(), e.event)
        };
        debug_assert!(key.at >= self.now);
        self.now = key.at;
        Some((key, event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<SimTime> {
        let heap = self.heap.peek().map(|Reverse(e)| e.key().at);
        let slot = self
            .first_slot()
            .map(|i| self.slots[i].as_ref().expect("tree root is set").key.at);
        match (heap, slot) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len() + self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty() && self.first_slot().is_none()
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
    fn iteration_ends_pop_as_one_heap_would_pop_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(29);
        for _ in 0..200 {
            // The same random pushes, pops and cancels on the queue and on a reference: a sorted
            // list of (key, seq, event) over every pending event.
            let mut q = EventQueue::new();
            let mut reference: Vec<(EventKey, u64, u32)> = Vec::new();
            // 40 initial pushes fed lazily, in any order (indices 0..40 reserved; the others
            // number from 40).
            q.reserve_initial(40);
            let mut initial: Vec<u64> = (0..40).collect();
            rand::seq::SliceRandom::shuffle(&mut initial[..], &mut rng);
            let (mut seq, mut now, mut label) = (40u64, SimTime::ZERO, 0u32);
            for _ in 0..300 {
                match rng.gen_range(0..12) {
                    10..=11 => {
                        let Some(index) = initial.pop() else { continue };
                        let at = SimTime(now.0 + rng.gen_range(0..50));
                        q.push_initial(at, index, label);
                        let key = EventKey {
                            at,
                            pushed_at: SimTime::ZERO,
                            phase: 0,
                            index,
                        };
                        reference.push((key, index, label));
                        // The queue counts it among its pushes.
                        seq += 1;
                        label += 1;
                        assert_eq!(q.len(), reference.len());
                        continue;
                    }
                    0..=3 => {
                        let at = SimTime(now.0 + rng.gen_range(0..50));
                        q.push(at, label);
                        let key = EventKey {
                            at,
                            pushed_at: now,
                            phase: 0,
                            index: seq,
                        };
                        reference.push((key, seq, label));
                    }
                    4..=5 => {
                        let inst = rng.gen_range(0..9usize);
                        let pending = reference
                            .iter()
                            .position(|r| r.0.phase == 1 && r.0.index == inst as u64);
                        if rng.gen() {
                            // Cancel (a run cut short) when pending; else schedule one.
                            if let Some(k) = pending {
                                let (key, ev) = q.cancel_scheduled(inst).expect("pending");
                                let r = reference.remove(k);
                                assert_eq!((key, ev), (r.0, r.2));
                            }
                            continue;
                        }
                        if pending.is_some() {
                            continue;
                        }
                        let at = SimTime(now.0 + rng.gen_range(0..50));
                        let pushed_at = SimTime(rng.gen_range(0..=now.0));
                        q.push_scheduled(at, pushed_at, inst, label);
                        reference.push((EventKey::step_end(at, pushed_at, inst), seq, label));
                    }
                    _ => {
                        reference.sort_by_key(|r| (r.0, r.1));
                        let want = (!reference.is_empty()).then(|| reference.remove(0));
                        assert_eq!(q.peek_time(), want.map(|w| w.0.at));
                        let got = q.pop_keyed();
                        assert_eq!(got, want.map(|w| (w.0, w.2)));
                        if let Some((k, _)) = got {
                            now = k.at;
                        }
                        continue;
                    }
                }
                seq += 1;
                label += 1;
                assert_eq!(q.len(), reference.len());
            }
        }
    }

    #[test]
    #[should_panic(expected = "already has an iteration end pending")]
    fn a_second_iteration_end_for_an_instance_panics() {
        let mut q = EventQueue::new();
        q.push_scheduled(SimTime(5), SimTime(0), 3, "a");
        q.push_scheduled(SimTime(6), SimTime(0), 3, "b");
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
