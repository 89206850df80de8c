//! The tool's own threads for the loops it runs outside libtorch: processing on a rayon pool,
//! and the float64 forward's few-row products on libtorch's own OpenMP threads. Either way as many
//! as libtorch's, which `--threads` sets, so that this work uses the cores the rest of the run
//! does.
use std::ffi::{c_uint, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

/// A rayon pool, one per thread count, kept for the process's life.
pub struct Workers(Option<Arc<ThreadPool>>);

impl Workers {
    /// The pool for libtorch's current thread count.
    pub fn new() -> Self {
        static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());
        let threads = tch::get_num_threads().max(1) as usize;
        let mut pools = POOLS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, pool)) = pools.iter().find(|(count, _)| *count == threads) {
            return Self(Some(Arc::clone(pool)));
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().ok().map(Arc::new);
        if let Some(pool) = &pool {
            pools.push((threads, Arc::clone(pool)));
        }
        Self(pool)
    }

    /// `work` on these threads; on rayon's own if they could not be started.
    pub fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        match &self.0 {
            Some(pool) => pool.install(work),
            None => work(),
        }
    }
}

/// Runs `task` once on each thread of a team: libtorch's own OpenMP threads, found in the process
/// by name, or a rayon pool where none are.
///
/// Between a forward's many small libtorch operations, libtorch's OpenMP threads spin waiting for
/// the next one: a pool of our own, started in that gap, competes with them for the same cores.
/// On 2 cores, the float64 pass of "Hello World" took 0.15 s on rayon's threads against 0.11 s
/// once OpenMP's were told to sleep instead (OMP_WAIT_POLICY=PASSIVE); handing the work to the
/// spinning threads themselves takes that gap away without asking users to set anything.
pub fn on_team(task: &(dyn Fn() + Sync)) {
    let threads = tch::get_num_threads().max(1);
    match openmp_parallel() {
        Some(parallel) => {
            extern "C" fn each(data: *mut c_void) {
                // SAFETY: `data` is the `task` reference on_team passed to GOMP_parallel, which
                // returns only after every thread of the team has run this.
                let task = unsafe { &*(data as *const &(dyn Fn() + Sync)) };
                task();
            }
            let data = &task as *const &(dyn Fn() + Sync) as *mut c_void;
            // SAFETY: GOMP_parallel runs `each(data)` on a team of `threads` and returns when all
            // have finished, so `task` outlives every use; `each` does not unwind (a panic in an
            // extern "C" function aborts).
            unsafe { parallel(each, data, threads as c_uint, 0) };
        }
        None => {
            use rayon::prelude::*;
            Workers::new().run(|| (0..threads).into_par_iter().for_each(|_| task()));
        }
    }
}

/// The OpenMP runtime's GOMP_parallel (GCC's libgomp ABI, which LLVM's libomp also exports).
type Parallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);

fn openmp_parallel() -> Option<Parallel> {
    static PARALLEL: OnceLock<Option<Parallel>> = OnceLock::new();
    *PARALLEL.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT searches the libraries already loaded.
        let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"GOMP_parallel".as_ptr()) };
        // SAFETY: GOMP_parallel has this signature in every runtime that exports it.
        (!address.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, Parallel>(address) })
    })
}
