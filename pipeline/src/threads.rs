//! The compute thread pool.
//!
//! tract splits each matrix product across the pool installed as its executor. When the caller
//! is not itself a pool thread, every product is a round trip: wake the workers, sleep until
//! they finish, get woken again. A decode step runs a few hundred products of well under a
//! millisecond each, so those wake-ups cost a large share of the step. [`run`] moves a whole
//! model call onto a pool thread instead: the products then split between a thread that is
//! already running and workers that are still spinning from the previous one.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};
use tract_linalg::multithread::{Executor, set_default_executor};

static POOL: Mutex<Option<Arc<ThreadPool>>> = Mutex::new(None);

/// Held by the one model call running on the pool. A pool thread that waits inside a product
/// takes other queued pool work meanwhile; if that were a second model call, its products
/// would re-enter per-thread state (tract's matmul scratch space) that the first still holds.
static CALL: Mutex<()> = Mutex::new(());

/// How far below normal priority (`nice` steps) compute threads run; see [`set_niceness`].
static NICENESS: AtomicI32 = AtomicI32::new(0);

/// Makes compute threads started after this run `steps` below normal priority (Linux `nice`),
/// so that work that must keep a rate, such as object detection on its own thread, gets a core
/// when it needs one and inference takes the rest. A no-op elsewhere.
pub fn set_niceness(steps: i32) {
    NICENESS.store(steps, Ordering::Relaxed);
}

/// Lowers the calling thread's priority by the [`set_niceness`] steps (inference threads that
/// are not pool threads call this themselves).
pub fn lower_this_thread() {
    let steps = NICENESS.load(Ordering::Relaxed);
    #[cfg(target_os = "linux")]
    if steps > 0 {
        // SAFETY: setpriority only changes this thread's (a TID is a process id for it) nice
        // value; lowering priority needs no privilege, and failure leaves it unchanged.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, steps);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = steps;
}

/// Uses `threads` worker threads (`None`: one per core) for every later model call, and returns
/// that number.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    let n = match threads {
        Some(0) => anyhow::bail!("threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    crate::memory::limit_arenas();
    let pool = if n == 1 {
        None
    } else {
        Some(Arc::new(
            ThreadPoolBuilder::new()
                .thread_name(|i| format!("lookout-compute-{i}"))
                .start_handler(|_| lower_this_thread())
                .num_threads(n)
                .build()?,
        ))
    };
    set_default_executor(match &pool {
        Some(pool) => Executor::MultiThread(pool.clone()),
        None => Executor::SingleThread,
    });
    *POOL.lock().unwrap_or_else(|e| e.into_inner()) = pool;
    Ok(n)
}

/// Runs `f` on a thread of the compute pool (or right here when there is no pool), so that the
/// matrix products inside it split without cross-thread wake-ups. Calls from several threads
/// take turns: the pool runs one model call at a time.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match pool {
        Some(pool) if pool.current_thread_index().is_none() => {
            let _turn = CALL.lock().unwrap_or_else(|e| e.into_inner());
            pool.install(f)
        }
        _ => f(),
    }
}
