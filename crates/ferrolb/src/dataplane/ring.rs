//! `PACKET_RX_RING` (TPACKET_V2) receive ring: the kernel copies each accepted frame into
//! a slot of a ring shared with this process (mmap) and flips the slot's status word; the
//! receive thread reads ready slots without a system call and hands them back. It only
//! sleeps (`poll`) when the ring is empty. V2 rather than V3: V3 hands over whole blocks
//! and its block timeout would add latency to a lone request.
//!
//! The geometry arithmetic is pure ([`Geometry`]); [`RxRing`] is the thin unsafe shell.

use std::io;
use std::mem::size_of;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// Slot layout of a ring: `block_nr` blocks of `block_size` bytes, each holding
/// `block_size / frame_size` slots of `frame_size` bytes (slots never straddle blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Number of blocks.
    pub block_nr: u32,
    /// Bytes per slot (a multiple of `TPACKET_ALIGNMENT`, 16).
    pub frame_size: u32,
    /// Number of slots (`block_nr * frames_per_block`).
    pub frame_nr: u32,
}

const ALIGN: usize = libc::TPACKET_ALIGNMENT;

impl Geometry {
    /// A ring of at least `frames` slots of at least `frame_size` bytes, in blocks of
    /// `block_size` (rounded up to a multiple of `page` and to hold one slot). `None` if a
    /// size is zero or overflows the kernel's 32-bit fields.
    pub fn new(frame_size: usize, frames: usize, block_size: usize, page: usize) -> Option<Self> {
        if frame_size == 0 || frames == 0 || page == 0 {
            return None;
        }
        let frame_size = frame_size.checked_next_multiple_of(ALIGN)?;
        let block_size = block_size.max(frame_size).checked_next_multiple_of(page)?;
        let per_block = block_size / frame_size;
        let block_nr = frames.div_ceil(per_block);
        let frame_nr = block_nr.checked_mul(per_block)?;
        block_nr
            .checked_mul(block_size)
            .filter(|t| *t <= u32::MAX as usize)?;
        Some(Self {
            block_size: u32::try_from(block_size).ok()?,
            block_nr: u32::try_from(block_nr).ok()?,
            frame_size: u32::try_from(frame_size).ok()?,
            frame_nr: u32::try_from(frame_nr).ok()?,
        })
    }

    /// Slots per block.
    pub fn frames_per_block(&self) -> u32 {
        self.block_size / self.frame_size
    }

    /// Bytes of the whole mapping.
    pub fn len(&self) -> usize {
        self.block_size as usize * self.block_nr as usize
    }

    /// Always false for a constructed geometry (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Byte offset of slot `i` (taken modulo `frame_nr`) in the mapping.
    pub fn offset(&self, i: u32) -> usize {
        let i = i % self.frame_nr;
        let fpb = self.frames_per_block();
        (i / fpb) as usize * self.block_size as usize
            + (i % fpb) as usize * self.frame_size as usize
    }

    /// The slot after `i`.
    pub fn next(&self, i: u32) -> u32 {
        (i + 1) % self.frame_nr
    }
}

/// Where the frame bytes of a ready slot are: `tp_mac` offset and `tp_snaplen` length
/// inside a slot of `frame_size` bytes. `None` if the header points outside the slot
/// (never trusted blindly: the mapping is writable by the kernel only, but a bad header
/// must not become an out-of-bounds read).
pub fn frame_span(frame_size: u32, mac: u16, snaplen: u32) -> Option<std::ops::Range<usize>> {
    let start = mac as usize;
    let end = start.checked_add(snaplen as usize)?;
    (start >= size_of::<libc::tpacket2_hdr>() && end <= frame_size as usize).then_some(start..end)
}

/// A mapped TPACKET_V2 receive ring on a packet socket.
#[derive(Debug)]
pub struct RxRing {
    base: *mut u8,
    geo: Geometry,
    /// The next slot to look at (the kernel fills slots in order).
    head: u32,
}

// SAFETY: the mapping is owned by this value (unmapped on drop) and only accessed through
// `&mut self`; moving it to another thread is fine.
unsafe impl Send for RxRing {}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` come from the successful mmap in `attach`.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.geo.len());
        }
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a valid T for the duration of the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            opt,
            val as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A frame borrowed from the ring; hand it back with [`RxRing::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

impl RxRing {
    /// Switches the packet socket `fd` to TPACKET_V2, sets up a ring of `geo` and maps it.
    /// Call before the socket is bound, so every accepted frame lands in the ring.
    pub fn attach(fd: RawFd, geo: Geometry) -> io::Result<Self> {
        let v2: libc::c_int = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(fd, libc::PACKET_VERSION, &v2)?;
        let req = libc::tpacket_req {
            tp_block_size: geo.block_size,
            tp_block_nr: geo.block_nr,
            tp_frame_size: geo.frame_size,
            tp_frame_nr: geo.frame_nr,
        };
        setsockopt(fd, libc::PACKET_RX_RING, &req)?;
        // SAFETY: maps the ring the kernel just allocated for `fd`; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                geo.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: base as *mut u8,
            geo,
            head: 0,
        })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    fn hdr(&self, i: u32) -> *mut libc::tpacket2_hdr {
        // SAFETY: offset(i) + frame_size <= len, so the pointer stays inside the mapping;
        // slots are 16-byte aligned in a page-aligned mapping.
        unsafe { self.base.add(self.geo.offset(i)) as *mut libc::tpacket2_hdr }
    }

    fn status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: tp_status is the first, 4-byte aligned u32 of the slot header, shared
        // with the kernel; it is only ever accessed atomically from this side.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.hdr(i)).tp_status)) }
    }

    /// The next ready slot, if any, without blocking. Slots come in ring order and must
    /// be released in the same order.
    pub fn next_ready(&mut self) -> Option<Slot> {
        let i = self.head;
        // Acquire pairs with the kernel's write barrier before it sets TP_STATUS_USER:
        // the header fields and frame bytes are visible once the status is.
        if self.status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        self.head = self.geo.next(i);
        Some(Slot(i))
    }

    /// The frame bytes of a ready slot (empty if its header is inconsistent).
    pub fn frame(&self, s: Slot) -> &[u8] {
        let h = self.hdr(s.0);
        // SAFETY: the slot is owned by user space (status USER) until released, so the
        // kernel does not write it; volatile reads because the memory is shared.
        let (mac, snaplen) = unsafe {
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*h).tp_mac)),
                std::ptr::read_volatile(std::ptr::addr_of!((*h).tp_snaplen)),
            )
        };
        match frame_span(self.geo.frame_size, mac, snaplen) {
            // SAFETY: the span lies inside this slot (checked by frame_span).
            Some(r) => unsafe {
                std::slice::from_raw_parts((h as *const u8).add(r.start), r.end - r.start)
            },
            None => &[],
        }
    }

    /// True when the frame in `s` was cut to fit the slot.
    pub fn truncated(&self, s: Slot) -> bool {
        let h = self.hdr(s.0);
        // SAFETY: as in `frame`.
        unsafe {
            std::ptr::read_volatile(std::ptr::addr_of!((*h).tp_snaplen))
                < std::ptr::read_volatile(std::ptr::addr_of!((*h).tp_len))
        }
    }

    /// True when the kernel dropped frames (ring full) since its statistics were last read
    /// ([`super::sys::PacketSocket::take_ring_drops`]); it marks every frame it queues
    /// until then.
    pub fn losing(&self, s: Slot) -> bool {
        self.status(s.0).load(Ordering::Acquire) & libc::TP_STATUS_LOSING != 0
    }

    /// Hands slot `s` back to the kernel.
    pub fn release(&mut self, s: Slot) {
        // Release: our reads of the frame happen before the kernel may reuse the slot.
        self.status(s.0)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }

    /// Waits up to `timeout_ms` for a frame (`poll`); returns true when one is ready.
    pub fn wait(&mut self, fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
        if self.status(self.head).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0 {
            return Ok(true);
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(self.status(self.head).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_rounds_up_and_never_straddles_blocks() {
        let g = Geometry::new(2000, 1000, 1 << 16, 4096).unwrap();
        assert_eq!(g.frame_size, 2000usize.next_multiple_of(16) as u32);
        assert_eq!(g.block_size, 1 << 16);
        assert_eq!(g.frames_per_block(), (1 << 16) / 2000);
        assert!(g.frame_nr >= 1000);
        assert_eq!(g.frame_nr, g.block_nr * g.frames_per_block());
        for i in 0..g.frame_nr {
            let o = g.offset(i);
            let block = o / g.block_size as usize;
            let end = o + g.frame_size as usize;
            assert!(
                end <= (block + 1) * g.block_size as usize,
                "slot {i} straddles"
            );
            assert!(end <= g.len());
            assert_eq!(o % 16, 0);
        }
    }

    #[test]
    fn offsets_are_distinct_and_wrap() {
        let g = Geometry::new(2048, 64, 8192, 4096).unwrap();
        assert_eq!((g.frames_per_block(), g.block_nr, g.frame_nr), (4, 16, 64));
        assert_eq!(g.offset(0), 0);
        assert_eq!(g.offset(3), 3 * 2048);
        assert_eq!(g.offset(4), 8192);
        assert_eq!(g.offset(64), 0);
        assert_eq!(g.next(63), 0);
        assert_eq!(g.next(5), 6);
        let mut seen: Vec<usize> = (0..64).map(|i| g.offset(i)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn uneven_frame_leaves_block_tail_unused() {
        // 3 slots of 1312 bytes per 4096-byte block: 160 bytes of slack each block.
        let g = Geometry::new(1300, 7, 4096, 4096).unwrap();
        assert_eq!(
            (g.frame_size, g.frames_per_block(), g.block_nr),
            (1312, 3, 3)
        );
        assert_eq!(g.offset(3), 4096);
        assert_eq!(g.frame_nr, 9);
    }

    #[test]
    fn big_frames_get_a_big_block() {
        let g = Geometry::new(10_000, 2, 4096, 4096).unwrap();
        assert_eq!(g.block_size, 12_288);
        assert_eq!(g.frames_per_block(), 1);
    }

    #[test]
    fn invalid_sizes() {
        assert_eq!(Geometry::new(0, 1, 4096, 4096), None);
        assert_eq!(Geometry::new(64, 0, 4096, 4096), None);
        assert_eq!(Geometry::new(64, 1, 4096, 0), None);
        assert_eq!(Geometry::new(1 << 20, 1 << 13, 1 << 20, 4096), None);
    }

    #[test]
    fn frame_span_stays_inside_the_slot() {
        let hdr = size_of::<libc::tpacket2_hdr>() as u16;
        assert_eq!(
            frame_span(2048, hdr + 2, 42),
            Some(hdr as usize + 2..hdr as usize + 44)
        );
        assert_eq!(frame_span(2048, 0, 42), None, "overlaps the header");
        assert_eq!(frame_span(2048, 100, 1949), None, "runs past the slot");
        assert_eq!(frame_span(2048, 100, 1948), Some(100..2048));
        assert_eq!(frame_span(2048, 100, u32::MAX), None);
    }
}
