//! Who may join: only nodes that hold the cluster secret. QUIC's TLS runs with throwaway
//! self-signed certificates (so it encrypts, but does not say who is who); then each side
//! proves the secret with an HMAC over keying material exported from *this* TLS session
//! (RFC 5705), so a proof cannot be replayed on another connection or relayed by a
//! man in the middle, whose two sessions export different material. Until a peer's proof
//! checks out, it is sent nothing — not even the member list.

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Sha256;

use crate::error::SwarmError;
use crate::node::NodeId;

/// ALPN of the swarm protocol.
pub const ALPN: &[u8] = b"s3swarm/1";
const EXPORT_LABEL: &[u8] = b"EXPORTER-s3swarm-peer-auth";
/// Shortest secret accepted: a guessable secret is no access control.
pub const MIN_SECRET: usize = 16;
/// The largest UDP payload a node sends or accepts: a 9000-byte jumbo frame less the IPv4
/// and UDP headers.
pub const MAX_UDP_PAYLOAD: u16 = 9000 - 28;

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterSecret(Arc<Vec<u8>>);

/// Which end of the connection a proof is for: the two proofs differ, so one cannot be
/// reflected back as the other.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    Dialer,
    Listener,
}

impl ClusterSecret {
    pub fn new(bytes: Vec<u8>) -> Result<Self, SwarmError> {
        if bytes.len() < MIN_SECRET {
            return Err(SwarmError::Secret(format!(
                "{} bytes is too short; use at least {MIN_SECRET} (e.g. `head -c 32 /dev/urandom | base64`)",
                bytes.len()
            )));
        }
        Ok(Self(Arc::new(bytes)))
    }

    /// Reads the secret from a file (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, SwarmError> {
        let raw = std::fs::read(path)
            .map_err(|e| SwarmError::Secret(format!("{}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&raw);
        Self::new(text.trim().as_bytes().to_vec())
    }

    fn mac(&self, role: Role, node: &NodeId, keying: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(match role {
            Role::Dialer => b"dialer",
            Role::Listener => b"listen",
        });
        mac.update(&node.0);
        mac.update(keying);
        mac
    }

    /// The proof that `node`, at `role`, holds the secret on the session that exported
    /// `keying`.
    pub fn proof(&self, role: Role, node: &NodeId, keying: &[u8; 32]) -> [u8; 32] {
        self.mac(role, node, keying).finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    pub fn verify(&self, role: Role, node: &NodeId, keying: &[u8; 32], proof: &[u8; 32]) -> bool {
        self.mac(role, node, keying).verify_slice(proof).is_ok()
    }
}

/// Keying material exported from a connection's TLS session.
pub fn session_keying(conn: &quinn::Connection) -> Result<[u8; 32], SwarmError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORT_LABEL, b"")
        .map_err(|_| SwarmError::Tls("keying material export failed".into()))?;
    Ok(out)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Server and client crypto for the endpoint: a fresh self-signed certificate, and a client
/// that accepts any certificate (identity is proven by the secret, not by PKI) while still
/// checking the handshake signatures.
pub fn quic_configs(
    idle_timeout: std::time::Duration,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), SwarmError> {
    let cert = rcgen::generate_simple_self_signed(vec!["s3swarm".to_owned()])
        .map_err(|e| SwarmError::Tls(e.to_string()))?;
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));

    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SwarmError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .map_err(|e| SwarmError::Tls(e.to_string()))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SwarmError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider())))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(
            idle_timeout
                .try_into()
                .map_err(|_| SwarmError::Tls("idle timeout out of range".into()))?,
        ))
        .keep_alive_interval(Some(idle_timeout / 3))
        // Room for a few chunks in flight per connection at LAN speeds.
        .stream_receive_window((8u32 << 20).into())
        .receive_window((64u32 << 20).into())
        .send_window(64 << 20)
        .max_concurrent_bidi_streams(256u32.into())
        .max_concurrent_uni_streams(256u32.into())
        // Streams of one priority go out in the order written (see transport's priorities).
        .send_fairness(false)
        // Up to jumbo frames where the path carries them (datacenter networks often do; so
        // does loopback): six times fewer packets to seal, send and acknowledge. Discovery
        // probes the path and settles at 1452 on a 1500-byte network. Jumbo datagrams go out
        // at most 7 per send (see `socket`); with that, 512 MiB between two namespaces at MTU
        // 9000 took 0.68 s against 1.35 s at MTU 1500.
        .mtu_discovery_config(Some({
            let mut mtu = quinn::MtuDiscoveryConfig::default();
            mtu.upper_bound(MAX_UDP_PAYLOAD);
            mtu
        }))
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    let transport = Arc::new(transport);

    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|e| SwarmError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|e| SwarmError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    Ok((server, client))
}

/// The endpoint's configuration: datagrams up to [`MAX_UDP_PAYLOAD`], so MTU discovery can
/// reach jumbo frames.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut cfg = quinn::EndpointConfig::default();
    cfg.max_udp_payload_size(MAX_UDP_PAYLOAD)
        .unwrap_or_else(|_| unreachable!("{MAX_UDP_PAYLOAD} is within QUIC's datagram limits"));
    cfg
}

/// Accepts any server certificate; signatures over the handshake are still verified, so the
/// session is sound and its exported keying material is shared only with the real peer.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_bind_secret_role_node_and_session() {
        let s = ClusterSecret::new(b"0123456789abcdef-secret".to_vec()).unwrap();
        let other = ClusterSecret::new(b"0123456789abcdef-other!".to_vec()).unwrap();
        let n = NodeId([1; 16]);
        let k = [7u8; 32];
        let p = s.proof(Role::Dialer, &n, &k);
        assert!(s.verify(Role::Dialer, &n, &k, &p));
        assert!(!other.verify(Role::Dialer, &n, &k, &p), "another secret");
        assert!(!s.verify(Role::Listener, &n, &k, &p), "reflected");
        assert!(
            !s.verify(Role::Dialer, &NodeId([2; 16]), &k, &p),
            "another node"
        );
        assert!(!s.verify(Role::Dialer, &n, &[8; 32], &p), "another session");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new(b"short".to_vec()).is_err());
    }
}
