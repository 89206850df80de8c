//! Bakes the libtorch directory into the fuzz binaries, as the main build.rs does for
//! gpt2-parity: LIBTORCH comes from the git-ignored .cargo/config.toml that `make setup` writes.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
}
