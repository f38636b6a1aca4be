//! A counting global allocator: live heap bytes, for memory per actor (P8).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Wraps the system allocator and counts live bytes.
#[derive(Debug)]
pub(crate) struct Counting;

// The only unsafe code of the workspace: a `GlobalAlloc` impl is unsafe by definition. It
// forwards every call unchanged to `System` and only adds to a counter.
#[allow(
    unsafe_code,
    reason = "GlobalAlloc is an unsafe trait; calls are forwarded to System"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, which satisfies `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size().cast_signed(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size.cast_signed() - layout.size().cast_signed(),
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged; `ptr`/`layout` come from `System` as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Live heap bytes now.
pub(crate) fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}
