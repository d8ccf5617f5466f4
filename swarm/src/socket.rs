//! The UDP socket under the QUIC endpoint: buffers sized for LAN rates, and send batches
//! that the kernel can take whole.
//!
//! quinn hands the socket up to 10 datagrams at once for one `sendmsg` with segmentation
//! offload (GSO). Linux takes at most one UDP datagram's worth (65,507 bytes over IPv4) per
//! call and fails the rest with `EMSGSIZE`, which quinn-udp drops without a word (it takes it
//! for a failed MTU probe). Once MTU discovery reaches jumbo frames (8,972 bytes on loopback
//! and 9000-MTU networks), a burst of 8 to 10 packets is 72-90 KB: every packet of it was
//! lost, the connection backed off as if congested, and the retransmitted burst was lost
//! again. Seen as one peer-to-peer connection going silent both ways for 5-12 s (both sides
//! sending bursts into it) while the same nodes' other connections carried on, which the SDK
//! reports as a stalled GET. [`WholeBatches`] splits such a batch into sends that fit.
//!
//! It splits rather than asking quinn for smaller batches because quinn asks for the batch
//! size before it knows the datagram size: a cap that fits jumbo datagrams (7) also cut every
//! batch of ordinary 1,452-byte datagrams from 10 to 7, and with it the packets each wake-up
//! of a receiver carries. Measured with that cap at MTU 1500 on 25 Mbit/s links, the
//! senders' data sends averaged 4.5 datagrams, the largest 7.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Socket buffer the endpoint asks for. The kernel default (~200 KiB) overflows when a burst of
/// coalesced datagrams arrives at LAN speed; each drop reads as congestion to QUIC, which then
/// halves its rate. Measured on veth between namespaces: one 512 MiB transfer overflowed the
/// default buffer 1,936 times (`RcvbufErrors`), and not once with this one.
const SOCKET_BUFFER: usize = 4 << 20;

/// The endpoint's UDP socket, bound to `listen`, with buffers large enough for LAN rates.
/// The kernel caps them at `net.core.rmem_max` / `wmem_max`; a capped buffer still works,
/// only slower, so it is a warning naming the setting rather than an error.
pub fn udp_socket(listen: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        // Dual-stack when bound to [::], as the standard library's socket would not be.
        let _ = socket.set_only_v6(false);
    }
    for (what, set, get, sysctl) in [
        (
            "receive",
            Socket::set_recv_buffer_size as fn(&Socket, usize) -> std::io::Result<()>,
            Socket::recv_buffer_size as fn(&Socket) -> std::io::Result<usize>,
            "net.core.rmem_max",
        ),
        (
            "send",
            Socket::set_send_buffer_size,
            Socket::send_buffer_size,
            "net.core.wmem_max",
        ),
    ] {
        let _ = set(&socket, SOCKET_BUFFER);
        // Linux reports twice the granted size (it counts its own bookkeeping); a cap of
        // half the request would otherwise read as granted in full.
        let got = get(&socket)? / 2;
        if got < SOCKET_BUFFER {
            tracing::warn!(
                buffer = what,
                got,
                wanted = SOCKET_BUFFER,
                "the kernel capped the swarm's UDP {what} buffer; transfers will lose packets \
                 and slow down at high rates: raise {sysctl} to at least {SOCKET_BUFFER}"
            );
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    Ok(socket.into())
}

/// The most payload one `sendmsg` can carry: a UDP datagram's length is 16 bits, less the
/// UDP header and the IPv4 header. A segmented send is bound by it as a whole. IPv6 allows 20
/// bytes more, but a dual-stack socket sends to IPv4-mapped peers over IPv4.
pub const MAX_SEND_BYTES: usize = 65_535 - 8 - 20;

/// Datagrams of `segment` bytes that fit in one `sendmsg` together.
pub const fn batch_limit(segment: usize) -> usize {
    let n = MAX_SEND_BYTES / if segment == 0 { 1 } else { segment };
    if n == 0 { 1 } else { n }
}

/// The byte ranges of `len` bytes of `segment`-byte datagrams (the last may be shorter) to
/// send one `sendmsg` each: as few as can be, each holding whole datagrams and at most
/// [`MAX_SEND_BYTES`].
pub fn send_batches(len: usize, segment: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = batch_limit(segment) * segment.max(1);
    (0..len)
        .step_by(step)
        .map(move |start| start..(start + step).min(len))
}

/// A socket that splits a send batch too large for one `sendmsg` into several (see the module
/// notes).
#[derive(Debug)]
pub struct WholeBatches {
    inner: Arc<dyn AsyncUdpSocket>,
}

impl WholeBatches {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>) -> Self {
        Self { inner }
    }
}

impl AsyncUdpSocket for WholeBatches {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let segment = match transmit.segment_size {
            Some(segment) if transmit.contents.len() > MAX_SEND_BYTES => segment,
            _ => return self.inner.try_send(transmit),
        };
        for (i, range) in send_batches(transmit.contents.len(), segment).enumerate() {
            let part = Transmit {
                contents: &transmit.contents[range],
                ..*transmit
            };
            match self.inner.try_send(&part) {
                Ok(()) => {}
                // Nothing sent yet: quinn keeps the batch and retries it whole.
                Err(e) if i == 0 => return Err(e),
                // Part of the batch is out. Retrying would send that part twice, so the rest
                // counts as lost on the wire, which QUIC recovers like any other loss. With
                // socket buffers of SOCKET_BUFFER this is rare: the socket was writable a
                // moment ago.
                Err(e) => {
                    tracing::debug!(error = %e, "rest of a split send batch dropped");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A QUIC endpoint on `listen` with the swarm's socket and endpoint configuration; it
/// accepts connections when given a `server` configuration.
pub fn endpoint(
    listen: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = quinn::Runtime::wrap_udp_socket(&*runtime, udp_socket(listen)?)?;
    quinn::Endpoint::new_with_abstract_socket(
        crate::auth::endpoint_config(),
        server,
        Arc::new(WholeBatches::new(socket)),
        runtime,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_full_datagrams_fits_one_send() {
        for payload in [1200usize, 1452, 4000, 8972, 65_000] {
            let n = batch_limit(payload);
            assert!(n >= 1);
            assert!(n == 1 || n * payload <= MAX_SEND_BYTES, "{n} x {payload}");
            assert!((n + 1) * payload > MAX_SEND_BYTES, "{n} x {payload}");
        }
    }

    #[test]
    fn only_batches_over_one_send_are_split() {
        let split = |len, segment| send_batches(len, segment).collect::<Vec<_>>();
        // quinn's ten ordinary datagrams go in one send, as quinn built them.
        assert_eq!(split(10 * 1452, 1452), vec![0..14_520]);
        assert_eq!(split(9 * 1452 + 300, 1452), vec![0..13_368]);
        // Ten jumbo datagrams: seven, then three (the last one short).
        assert_eq!(
            split(9 * 8972 + 100, 8972),
            vec![0..7 * 8972, 7 * 8972..9 * 8972 + 100]
        );
        // Every part holds whole datagrams and fits one send; together they cover the batch.
        for (len, segment) in [(89_720, 8972), (65_508, 1200), (1, 1452), (131_072, 3000)] {
            let parts = split(len, segment);
            assert_eq!(parts.first().map(|r| r.start), Some(0));
            assert_eq!(parts.last().map(|r| r.end), Some(len));
            for w in parts.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].len() % segment, 0, "{parts:?}");
            }
            assert!(parts.iter().all(|r| r.len() <= MAX_SEND_BYTES), "{parts:?}");
        }
    }
}
