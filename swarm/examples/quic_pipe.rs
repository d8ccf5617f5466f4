//! The QUIC ceiling: quinn with the swarm's own transport configuration, moving bytes and
//! nothing else (no store, no hashing, no scheduler). The distribution benchmark runs it
//! beside the real chunk transfer, so a gap between the two is ours and a gap between this and
//! plain TCP is the transport's.
//!
//! ```text
//! quic_pipe serve 10.0.0.1:7500
//! quic_pipe fetch 10.0.0.1:7500 --mib 512 --parallel 4 --chunk-kib 1024
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn endpoint(listen: SocketAddr, serve: bool) -> Result<quinn::Endpoint, Error> {
    let (server, client) = swarm::auth::quic_configs(Duration::from_secs(30))?;
    let mut ep = swarm::socket::endpoint(listen, serve.then_some(server))?;
    ep.set_default_client_config(client);
    Ok(ep)
}

async fn serve(addr: SocketAddr) -> Result<(), Error> {
    let ep = endpoint(addr, true)?;
    // Random bytes, so nothing on the path can make them cheaper than chunk bytes.
    let block: Bytes = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<_>>()
        .into();
    while let Some(incoming) = ep.accept().await {
        let block = block.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let block = block.clone();
                tokio::spawn(async move {
                    let mut len = [0u8; 8];
                    if recv.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let len = (u64::from_le_bytes(len) as usize).min(block.len());
                    let _ = send.write_chunk(block.slice(..len)).await;
                    let _ = send.finish();
                });
            }
        });
    }
    Ok(())
}

async fn fetch(addr: SocketAddr, mib: u64, parallel: usize, chunk: usize) -> Result<(), Error> {
    let local: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let ep = endpoint(local, false)?;
    let conn = ep.connect(addr, "s3swarm")?.await?;
    let total = mib << 20;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let (conn, next) = (conn.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let at = next.fetch_add(chunk as u64, Ordering::Relaxed);
                if at >= total {
                    return Ok::<_, Error>(());
                }
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&(chunk as u64).to_le_bytes()).await?;
                send.finish()?;
                let mut got = 0;
                while let Some(c) = recv.read_chunk(usize::MAX, true).await? {
                    got += c.bytes.len();
                }
                if got != chunk {
                    return Err(format!("short stream: {got} of {chunk} bytes").into());
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{mib} MiB in {secs:.3} s ({:.1} MiB/s), {parallel} streams of {} KiB",
        mib as f64 / secs,
        chunk >> 10
    );
    conn.close(0u32.into(), b"done");
    ep.wait_idle().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: u64| -> Result<u64, Error> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or("flag without value")?.parse()?),
            None => Ok(default),
        }
    };
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("serve"), Some(addr)) => serve(addr.parse()?).await,
        (Some("fetch"), Some(addr)) => {
            fetch(
                addr.parse()?,
                flag("--mib", 512)?,
                flag("--parallel", 4)? as usize,
                (flag("--chunk-kib", 1024)? as usize) << 10,
            )
            .await
        }
        _ => Err(
            "usage: quic_pipe serve ADDR | quic_pipe fetch ADDR [--mib N] \
                  [--parallel N] [--chunk-kib N]"
                .into(),
        ),
    }
}
