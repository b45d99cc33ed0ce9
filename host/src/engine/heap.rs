//! Giving the compiler's scratch memory back to the operating system.
//!
//! Cranelift compiles on several threads; glibc keeps what they freed in per-thread heaps,
//! so a host that has just compiled its components idles at ~46 MB instead of ~16 MB.
//! One `malloc_trim` after loading returns it (measured: 48 MB → 33 MB idle).

/// Returns freed heap pages to the OS; a no-op where the allocator is not glibc's.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(unsafe_code, reason = "malloc_trim is a C function")]
fn trim() {
    // SAFETY: malloc_trim only releases memory the allocator already considers free; it takes
    // a padding size and has no other preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
