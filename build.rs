//! Bakes the libtorch location into the binary so `target/release/gpt2-parity` runs with no
//! LD_LIBRARY_PATH, and remembers the Python environment that libtorch came from: that venv
//! also runs the bundled reference script.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // torch/lib sits at <venv>/lib/pythonX.Y/site-packages/torch/lib when libtorch comes from pip.
    let venv_python = Path::new(&lib_dir).ancestors().nth(5).map(|venv| venv.join("bin").join("python")).filter(|python| python.exists());
    if let Some(python) = venv_python {
        println!("cargo:rustc-env=GPT2_PARITY_BUILD_PYTHON={}", python.display());
    }
}
