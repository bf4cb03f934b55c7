//! `AF_NETLINK` / `NETLINK_NETFILTER` sockets: options, requests with acks,
//! nf_tables batches and dumps.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::netlink::*;
use super::NfError;

/// One request of a batch: message type, extra flags, family, attributes, and
/// a label for error messages.
pub struct BatchItem {
    pub kind: u16,
    pub flags: u16,
    pub family: u8,
    pub attrs: bytes::Bytes,
    pub what: String,
}

/// A `NETLINK_NETFILTER` socket.
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    seq: u32,
}

fn io_err(op: &'static str) -> NfError {
    NfError::Io {
        op,
        source: io::Error::last_os_error(),
    }
}

impl NlSocket {
    /// Opens and binds a socket in the calling thread's network namespace.
    pub fn open(nonblocking: bool) -> Result<Self, NfError> {
        let mut ty = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        if nonblocking {
            ty |= libc::SOCK_NONBLOCK;
        }
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(io_err("socket(AF_NETLINK, NETLINK_NETFILTER)"));
        }
        // SAFETY: fd is a freshly created descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let salen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: sa is a valid sockaddr_nl of the given length.
        let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(sa).cast(), salen) };
        if rc < 0 {
            return Err(io_err("bind(AF_NETLINK)"));
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Self { fd, seq: seed })
    }

    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
        let len = std::mem::size_of::<T>() as libc::socklen_t;
        // SAFETY: v points to a live value of `len` bytes.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (v as *const T).cast(),
                len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Joins a multicast group.
    pub fn add_membership(&self, group: u32) -> Result<(), NfError> {
        self.setsockopt(libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, &group)
            .map_err(|source| NfError::Io {
                op: "joining the netlink multicast group",
                source,
            })
    }

    /// Sets the receive buffer, beyond `rmem_max` when allowed.
    pub fn set_rcvbuf(&self, bytes: libc::c_int) {
        if self
            .setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
            .is_err()
        {
            if let Err(e) = self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes) {
                log::warn!("netfilter: setting SO_RCVBUF: {e}");
            }
        }
    }

    /// Makes blocking reads give up after `d`.
    pub fn set_rcv_timeout(&self, d: Duration) -> Result<(), NfError> {
        let tv = libc::timeval {
            tv_sec: d.as_secs() as _,
            tv_usec: d.subsec_micros() as _,
        };
        self.setsockopt(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
            .map_err(|source| NfError::Io {
                op: "setting SO_RCVTIMEO",
                source,
            })
    }

    /// Switches `O_NONBLOCK` on or off.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), NfError> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io_err("fcntl(F_GETFL)"));
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(io_err("fcntl(F_SETFL)"));
        }
        Ok(())
    }

    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    pub fn send(&self, buf: &[u8]) -> Result<(), NfError> {
        // SAFETY: buf is a valid slice; the kernel is the destination (bound socket).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io_err("send(netlink)"));
        }
        Ok(())
    }

    /// Receives one datagram. `Ok(None)` when nothing is pending
    /// (`EAGAIN`, or the receive timeout passed).
    pub fn recv(&self, buf: &mut [u8], dontwait: bool) -> io::Result<Option<usize>> {
        let flags = if dontwait { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: buf is a valid mutable slice of buf.len() bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    /// Sends `items` as one nf_tables transaction and waits for every ack.
    pub fn batch(&mut self, items: &[BatchItem]) -> Result<(), NfError> {
        let mut buf = bytes::BytesMut::from(nfmsg(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        ));
        let mut pending = Vec::with_capacity(items.len());
        for it in items {
            let seq = self.next_seq();
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | it.kind;
            buf.extend_from_slice(&nfmsg(
                kind,
                NLM_F_REQUEST | NLM_F_ACK | it.flags,
                seq,
                it.family,
                0,
                &it.attrs,
            ));
            pending.push((seq, it.what.as_str()));
        }
        buf.extend_from_slice(&nfmsg(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        ));
        self.send(&buf)?;
        self.wait_acks(pending)
    }

    /// Sends one request with `NLM_F_ACK` and waits for its ack.
    pub fn request(
        &mut self,
        kind: u16,
        family: u8,
        res_id: u16,
        attrs: &[u8],
        what: &str,
    ) -> Result<(), NfError> {
        let seq = self.next_seq();
        self.send(&nfmsg(
            kind,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            res_id,
            attrs,
        ))?;
        self.wait_acks(vec![(seq, what)])
    }

    fn wait_acks(&self, mut pending: Vec<(u32, &str)>) -> Result<(), NfError> {
        let mut first_err: Option<NfError> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = match self.recv(&mut buf, false) {
                Ok(Some(n)) => n,
                Ok(None) if first_err.is_some() => break,
                Ok(None) => return Err(NfError::Timeout("waiting for a netlink ack")),
                Err(source) => {
                    return Err(NfError::Io {
                        op: "recv(netlink ack)",
                        source,
                    })
                }
            };
            for m in messages(&buf[..n]) {
                let Some((errno, seq)) = (m.kind == NLMSG_ERROR).then(|| m.error()).flatten()
                else {
                    continue;
                };
                let Some(pos) = pending.iter().position(|(s, _)| *s == seq) else {
                    continue;
                };
                let (_, what) = pending.swap_remove(pos);
                if errno != 0 && first_err.is_none() {
                    first_err = Some(NfError::Kernel {
                        what: what.to_string(),
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
