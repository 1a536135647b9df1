//! Ctrl-C handling for training runs: the first SIGINT sets a flag that the trainer checks
//! after every step ([`crate::RunOptions::interrupt`]): it finishes the step, writes
//! `checkpoints/last` with its position inside the epoch, and stops, so `--resume` continues
//! exactly. The handler then restores the default action, so a second Ctrl-C kills at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // SAFETY: `signal` is async-signal-safe; restoring the default action is always valid.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Installs the SIGINT handler (Unix) and returns the flag it sets.
pub fn install() -> &'static AtomicBool {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic and calls `signal`, both
    // async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    &INTERRUPTED
}
