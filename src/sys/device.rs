//! Where our forward passes run. The binary does not link libtorch's CUDA library: no symbol of
//! it is referenced, so the linker's --as-needed drops it (tch-rs issue 980), and linking it
//! anyway would cost every CPU run about 0.13 s and 350 MB at start-up. When a CUDA device is
//! asked for, libtorch_cuda.so is loaded from the libtorch the build linked (RTLD_GLOBAL, so that
//! its kernels and CUDA hooks register with libtorch) before the first CUDA call.
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};

/// `--device` as given; [`resolve`] makes it a device that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Cpu,
    Cuda(usize),
    Auto,
}

impl DeviceRequest {
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("{text:?} is not a device; use cpu, cuda, cuda:N or auto")),
        }
    }
}

/// The device `--device` names, checked to exist; `auto` is CUDA device 0 when libtorch finds
/// one, else the CPU.
pub fn resolve(request: DeviceRequest) -> Result<tch::Device> {
    match request {
        DeviceRequest::Cpu => Ok(tch::Device::Cpu),
        DeviceRequest::Auto => Ok(match load_cuda() {
            Ok(()) if tch::Cuda::device_count() > 0 => tch::Device::Cuda(0),
            _ => tch::Device::Cpu,
        }),
        DeviceRequest::Cuda(index) => {
            load_cuda().map_err(|problem| anyhow!("--device cuda:{index}: {problem}; use --device cpu (or auto)"))?;
            match tch::Cuda::device_count() {
                0 => bail!(
                    "--device cuda:{index}: libtorch finds no CUDA device on this machine (no GPU, or no NVIDIA driver); use --device cpu or --device auto"
                ),
                available if index as i64 >= available => bail!(
                    "--device cuda:{index}: this machine has {available} CUDA device(s) visible to libtorch (cuda:0 to cuda:{}); use one of those or --device cpu",
                    available - 1
                ),
                _ => Ok(tch::Device::Cuda(index)),
            }
        }
    }
}

/// "cpu", "cuda:0", as the reports record it.
pub fn name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(index) => format!("cuda:{index}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Loads libtorch_cuda.so once per process; the error says why it could not be.
fn load_cuda() -> Result<(), String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let Some(dir) = option_env!("GPT2_PARITY_LIBTORCH_LIB") else {
                return Err("this binary was built without knowing where its libtorch lives, so it cannot load CUDA".to_owned());
            };
            let library = Path::new(dir).join("libtorch_cuda.so");
            if !library.exists() {
                return Err(format!("the libtorch this binary was built with ({dir}) has no libtorch_cuda.so (a CPU-only libtorch)"));
            }
            let path = CString::new(library.as_os_str().as_bytes()).map_err(|_| format!("{} holds a NUL byte", library.display()))?;
            // SAFETY: dlopen with a valid C string; the handle is kept for the process's lifetime.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a valid C string right after a failed dlopen.
                let reason = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
                return Err(format!("cannot load {} ({reason})", library.display()));
            }
            Ok(())
        })
        .clone()
}
