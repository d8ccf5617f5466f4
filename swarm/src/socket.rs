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
//! reports as a stalled GET. [`WholeBatches`] caps a batch at what fits in one call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use crate::auth::MAX_UDP_PAYLOAD;

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

/// Datagrams per send batch such that a batch of full-size ones fits in one `sendmsg`.
pub const fn batch_limit(max_payload: u16) -> usize {
    let n = MAX_SEND_BYTES / max_payload as usize;
    if n == 0 { 1 } else { n }
}

/// A socket whose send batches never exceed [`MAX_SEND_BYTES`] (see the module notes). It
/// relies on the path MTU staying at most `max_payload`: MTU discovery's upper bound (and
/// quinn's initial MTU, 1200, below it); an endpoint rebound to another socket loses the cap.
#[derive(Debug)]
pub struct WholeBatches {
    inner: Arc<dyn AsyncUdpSocket>,
    limit: usize,
}

impl WholeBatches {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, max_payload: u16) -> Self {
        Self {
            inner,
            limit: batch_limit(max_payload),
        }
    }
}

impl AsyncUdpSocket for WholeBatches {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        debug_assert!(
            transmit.contents.len() <= MAX_SEND_BYTES,
            "{}",
            transmit.contents.len()
        );
        self.inner.try_send(transmit)
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
        self.inner.max_transmit_segments().min(self.limit)
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
        Arc::new(WholeBatches::new(socket, MAX_UDP_PAYLOAD)),
        runtime,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_full_datagrams_fits_one_send() {
        for payload in [1200u16, 1452, 4000, 8972, MAX_UDP_PAYLOAD, 65_000] {
            let n = batch_limit(payload);
            assert!(n >= 1);
            assert!(
                n == 1 || n * payload as usize <= MAX_SEND_BYTES,
                "{n} x {payload}"
            );
            assert!(
                (n + 1) * payload as usize > MAX_SEND_BYTES,
                "{n} x {payload}"
            );
        }
        // The jumbo frames MTU discovery reaches: 7 per batch where quinn would send 10.
        assert_eq!(batch_limit(8972), 7);
    }
}
