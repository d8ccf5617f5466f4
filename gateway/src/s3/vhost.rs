//! Virtual-hosted-style addressing: `bucket.<domain>` names the bucket in the Host header.
//!
//! s3s's own `SingleDomain` compares the Host header including its port with the domain (so
//! `bucket.s3.test:9000` never matches `s3.test`) and reads any other host name as a bucket
//! (CNAME style), which would turn path-style requests to `localhost:9000` into requests for
//! a bucket named `localhost:9000`. Here the port is ignored, `bucket.<domain>` is virtual-
//! hosted, and every other host is path style. (s3s itself skips the host parser for IP
//! literals, so `127.0.0.1:9000` is path style before this runs.)

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// Virtual-hosted buckets under one base domain; path style for every other host.
pub(crate) struct DomainHost {
    /// Lowercase, without a port (validated in `Config`).
    domain: String,
}

impl DomainHost {
    pub(crate) fn new(domain: &str) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
        }
    }
}

impl S3Host for DomainHost {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let bucket = name
            .len()
            .checked_sub(self.domain.len() + 1)
            .filter(|&n| n > 0)
            .filter(|&n| name.is_char_boundary(n))
            .filter(|&n| {
                name[n..].starts_with('.') && name[n + 1..].eq_ignore_ascii_case(&self.domain)
            })
            .map(|n| &name[..n]);
        Ok(match bucket {
            // Bucket names are lowercase; a client may still send the host in any case, and
            // DNS is case-insensitive. Names with uppercase are then rejected as invalid.
            Some(b) => VirtualHost::new(self.domain.as_str()).with_bucket(b),
            None => VirtualHost::new(self.domain.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_subdomains_are_virtual_hosted_and_other_hosts_path_style() {
        let h = DomainHost::new("s3.test");
        let b = |host: &str| {
            h.parse_host_header(host)
                .unwrap()
                .bucket()
                .map(str::to_owned)
        };
        assert_eq!(b("photos.s3.test:9000").as_deref(), Some("photos"));
        assert_eq!(b("photos.s3.test").as_deref(), Some("photos"));
        assert_eq!(
            b("a.b.s3.test").as_deref(),
            Some("a.b"),
            "dotted bucket names"
        );
        assert_eq!(b("s3.test:9000"), None);
        assert_eq!(b("localhost:9000"), None);
        assert_eq!(b("xs3.test"), None);
        assert_eq!(b(".s3.test"), None);
    }
}
