//! `uniffi-bindgen`, pinned to the workspace's UniFFI: `scripts/gen-bindings.sh` runs it in
//! library mode on the built `offst-ffi` library to write the Kotlin and Swift bindings.

fn main() {
    uniffi::uniffi_bindgen_main()
}
