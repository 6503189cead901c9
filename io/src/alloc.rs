//! A global allocator that survives absurd allocation requests from untrusted input.
//!
//! Decoders (kafka-protocol's among them) size a `Vec` from a count read off the wire
//! before checking that the bytes are there. A frame claiming 2^31 elements then asks for
//! hundreds of GiB; the system allocator refuses and Rust aborts the whole broker. No
//! legitimate allocation here comes near [`HUGE`] (frames are bounded far below it), so
//! such requests get address space reserved with `MAP_NORESERVE`: nothing is committed
//! unless touched, the decoder fails on the missing bytes, and the mapping is released.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size on are served by an uncommitted mapping.
const HUGE: usize = 1 << 30;
const PAGE: usize = 4096;

pub struct GuardedAllocator;

unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < HUGE || layout.align() > PAGE {
            return unsafe { System.alloc(layout) };
        }
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            mapping.cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < HUGE || layout.align() > PAGE {
            unsafe { System.dealloc(ptr, layout) };
        } else {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_untouched_allocation_succeeds_and_is_released() {
        let layout = Layout::from_size_align(200 << 30, 8).unwrap();
        let ptr = unsafe { GuardedAllocator.alloc(layout) };
        assert!(!ptr.is_null());
        unsafe { ptr.write(7) };
        unsafe { GuardedAllocator.dealloc(ptr, layout) };
    }
}
