//! The tool's own threads for the loops it runs outside libtorch: processing on a rayon pool,
//! and the float64 forward's few-row products on libtorch's own OpenMP threads. Either way as many
//! as libtorch's, which `--threads` sets, so that this work uses the cores the rest of the run
//! does.
use std::ffi::{c_int, c_uint, c_void};
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

/// Runs `task(thread, team)` once on each thread of a team (`thread` counts from 0 to `team`):
/// libtorch's own OpenMP threads, found in the process by name, or a rayon pool where none are.
///
/// Between a forward's many small libtorch operations, libtorch's OpenMP threads spin waiting for
/// the next one: a pool of our own, started in that gap, competes with them for the same cores.
/// On 2 cores, the float64 pass of "Hello World" took 0.15 s on rayon's threads against 0.11 s
/// once OpenMP's were told to sleep instead (OMP_WAIT_POLICY=PASSIVE); handing the work to the
/// spinning threads themselves takes that gap away without asking users to set anything.
pub fn on_team(task: &(dyn Fn(usize, usize) + Sync)) {
    match openmp() {
        Some(runtime) => {
            extern "C" fn each(data: *mut c_void) {
                // SAFETY: `data` is the `task` reference on_team passed to GOMP_parallel, which
                // returns only after every thread of the team has run this.
                let task = unsafe { &*(data as *const &(dyn Fn(usize, usize) + Sync)) };
                let openmp = openmp().expect("running on OpenMP's team");
                // SAFETY: OpenMP's queries, called on a thread of the team.
                let (thread, team) = unsafe { ((openmp.thread_num)(), (openmp.num_threads)()) };
                task(thread.max(0) as usize, team.max(1) as usize);
            }
            let data = &task as *const &(dyn Fn(usize, usize) + Sync) as *mut c_void;
            let threads = tch::get_num_threads().max(1) as c_uint;
            // SAFETY: GOMP_parallel runs `each(data)` on a team of `threads` and returns when all
            // have finished, so `task` outlives every use; `each` does not unwind (a panic in an
            // extern "C" function aborts).
            unsafe { (runtime.parallel)(each, data, threads, 0) };
        }
        None => {
            use rayon::prelude::*;
            let threads = tch::get_num_threads().max(1) as usize;
            Workers::new().run(|| (0..threads).into_par_iter().for_each(|thread| task(thread, threads)));
        }
    }
}

/// The OpenMP runtime's entry points (GCC's libgomp ABI, which LLVM's libomp also exports).
struct OpenMp {
    parallel: unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint),
    thread_num: unsafe extern "C" fn() -> c_int,
    num_threads: unsafe extern "C" fn() -> c_int,
}

fn openmp() -> Option<&'static OpenMp> {
    static OPENMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OPENMP
        .get_or_init(|| {
            let symbol = |name: &std::ffi::CStr| {
                // SAFETY: dlsym with RTLD_DEFAULT searches the libraries already loaded.
                let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!address.is_null()).then_some(address)
            };
            let (parallel, thread_num, num_threads) =
                (symbol(c"GOMP_parallel")?, symbol(c"omp_get_thread_num")?, symbol(c"omp_get_num_threads")?);
            // SAFETY: these names are OpenMP's, with the signatures above in every runtime that
            // exports them.
            unsafe {
                Some(OpenMp {
                    parallel: std::mem::transmute::<*mut c_void, _>(parallel),
                    thread_num: std::mem::transmute::<*mut c_void, _>(thread_num),
                    num_threads: std::mem::transmute::<*mut c_void, _>(num_threads),
                })
            }
        })
        .as_ref()
}
