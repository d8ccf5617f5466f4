//! Membership and failure detection: foca (SWIM) driven by one task. Its packets travel as
//! notices over the authenticated QUIC connections, so an outsider can neither join nor read
//! the member list; its timers are tokio sleeps; its notifications feed [`crate::membership`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Config, Foca, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use tokio::sync::mpsc;

use crate::bootstrap::PeerAddr;
use crate::member::Member;
use crate::node::NodeId;
use crate::runtime::{Inner, lock};
use crate::wire::Notice;

pub(crate) enum GossipEvent {
    /// A packet from a peer.
    Data(Vec<u8>),
    Timer(Timer<Member>),
    /// A member to introduce ourselves to.
    Announce(Member),
    /// Tell the swarm this node is leaving, then stop; answered once the news is delivered.
    Leave(tokio::sync::oneshot::Sender<()>),
}

fn config() -> Config {
    // LAN settings sized for a few dozen nodes, with failure detection quick enough that a
    // dead node's chunks are re-made within seconds.
    let mut c = Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
    c.probe_period = Duration::from_millis(500);
    c.probe_rtt = Duration::from_millis(250);
    c.suspect_to_down_after = Duration::from_secs(3);
    c.remove_down_after = Duration::from_secs(60);
    c.notify_down_members = true;
    // Foca packets ride on QUIC streams, not datagrams: no MTU to respect, but keep them
    // small enough to stay cheap.
    c.max_packet_size = NonZeroUsize::new(32 * 1024).unwrap_or(NonZeroUsize::MIN);
    c
}

impl Inner {
    /// Runs the failure detector until the process ends.
    pub async fn gossip_loop(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<GossipEvent>,
        bootstrap: Vec<PeerAddr>,
    ) {
        let mut foca = Foca::new(
            self.me.clone(),
            config(),
            rand::rngs::StdRng::from_os_rng(),
            PostcardCodec,
        );
        let mut rt = AccumulatingRuntime::new();
        // Join through the configured peers, and keep trying those that are not members
        // (not up yet, restarted, or on the other side of a partition).
        let me = self.clone();
        tokio::spawn(async move {
            // Which member answered at each address dialed: a name may resolve to an address
            // other than the one that member advertises (a node bound to 0.0.0.0 reached via
            // 127.0.0.1), and a member already joined must not be dialed again every round.
            let mut answered: HashMap<SocketAddr, NodeId> = HashMap::new();
            loop {
                for peer in &bootstrap {
                    let addrs = match peer.resolve().await {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "peer name does not resolve (yet)");
                            continue;
                        }
                    };
                    for addr in addrs {
                        // Ourselves, under our own or another address, or a member.
                        let known =
                            addr == me.me.addr || answered.get(&addr) == Some(&me.me.id) || {
                                let m = lock(&me.members);
                                m.alive_peers(&me.me.id)
                                    .iter()
                                    .any(|p| p.addr == addr || answered.get(&addr) == Some(&p.id))
                            };
                        if !known {
                            match me.connect(addr).await {
                                Ok((_, peer)) => {
                                    answered.insert(addr, peer.id);
                                    let _ = me.gossip.send(GossipEvent::Announce(peer));
                                }
                                Err(e) => {
                                    tracing::debug!(%addr, error = %e, "join attempt failed")
                                }
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        while let Some(ev) = events.recv().await {
            let result = match ev {
                GossipEvent::Data(d) => foca.handle_data(&d, &mut rt),
                GossipEvent::Timer(t) => foca.handle_timer(t, &mut rt),
                GossipEvent::Announce(m) => {
                    if m.id == self.me.id {
                        Ok(())
                    } else {
                        foca.announce(m, &mut rt)
                    }
                }
                GossipEvent::Leave(done) => {
                    // Members learn at once that this node is gone, instead of suspecting it
                    // for seconds while readers keep asking it for chunks.
                    if let Err(e) = foca.leave_cluster(&mut rt) {
                        tracing::debug!(error = %e, "leaving the swarm");
                    }
                    let mut told = Vec::new();
                    while let Some((to, data)) = rt.to_send() {
                        told.push(self.deliver(to.addr, Notice::Gossip(data.to_vec()), true));
                    }
                    // Read by the peers before the endpoint closes: a close discards what
                    // is still queued.
                    for result in futures::future::join_all(told).await {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "leave notice not delivered");
                        }
                    }
                    let _ = done.send(());
                    return;
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "gossip");
            }
            self.drain(&mut rt);
        }
    }

    fn drain(self: &Arc<Self>, rt: &mut AccumulatingRuntime<Member>) {
        while let Some((to, data)) = rt.to_send() {
            self.notify(to.addr, Notice::Gossip(data.to_vec()));
        }
        while let Some((after, timer)) = rt.to_schedule() {
            let tx = self.gossip.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(GossipEvent::Timer(timer));
            });
        }
        while let Some(n) = rt.to_notify() {
            let changed = match n {
                OwnedNotification::MemberUp(m) => {
                    tracing::info!(peer = %m.id, addr = %m.addr, "member up");
                    lock(&self.members).up(m)
                }
                OwnedNotification::Rename(_, m) => lock(&self.members).up(m),
                OwnedNotification::MemberDown(m) => {
                    tracing::warn!(peer = %m.id, addr = %m.addr, "member down");
                    if let Some((conn, _)) = lock(&self.conns).remove(&m.id) {
                        conn.close(0u32.into(), b"declared down");
                    }
                    lock(&self.members).down(&m)
                }
                _ => false,
            };
            if changed {
                self.keeper_wake.notify_one();
                self.sync_wake.notify_one();
            }
        }
    }
}
