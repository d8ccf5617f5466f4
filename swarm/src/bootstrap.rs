//! Where to join a swarm: `host:port` addresses, resolved again on every attempt.
//!
//! In Kubernetes or compose, members are named by DNS (a headless Service resolves to every
//! pod), and the addresses behind a name change as pods come and go; resolving once at start
//! would pin a node to whatever answered first, or fail outright while DNS is not ready yet.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A peer to join through: an IP address or a DNS name, and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    host: String,
    port: u16,
}

impl PeerAddr {
    /// Every address the name stands for now (one for an IP literal).
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .collect())
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("peer {s:?} is not HOST:PORT (e.g. 10.0.0.5:7400 or s3swarm-0.s3swarm:7400)")
        };
        if let Ok(a) = s.parse::<SocketAddr>() {
            return if a.port() == 0 {
                Err(bad())
            } else {
                Ok(a.into())
            };
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        // A DNS name: letters, digits, hyphens and dots, 1..=253 bytes (RFC 1123). Anything
        // else (a bare IPv6 address without brackets, spaces, a URL) is a mistake to report
        // now, not a lookup to fail every two seconds.
        let valid = !host.is_empty()
            && host.len() <= 253
            && port != 0
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ip_literals_and_dns_names() {
        let p: PeerAddr = "10.0.0.5:7400".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.5:7400");
        let p: PeerAddr = "[::1]:7400".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:7400");
        let p: PeerAddr = "S3swarm-Peers.ml.svc.cluster.local:7400".parse().unwrap();
        assert_eq!(p.to_string(), "s3swarm-peers.ml.svc.cluster.local:7400");
    }

    #[test]
    fn refuses_what_cannot_be_a_peer() {
        for bad in [
            "",
            "node1",
            "node1:",
            ":7400",
            "node1:0",
            "node1:70000",
            "::1:7400",
            "http://node1:7400",
            "node_1:7400",
            "-node:7400",
            "a..b:7400",
            "node 1:7400",
        ] {
            assert!(bad.parse::<PeerAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn resolves_names_each_time() {
        let p: PeerAddr = "localhost:7400".parse().unwrap();
        let addrs = p.resolve().await.unwrap();
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7400)
        );
        assert!(!addrs.is_empty());
    }
}
