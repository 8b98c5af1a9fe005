//! Thin system-call shell: packet sockets, the rtnetlink socket, network namespaces.
//!
//! A socket belongs to the network namespace it was created in for its whole life, so
//! [`in_netns`] creates file descriptors on a short-lived thread that entered the target
//! namespace; the descriptors are then used from any thread. This lets one process run
//! several dataplanes, each in its own namespace (tests, the lab).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::bpf;

const ETH_P_ALL: u16 = 0x0003;

/// Runs `f` on a thread that entered the network namespace at `netns` (a path such as
/// `/run/netns/NAME` or `/proc/PID/ns/net`), or directly when `netns` is `None`.
pub fn in_netns<T, F>(netns: Option<&Path>, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let Some(path) = netns else { return f() };
    let path: PathBuf = path.to_owned();
    std::thread::Builder::new()
        .name("ferrolb-setns".into())
        .spawn(move || {
            let ns = std::fs::File::open(&path).map_err(|e| {
                io::Error::new(e.kind(), format!("open netns {}: {e}", path.display()))
            })?;
            // SAFETY: plain syscall on a valid descriptor; affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("setns {}: {e}", path.display()),
                ));
            }
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
}

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
        let sa = sockaddr_ll(ifindex, ETH_P_ALL, None);
        // SAFETY: valid socket and sockaddr_ll of the right size.
        cvt(unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let s = Self { sock, ifindex };
        s.set_recv_buffer(4 << 20);
        Ok(s)
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
        let mut dst = [0u8; 6];
        let n = frame.len().min(6);
        dst[..n].copy_from_slice(&frame[..n]);
        let proto = frame
            .get(12..14)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .unwrap_or(0);
        let sa = sockaddr_ll(self.ifindex, proto, Some(dst));
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
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero sockaddr_nl is valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        })?;
        // A large receive buffer makes overruns (ENOBUFS → full re-dump) rare.
        let sz: libc::c_int = 1 << 20;
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &sz as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
        }
        Ok(Self { fd })
    }

    /// Sends a request to the kernel.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: all-zero sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
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
