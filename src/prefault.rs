//! Page faults taken ahead of a run, on a helper thread.
//!
//! A fed trace replay fills arrays reserved up front, one element per conversation (the
//! simulation's conversations and their states, the feed's copy of the trace). Each 4 KiB page
//! of them is faulted in the first time the run writes it, on the run's own thread: Vidur's
//! 10,000-request run took ≈ 590 of its ≈ 1,900 page faults there (`perf record -e page-faults`,
//! 2026-12-06), and a fault costs 3–5 µs on the development machine (a Firecracker microVM; a
//! Python loop touching fresh pages of an anonymous map, 2,000–4,096 pages a trial), so ≈ 2 ms
//! of the run's ≈ 12 ms went to them. [`populate_in_background`] has another thread fault those
//! pages in first, with `madvise(MADV_POPULATE_WRITE)` (Linux ≥ 5.14): the run then finds them
//! mapped.
//!
//! On the 2-core development machine the helper shares the second core with the trace reader
//! and the `requests.csv` writer, so the run gains less than the faults it no longer takes: on
//! Vidur's run its own thread took 165–345 faults instead of ≈ 590 (three runs: fewer when the
//! helper gets ahead of it), and over 50 alternating runs
//! each the simulation's median fell from 17.43 to 16.79 ms and the whole command's from 21.41
//! to 21.09 ms (`--timings`, 2026-12-06).
//!
//! Populating changes no byte of the memory (a page that is mapped stays as it is; one that is
//! not is mapped zeroed, as the first write would have mapped it), so it may run while the owner
//! writes the same pages, and a range freed meanwhile only makes the call fail. Any failure (an
//! older kernel, another system) is ignored: the run then takes the faults itself, as before.

/// A byte range of reserved but unused capacity, as an address and a length \[bytes\]; it holds
/// no reference, only where the memory was when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    addr: usize,
    len: usize,
}

impl Span {
    /// The spare capacity of `v` (from its length to its capacity).
    pub(crate) fn spare<T>(v: &Vec<T>) -> Span {
        let size = std::mem::size_of::<T>();
        Span {
            addr: v.as_ptr() as usize + v.len() * size,
            len: (v.capacity() - v.len()) * size,
        }
    }

    /// Its length \[B\].
    #[cfg(test)]
    pub(crate) fn len_bytes(&self) -> usize {
        self.len
    }

    /// The whole pages of `page` bytes inside the span, as (first address, length), in pieces
    /// of at most `piece` bytes (whole pages), in address order.
    fn pages(self, page: usize, piece: usize) -> impl Iterator<Item = (usize, usize)> {
        assert!(page.is_power_of_two() && piece >= page, "page {page}, piece {piece}");
        let start = self.addr.next_multiple_of(page);
        let end = (self.addr + self.len) & !(page - 1);
        let piece = piece & !(page - 1);
        (start..end.max(start))
            .step_by(piece)
            .map(move |a| (a, piece.min(end - a)))
    }
}

/// Bytes populated from one span before the next span's turn: the spans fill together as the
/// run goes (conversation `c`'s slot in each), so each is populated a little at a time.
const PIECE_BYTES: usize = 64 << 10;

/// Bytes populated at most from the start of each span: a reservation may be larger than what
/// the run fills (a scenario asking for more conversations than its trace holds is refused only
/// once the trace is read), and only the first pages are sure to be written soon. 4 MiB hold
/// ≈ 40,000 conversations of the largest array (≈ 100 bytes each); Vidur's run's arrays are all
/// under 1 MiB.
const MAX_SPAN_BYTES: usize = 4 << 20;

/// Faults in the whole pages of `spans` (the first [`MAX_SPAN_BYTES`] of each) on a thread of
/// its own, a [`PIECE_BYTES`] piece of each span in turn, and returns at once (the thread ends by
/// itself; nothing waits for it); with `cores`, the thread stays off the run's CPU
/// ([`crate::cores`]). Does nothing when no span holds a whole page, or off Linux.
pub(crate) fn populate_in_background(spans: Vec<Span>, cores: Option<crate::cores::CoreSplit>) {
    #[cfg(target_os = "linux")]
    {
        let Some(page) = page_size() else {
            return;
        };
        let pieces = plan(&spans, page, PIECE_BYTES, MAX_SPAN_BYTES);
        if pieces.is_empty() {
            return;
        }
        let _ = std::thread::Builder::new().name("prefault".into()).spawn(move || {
            crate::commands::feed::yield_to_run(cores.as_ref(), crate::commands::feed::SIDE_NICE);
            populate(&pieces);
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (spans, cores);
}

/// The page size \[B\], or `None` when it is not a power of two.
#[cfg(target_os = "linux")]
fn page_size() -> Option<usize> {
    // SAFETY: sysconf reads no memory of ours.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    page.is_power_of_two().then_some(page)
}

/// Maps the pages of each (address, length) piece as a write would; stops at the first sign
/// that the kernel cannot (the run then takes its faults itself).
#[cfg(target_os = "linux")]
fn populate(pieces: &[(usize, usize)]) {
    for &(addr, len) in pieces {
        // SAFETY: MADV_POPULATE_WRITE maps the pages of the range as a write would, without
        // changing a byte of them (see the module docs); an address range that is no longer
        // mapped makes the call fail, which changes nothing.
        let failed = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE) } != 0;
        if failed && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // Not supported here.
            return;
        }
    }
}

/// The pieces of the first `max_span` bytes of each of `spans` ([`Span::pages`]), a piece of
/// each span in turn.
fn plan(spans: &[Span], page: usize, piece: usize, max_span: usize) -> Vec<(usize, usize)> {
    let mut each: Vec<_> = spans
        .iter()
        .map(|s| {
            let s = Span {
                len: s.len.min(max_span),
                ..*s
            };
            s.pages(page, piece).peekable()
        })
        .collect();
    let mut out = Vec::new();
    while each.iter_mut().any(|p| p.peek().is_some()) {
        for p in &mut each {
            out.extend(p.next());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_holds_the_whole_pages_inside_it_in_pieces() {
        // 100 .. 10,100 with 1,000-byte "pages" rounded to powers of two: pages of 1,024 bytes
        // from 1,024 to 9,216 (8 pages), in pieces of 3,072 bytes.
        let s = Span { addr: 100, len: 10_000 };
        let pieces: Vec<_> = s.pages(1024, 3 * 1024).collect();
        assert_eq!(pieces, vec![(1024, 3072), (4096, 3072), (7168, 2048)]);
        // Less than a page inside: nothing.
        assert_eq!(Span { addr: 100, len: 1000 }.pages(1024, 1024).count(), 0);
        assert_eq!(Span { addr: 1024, len: 0 }.pages(1024, 1024).count(), 0);
    }

    #[test]
    fn the_spare_capacity_of_a_vector_starts_after_its_elements() {
        let mut v: Vec<u64> = Vec::with_capacity(100);
        v.extend([1, 2, 3]);
        let s = Span::spare(&v);
        assert_eq!(s.addr, v.as_ptr() as usize + 24);
        assert_eq!(s.len, 97 * 8);
    }

    #[test]
    fn spans_are_populated_a_piece_of_each_in_turn() {
        let a = Span { addr: 0, len: 4 * 4096 };
        let b = Span {
            addr: 1 << 20,
            len: 2 * 4096,
        };
        let order = plan(&[a, b], 4096, 4096, usize::MAX);
        assert_eq!(
            order,
            vec![
                (0, 4096),
                (1 << 20, 4096),
                (4096, 4096),
                ((1 << 20) + 4096, 4096),
                (8192, 4096),
                (12288, 4096)
            ]
        );
    }

    #[test]
    fn only_the_first_bytes_of_a_large_span_are_populated() {
        let large = Span { addr: 0, len: 10 << 20 };
        let pieces = plan(&[large], 4096, 64 << 10, 1 << 20);
        assert_eq!(pieces.len(), 16, "1 MiB in 64 KiB pieces");
        assert_eq!(pieces.last(), Some(&((1 << 20) - (64 << 10), 64 << 10)));
    }

    #[test]
    fn populating_a_vector_being_filled_leaves_its_contents_as_written() {
        // The helper populates while this thread writes: every element reads back as written.
        let n = 1 << 20;
        let mut v: Vec<u64> = Vec::with_capacity(n);
        populate_in_background(vec![Span::spare(&v)], None);
        for i in 0..n as u64 {
            v.push(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn populating_maps_every_whole_page_before_it_is_written() {
        // 64 pages of a fresh anonymous map (never touched): none resident before, all after
        // (mincore(2)), and still zero.
        let page = page_size().expect("a power-of-two page");
        let len = 64 * page;
        // SAFETY: a private anonymous map of `len` bytes, unmapped below; mincore writes one
        // byte a page into `resident`.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            let resident = |out: &mut Vec<u8>| {
                assert_eq!(libc::mincore(addr, len, out.as_mut_ptr()), 0);
                out.iter().filter(|&&b| b & 1 == 1).count()
            };
            let mut out = vec![0u8; 64];
            assert_eq!(resident(&mut out), 0);
            let span = Span {
                addr: addr as usize,
                len,
            };
            populate(&plan(&[span], page, PIECE_BYTES, MAX_SPAN_BYTES));
            // A kernel without MADV_POPULATE_WRITE (before 5.14) refuses it: then the run
            // takes its faults itself and nothing is mapped ahead.
            let supported = libc::madvise(addr, 0, libc::MADV_POPULATE_WRITE) == 0;
            assert_eq!(resident(&mut out), if supported { 64 } else { 0 });
            let bytes = std::slice::from_raw_parts(addr as *const u8, len);
            assert!(bytes.iter().all(|&b| b == 0));
            libc::munmap(addr, len);
        }
    }
}
