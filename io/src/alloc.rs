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
        if is_system(layout) {
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
        if is_system(layout) {
            unsafe { System.dealloc(ptr, layout) };
        } else {
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        }
    }

    // The defaults of these two zero with memset and grow by copying; the system's calloc
    // skips zeroing memory fresh from the kernel, and its realloc often grows in place
    // (or by mremap).
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_system(layout) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            // A fresh anonymous mapping is zero.
            unsafe { self.alloc(layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if is_system(layout) && is_system(new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Served by the system allocator rather than a mapping of our own.
fn is_system(layout: Layout) -> bool {
    layout.size() < HUGE || layout.align() > PAGE
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

    #[test]
    fn zeroed_and_grown_allocations_keep_their_contents_across_the_threshold() {
        let small = Layout::from_size_align(4096, 8).unwrap();
        let ptr = unsafe { GuardedAllocator.alloc_zeroed(small) };
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, small.size()) };
        assert!(bytes.iter().all(|b| *b == 0));
        bytes[..4].copy_from_slice(b"kept");
        // Small to huge (a mapping) and back to small.
        let mut layout = small;
        let mut ptr = ptr;
        for new_size in [HUGE + PAGE, 64] {
            ptr = unsafe { GuardedAllocator.realloc(ptr, layout, new_size) };
            assert!(!ptr.is_null());
            assert_eq!(unsafe { std::slice::from_raw_parts(ptr, 4) }, b"kept");
            layout = Layout::from_size_align(new_size, 8).unwrap();
        }
        unsafe { GuardedAllocator.dealloc(ptr, layout) };
        let huge = Layout::from_size_align(HUGE, 8).unwrap();
        let ptr = unsafe { GuardedAllocator.alloc_zeroed(huge) };
        assert_eq!(unsafe { *ptr.add(HUGE - 1) }, 0);
        unsafe { GuardedAllocator.dealloc(ptr, huge) };
    }
}
