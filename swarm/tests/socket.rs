//! The swarm's UDP socket under a real quinn transfer on loopback, where MTU discovery
//! reaches jumbo frames: no send may exceed what one `sendmsg` carries (a larger one is
//! failed by the kernel and silently lost by quinn-udp; see `swarm::socket`), while quinn's
//! own batches stay as large as quinn makes them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use swarm::auth::MAX_UDP_PAYLOAD;
use swarm::socket::{MAX_SEND_BYTES, WholeBatches, udp_socket};

/// Records the largest batch handed to the socket below it.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn AsyncUdpSocket>,
    largest: Arc<AtomicUsize>,
}

impl AsyncUdpSocket for Recording {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }
    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.largest
            .fetch_max(transmit.contents.len(), Ordering::Relaxed);
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
        self.inner.max_transmit_segments()
    }
    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }
    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// An endpoint on the swarm's socket (`WholeBatches` over the tuned UDP socket), with one
/// recorder between quinn and it (`handed`) and one between it and the kernel (`sent`).
fn endpoint(
    server: Option<quinn::ServerConfig>,
    handed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
) -> quinn::Endpoint {
    let runtime = Arc::new(quinn::TokioRuntime);
    let raw = quinn::Runtime::wrap_udp_socket(
        &*runtime,
        udp_socket("127.0.0.1:0".parse().expect("addr")).expect("bind"),
    )
    .expect("wrap");
    let below: Arc<dyn AsyncUdpSocket> = Arc::new(Recording {
        inner: raw,
        largest: sent,
    });
    let inner: Arc<dyn AsyncUdpSocket> = Arc::new(WholeBatches::new(below));
    quinn::Endpoint::new_with_abstract_socket(
        swarm::auth::endpoint_config(),
        server,
        Arc::new(Recording {
            inner,
            largest: handed,
        }),
        runtime,
    )
    .expect("endpoint")
}

/// What one transfer's sender did: the largest batch quinn handed its socket, the largest
/// send that reached the kernel, and the MTU the path settled at.
struct Sent {
    handed: usize,
    sent: usize,
    mtu: u16,
}

/// Sends `mib` MiB from a serving endpoint to a client.
async fn transfer(mib: usize) -> Sent {
    let (server_cfg, client_cfg) =
        swarm::auth::quic_configs(Duration::from_secs(10)).expect("configs");
    let handed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let server = endpoint(Some(server_cfg), handed.clone(), sent.clone());
    let mut client = endpoint(None, Arc::default(), Arc::default());
    client.set_default_client_config(client_cfg);
    let addr = server.local_addr().expect("addr");
    let sending = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let mut send = conn.open_uni().await.expect("stream");
        let block = bytes::Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..mib {
            send.write_chunk(block.clone()).await.expect("write");
        }
        send.finish().expect("finish");
        let _ = send.stopped().await;
        let mtu = conn.stats().path.current_mtu;
        conn.close(0u32.into(), b"done");
        mtu
    });
    let conn = client
        .connect(addr, "s3swarm")
        .expect("connect")
        .await
        .expect("handshake");
    let mut recv = conn.accept_uni().await.expect("stream");
    let got = recv.read_to_end(mib << 20).await.expect("read");
    assert_eq!(got.len(), mib << 20);
    let mtu = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("sender done in time")
        .expect("sender");
    Sent {
        handed: handed.load(Ordering::Relaxed),
        sent: sent.load(Ordering::Relaxed),
        mtu,
    }
}

// Without `WholeBatches` (quinn's own socket in its place), quinn's 89,720-byte batches went
// to the kernel here and MTU discovery fell back to 1,200; that run is not repeated in the
// suite because its lost bursts can stall the connection for seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_batches_fit_one_sendmsg_at_jumbo_mtu() {
    // Whether quinn hands over a batch larger than one send depends on its pacing in that run:
    // on a 2-core VM about half of the 64 MiB transfers never did (largest batch 3 datagrams,
    // seen before and after the registry change alike). Every transfer must keep its sends
    // within the kernel's limit; up to 10 are made until one has exercised the split.
    let mut largest = 0;
    for attempt in 1..=10 {
        let Sent { handed, sent, mtu } =
            tokio::time::timeout(Duration::from_secs(60), transfer(64))
                .await
                .expect("64 MiB over loopback within a minute");
        eprintln!(
            "swarm socket: transfer {attempt}: largest batch {handed} bytes from quinn, {sent} \
             to the kernel, at MTU {mtu}"
        );
        assert!(
            mtu > 1500,
            "the path MTU ended at {mtu} on loopback, where discovery reaches 8972: jumbo \
             datagrams were lost, or never tried (then the batch check below proves nothing)"
        );
        assert!(
            sent > MAX_UDP_PAYLOAD as usize,
            "no send carried more than one datagram ({sent} bytes): segmentation offload is \
             off, so batching was not exercised"
        );
        assert!(
            sent <= MAX_SEND_BYTES,
            "a send of {sent} bytes reached the kernel: it refuses more than {MAX_SEND_BYTES}"
        );
        largest = largest.max(handed);
        if handed > MAX_SEND_BYTES {
            return;
        }
    }
    // Quinn's pacing decided against a big batch every time (a run on the CI host once made
    // ten transfers of 50,860-byte batches at most). The split itself is checked on a batch
    // made to size in `a_batch_too_large_for_one_send_is_split_and_every_datagram_arrives`;
    // what quinn's runs above checked (jumbo MTU, sends batched and within the limit) held.
    eprintln!(
        "swarm socket: in 10 transfers quinn never handed over a batch larger than one send \
         (largest {largest} bytes); the split is checked on a made-up batch instead"
    );
}

/// The split on a batch made to size, so it runs whatever quinn's pacing does: 10 datagrams
/// of 8,972 bytes (89,720, more than one `sendmsg` takes) go out through `WholeBatches` over
/// the swarm's socket, no send reaches the kernel above its limit, and every datagram
/// arrives whole and in order at a plain socket.
#[tokio::test]
async fn a_batch_too_large_for_one_send_is_split_and_every_datagram_arrives() {
    const SEGMENT: usize = 8972;
    const COUNT: usize = 10;
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let sent = Arc::new(AtomicUsize::new(0));
    let raw = quinn::Runtime::wrap_udp_socket(
        &quinn::TokioRuntime,
        udp_socket("127.0.0.1:0".parse().expect("addr")).expect("bind"),
    )
    .expect("wrap");
    let below: Arc<dyn AsyncUdpSocket> = Arc::new(Recording {
        inner: raw,
        largest: sent.clone(),
    });
    let socket = Arc::new(WholeBatches::new(below));
    let mut writable = socket.clone().create_io_poller();
    let contents: Vec<u8> = (0..COUNT)
        .flat_map(|i| std::iter::repeat_n(i as u8, SEGMENT))
        .collect();
    assert!(contents.len() > MAX_SEND_BYTES);
    let transmit = Transmit {
        destination: receiver.local_addr().expect("addr"),
        ecn: None,
        contents: &contents,
        segment_size: Some(SEGMENT),
        src_ip: None,
    };
    // As quinn sends: wait until the socket is writable, try, and on WouldBlock wait again.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx))
                .await
                .expect("writable");
            match socket.try_send(&transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => break r,
            }
        }
    })
    .await
    .expect("writable within 5 s")
    .expect("the split batch is sent");
    let largest = sent.load(Ordering::Relaxed);
    assert!(
        largest <= MAX_SEND_BYTES && largest > SEGMENT,
        "the largest send to the kernel was {largest} bytes: it must batch datagrams and stay \
         within {MAX_SEND_BYTES}"
    );
    let mut buf = vec![0u8; 65_536];
    for i in 0..COUNT {
        let n = receiver
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} of {COUNT} never arrived: {e}"));
        assert_eq!(n, SEGMENT, "datagram {i}");
        assert!(
            buf[..n].iter().all(|b| *b == i as u8),
            "datagram {i} is whole and in order"
        );
    }
}
