//! Per-instance prefix cache with LRU eviction, keyed per conversation.
//!
//! After a turn finishes on an instance, the KV of its tokens stays resident as the
//! conversation's cache entry (vLLM's automatic prefix caching keeps freed blocks until they are
//! needed). The next turn of that conversation on the same instance reuses the entry's tokens as a
//! prefix hit. Entries are evicted least-recently-used first when an admission needs their blocks;
//! a turn whose context was evicted recomputes it (that recompute is part of its `m`).
//!
//! Memory is counted in blocks of `block_size` tokens; an entry of `t` tokens holds `⌈t/b⌉` blocks.

use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// A cache entry: (tokens, LRU stamp, blocks held).
pub type CacheEntry = (u32, u64, u64);

/// LRU prefix cache of one instance (memory accounting only; no token contents).
#[derive(Debug, Default)]
pub struct PrefixCache {
    /// conversation → (tokens, LRU stamp, blocks held). Fx hashing (rustc's: a multiply per
    /// key, deterministic); the map is never iterated, so its order cannot reach an output.
    entries: FxHashMap<usize, CacheEntry>,
    /// (stamp, conversation) in ascending stamp order, oldest in front: the eviction order
    /// (deterministic; stamps are unique). An insert takes the largest stamp yet, so it is a push
    /// at the back, and an eviction a pop at the front — O(1), where a heap sifts through
    /// log₂(entries) levels. Entries taken out stay until they reach the front (lazy deletion: a
    /// pair whose conversation no longer holds that stamp is skipped), so a take is O(1) too.
    lru: VecDeque<(u64, usize)>,
    clock: u64,
    blocks: u64,
    block_size: u32,
    /// Tokens evicted so far \[tokens\].
    pub num_evicted_tokens: u64,
}

impl PrefixCache {
    /// An empty cache counting blocks of `block_size` tokens.
    pub fn new(block_size: u32) -> Self {
        assert!(block_size > 0);
        PrefixCache {
            block_size,
            ..Default::default()
        }
    }

    /// Blocks for `tokens` tokens.
    pub fn blocks_for(&self, tokens: u32) -> u64 {
        (tokens as u64).div_ceil(self.block_size as u64)
    }

    /// Blocks held by all entries.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Tokens cached for `conv` (0 if none).
    pub fn cached_tokens(&self, conv: usize) -> u32 {
        self.entries.get(&conv).map_or(0, |e| e.0)
    }

    /// Removes and returns `conv`'s entry.
    pub fn take(&mut self, conv: usize) -> Option<CacheEntry> {
        let e = self.entries.remove(&conv)?;
        self.blocks -= e.2;
        self.compact();
        Some(e)
    }

    /// Puts back an entry removed by [`PrefixCache::take`] with its old LRU position.
    pub fn restore(&mut self, conv: usize, entry: CacheEntry) {
        assert!(
            !self.entries.contains_key(&conv),
            "restoring conversation {conv} over a live entry"
        );
        self.blocks += entry.2;
        // The pair may still be queued (taken entries stay until they reach the front); if not,
        // it goes back to its place by stamp. (The scheduler restores only after evicting every
        // other entry, so the queue is empty then, but the order holds either way.)
        let stamp = entry.1;
        if let Err(at) = self.lru.binary_search_by_key(&stamp, |&(s, _)| s) {
            self.lru.insert(at, (stamp, conv));
        }
        self.entries.insert(conv, entry);
    }

    /// Inserts (or replaces) `conv`'s entry as most recently used.
    pub fn insert(&mut self, conv: usize, tokens: u32) {
        self.insert_sharing(conv, tokens, 0);
    }

    /// Like [`PrefixCache::insert`], for an entry whose first `shared_tokens` tokens live in a
    /// shared (pinned) prefix: they are hits but their blocks are not this entry's.
    pub fn insert_sharing(&mut self, conv: usize, tokens: u32, shared_tokens: u32) {
        self.take(conv);
        if tokens == 0 {
            return;
        }
        self.clock += 1;
        // Shared hits are whole blocks, so the shared part is exactly `shared_tokens / block_size` blocks.
        let blocks = self.blocks_for(tokens) - (shared_tokens.min(tokens) / self.block_size) as u64;
        self.blocks += blocks;
        debug_assert!(self.lru.back().is_none_or(|&(s, _)| s < self.clock));
        self.lru.push_back((self.clock, conv));
        self.entries.insert(conv, (tokens, self.clock, blocks));
    }

    /// Evicts the least recently used entry; returns its blocks, or `None` when empty.
    pub fn evict_lru(&mut self) -> Option<u64> {
        loop {
            let (stamp, conv) = self.lru.pop_front()?;
            if self.entries.get(&conv).is_some_and(|e| e.1 == stamp) {
                let (tokens, _, blocks) = self.take(conv).expect("checked");
                self.num_evicted_tokens += tokens as u64;
                return Some(blocks);
            }
        }
    }

    /// Drops the taken-out pairs from the LRU queue once they outnumber the live ones, so it
    /// holds at most about twice the entries (the order of the rest is kept).
    fn compact(&mut self) {
        if self.lru.len() > 2 * self.entries.len() + 16 {
            let entries = &self.entries;
            self.lru
                .retain(|(stamp, conv)| entries.get(conv).is_some_and(|e| e.1 == *stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_oldest_and_counts_blocks() {
        let mut c = PrefixCache::new(16);
        c.insert(1, 20); // 2 blocks
        c.insert(2, 16); // 1 block
        c.insert(3, 33); // 3 blocks
        assert_eq!(c.blocks(), 6);
        // Re-inserting 1 makes it the most recent.
        c.insert(1, 20);
        assert_eq!(c.evict_lru(), Some(1)); // conv 2
        assert_eq!(c.cached_tokens(2), 0);
        assert_eq!(c.evict_lru(), Some(3)); // conv 3
        assert_eq!(c.cached_tokens(1), 20);
        assert_eq!(c.num_evicted_tokens, 49);
        let e = c.take(1).unwrap();
        assert_eq!(c.blocks(), 0);
        c.restore(1, e);
        assert_eq!(c.blocks(), 2);
        assert_eq!(c.evict_lru(), Some(2));
        assert_eq!(c.evict_lru(), None);
    }

    #[test]
    fn a_restored_entry_goes_back_to_its_place_by_last_use() {
        let mut c = PrefixCache::new(16);
        c.insert(1, 16); // stamp 1
        c.insert(2, 32); // stamp 2
        c.insert(3, 48); // stamp 3
        let a = c.take(1).expect("present");
        let b = c.take(2).expect("present");
        // Both taken pairs are skipped on the way to 3, so they leave the queue.
        assert_eq!(c.evict_lru(), Some(3));
        assert!(c.lru.is_empty());
        c.restore(2, b);
        c.insert(4, 64); // stamp 4
        c.restore(1, a); // stamp 1: before 2 and 4, not behind them
        assert_eq!(c.lru.iter().map(|&(_, conv)| conv).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(c.evict_lru(), Some(1));
        assert_eq!(c.evict_lru(), Some(2));
        assert_eq!(c.evict_lru(), Some(4));
        assert_eq!(c.evict_lru(), None);
        assert_eq!(c.blocks(), 0);
        assert_eq!(c.num_evicted_tokens, 48 + 16 + 32 + 64);
    }

    #[test]
    fn taking_and_restoring_keeps_the_order_and_the_index_small() {
        let mut c = PrefixCache::new(16);
        for conv in 0..100 {
            c.insert(conv, 16 * (conv as u32 % 3 + 1));
        }
        // 10,000 take/restore cycles of conversation 50 and re-inserts of 0–49: the index stays
        // bounded, and eviction still goes by last use.
        for k in 0..10_000 {
            let e = c.take(50).expect("present");
            c.restore(50, e);
            c.insert(k % 50, 16);
        }
        assert!(c.lru.len() <= 2 * 100 + 17, "{} pairs for 100 entries", c.lru.len());
        // Oldest now: 50–99 (never re-inserted; 50 keeps its stamp), then 0–49 from k = 9,950 on.
        for conv in 50..100usize {
            let tokens = c.cached_tokens(conv);
            assert_eq!(c.evict_lru(), Some(c.blocks_for(tokens)), "conversation {conv}");
            assert_eq!(c.cached_tokens(conv), 0);
        }
        for conv in 0..50usize {
            assert_eq!(c.evict_lru(), Some(1), "conversation {conv}");
            assert_eq!(c.cached_tokens(conv), 0);
        }
        assert_eq!(c.evict_lru(), None);
        assert_eq!(c.blocks(), 0);
    }
}
