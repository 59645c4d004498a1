//! Links the sample with a 64 KiB stack instead of Rust's 1 MiB: its linear memory then starts at two wasm pages,
//! small enough for wasmcorn to reset it in place between requests instead of unmapping it (see docs/guests.md).

fn main() {
    println!("cargo:rustc-link-arg=-zstack-size=65536");
}
