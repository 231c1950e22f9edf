//! Batched UDP I/O for the fast path: `recvmmsg(2)` reads every datagram already queued on the
//! socket (up to [`BATCH`]) in one system call, and `sendmmsg(2)` sends every answer of that
//! batch in one more, where `recv_from`/`send_to` cost two calls per query. Under load most of
//! a reader thread's time was the system call entry and exit, the socket's file lookup and the
//! wake-ups, not the answer.
//!
//! A [`Batch`] owns every buffer it needs, allocated once per reader thread: no allocation per
//! query. The `mmsghdr`/`iovec` arrays that point into those buffers are built on the stack for
//! each call, so nothing holds a pointer into a value that can move.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd as _;

/// Datagrams read (and answers sent) per system call at most.
pub const BATCH: usize = BATCH_C as usize;
/// [`BATCH`] as the system calls take it.
const BATCH_C: libc::c_uint = 32;
/// The largest datagram read (EDNS allows up to 65,535; hickory reads 4,096).
pub const MAX_DATAGRAM: usize = 4096;
/// The capacity each answer buffer starts with (a plain DNS answer fits 512 bytes).
const ANSWER_CAPACITY: usize = 512;

/// One reader thread's buffers: the datagrams of the last [`Batch::recv`], their senders, and
/// the answers queued for [`Batch::send`].
pub struct Batch {
    /// `BATCH` slots of `MAX_DATAGRAM` bytes.
    data: Box<[u8]>,
    /// Each received datagram's length.
    lens: [usize; BATCH],
    /// Each received datagram's sender, as the kernel wrote it.
    from: [libc::sockaddr_storage; BATCH],
    /// The length of each sender address.
    from_lens: [libc::socklen_t; BATCH],
    /// How many datagrams the last `recv` read.
    received: usize,
    /// The answers, each to the sender of the datagram whose index is in `answer_to`.
    answers: Vec<Vec<u8>>,
    answer_to: [usize; BATCH],
    /// How many answers are queued.
    answered: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("received", &self.received)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// Empty buffers for one reader thread.
    pub fn new() -> Self {
        Self {
            data: vec![0; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain old data (integers and padding); all zeroes is a
            // valid value (family AF_UNSPEC).
            from: [unsafe { std::mem::zeroed() }; BATCH],
            from_lens: [0; BATCH],
            received: 0,
            answers: (0..BATCH)
                .map(|_| Vec::with_capacity(ANSWER_CAPACITY))
                .collect(),
            answer_to: [0; BATCH],
            answered: 0,
        }
    }

    /// Reads the datagrams queued on `socket`: blocks (up to the socket's read timeout) for the
    /// first, then takes whatever else is already there, up to [`BATCH`]. Forgets the previous
    /// batch and its answers. Returns how many were read.
    ///
    /// # Errors
    /// The system call's (a read timeout is `WouldBlock`).
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.received = 0;
        self.answered = 0;
        // SAFETY: iovec and mmsghdr are plain C structs of integers and raw pointers, for which
        // all zeroes is a valid value; every pointer is set below before the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (k, chunk) in self.data.chunks_exact_mut(MAX_DATAGRAM).enumerate() {
            iov[k].iov_base = chunk.as_mut_ptr().cast();
            iov[k].iov_len = chunk.len();
            msgs[k].msg_hdr.msg_name = std::ptr::from_mut(&mut self.from[k]).cast();
            msgs[k].msg_hdr.msg_namelen = socklen_of::<libc::sockaddr_storage>();
            msgs[k].msg_hdr.msg_iov = std::ptr::from_mut(&mut iov[k]);
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds BATCH headers, each pointing to one iovec of `iov` (a live
        // MAX_DATAGRAM-byte slot of `self.data`) and to one live sockaddr_storage of `self.from`
        // with its true size; all outlive the call, which writes only within those bounds. A
        // null timeout blocks as the socket's SO_RCVTIMEO says.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH_C,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        // A negative count is an error; anything else is at most BATCH.
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            self.lens[i] =
                usize::try_from(msg.msg_len).map_or(MAX_DATAGRAM, |l| l.min(MAX_DATAGRAM));
            self.from_lens[i] = msg.msg_hdr.msg_namelen;
        }
        self.received = n.min(BATCH);
        Ok(self.received)
    }

    /// Calls `handle` on each datagram of the batch in order, with its sender (`None` for an
    /// address the kernel gave in a family other than IPv4/IPv6) and an empty answer buffer;
    /// when `handle` returns `true` the buffer is queued as the answer to that sender.
    pub fn each(
        &mut self,
        mut handle: impl FnMut(&mut [u8], Option<SocketAddr>, &mut Vec<u8>) -> bool,
    ) {
        for i in 0..self.received {
            let start = i * MAX_DATAGRAM;
            let datagram = &mut self.data[start..start + self.lens[i]];
            let from = socket_addr(&self.from[i], self.from_lens[i]);
            let Some(answer) = self.answers.get_mut(self.answered) else {
                return;
            };
            answer.clear();
            if handle(datagram, from, answer) {
                self.answer_to[self.answered] = i;
                self.answered += 1;
            }
        }
    }

    /// Sends the queued answers from `socket`, each to its datagram's sender, in the order they
    /// were queued. A datagram the kernel refuses (`sendmmsg` stops at the first error) is
    /// skipped and reported to `on_error`, and the rest are still sent.
    pub fn send(
        &mut self,
        socket: &UdpSocket,
        mut on_error: impl FnMut(io::Error, Option<SocketAddr>),
    ) {
        let count = self.answered;
        if count == 0 {
            return;
        }
        // SAFETY: plain C structs for which all zeroes is valid; pointers set below.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for k in 0..count {
            let answer = &mut self.answers[k];
            iov[k].iov_base = answer.as_mut_ptr().cast();
            iov[k].iov_len = answer.len();
            let to = self.answer_to[k];
            msgs[k].msg_hdr.msg_name = std::ptr::from_mut(&mut self.from[to]).cast();
            msgs[k].msg_hdr.msg_namelen = self.from_lens[to];
            msgs[k].msg_hdr.msg_iov = std::ptr::from_mut(&mut iov[k]);
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < count {
            let rest = &mut msgs[sent..count];
            // SAFETY: each of the `rest.len()` headers points to one iovec over a live answer
            // buffer (its initialised length) and to its sender's live sockaddr with the length
            // the kernel gave; nothing is freed or moved before the call returns.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    rest.as_mut_ptr(),
                    libc::c_uint::try_from(rest.len()).unwrap_or(BATCH_C),
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let to = self.answer_to[sent];
                    on_error(e, socket_addr(&self.from[to], self.from_lens[to]));
                    sent += 1;
                }
            }
        }
    }
}

/// `size_of::<T>()` as a `socklen_t` (socket address structures are at most 128 bytes).
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// The address the kernel wrote into `storage`, when it is IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= socklen_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and sockaddr_storage is
            // large and aligned enough for every socket address type.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= socklen_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn bound(addr: &str) -> UdpSocket {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Reads batches until `want` datagrams arrived, answering each with `answer` (`None`: no
    /// answer), and returns how many each batch held.
    fn serve_until(
        server: &UdpSocket,
        batch: &mut Batch,
        want: usize,
        mut answer: impl FnMut(&[u8], SocketAddr) -> Option<Vec<u8>>,
    ) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut got, mut sizes) = (0, Vec::new());
        while got < want {
            assert!(
                Instant::now() < deadline,
                "only {got} of {want} datagrams arrived"
            );
            let n = batch.recv(server).unwrap();
            batch.each(|datagram, from, out| {
                let from = from.expect("an IP sender");
                answer(datagram, from).is_some_and(|a| {
                    out.extend_from_slice(&a);
                    true
                })
            });
            batch.send(server, |e, to| panic!("sending to {to:?}: {e}"));
            sizes.push(n);
            got += n;
        }
        sizes
    }

    #[test]
    fn a_burst_is_read_in_batches_and_each_sender_gets_its_answers_in_order() {
        let server = bound("127.0.0.1:0");
        let to = server.local_addr().unwrap();
        let clients = [bound("127.0.0.1:0"), bound("127.0.0.1:0")];
        let total = 3 * BATCH + 5;
        for i in 0..total {
            clients[i % 2]
                .send_to(format!("q{i}").as_bytes(), to)
                .unwrap();
        }
        let mut batch = Batch::new();
        let sizes = serve_until(&server, &mut batch, total, |q, from| {
            let text = std::str::from_utf8(q).unwrap();
            let i: usize = text[1..].parse().unwrap();
            assert_eq!(from, clients[i % 2].local_addr().unwrap(), "{text}");
            // Every fifth query gets no answer, as a relayed one.
            (!i.is_multiple_of(5)).then(|| format!("a{i}").into_bytes())
        });
        assert!(sizes.iter().all(|&n| (1..=BATCH).contains(&n)), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), total);
        for (c, client) in clients.iter().enumerate() {
            let expected: Vec<String> = (0..total)
                .filter(|i| i % 2 == c && !i.is_multiple_of(5))
                .map(|i| format!("a{i}"))
                .collect();
            let mut buf = [0u8; 64];
            let got: Vec<String> = expected
                .iter()
                .map(|_| {
                    let n = client.recv(&mut buf).unwrap();
                    String::from_utf8(buf[..n].to_vec()).unwrap()
                })
                .collect();
            assert_eq!(got, expected, "client {c}");
        }
    }

    #[test]
    fn datagrams_keep_their_length_and_an_ipv6_sender_its_address() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            banger_testkit::skip("no IPv6 loopback here");
            return;
        };
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let client = bound("[::1]:0");
        let big = vec![7u8; MAX_DATAGRAM];
        client.send_to(&[], server.local_addr().unwrap()).unwrap();
        client.send_to(&big, server.local_addr().unwrap()).unwrap();
        let mut lens = Vec::new();
        serve_until(&server, &mut Batch::new(), 2, |q, from| {
            assert_eq!(from, client.local_addr().unwrap());
            lens.push(q.len());
            Some(q.len().to_string().into_bytes())
        });
        assert_eq!(lens, [0, MAX_DATAGRAM]);
        let mut buf = [0u8; 16];
        for want in ["0", "4096"] {
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want.as_bytes());
        }
    }
}
