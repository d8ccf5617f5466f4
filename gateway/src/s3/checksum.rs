//! Upload integrity: Content-MD5 and the `x-amz-checksum-*` values a client sends in headers
//! or aws-chunked trailers, checked against what we computed while streaming the body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm};
use s3s::{S3Result, s3_error};
use store::StoredChecksum;

const ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

fn slot<'a>(c: &'a mut Checksum, alg: &str) -> Option<&'a mut Option<String>> {
    match alg {
        "CRC32" => Some(&mut c.checksum_crc32),
        "CRC32C" => Some(&mut c.checksum_crc32c),
        "CRC64NVME" => Some(&mut c.checksum_crc64nvme),
        "SHA1" => Some(&mut c.checksum_sha1),
        "SHA256" => Some(&mut c.checksum_sha256),
        _ => None,
    }
}

fn get<'a>(c: &'a Checksum, alg: &str) -> Option<&'a String> {
    match alg {
        "CRC32" => c.checksum_crc32.as_ref(),
        "CRC32C" => c.checksum_crc32c.as_ref(),
        "CRC64NVME" => c.checksum_crc64nvme.as_ref(),
        "SHA1" => c.checksum_sha1.as_ref(),
        "SHA256" => c.checksum_sha256.as_ref(),
        _ => None,
    }
}

/// What a request asked us to verify, gathered before the body is read.
pub(crate) struct ChecksumPlan {
    /// Values from headers.
    expected: Checksum,
    /// Algorithms to compute: named in headers, in `x-amz-sdk-checksum-algorithm`, or announced
    /// in `x-amz-trailer`.
    algorithms: Vec<&'static str>,
    content_md5: Option<[u8; 16]>,
}

impl ChecksumPlan {
    pub(crate) fn new(
        headers: &HeaderMap,
        algorithm: Option<&ChecksumAlgorithm>,
        expected: Checksum,
        content_md5: Option<&str>,
    ) -> S3Result<Self> {
        let mut algorithms = Vec::new();
        for alg in ALGORITHMS {
            if get(&expected, alg).is_some() {
                algorithms.push(alg);
            }
        }
        if let Some(a) = algorithm {
            let upper = a.as_str().to_ascii_uppercase();
            match ALGORITHMS.iter().find(|x| **x == upper) {
                Some(x) if !algorithms.contains(x) => algorithms.push(x),
                Some(_) => {}
                None => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "Unsupported checksum algorithm: {}",
                        a.as_str()
                    ));
                }
            }
        }
        for v in headers.get_all("x-amz-trailer") {
            for name in v.to_str().unwrap_or("").split(',') {
                let name = name.trim().to_ascii_lowercase();
                if let Some(alg) = name.strip_prefix("x-amz-checksum-") {
                    let upper = alg.to_ascii_uppercase();
                    match ALGORITHMS.iter().find(|x| **x == upper) {
                        Some(x) if !algorithms.contains(x) => algorithms.push(x),
                        Some(_) => {}
                        None => {
                            return Err(s3_error!(
                                InvalidRequest,
                                "Unsupported checksum trailer: {name}"
                            ));
                        }
                    }
                }
            }
        }
        let content_md5 = match content_md5 {
            None => None,
            Some(s) => {
                let raw = B64.decode(s.trim()).map_err(|_| {
                    s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid.")
                })?;
                Some(raw.try_into().map_err(|_| {
                    s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid.")
                })?)
            }
        };
        Ok(Self {
            expected,
            algorithms,
            content_md5,
        })
    }

    /// A hasher computing exactly the planned algorithms.
    pub(crate) fn hasher(&self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        for alg in &self.algorithms {
            match *alg {
                "CRC32" => h.crc32 = Some(Default::default()),
                "CRC32C" => h.crc32c = Some(Default::default()),
                "CRC64NVME" => h.crc64nvme = Some(Default::default()),
                "SHA1" => h.sha1 = Some(Default::default()),
                _ => h.sha256 = Some(Default::default()),
            }
        }
        h
    }

    /// Compares what was computed with what the client claimed (headers, then trailers).
    /// Returns the checksum to store with the object.
    pub(crate) fn verify(
        mut self,
        md5: &[u8; 16],
        computed: &Checksum,
        trailers: Option<HeaderMap>,
    ) -> S3Result<Option<StoredChecksum>> {
        if let Some(want) = self.content_md5
            && &want != md5
        {
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what we received."
            ));
        }
        if let Some(trailers) = trailers {
            for alg in ALGORITHMS {
                let name = format!("x-amz-checksum-{}", alg.to_ascii_lowercase());
                if let Some(v) = trailers.get(name.as_str()) {
                    let v = v
                        .to_str()
                        .map_err(|_| s3_error!(InvalidArgument, "invalid trailer {name}"))?;
                    if let Some(s) = slot(&mut self.expected, alg) {
                        *s = Some(v.to_owned());
                    }
                }
            }
        }
        let mut stored = None;
        for alg in &self.algorithms {
            let got = get(computed, alg);
            if let Some(want) = get(&self.expected, alg)
                && Some(want) != got
            {
                return Err(s3_error!(
                    BadDigest,
                    "The {alg} you specified did not match the calculated checksum (expected {want}, computed {})",
                    got.map_or("nothing", |s| s.as_str())
                ));
            }
            if stored.is_none()
                && let Some(v) = got
            {
                stored = Some(StoredChecksum {
                    algorithm: (*alg).to_owned(),
                    value: v.clone(),
                });
            }
        }
        Ok(stored)
    }
}

/// Fills the checksum fields of an output from a stored checksum.
pub(crate) fn to_dto(stored: Option<&StoredChecksum>) -> Checksum {
    let mut c = Checksum::default();
    if let Some(s) = stored
        && let Some(slot) = slot(&mut c, &s.algorithm)
    {
        *slot = Some(s.value.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_trailer_is_bad_digest_and_a_right_one_is_stored() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-trailer", "x-amz-checksum-crc32".parse().unwrap());
        let plan = ChecksumPlan::new(&headers, None, Checksum::default(), None).unwrap();
        let mut h = plan.hasher();
        h.update(b"hello");
        let computed = h.finalize();
        let right = computed.checksum_crc32.clone().unwrap();
        let mut t = HeaderMap::new();
        t.insert("x-amz-checksum-crc32", "AAAAAA==".parse().unwrap());
        let err = plan.verify(&[0; 16], &computed, Some(t)).unwrap_err();
        assert_eq!(err.code().as_str(), "BadDigest");

        let plan = ChecksumPlan::new(&headers, None, Checksum::default(), None).unwrap();
        let mut t = HeaderMap::new();
        t.insert("x-amz-checksum-crc32", right.parse().unwrap());
        let stored = plan.verify(&[0; 16], &computed, Some(t)).unwrap().unwrap();
        assert_eq!(stored.algorithm, "CRC32");
    }

    #[test]
    fn content_md5_is_checked() {
        let md5: [u8; 16] = [7; 16];
        let plan = ChecksumPlan::new(
            &HeaderMap::new(),
            None,
            Checksum::default(),
            Some(&B64.encode([7u8; 16])),
        )
        .unwrap();
        assert!(plan.verify(&md5, &Checksum::default(), None).is_ok());
        let plan = ChecksumPlan::new(
            &HeaderMap::new(),
            None,
            Checksum::default(),
            Some(&B64.encode([8u8; 16])),
        )
        .unwrap();
        assert!(plan.verify(&md5, &Checksum::default(), None).is_err());
        assert!(
            ChecksumPlan::new(&HeaderMap::new(), None, Checksum::default(), Some("!!")).is_err()
        );
    }
}
