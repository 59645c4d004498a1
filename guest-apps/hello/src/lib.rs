//! The `hello` sample: answers every request with `200 OK`, `text/plain` and `Hello, World!`.
//!
//! Built without Rust's standard library, so that its component imports nothing but `wasmcorn:app/response`:
//! `std` brings thirteen WASI interfaces (stdio, terminals, environment, exit) that every fresh instance would
//! link, and about a fifth of the cost of a fresh instance with them (docs/guests.md). The heap is wasi-libc's
//! `malloc`, the one `std` itself uses on this target, and `cabi_realloc` (which `std` would export) hands the
//! host's allocations to it.

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
    fn aligned_alloc(align: usize, size: usize) -> *mut u8;
    fn free(ptr: *mut u8);
}

/// wasi-libc's `malloc`: it serves the rest of the first page first and grows the memory only past it.
struct LibcMalloc;

// SAFETY: `aligned_alloc` returns memory of `layout`'s size and alignment, or null; `free` takes what it returned.
unsafe impl GlobalAlloc for LibcMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: wasi-libc's `aligned_alloc` takes any power-of-two alignment, which `Layout` guarantees.
        unsafe { aligned_alloc(layout.align(), layout.size()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, as `GlobalAlloc` requires.
        unsafe { free(ptr) }
    }
}

#[global_allocator]
static HEAP: LibcMalloc = LibcMalloc;

/// The canonical ABI's allocator, through which the host lowers the environ into this instance.
///
/// # Safety
/// The host calls it as the canonical ABI says: `old` is null with `old_len` 0, or a block it got from this
/// function with that length and `align`.
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(old: *mut u8, old_len: usize, align: usize, new_len: usize) -> *mut u8 {
    let Ok(layout) = Layout::from_size_align(old_len, align) else { core::arch::wasm32::unreachable() };
    let block = if old_len == 0 {
        if new_len == 0 {
            return align as *mut u8;
        }
        // SAFETY: `new_len` is not zero and `align` a power of two (checked above).
        unsafe { HEAP.alloc(Layout::from_size_align_unchecked(new_len, align)) }
    } else {
        // SAFETY: `old` is a block of `layout` from this allocator, as the canonical ABI promises.
        unsafe { HEAP.realloc(old, layout, new_len) }
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
