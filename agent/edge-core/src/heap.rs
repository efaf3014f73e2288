//! Memory the allocator holds free, handed back to the kernel at the few moments the agent
//! knows it will not be reused: after models load.
//!
//! The agent tells glibc's malloc to keep what inference frees (see the agent's `allocator`
//! module): the next inference needs the same tensors again. What *loading* frees is not
//! needed again: the ONNX protos, the graphs before optimisation and the unpacked weights
//! of every model were freed into the loading thread's arena and stayed resident there for
//! the life of the process. [`release_free`] returns them (`malloc_trim`, which goes through
//! every thread's arena and gives back whole free pages anywhere in them, not only at the top).

/// Gives the allocator's free pages back to the kernel. Cheap when little is free; the pages
/// an inference later needs are faulted in again once. Does nothing off glibc.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim only returns free memory of the allocator's own arenas to the
        // kernel; it takes the arenas' locks like any allocation and touches no live block.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
