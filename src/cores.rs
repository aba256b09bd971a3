//! Which CPUs a fed run's threads take on a small machine.
//!
//! A run fed its trace as it is read ([`crate::commands::feed`]) has up to three threads beside
//! the simulation's: the trace reader, the `requests.csv` writer and the page-fault helper
//! ([`crate::prefault`]). On a machine that lets the process use two or three CPUs they compete
//! with the simulation, the command's critical path, even at nice 10: the scheduler still
//! places a side thread on the simulation's CPU now and then, and the simulation waits a
//! time slice. So there, for the run's length, the simulating thread is kept on the CPU the
//! command started the run on and the side threads on the others ([`CoreSplit`]). Vidur's
//! 10,000-request run on 2 cores: the whole command 1.9–2.4 ms faster by the median of 50
//! paired runs in each order, of 29 ms (docs/performance.md, "2026-12-06, latest: the run's
//! own core").
//!
//! With one CPU there is nothing to split; with four or more every side thread can have a CPU
//! of its own, and pinning would only take the scheduler's freedom away (a busy machine could
//! not move the run). Where it applies, a CPU shared with other processes is still shared
//! fairly: the split changes where ppdsim's threads may run, never what they compute. A run
//! with the trace read first (`ppdsim run --read-trace-first`) is not fed, so not split.

/// A fed run's CPUs: the simulation's and the side threads' (the others the process may use).
/// Linux only ([`CoreSplit::for_fed_run`] is `None` elsewhere).
#[derive(Clone, Copy)]
pub(crate) struct CoreSplit {
    /// The simulation's CPU, alone.
    #[cfg(target_os = "linux")]
    run: libc::cpu_set_t,
    /// Every other CPU the process may use.
    #[cfg(target_os = "linux")]
    side: libc::cpu_set_t,
}

/// Which CPUs a run on `current` (the CPU the calling thread is on) leaves to the side threads,
/// given the `allowed` ones: `None` unless 2 or 3 are allowed and `current` is one of them.
pub(crate) fn side_cpus(allowed: &[usize], current: usize) -> Option<Vec<usize>> {
    if !(2..=3).contains(&allowed.len()) || !allowed.contains(&current) {
        return None;
    }
    Some(allowed.iter().copied().filter(|&c| c != current).collect())
}

impl CoreSplit {
    /// The split for a fed run started from the calling thread: the run on the CPU this thread
    /// is on, the side threads on the others ([`side_cpus`]). `None` off Linux, with one or
    /// more than three CPUs, or when the CPU set cannot be read.
    pub(crate) fn for_fed_run() -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            let allowed = cpus_of(&this_thread_cpus()?);
            // SAFETY: sched_getcpu takes no argument.
            let current = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
            let side = side_cpus(&allowed, current)?;
            Some(CoreSplit {
                run: cpu_set([current]),
                side: cpu_set(side),
            })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Keeps the calling thread, a side thread, off the run's CPU for the rest of its life.
    /// A failure changes nothing but the speed, and is ignored.
    pub(crate) fn keep_side_thread_off_run(&self) {
        #[cfg(target_os = "linux")]
        set_this_thread_cpus(&self.side);
    }

    /// Keeps the calling thread, the simulation's, on the run's CPU until the guard drops,
    /// which gives it back the CPUs it had.
    pub(crate) fn pin_run(&self) -> RunPin {
        #[cfg(target_os = "linux")]
        {
            let before = this_thread_cpus();
            if before.is_some() {
                set_this_thread_cpus(&self.run);
            }
            RunPin { before }
        }
        #[cfg(not(target_os = "linux"))]
        RunPin {}
    }
}

/// The simulating thread's CPUs before [`CoreSplit::pin_run`], restored on drop (a pool thread
/// goes on to other work).
pub(crate) struct RunPin {
    #[cfg(target_os = "linux")]
    before: Option<libc::cpu_set_t>,
}

impl Drop for RunPin {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(set) = &self.before {
            set_this_thread_cpus(set);
        }
    }
}

/// The CPUs of `set`, ascending.
#[cfg(target_os = "linux")]
fn cpus_of(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads the set at an index below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, set) })
        .collect()
}

/// The set of `cpus` (each below `CPU_SETSIZE`, as every CPU a set was read with is).
#[cfg(target_os = "linux")]
fn cpu_set(cpus: impl IntoIterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus {
        assert!(c < libc::CPU_SETSIZE as usize, "CPU {c} outside a cpu_set_t");
        // SAFETY: CPU_SET writes the set at an index below CPU_SETSIZE (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// The CPUs the calling thread may run on (`sched_getaffinity(0, …)`: on Linux, pid 0 is the
/// calling thread), or `None` when they cannot be read.
#[cfg(target_os = "linux")]
fn this_thread_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

/// Lets the calling thread run on the CPUs of `set` only; a failure (a CPU taken away
/// meanwhile) leaves it where it was.
#[cfg(target_os = "linux")]
fn set_this_thread_cpus(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of the set.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

#[cfg(test)]
mod tests {
    use super::side_cpus;

    #[test]
    fn two_or_three_cpus_are_split_around_the_run_and_others_are_left_alone() {
        assert_eq!(side_cpus(&[0, 1], 0), Some(vec![1]));
        assert_eq!(side_cpus(&[0, 1], 1), Some(vec![0]));
        assert_eq!(side_cpus(&[2, 5, 7], 5), Some(vec![2, 7]));
        // One CPU: nothing to split; four or more: every side thread has a CPU of its own.
        assert_eq!(side_cpus(&[3], 3), None);
        assert_eq!(side_cpus(&[0, 1, 2, 3], 0), None);
        // A current CPU outside the set (it changed meanwhile): no split.
        assert_eq!(side_cpus(&[0, 1], 4), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_run_thread_gets_its_cpus_back() {
        use super::{cpu_set, cpus_of, this_thread_cpus, CoreSplit};
        // On a thread of its own, so that no other test's thread is pinned.
        std::thread::spawn(|| {
            let before = cpus_of(&this_thread_cpus().expect("readable"));
            let cpu = *before.first().expect("a thread may run somewhere");
            let split = CoreSplit {
                run: cpu_set([cpu]),
                side: cpu_set(before.iter().copied().filter(|&c| c != cpu)),
            };
            {
                let _pin = split.pin_run();
                assert_eq!(cpus_of(&this_thread_cpus().expect("readable")), vec![cpu]);
            }
            assert_eq!(cpus_of(&this_thread_cpus().expect("readable")), before);
            if before.len() > 1 {
                split.keep_side_thread_off_run();
                let off = cpus_of(&this_thread_cpus().expect("readable"));
                assert!(!off.contains(&cpu));
                assert_eq!(off.len(), before.len() - 1);
            }
        })
        .join()
        .expect("the pinning test thread");
    }
}
