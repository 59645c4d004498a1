//! Links the sample with a 16 KiB stack instead of Rust's 1 MiB: its linear memory then starts at one wasm page
//! (the stack, its data, and the rest of the page for its heap), small enough for wasmcorn to reset it in place
//! between requests instead of unmapping it (see docs/guests.md).

fn main() {
    println!("cargo:rustc-link-arg=-zstack-size=16384");
}
