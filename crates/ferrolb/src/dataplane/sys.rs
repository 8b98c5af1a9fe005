//! Thin system-call shell: packet sockets, the rtnetlink socket, network namespaces.
//!
//! A socket belongs to the network namespace it was created in for its whole life, so
//! [`in_netns`] creates file descriptors on a short-lived thread that entered the target
//! namespace; the descriptors are then used from any thread. This lets one process run
//! several dataplanes, each in its own namespace (tests, the lab).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::time::Duration;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::{bpf, ring};

const ETH_P_ALL: u16 = 0x0003;

/// How long a receive blocks before returning empty-handed (lets threads notice `stop`).
const READ_TIMEOUT_MS: i32 = 200;

pub use ferrolb_netns::in_netns;

/// An `AF_PACKET` raw socket bound to one interface with the responder BPF filter.
#[derive(Debug)]
pub struct PacketSocket {
    sock: Socket,
    ifindex: u32,
}

fn sockaddr_ll(ifindex: u32, proto: u16, dst: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = ifindex as i32;
    if let Some(d) = dst {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&d);
    }
    sa
}

/// The `sockaddr_ll` a frame is sent to: destination MAC and protocol from its header.
fn frame_dst(ifindex: u32, frame: &[u8]) -> libc::sockaddr_ll {
    let mut dst = [0u8; 6];
    let n = frame.len().min(6);
    dst[..n].copy_from_slice(&frame[..n]);
    let proto = frame
        .get(12..14)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    sockaddr_ll(ifindex, proto, Some(dst))
}

/// Most messages handed to one `sendmmsg` (the kernel caps `vlen` at `UIO_MAXIOV`).
const MAX_MMSG: usize = 1024;

/// Frames received or queued per batch by the responder (one `recvmmsg`, one `sendmmsg`).
pub const BATCH: usize = 64;

/// What one `sendmmsg` over `chunk` messages starting at message `start` did.
#[derive(Debug, PartialEq, Eq)]
struct MmsgStep {
    /// Messages sent.
    sent: std::ops::Range<usize>,
    /// The message that failed (the call returned an error for it).
    failed: Option<usize>,
    /// Where the next call starts.
    next: usize,
}

/// Bookkeeping for a `sendmmsg` return value `ret`: `n > 0` messages sent (the next one
/// may have failed; the next call reports it), `< 0` the first message failed (skip it so
/// one bad frame cannot block the batch), `0` treated like a failure of the first message
/// so the loop always progresses.
fn mmsg_step(start: usize, chunk: usize, ret: isize) -> MmsgStep {
    if ret > 0 {
        let n = (ret as usize).min(chunk);
        MmsgStep {
            sent: start..start + n,
            failed: None,
            next: start + n,
        }
    } else {
        MmsgStep {
            sent: start..start,
            failed: (chunk > 0).then_some(start),
            next: start + 1,
        }
    }
}

/// Reusable buffers for [`PacketSocket::recv_batch`].
pub struct RecvBatch {
    bufs: Vec<u8>,
    stride: usize,
    lens: Vec<usize>,
    n: usize,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iovs` / `hdrs` point into `bufs` / `iovs` of the same value
// and are rewritten at the start of every `recv_batch` call before the kernel sees them;
// they are never dereferenced by Rust code, so moving the value to another thread is sound.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("capacity", &self.lens.len())
            .field("frame_capacity", &self.stride)
            .field("len", &self.n)
            .finish()
    }
}

impl RecvBatch {
    /// Room for `capacity` frames of up to `frame_capacity` bytes each (longer frames are
    /// truncated, as with `recv`). Both are at least 1.
    pub fn new(capacity: usize, frame_capacity: usize) -> Self {
        let (cap, stride) = (capacity.max(1), frame_capacity.max(1));
        Self {
            bufs: vec![0; cap * stride],
            stride,
            lens: vec![0; cap],
            n: 0,
            // SAFETY: all-zero iovec / mmsghdr are valid (null pointers, zero lengths).
            iovs: vec![unsafe { std::mem::zeroed() }; cap],
            hdrs: vec![unsafe { std::mem::zeroed() }; cap],
        }
    }

    /// Most frames one receive returns.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Frames received by the last [`PacketSocket::recv_batch`].
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the last receive returned no frame.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The frames received by the last [`PacketSocket::recv_batch`], in arrival order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.n).map(|i| &self.bufs[i * self.stride..i * self.stride + self.lens[i]])
    }
}

/// Frames queued for one [`PacketSocket::send_batch`]; the frame buffers are kept and
/// reused, so a steady state sends without allocating.
#[derive(Default)]
pub struct SendBatch {
    frames: Vec<Vec<u8>>,
    n: usize,
    spare_out: bool,
    addrs: Vec<libc::sockaddr_ll>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch: the pointers in `iovs` / `hdrs` are rebuilt by every
// `send_batch` call before use and never dereferenced by Rust code.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch").field("len", &self.n).finish()
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffer of the next frame (emptied); it joins the batch only after [`Self::commit`].
    pub fn spare(&mut self) -> &mut Vec<u8> {
        if self.n == self.frames.len() {
            self.frames.push(Vec::new());
        }
        self.spare_out = true;
        let b = &mut self.frames[self.n];
        b.clear();
        b
    }

    /// Adds the frame written into the last [`Self::spare`] to the batch (no-op when no
    /// spare was handed out since the last commit).
    pub fn commit(&mut self) {
        if std::mem::take(&mut self.spare_out) {
            self.n += 1;
        }
    }

    /// Queues a copy of `frame`.
    pub fn push(&mut self, frame: &[u8]) {
        self.spare().extend_from_slice(frame);
        self.commit();
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The queued frames.
    pub fn frames(&self) -> &[Vec<u8>] {
        &self.frames[..self.n]
    }

    /// Forgets the queued frames (keeps their buffers).
    pub fn clear(&mut self) {
        self.n = 0;
        self.spare_out = false;
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl PacketSocket {
    /// Opens the socket in the current network namespace. The filter is attached before
    /// the socket is bound to a protocol, so no unfiltered frame is ever queued.
    pub fn open(ifindex: u32, opts: bpf::FilterOptions) -> io::Result<Self> {
        Ok(Self::open_inner(ifindex, opts, None)?.0)
    }

    /// Like [`Self::open`], with a `PACKET_RX_RING` of `geo` attached before the socket is
    /// bound: every accepted frame goes to the returned ring, none to `recv`.
    pub fn open_with_ring(
        ifindex: u32,
        opts: bpf::FilterOptions,
        geo: ring::Geometry,
    ) -> io::Result<(Self, ring::RxRing)> {
        let (s, r) = Self::open_inner(ifindex, opts, Some(geo))?;
        let r = r.ok_or_else(|| io::Error::other("ring not attached"))?;
        Ok((s, r))
    }

    fn open_inner(
        ifindex: u32,
        opts: bpf::FilterOptions,
        geo: Option<ring::Geometry>,
    ) -> io::Result<(Self, Option<ring::RxRing>)> {
        let sock = Socket::new(Domain::PACKET, Type::RAW.cloexec(), Some(Protocol::from(0)))?;
        let prog: Vec<SockFilter> = bpf::program(opts)
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        sock.attach_filter(&prog)?;
        let one: libc::c_int = 1;
        // Do not see frames this host sends (also enforced by the filter on old kernels).
        // SAFETY: valid socket and option buffer.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                &one as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
        }
        let rx_ring = geo
            .map(|g| ring::RxRing::attach(sock.as_raw_fd(), g))
            .transpose()?;
        let sa = sockaddr_ll(ifindex, ETH_P_ALL, None);
        // SAFETY: valid socket and sockaddr_ll of the right size.
        cvt(unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        sock.set_read_timeout(Some(Duration::from_millis(READ_TIMEOUT_MS as u64)))?;
        let s = Self { sock, ifindex };
        if rx_ring.is_none() {
            s.set_recv_buffer(4 << 20);
        }
        Ok((s, rx_ring))
    }

    /// Waits up to the read timeout (200 ms) for a frame in `ring` (attached to this
    /// socket by [`Self::open_with_ring`]); true when one is ready.
    pub fn wait_ring(&self, ring: &mut ring::RxRing) -> io::Result<bool> {
        ring.wait(self.sock.as_raw_fd(), READ_TIMEOUT_MS)
    }

    /// The frames the kernel dropped since the last call because the receive ring (or
    /// buffer) was full, from `PACKET_STATISTICS` (reading resets the kernel's counters).
    pub fn take_ring_drops(&self) -> io::Result<u32> {
        /// `PACKET_STATISTICS` of `<linux/if_packet.h>`.
        const PACKET_STATISTICS: libc::c_int = 6;
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: valid socket; `st` and `len` describe a writable buffer of that size.
        cvt(unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                &mut st as *mut _ as *mut libc::c_void,
                &mut len,
            )
        })?;
        Ok(st.tp_drops)
    }

    /// Asks for a receive buffer of `bytes` (absorbs request bursts). Tries
    /// `SO_RCVBUFFORCE` (needs `CAP_NET_ADMIN`), then `SO_RCVBUF` (capped by
    /// `net.core.rmem_max`); best effort.
    pub fn set_recv_buffer(&self, bytes: usize) {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: valid socket and option buffer.
            let r = unsafe {
                libc::setsockopt(
                    self.sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &v as *const _ as *const libc::c_void,
                    size_of::<libc::c_int>() as u32,
                )
            };
            if r == 0 {
                return;
            }
        }
    }

    /// Interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Blocks up to the read timeout for one frame. `Ok(None)` on timeout.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buffer valid for its length.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }

    /// Sends one complete Ethernet frame (destination MAC taken from the frame).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sa = frame_dst(self.ifindex, frame);
        // SAFETY: valid buffer and sockaddr.
        let r = unsafe {
            libc::sendto(
                self.sock.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives up to `batch.capacity()` frames with one `recvmmsg`: blocks up to the
    /// read timeout for the first frame when `wait`, then takes whatever else is already
    /// queued without waiting (`MSG_WAITFORONE`). Returns the number of frames (`0` on
    /// timeout, or when nothing is queued and `wait` is false).
    pub fn recv_batch(&self, batch: &mut RecvBatch, wait: bool) -> io::Result<usize> {
        batch.n = 0;
        let cap = batch.lens.len();
        let stride = batch.stride;
        let base = batch.bufs.as_mut_ptr();
        for i in 0..cap {
            // SAFETY: i * stride + stride <= bufs.len() by construction (new()).
            batch.iovs[i] = libc::iovec {
                iov_base: unsafe { base.add(i * stride) } as *mut libc::c_void,
                iov_len: stride,
            };
            // SAFETY: all-zero is a valid msghdr (no name, no control data).
            batch.hdrs[i] = unsafe { std::mem::zeroed() };
            batch.hdrs[i].msg_hdr.msg_iov = &mut batch.iovs[i];
            batch.hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: hdrs holds `cap` initialised headers whose iovecs point into `bufs`,
        // which outlives the call and is not otherwise borrowed during it.
        let r = unsafe {
            libc::recvmmsg(
                self.sock.as_raw_fd(),
                batch.hdrs.as_mut_ptr(),
                cap as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = (r as usize).min(cap);
        for i in 0..n {
            batch.lens[i] = (batch.hdrs[i].msg_len as usize).min(stride);
        }
        batch.n = n;
        Ok(n)
    }

    /// Sends every frame queued in `batch` with as few `sendmmsg` calls as possible, calls
    /// `on_result(i, result)` once per frame in order, and empties the batch. A frame the
    /// kernel refuses is reported with its error and skipped; the rest are still sent.
    pub fn send_batch(
        &self,
        batch: &mut SendBatch,
        mut on_result: impl FnMut(usize, io::Result<()>),
    ) {
        let n = batch.n;
        batch.addrs.clear();
        batch.iovs.clear();
        for f in &batch.frames[..n] {
            batch.addrs.push(frame_dst(self.ifindex, f));
            batch.iovs.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
        }
        batch.hdrs.clear();
        for i in 0..n {
            // SAFETY: all-zero is a valid msghdr.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = &mut batch.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            h.msg_hdr.msg_iov = &mut batch.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            batch.hdrs.push(h);
        }
        let mut i = 0;
        while i < n {
            let chunk = (n - i).min(MAX_MMSG);
            // SAFETY: hdrs[i..i + chunk] are initialised and point at addrs / iovs / frames,
            // none of which is moved or mutated during the call.
            let r = unsafe {
                libc::sendmmsg(
                    self.sock.as_raw_fd(),
                    batch.hdrs.as_mut_ptr().add(i),
                    chunk as libc::c_uint,
                    0,
                )
            };
            let err = (r < 0).then(io::Error::last_os_error);
            let step = mmsg_step(i, chunk, r as isize);
            for j in step.sent {
                on_result(j, Ok(()));
            }
            if let (Some(j), Some(e)) = (step.failed, err) {
                on_result(j, Err(e));
            }
            i = step.next;
        }
        batch.clear();
    }

    fn membership(&self, opt: libc::c_int, mac: [u8; 6]) -> io::Result<()> {
        let mut mr = libc::packet_mreq {
            mr_ifindex: self.ifindex as i32,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: [0; 8],
        };
        mr.mr_address[..6].copy_from_slice(&mac);
        // SAFETY: valid socket and packet_mreq.
        cvt(unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                &mr as *const _ as *const libc::c_void,
                size_of::<libc::packet_mreq>() as u32,
            )
        })
        .map(|_| ())
    }

    /// Adds a multicast MAC to the interface's receive filter (`PACKET_ADD_MEMBERSHIP`).
    pub fn add_multicast(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_ADD_MEMBERSHIP, mac)
    }

    /// Removes a multicast MAC added with [`Self::add_multicast`].
    pub fn drop_multicast(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_DROP_MEMBERSHIP, mac)
    }
}

/// An IPv6 datagram socket used only to join solicited-node groups with MLD, so
/// MLD-snooping switches forward the solicitations (best effort: fails when IPv6 is
/// disabled on the interface, which the caller logs).
#[derive(Debug)]
pub struct MldSocket {
    sock: Socket,
}

impl MldSocket {
    /// Opens the socket in the current network namespace.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sock: Socket::new(Domain::IPV6, Type::DGRAM.cloexec(), None)?,
        })
    }

    /// Joins `group` on `ifindex` (sends an MLD report).
    pub fn join(&self, group: std::net::Ipv6Addr, ifindex: u32) -> io::Result<()> {
        self.sock.join_multicast_v6(&group, ifindex)
    }

    /// Leaves `group` on `ifindex`.
    pub fn leave(&self, group: std::net::Ipv6Addr, ifindex: u32) -> io::Result<()> {
        self.sock.leave_multicast_v6(&group, ifindex)
    }
}

/// A non-blocking `NETLINK_ROUTE` socket subscribed to link events.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

impl AsRawFd for NetlinkSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl NetlinkSocket {
    /// Opens and subscribes to `RTMGRP_LINK` in the current network namespace.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain syscalls; the fd is owned immediately.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: `socket` just returned this descriptor (checked by `cvt`) and nothing else
        // owns it; the OwnedFd closes it exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero sockaddr_nl is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: valid socket; `sa` is a sockaddr_nl and its size is passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        })?;
        // A large receive buffer makes overruns (ENOBUFS → full re-dump) rare.
        // Not fatal when refused: the default buffer works, re-dumps are only more frequent.
        let sz: libc::c_int = 1 << 20;
        // SAFETY: valid socket; `sz` is a c_int and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &sz as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if r != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "netlink SO_RCVBUF refused; link changes may need more re-dumps");
        }
        Ok(Self { fd })
    }

    /// Sends a request to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid socket; `msg` is valid for its length and `sa` for its size.
        cvt(unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            ) as libc::c_int
        })
        .map(|_| ())
    }

    /// Non-blocking receive of one datagram.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: valid socket; `buf` is writable for its whole length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmsg_step_all_sent() {
        let s = mmsg_step(3, 5, 5);
        assert_eq!((s.sent, s.failed, s.next), (3..8, None, 8));
    }

    #[test]
    fn mmsg_step_partial_resumes_after_the_last_sent() {
        let s = mmsg_step(0, 10, 4);
        assert_eq!((s.sent, s.failed, s.next), (0..4, None, 4));
    }

    #[test]
    fn mmsg_step_error_skips_only_the_first_message() {
        let s = mmsg_step(4, 6, -1);
        assert_eq!((s.sent, s.failed, s.next), (4..4, Some(4), 5));
        let z = mmsg_step(2, 3, 0);
        assert_eq!((z.sent, z.failed, z.next), (2..2, Some(2), 3));
    }

    #[test]
    fn mmsg_step_never_claims_more_than_the_chunk() {
        let s = mmsg_step(1, 2, 9);
        assert_eq!((s.sent, s.next), (1..3, 3));
    }

    #[test]
    fn mmsg_loop_reports_every_frame_exactly_once() {
        // Simulate a kernel that sends 3, fails one, then sends the rest.
        let n = 10;
        let mut rets = vec![3isize, -1, 100].into_iter();
        let (mut i, mut seen) = (0, vec![0u8; n]);
        while i < n {
            let step = mmsg_step(i, n - i, rets.next().unwrap());
            for j in step.sent {
                seen[j] += 1;
            }
            if let Some(j) = step.failed {
                seen[j] += 10;
            }
            i = step.next;
        }
        assert_eq!(seen, [1, 1, 1, 10, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn send_batch_reuses_buffers() {
        let mut b = SendBatch::new();
        b.push(&[1, 2, 3]);
        b.spare().extend_from_slice(&[9]);
        // Not committed: not part of the batch.
        assert_eq!(b.frames(), [vec![1, 2, 3]]);
        b.commit();
        assert_eq!(b.frames(), [vec![1, 2, 3], vec![9]]);
        let ptr = b.frames()[0].as_ptr();
        b.clear();
        assert!(b.is_empty());
        let spare = b.spare();
        assert!(spare.is_empty(), "spare must be emptied");
        assert_eq!(spare.as_ptr(), ptr, "buffer reused, not reallocated");
        b.commit();
        b.commit();
        // A commit without a fresh spare adds nothing (no stale frame resurfaces).
        assert_eq!(b.frames(), [Vec::<u8>::new()]);
    }

    #[test]
    fn recv_batch_geometry() {
        let b = RecvBatch::new(0, 0);
        assert_eq!((b.capacity(), b.len(), b.frames().count()), (1, 0, 0));
        let b = RecvBatch::new(8, 2048);
        assert_eq!(b.capacity(), 8);
        assert!(b.is_empty());
    }
}
