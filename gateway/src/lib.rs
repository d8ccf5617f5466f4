//! `gateway`: the S3 face of s3swarm.
//!
//! An axum server answers `/healthz` and `/metrics` and hands everything else to the `s3s`
//! protocol layer, whose `S3` trait is implemented by [`s3::Gateway`] over the `store` crate.
//! Credentials ([`credentials`]) and configuration ([`config`]) are loaded once at start;
//! with a certificate the same app is served over HTTPS ([`tls`]); what a slow client may
//! cost is bounded where connections are accepted ([`connections`]). A bucket may front an
//! upstream S3 bucket or HTTP server, read through once per piece ([`origin`]); a bucket may be
//! served to Hugging Face Hub clients ([`hf`]).

pub mod admin;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod disk;
pub mod hf;
pub mod metrics;
pub mod origin;
pub(crate) mod peer;
pub mod pruning;
pub mod s3;
pub mod scrub;
pub mod server;
pub mod tls;

pub use config::Config;

/// This binary's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this binary was built from (see `build.rs`), or `unknown`.
pub const GIT_COMMIT: &str = env!("S3SWARM_GIT_COMMIT");
pub use server::serve;
