//! The `hello` sample: answers every request with `200 OK`, `text/plain` and `Hello, World!`.
//!
//! It is a guest of the `returning-app` world: it exports `respond`, which is given no environ and returns the
//! whole response, so its component imports nothing at all and is a single core module (a guest that imports a
//! function passing strings through its memory, as `response.start-response` does, carries two more small ones,
//! which every fresh instance instantiates too). Built without Rust's standard library, which brings thirteen
//! WASI interfaces (io, stdio, terminals, environment, exit) that every fresh instance would link
//! (docs/guests.md). Its heap is a bump allocator that starts over when every block is freed, as after each
//! request once the host has read the response (`RequestHeap`).

#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

wit_bindgen::generate!({ path: "../../wit", world: "returning-app" });

struct Hello;

impl Guest for Hello {
    fn respond() -> Result<WholeResponse, String> {
        Ok(WholeResponse {
            status: "200 OK".to_string(),
            // No `Content-Length`: the host counts a body it sends whole, and formatting the number would
            // bring in `core::fmt`.
            headers: vec![("Content-Type".to_string(), "text/plain".to_string())],
            body: b"Hello, World!".to_vec(),
        })
    }
}

export!(Hello);

unsafe extern "C" {
    /// The first byte past the stack and the data, where the heap starts (set by the linker).
    static __heap_base: u8;
}

/// The size of a wasm page, the unit in which linear memory grows.
const PAGE: u64 = 64 << 10;

/// A heap for one request at a time: each block is the next bytes after the last one, and when every block is
/// freed again (as at the end of each request: the response, once the host has read it, by the call's
/// post-return) the next one starts over at the heap's base. A block that ends the heap grows or shrinks in
/// place; another one shrinks where it is. Nothing freed is reused before that start-over, so a request uses the
/// sum of what it allocates, not the most it holds at once. The memory grows, by whole pages, when a block does
/// not fit past the last one, and stays grown for the next request of a reused instance.
struct RequestHeap {
    /// The first free byte; 0 before the first block, meaning the heap's base.
    next: Cell<usize>,
    /// The blocks handed out and not freed yet.
    live: Cell<usize>,
}

// SAFETY: a wasm32-wasip2 guest runs one thread: the heap is never used by two calls at once.
unsafe impl Sync for RequestHeap {}

impl RequestHeap {
    fn base() -> usize {
        (&raw const __heap_base).addr()
    }

    /// The first free byte.
    fn next(&self) -> usize {
        match self.next.get() {
            0 => Self::base(),
            next => next,
        }
    }

    /// Makes the heap end at `end`, growing the memory when it is shorter; false when it cannot grow that far.
    fn end_at(&self, end: usize) -> bool {
        let size = core::arch::wasm32::memory_size(0) as u64 * PAGE;
        let short = (end as u64).saturating_sub(size);
        if short > 0 && core::arch::wasm32::memory_grow(0, short.div_ceil(PAGE) as usize) == usize::MAX {
            return false;
        }
        self.next.set(end);
        true
    }
}

// SAFETY: each block is `layout.size()` bytes at an address aligned to `layout.align()`, inside the memory and
// past every block still in use (blocks are laid end to end, and the heap starts over only when none is in use).
unsafe impl GlobalAlloc for RequestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = self.next().checked_next_multiple_of(layout.align());
        match block.and_then(|block| Some((block, block.checked_add(layout.size())?))) {
            Some((block, end)) if self.end_at(end) => {
                self.live.set(self.live.get() + 1);
                core::ptr::with_exposed_provenance_mut(block)
            }
            _ => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _block: *mut u8, _layout: Layout) {
        // A block freed twice traps rather than leave the count wrong.
        let Some(live) = self.live.get().checked_sub(1) else { core::arch::wasm32::unreachable() };
        self.live.set(live);
        if live == 0 {
            self.next.set(Self::base());
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = block.addr();
        let ends_the_heap = start + layout.size() == self.next();
        if ends_the_heap && start.checked_add(new_size).is_some_and(|end| self.end_at(end)) {
            return block;
        }
        if new_size <= layout.size() {
            return block;
        }
        // SAFETY: `new_size` with `layout`'s alignment is a valid layout, as `GlobalAlloc::realloc` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is not zero-sized (`GlobalAlloc::realloc` forbids a new size of 0).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: the new block is the larger (a smaller size returned above), and it lies past the old one.
            unsafe { core::ptr::copy_nonoverlapping(block, moved, layout.size()) };
            // SAFETY: `block` came from this allocator with `layout`.
            unsafe { self.dealloc(block, layout) };
        }
        moved
    }
}

#[global_allocator]
static HEAP: RequestHeap = RequestHeap { next: Cell::new(0), live: Cell::new(0) };

/// A panic (only an allocation that fails could cause one here) traps: the host answers the request 500.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
