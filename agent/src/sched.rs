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
//! halved, and the interval between results over raw inference fell from a median of 1.10 to
//! 1.06 over four interleaved runs. Threads that keep pace with a device (audio capture) stay
//! at the default nice.
//!
//! Moving to a lower class needs no privilege. Moving back up from nice +10 does (or a
//! `RLIMIT_NICE` that allows it): so every thread picks its class itself, first thing, and
//! the threads that start inference threads (`main`) stay at nice 0.

use std::io;

/// What a thread does, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Everything but inference (`SCHED_BATCH`, nice 0): what `main` puts the whole process
    /// in first; threads that keep pace with a device stay here.
    Helper,
    /// Reading, preparing and publishing frames, the async runtime (`SCHED_BATCH`, nice
    /// [`BACKGROUND_NICE`]).
    Background,
    /// A thread that runs models (`SCHED_OTHER`, nice 0).
    Inference,
}

/// The nice value of [`Class::Background`]: a weight of 110 against an inference thread's 1024.
pub const BACKGROUND_NICE: i32 = 10;

/// Puts the calling thread, and every thread it starts afterwards, in `class`.
pub fn enter(class: Class) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (policy, nice) = match class {
            Class::Helper => (libc::SCHED_BATCH, 0),
            Class::Background => (libc::SCHED_BATCH, BACKGROUND_NICE),
            Class::Inference => (libc::SCHED_OTHER, 0),
        };
        // the nice value first: if going back up is refused, the policy is still set
        #[allow(unsafe_code)]
        // SAFETY: PRIO_PROCESS with 0 is the calling thread on Linux (nice is per thread).
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

    fn nice() -> i32 {
        #[allow(unsafe_code)]
        // SAFETY: PRIO_PROCESS with 0 is the calling thread.
        unsafe {
            libc::getpriority(libc::PRIO_PROCESS, 0)
        }
    }

    // The test process may itself run niced (CI under `nice`), and going back up to nice 0
    // needs privilege: nice values are checked where they can have been set.

    #[test]
    fn a_thread_moves_between_the_classes_and_its_children_inherit() {
        std::thread::spawn(|| {
            let start = nice();
            let entered = enter(Class::Helper);
            // the policy is set even where the nice value cannot go back up
            assert_eq!(policy(), libc::SCHED_BATCH);
            if start == 0 {
                entered.unwrap();
                assert_eq!(nice(), 0);
            }
            let child = std::thread::spawn(|| (policy(), nice())).join().unwrap();
            assert_eq!(child, (libc::SCHED_BATCH, nice()));
            inference_thread();
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_background_thread_is_niced_alone_and_its_children_inherit() {
        let start = nice();
        let (mine, theirs) = std::thread::spawn(|| {
            background_thread();
            let child = std::thread::spawn(|| (policy(), nice())).join().unwrap();
            ((policy(), nice()), child)
        })
        .join()
        .unwrap();
        assert_eq!(mine.0, libc::SCHED_BATCH);
        if start <= BACKGROUND_NICE {
            assert_eq!(mine.1, BACKGROUND_NICE);
        }
        assert_eq!(theirs, mine);
        // nice is per thread: the spawning thread is untouched
        assert_eq!(nice(), start);
    }
}
