//! The `hello` sample: answers every request with `200 OK`, `text/plain` and `Hello, World!`.
//!
//! Built without Rust's standard library, so that its component imports nothing but `wasmcorn:app/response`:
//! `std` brings thirteen WASI interfaces (io, stdio, terminals, environment, exit) that every fresh instance
//! would link again (docs/guests.md). The heap is wasi-libc's `malloc`, the allocator `std` itself uses on this
//! target, and `cabi_realloc` (which `std` would export) hands the host's allocations to it.

#![no_std]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};

wit_bindgen::generate!({ path: "../../wit", world: "app" });

use wasmcorn::app::response::{start_response, write_body};

struct Hello;

impl Guest for Hello {
    fn handle(_environ: Vec<(String, String)>) -> Result<(), String> {
        let body = b"Hello, World!";
        start_response(
            "200 OK",
            &[
                ("Content-Type".to_string(), "text/plain".to_string()),
                ("Content-Length".to_string(), body.len().to_string()),
            ],
        )?;
        write_body(body)
    }
}

export!(Hello);

#[link(name = "c")]
unsafe extern "C" {
    fn malloc(size: usize) -> *mut u8;
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn realloc(ptr: *mut u8, size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

/// What every block of wasi-libc's `malloc` is aligned to at least (dlmalloc's least: two pointers); up to this
/// alignment `malloc` and `realloc` are asked directly, as Rust's `std` does.
const MALLOC_ALIGN: usize = 8;

/// wasi-libc's `malloc`: it serves the rest of the first page first and grows the memory only past it.
struct LibcMalloc;

// SAFETY: each call returns a block of `layout`'s size and alignment, or null, and `free` and `realloc` take only
// what they returned.
unsafe impl GlobalAlloc for LibcMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= layout.size() {
            // SAFETY: any size may be asked of `malloc`.
            unsafe { malloc(layout.size()) }
        } else {
            // SAFETY: `Layout` guarantees a power-of-two alignment, which wasi-libc's `aligned_alloc` takes.
            unsafe { aligned_alloc(layout.align(), layout.size()) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, as `GlobalAlloc` requires.
        unsafe { free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN && layout.align() <= new_size {
            // SAFETY: `ptr` came from this allocator; `malloc`'s alignment suffices for the block.
            return unsafe { realloc(ptr, new_size) };
        }
        // SAFETY: `new_size` with `layout`'s alignment is a valid layout, as `GlobalAlloc::realloc` requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `new_layout` is not zero-sized (`GlobalAlloc::realloc` forbids a new size of 0).
        let block = unsafe { self.alloc(new_layout) };
        if !block.is_null() {
            // SAFETY: both blocks hold at least the smaller size, and they are distinct.
            unsafe { core::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size)) };
            // SAFETY: `ptr` came from this allocator with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        block
    }
}

#[global_allocator]
static HEAP: LibcMalloc = LibcMalloc;

/// The canonical ABI's allocator, through which the host lowers the environ into this instance: a new block
/// when `old_len` is 0, else `old` resized; an empty block is the alignment itself, never allocated.
///
/// # Safety
/// The host calls it as the canonical ABI says: `old` is null with `old_len` 0, or a block it got from this
/// function with that length and `align`.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    let (Ok(old_layout), Ok(new_layout)) =
        (Layout::from_size_align(old_len, align), Layout::from_size_align(new_len, align))
    else {
        core::arch::wasm32::unreachable()
    };
    let block = match (old_len, new_len) {
        (_, 0) => {
            if old_len != 0 {
                // SAFETY: `old` is a block of `old_layout` from this allocator, as the canonical ABI promises.
                unsafe { HEAP.dealloc(old, old_layout) };
            }
            return align as *mut u8;
        }
        // SAFETY: `new_layout` is not zero-sized.
        (0, _) => unsafe { HEAP.alloc(new_layout) },
        // SAFETY: `old` is a block of `old_layout` from this allocator; `new_len` is not zero and, with `align`, a
        // valid layout.
        _ => unsafe { HEAP.realloc(old, old_layout, new_len) },
    };
    if block.is_null() {
        core::arch::wasm32::unreachable()
    }
    block
}

/// A panic (only an allocation that fails could cause one here) traps: the host answers the request 500.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}
