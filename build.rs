//! Bakes the libtorch location into the binary so `target/release/gpt2-parity` runs with no
//! LD_LIBRARY_PATH, and remembers the Python environment that libtorch came from (that venv
//! also runs the bundled reference script), libtorch's directory (CUDA is loaded from there on
//! request) and its version (reports record it).
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Where src/device.rs finds libtorch_cuda.so when CUDA is asked for.
    println!("cargo:rustc-env=GPT2_PARITY_LIBTORCH_LIB={lib_dir}");
    // The libtorch version for reports: torch/version.py in a pip install, build-version in a
    // libtorch archive.
    let root = Path::new(&lib_dir).parent().unwrap_or(Path::new(&lib_dir));
    let version = std::fs::read_to_string(root.join("version.py"))
        .ok()
        .and_then(|text| text.lines().find_map(|line| line.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_owned())))
        .or_else(|| std::fs::read_to_string(root.join("build-version")).ok().map(|text| text.trim().to_owned()));
    if let Some(version) = version {
        println!("cargo:rustc-env=GPT2_PARITY_LIBTORCH_VERSION={version}");
    }
    // torch/lib sits at <venv>/lib/pythonX.Y/site-packages/torch/lib when libtorch comes from pip.
    let venv_python = Path::new(&lib_dir).ancestors().nth(5).map(|venv| venv.join("bin").join("python")).filter(|python| python.exists());
    if let Some(python) = venv_python {
        println!("cargo:rustc-env=GPT2_PARITY_BUILD_PYTHON={}", python.display());
    }
}
