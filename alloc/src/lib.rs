//! The process's global allocator: mimalloc, called the way its C API is
//! meant to be called.
//!
//! The `mimalloc` crate's allocator passes every Rust allocation to
//! `mi_malloc_aligned`, alignment 1 to 8 included. Under mimalloc 3 an
//! aligned request whose size class is not a power of two, over 1 KiB (and
//! below it whenever the next free block happens to be misaligned), is
//! served by over-allocating and aligning inside the larger block: about
//! 200 more instructions, and a bigger block, for allocations such as a
//! request's boxed future (kilobytes, not a power of two). Plain
//! `mi_malloc` already returns blocks aligned to 16 bytes whenever the
//! block is 16 bytes or larger, and to 8 otherwise, so a request whose
//! alignment is at most 16 and at most its size is given a plain block;
//! only stricter alignments take the aligned entry points.
//!
//! The one crate of the workspace that needs `unsafe`: implementing
//! [`GlobalAlloc`] is unsafe by definition.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc's `MI_MAX_ALIGN_SIZE`: every block of at least this size
/// starts on a multiple of it (mimalloc's own assertion in `alloc.c`:
/// `block_size < MI_MAX_ALIGN_SIZE || aligned(block, MI_MAX_ALIGN_SIZE)`),
/// and smaller blocks on a multiple of the word.
const PLAIN_ALIGN: usize = 16;

/// Whether a plain `mi_malloc` block of `size` bytes is aligned enough for
/// `align`: at most 16, and at most the size (a block of under 16 bytes is
/// only word-aligned, and an alignment of at most the size is at most 8
/// there).
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (see the crate docs).
pub struct Mimalloc;

// SAFETY: every pointer comes from mimalloc, which returns null on failure
// and blocks of at least the size asked; `plain` only sends a request to
// the unaligned entry points when their blocks meet its alignment (see
// `PLAIN_ALIGN`), and `mi_free` frees blocks from either kind of entry.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; `layout` has a power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block must meet the same alignment at the new size.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

/// Returns the calling thread's empty pages and every arena's freed,
/// not yet purged memory to the OS at once (`mi_collect(true)`), rather
/// than after mimalloc's purge delay, which a burst of frees (a dropped
/// routing table) outlives only partly. It walks this thread's pages, so
/// it is for a thread that just freed a lot, off the request path (the
/// controller after a publish). Without mimalloc as the global allocator
/// it only tidies mimalloc's own, unused, heap.
pub fn collect() {
    // SAFETY: a plain FFI call with no pointers; mimalloc allows it from
    // any thread at any time.
    unsafe { mi_collect(true) }
}

/// Turns transparent huge pages off for the whole process
/// (`PR_SET_THP_DISABLE`), for every fault from now on, whether or not a
/// mapping was advised to use them. mimalloc advises its arenas to use huge
/// pages, and a 2 MiB page is made resident whole however little of it is
/// touched: with the controller's pages spread over several threads' heaps,
/// 10,000 Ingress rules kept 57 MiB of anonymous memory resident with huge
/// pages and 43 MiB without (`bench/scale.py`, THP `madvise`), the
/// difference being memory never written. The proxy's per-request working
/// set is small, so huge pages buy it little. Call it first in `main`,
/// before the threads start (mimalloc's own switch, `MIMALLOC_ALLOW_THP=0`,
/// does the same at its start-up, from the environment). Returns whether
/// the kernel took it (it is Linux's, since 3.15; elsewhere `false`).
pub fn no_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a plain FFI call with integer arguments, as prctl(2)
        // documents for PR_SET_THP_DISABLE.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

// Declared here rather than through `libmimalloc-sys`'s `extended`
// feature, which would add a dependency (`cty`) for this one function;
// the symbol is in the mimalloc that crate links either way.
unsafe extern "C" {
    fn mi_collect(force: bool);
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    /// Every size and alignment the plain path takes, and some it does not,
    /// come back aligned, usable and reallocated with their contents.
    #[test]
    fn blocks_meet_their_alignment() {
        let a = Mimalloc;
        let mut live = Vec::new();
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=64).chain([100, 1000, 1025, 1536, 3000, 8192, 70_000]) {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                for zeroed in [false, true] {
                    // SAFETY: the layout's size is not zero.
                    let p = unsafe {
                        if zeroed {
                            a.alloc_zeroed(layout)
                        } else {
                            a.alloc(layout)
                        }
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                    // SAFETY: `p` holds `size` bytes.
                    unsafe {
                        if zeroed {
                            assert!((0..size).all(|i| *p.add(i) == 0));
                        }
                        p.write_bytes(0xa5, size);
                    }
                    live.push((p, layout));
                }
            }
        }
        for (p, layout) in live {
            let grown = layout.size() * 3 + 7;
            // SAFETY: `p` was allocated with `layout`; `grown` is not zero.
            let q = unsafe { a.realloc(p, layout, grown) };
            assert!(!q.is_null());
            assert_eq!(q as usize % layout.align(), 0);
            // SAFETY: the first `layout.size()` bytes were kept.
            unsafe {
                assert!((0..layout.size()).all(|i| *q.add(i) == 0xa5));
                a.dealloc(q, Layout::from_size_align_unchecked(grown, layout.align()));
            }
        }
    }

    /// Resident pages of the process, from `/proc/self/statm`.
    fn resident_pages() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The kernel holds the process to it: the flag reads back as set.
    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_turned_off_for_the_process() {
        assert!(no_huge_pages(), "prctl(PR_SET_THP_DISABLE) refused");
        // SAFETY: a plain FFI call with integer arguments.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }

    /// Freed blocks stay resident until mimalloc's purge delay; after
    /// `collect` on the thread that freed them, their pages are returned.
    #[test]
    fn collect_returns_freed_pages_at_once() {
        // Its own thread, so no other test's blocks share its pages.
        std::thread::spawn(|| {
            const BLOCK: usize = 64 * 1024;
            const BLOCKS: usize = 1024; // 64 MiB
            let page = 4096;
            let blocks: Vec<*mut u8> = (0..BLOCKS)
                .map(|_| {
                    // SAFETY: plain FFI call.
                    let p = unsafe { mi::mi_malloc(BLOCK) }.cast::<u8>();
                    assert!(!p.is_null());
                    // SAFETY: `p` holds `BLOCK` bytes; touch every page.
                    unsafe { p.write_bytes(1, BLOCK) };
                    p
                })
                .collect();
            let touched = resident_pages();
            for p in blocks {
                // SAFETY: `p` came from `mi_malloc` and is freed once.
                unsafe { mi::mi_free(p.cast()) };
            }
            collect();
            let after = resident_pages();
            let returned = touched.saturating_sub(after) * page;
            assert!(
                returned >= BLOCK * BLOCKS / 2,
                "{returned} of {} bytes returned",
                BLOCK * BLOCKS
            );
        })
        .join()
        .unwrap();
    }
}
