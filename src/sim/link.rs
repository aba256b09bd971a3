//! KV links between P and D instances.
//!
//! Each P instance has one egress link (on an NVSwitch node, a GPU's NVLink egress is shared by
//! all its peers). Transfers on a link are served **first-in-first-out**, one at a time, each taking
//! `latency + bytes / bandwidth`; a transfer that finds the link busy waits. Bytes are
//! `tokens × kv_bytes_per_token`.

use crate::time::{SimDuration, SimTime};

/// Time to move `bytes` over an idle link of `bandwidth_gbps` [Gbit/s] and `latency_ms` per
/// transfer: `latency + bytes / bandwidth` \[ms\].
pub fn transfer_ms(bandwidth_gbps: f64, latency_ms: f64, bytes: u64) -> f64 {
    // Gbit/s → bytes per ms: gbps * 1e9 / 8 / 1e3.
    latency_ms + bytes as f64 / (bandwidth_gbps * 1.25e5)
}

/// One egress link.
#[derive(Clone, Debug)]
pub struct KvLink {
    /// Bandwidth [Gbit/s].
    pub bandwidth_gbps: f64,
    /// Fixed latency per transfer \[ms\].
    pub latency_ms: f64,
    free_at: SimTime,
    /// Bytes moved so far \[B\].
    pub bytes_moved: u64,
}

impl KvLink {
    /// An idle link.
    ///
    /// # Panics
    /// If the bandwidth is not positive (validated before).
    pub fn new(bandwidth_gbps: f64, latency_ms: f64) -> Self {
        assert!(bandwidth_gbps > 0.0 && latency_ms >= 0.0);
        KvLink {
            bandwidth_gbps,
            latency_ms,
            free_at: SimTime::ZERO,
            bytes_moved: 0,
        }
    }

    /// Duration of a transfer of `bytes` on an idle link.
    pub fn transfer_time(&self, bytes: u64) -> SimDuration {
        SimDuration::from_ms_f64(transfer_ms(self.bandwidth_gbps, self.latency_ms, bytes))
    }

    /// When a transfer submitted at `now` would start (after those already queued).
    pub fn free_at(&self, now: SimTime) -> SimTime {
        self.free_at.max(now)
    }

    /// Counts `bytes` sent by a P engine that waited for them in its step
    /// ([`crate::sim::SimConfig::prefill_waits_for_send`]): the link was free (every earlier
    /// send ended inside an earlier step), so nothing queues behind them.
    pub fn sent_by_engine(&mut self, bytes: u64) {
        self.bytes_moved += bytes;
    }

    /// Queues a transfer of `bytes` submitted at `now`; returns when it completes.
    pub fn submit(&mut self, now: SimTime, bytes: u64) -> SimTime {
        let start = self.free_at.max(now);
        let done = start + self.transfer_time(bytes);
        self.free_at = done;
        self.bytes_moved += bytes;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_transfers_queue() {
        // 8 Gbit/s = 1e6 B/ms; 1e6 B takes 1 ms + 0.5 ms latency.
        let mut l = KvLink::new(8.0, 0.5);
        assert_eq!(l.transfer_time(1_000_000), SimDuration(1500));
        assert_eq!(l.submit(SimTime(0), 1_000_000), SimTime(1500));
        // Second transfer submitted at 1 ms waits until 1.5 ms.
        assert_eq!(l.submit(SimTime(1000), 1_000_000), SimTime(3000));
        assert_eq!(l.bytes_moved, 2_000_000);
    }
}
