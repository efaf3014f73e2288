//! Scheduling classes of the agent's threads (Linux): the process starts in `SCHED_BATCH`, so
//! every thread inherits it, and each inference thread moves itself back to `SCHED_OTHER`.
//! The other threads' wake-ups then no longer preempt a model mid-inference.
//!
//! Under Linux's fair scheduler a thread that wakes up (a frame decoded, a result to publish,
//! a packet from the broker) preempts whatever runs on its core if it is owed time. On a board
//! with few cores that is often an inference thread, which then waits while the short task
//! runs and comes back to caches the task has used. A `SCHED_BATCH` thread gets the same share
//! of the CPU but does not preempt on waking: it takes an idle core, or waits for the running
//! thread's time slice to end (a few milliseconds at most). Publishing, capture and preparing
//! have that much slack; a model that stops halfway has not. Measured on the EfficientNet-Lite0
//! end-to-end run (2 cores): the inference thread's preemptions fell from about one per frame
//! to about one in three; those left come at the end of time slices.
//!
//! The threads that read, prepare and publish frames, and the async runtime's, go one step
//! further down ([`Class::Background`], nice +10): when one of them waits for a core that an
//! inference thread holds, it gets a tenth of that core, not half, so a neighbour that is idle
//! takes it over first. Measured on BlazeFace end to end from raw frames (2 cores, 0.55 ms an
//! inference, about 0.4 ms of work around each frame): preemptions of the inference thread
//! halved, and the interval between results over raw inference fell from a median of 1.08 to
//! 1.05 over five interleaved pairs. Threads that keep pace with a device (audio capture) stay
//! at the process's nice value.
//!
//! Nice values are relative to the process's own at the first [`enter`] (what `Nice=` in a
//! systemd unit or `nice` on the command line set): the agent lowers its helpers below its
//! inference, it does not undo an administrator's choice. Moving to a lower class needs no
//! privilege. Moving back up from +10 does (or a `RLIMIT_NICE` that allows it): so every
//! thread picks its class itself, first thing, and the threads that start inference threads
//! (`main`) stay at the process's nice value.

use std::io;

/// What a thread does, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Everything but inference (`SCHED_BATCH`, the process's nice value): what `main` puts
    /// the whole process in first; threads that keep pace with a device stay here.
    Helper,
    /// Reading, preparing and publishing frames, the async runtime (`SCHED_BATCH`, nice
    /// [`BACKGROUND_NICE`] above the process's).
    Background,
    /// A thread that runs models (`SCHED_OTHER`, the process's nice value).
    Inference,
}

/// How much nicer [`Class::Background`] is: at nice 10 a weight of 110 against an inference
/// thread's 1024 at nice 0.
pub const BACKGROUND_NICE: i32 = 10;

/// The process's nice value at the first [`enter`]: the base of every class's.
#[cfg(target_os = "linux")]
static BASE_NICE: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
fn current_nice() -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: PRIO_PROCESS with 0 is the calling thread on Linux (nice is per thread).
    unsafe {
        libc::getpriority(libc::PRIO_PROCESS, 0)
    }
}

/// Puts the calling thread, and every thread it starts afterwards, in `class`.
pub fn enter(class: Class) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let base = *BASE_NICE.get_or_init(current_nice);
        let (policy, nice) = match class {
            Class::Helper => (libc::SCHED_BATCH, base),
            Class::Background => (libc::SCHED_BATCH, (base + BACKGROUND_NICE).min(19)),
            Class::Inference => (libc::SCHED_OTHER, base),
        };
        // the nice value first: if going back up is refused, the policy is still set
        #[allow(unsafe_code)]
        // SAFETY: as in `current_nice`.
        let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
        let niced = if niced == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
        let param = libc::sched_param { sched_priority: 0 };
        #[allow(unsafe_code)]
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        niced?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = class;
    Ok(())
}

/// A background thread's first call (see [`Class::Background`]); a failure only costs
/// preemptions of inference, so it is logged, not raised.
pub fn background_thread() {
    if let Err(e) = enter(Class::Background) {
        tracing::debug!(error = %e, "background thread left in its creator's scheduling class");
    }
}

/// An inference thread's first call: back to `SCHED_OTHER` (a failure only costs preemptions,
/// so it is logged, not raised).
pub fn inference_thread() {
    if let Err(e) = enter(Class::Inference) {
        tracing::debug!(error = %e, "inference thread left in the process's scheduling class");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> i32 {
        #[allow(unsafe_code)]
        // SAFETY: pid 0 is the calling thread.
        unsafe {
            libc::sched_getscheduler(0)
        }
    }

    // The test process may itself run niced (CI under `nice`): every class's nice value is
    // relative to the process's, which the threads of this test harness all start at.

    #[test]
    fn a_thread_moves_between_the_classes_and_its_children_inherit() {
        std::thread::spawn(|| {
            let start = current_nice();
            enter(Class::Helper).unwrap();
            assert_eq!((policy(), current_nice()), (libc::SCHED_BATCH, start));
            let child = std::thread::spawn(|| (policy(), current_nice())).join().unwrap();
            assert_eq!(child, (libc::SCHED_BATCH, start));
            inference_thread();
            assert_eq!((policy(), current_nice()), (libc::SCHED_OTHER, start));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_background_thread_is_niced_alone_and_its_children_inherit() {
        let start = current_nice();
        let (mine, theirs) = std::thread::spawn(|| {
            background_thread();
            let child = std::thread::spawn(|| (policy(), current_nice())).join().unwrap();
            ((policy(), current_nice()), child)
        })
        .join()
        .unwrap();
        assert_eq!(mine, (libc::SCHED_BATCH, (start + BACKGROUND_NICE).min(19)));
        assert_eq!(theirs, mine);
        // nice is per thread: the spawning thread is untouched
        assert_eq!(current_nice(), start);
    }
}
