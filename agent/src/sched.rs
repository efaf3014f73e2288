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
//! to about one in three; those left come at the end of time slices. Any thread may move itself
//! between the two classes: no privilege is needed.

use std::io;

/// What a thread does, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Everything but inference (`SCHED_BATCH`): what `main` puts the whole process in first.
    Helper,
    /// A thread that runs models (`SCHED_OTHER`).
    Inference,
}

/// Puts the calling thread, and every thread it starts afterwards, in `class`.
pub fn enter(class: Class) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let policy = match class {
            Class::Helper => libc::SCHED_BATCH,
            Class::Inference => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        #[allow(unsafe_code)]
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = class;
    Ok(())
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

    #[test]
    fn a_thread_moves_between_the_classes_and_its_children_inherit() {
        std::thread::spawn(|| {
            enter(Class::Helper).unwrap();
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(policy).join().unwrap();
            assert_eq!(child, libc::SCHED_BATCH);
            inference_thread();
            assert_eq!(policy(), libc::SCHED_OTHER);
        })
        .join()
        .unwrap();
    }
}
