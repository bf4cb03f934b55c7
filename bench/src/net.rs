//! The benchmark's own traffic: a bulk TCP stream and a small-packet UDP
//! stream from the client namespace to a sink in the container namespace,
//! each endpoint on a thread that has `setns`ed into its lab namespace.
//! Every loop stops by itself after its duration (and a packet/byte cap).
use std::{
    io::{ErrorKind, Read, Write},
    mem,
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// UDP payload bytes: 74-byte frames on the wire.
pub const UDP_PAYLOAD: usize = 32;
/// Datagrams per sendmmsg/recvmmsg call.
const BATCH: usize = 32;
/// No stream sends more than this, whatever its duration.
const MAX_TCP_BYTES: u64 = 200 << 30;
const MAX_UDP_PACKETS: u64 = 100_000_000;

/// A stream's endpoints.
#[derive(Clone, Debug)]
pub struct Route {
    /// The sender's namespace (the lab's `other`, 192.0.2.134).
    pub client_ns: String,
    /// The sink's namespace (the container's).
    pub server_ns: String,
    /// Where the sender sends: the published port on the Docker host.
    pub target: SocketAddrV4,
    /// Where the sink listens inside the container (after DNAT).
    pub listen_port: u16,
    /// The UDP sender's source address (None: the namespace's own).
    pub udp_src: Option<Ipv4Addr>,
}

/// Runs `f` on a new thread that first joins the network namespace `ns`.
fn spawn_in<T, F>(ns: &str, what: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let ns = ns.to_string();
    thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            lab::enter_netns(&ns)?;
            f()
        })
        .with_context(|| format!("spawning the {what} thread"))
}

fn join<T>(h: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| anyhow!("the {what} thread panicked"))?
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// What the TCP sink received.
#[derive(Clone, Copy, Debug)]
pub struct TcpSample {
    pub bytes: u64,
    /// From the first to the last byte received.
    pub secs: f64,
}

impl TcpSample {
    pub fn bits_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 * 8.0 / self.secs
        } else {
            f64::NAN
        }
    }
}

/// One bulk TCP stream for `dur`, measured at the sink.
pub fn tcp_sample(route: &Route, dur: Duration) -> Result<TcpSample> {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let abort = Arc::new(AtomicBool::new(false));
    let port = route.listen_port;
    let hard = dur + Duration::from_secs(10);
    let sink_abort = abort.clone();
    let sink = spawn_in(&route.server_ns, "tcp-sink", move || {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("binding the TCP sink to port {port}"))?;
        listener.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + hard;
        let (mut stream, _) = loop {
            match listener.accept() {
                Ok(s) => break s,
                Err(e) if transient(&e) => {
                    if Instant::now() >= deadline || sink_abort.load(Ordering::Relaxed) {
                        bail!("no connection reached the TCP sink");
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e).context("accepting in the TCP sink"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let (mut bytes, mut first, mut last) = (0u64, None, Instant::now());
        while Instant::now() < deadline && !sink_abort.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    bytes += n as u64;
                }
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e).context("reading in the TCP sink"),
            }
        }
        let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
        Ok(TcpSample { bytes, secs })
    })?;
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        abort.store(true, Ordering::Relaxed);
        return Err(join(sink, "TCP sink")
            .err()
            .unwrap_or_else(|| anyhow!("the TCP sink did not start")));
    }
    let target = route.target;
    let sender = spawn_in(&route.client_ns, "tcp-send", move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(target), Duration::from_secs(3))
            .with_context(|| format!("connecting to {target}"))?;
        s.set_write_timeout(Some(Duration::from_millis(500)))?;
        let buf = vec![0x5au8; 256 * 1024];
        let end = Instant::now() + dur;
        let mut sent = 0u64;
        while Instant::now() < end && sent < MAX_TCP_BYTES {
            match s.write(&buf) {
                Ok(n) => sent += n as u64,
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e).context("sending the TCP stream"),
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        Ok(sent)
    })?;
    let sent = join(sender, "TCP sender");
    if sent.is_err() {
        abort.store(true, Ordering::Relaxed);
    }
    let got = join(sink, "TCP sink");
    sent?;
    let got = got?;
    if got.bytes == 0 {
        bail!("the TCP sink received nothing");
    }
    Ok(got)
}

/// What one UDP run sent and the sink received.
#[derive(Clone, Copy, Debug)]
pub struct UdpRun {
    pub sent: u64,
    pub received: u64,
    /// How long the sender sent.
    pub secs: f64,
}

impl UdpRun {
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }
    /// Packets delivered to the sink per second of sending.
    pub fn received_pps(&self) -> f64 {
        self.received as f64 / self.secs
    }
}

/// Pre-built `mmsghdr`s over one buffer per datagram.
struct Batch {
    bufs: Vec<[u8; 256]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(len: usize) -> Box<Batch> {
        let mut b = Box::new(Batch {
            bufs: vec![[0x42u8; 256]; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
        });
        for i in 0..BATCH {
            let base = b.bufs[i].as_mut_ptr().cast::<libc::c_void>();
            b.iovs.push(libc::iovec {
                iov_base: base,
                iov_len: len,
            });
        }
        for i in 0..BATCH {
            // SAFETY: msghdr/mmsghdr are plain C structs; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// sendmmsg of `n` datagrams on a connected socket; how many went.
    fn send(&mut self, fd: RawFd, n: usize) -> std::io::Result<usize> {
        let n = n.min(BATCH);
        // SAFETY: `hdrs[..n]` point at `iovs`/`bufs`, which live in the same box.
        let rc = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// recvmmsg: at least one datagram (within SO_RCVTIMEO), then what is queued.
    fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_len = 0;
        }
        // SAFETY: as in `send`; the kernel writes at most iov_len bytes per buffer.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    let fd = sock.as_raw_fd();
    // SAFETY: setsockopt with a pointer to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::debug!(
            "SO_RCVBUFFORCE: {}; keeping the default receive buffer",
            std::io::Error::last_os_error()
        );
    }
}

/// Sends UDP datagrams for `dur`: as fast as possible (`rate` None) or paced
/// at `rate` per second; counts what reaches the sink in the container.
pub fn udp_run(route: &Route, dur: Duration, rate: Option<u64>) -> Result<UdpRun> {
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    let port = route.listen_port;
    let hard = dur + Duration::from_secs(10);
    let sink_done = done.clone();
    let sink = spawn_in(&route.server_ns, "udp-sink", move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .with_context(|| format!("binding the UDP sink to port {port}"))?;
        set_rcvbuf(&sock, 8 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let _ = ready_tx.send(());
        let mut batch = Batch::new(256);
        let fd = sock.as_raw_fd();
        let deadline = Instant::now() + hard;
        let mut received = 0u64;
        let mut last_rx = Instant::now();
        while Instant::now() < deadline {
            match batch.recv(fd) {
                Ok(n) => {
                    received += n as u64;
                    last_rx = Instant::now();
                }
                Err(e) if transient(&e) => {}
                Err(e) => return Err(e).context("receiving in the UDP sink"),
            }
            // Once the sender is done, stop after 100 ms without a datagram.
            if sink_done.load(Ordering::Relaxed) && last_rx.elapsed() >= Duration::from_millis(100)
            {
                break;
            }
        }
        Ok(received)
    })?;
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        done.store(true, Ordering::Relaxed);
        return Err(join(sink, "UDP sink")
            .err()
            .unwrap_or_else(|| anyhow!("the UDP sink did not start")));
    }
    let target = route.target;
    let src = route.udp_src.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let sender = spawn_in(&route.client_ns, "udp-send", move || {
        let sock = UdpSocket::bind((src, 0))
            .with_context(|| format!("binding the UDP sender to {src}"))?;
        sock.connect(target)
            .with_context(|| format!("connecting the UDP sender to {target}"))?;
        let fd = sock.as_raw_fd();
        let mut batch = Batch::new(UDP_PAYLOAD);
        let start = Instant::now();
        let end = start + dur;
        let cap = match rate {
            Some(r) => (r as f64 * dur.as_secs_f64()).ceil() as u64,
            None => MAX_UDP_PACKETS,
        };
        let mut sent = 0u64;
        loop {
            let now = Instant::now();
            if now >= end || sent >= cap {
                break;
            }
            let want = match rate {
                None => BATCH as u64,
                Some(r) => {
                    let due = (r as f64 * (now - start).as_secs_f64()) as u64;
                    if due <= sent {
                        thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    (due - sent).min(BATCH as u64)
                }
            };
            let want = want.min(cap - sent) as usize;
            match batch.send(fd, want) {
                Ok(n) => sent += n as u64,
                Err(e)
                    if transient(&e)
                        || e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == ErrorKind::ConnectionRefused =>
                {
                    thread::yield_now();
                }
                Err(e) => return Err(e).context("sending UDP"),
            }
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    })?;
    let sent = join(sender, "UDP sender");
    done.store(true, Ordering::Relaxed);
    let received = join(sink, "UDP sink");
    let (sent, secs) = sent?;
    let received = received?;
    Ok(UdpRun {
        sent,
        received,
        secs,
    })
}
