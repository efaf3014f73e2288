//! The process's memory allocator settings: glibc's malloc told to keep the memory inference
//! frees for the next inference instead of returning it to the kernel.
//!
//! By default glibc serves every allocation above a threshold (at most 32 MB) with its own
//! `mmap` and unmaps it when freed. Whisper's encoder allocates and frees tensors of up to
//! 54 MB (six heads of 1500 × 1500 attention scores) in every inference: each one came back
//! as fresh pages, faulted in and zeroed by the kernel one by one (measured: 35 % of the
//! samples of a profile of the encoder, its loading included, in the kernel; 403 ms per
//! inference, against 256 ms with the settings below). onnxruntime avoids the same cost with
//! its own arena.
//!
//! Here: no `mmap` below 1 GB, and a heap trimmed only when more than 1 GB of it lies free at
//! its top. Resident memory then stays at the peak the models need (which the device must
//! have anyway) instead of falling between inferences. A `MALLOC_*` variable in the
//! environment (glibc's own tunables) leaves everything as the user set it.
//!
//! Each thread keeps glibc's own arena. With one arena for the whole process, the memory
//! the capture and prepare threads free (a decoded photo, a resized copy) was handed to the
//! inference thread next, still in the other core's cache, and every thread's allocations
//! took the same lock: EfficientNet-Lite0 ran 4–7 % slower in a pipeline than alone, against
//! 2–4 % with an arena per thread, for no difference in the agent's peak resident memory.

/// What [`tune`] did, for the log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuning {
    /// both settings taken
    Applied,
    /// a `MALLOC_*` variable in the environment: glibc's tunables left as the user set them
    LeftToEnvironment,
    /// not glibc on Linux: nothing to set
    NotGlibc,
    /// glibc refused these settings (it keeps its defaults for them)
    Refused(Vec<&'static str>),
}

/// Applies the settings above; call first thing in `main`, before any thread starts.
pub fn tune() -> Tuning {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
            return Tuning::LeftToEnvironment;
        }
        const LIMIT: libc::c_int = 1 << 30;
        let settings =
            [("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, LIMIT), ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, LIMIT)];
        let refused: Vec<&'static str> = settings
            .into_iter()
            .filter(|&(_, param, value)| {
                #[allow(unsafe_code)]
                // SAFETY: mallopt only changes the allocator's parameters, and it runs before any
                // other thread exists; it returns 0 when it refuses a setting.
                let taken = unsafe { libc::mallopt(param, value) };
                taken == 0
            })
            .map(|(name, ..)| name)
            .collect();
        if refused.is_empty() { Tuning::Applied } else { Tuning::Refused(refused) }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    Tuning::NotGlibc
}
