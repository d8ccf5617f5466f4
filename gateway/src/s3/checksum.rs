//! Upload integrity: Content-MD5 and the `x-amz-checksum-*` values a client sends in headers
//! or aws-chunked trailers, checked against what we computed while streaming the body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm, ChecksumType};
use s3s::{S3Result, s3_error};
use store::StoredChecksum;

const ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

/// An algorithm's S3 name, whatever case a client or an old record spells it in.
pub(crate) fn algorithm_named(name: &str) -> Option<&'static str> {
    ALGORITHMS
        .iter()
        .find(|x| x.eq_ignore_ascii_case(name))
        .copied()
}

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
            match algorithm_named(a.as_str()) {
                Some(x) if !algorithms.contains(&x) => algorithms.push(x),
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
                    match algorithm_named(alg) {
                        Some(x) if !algorithms.contains(&x) => algorithms.push(x),
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
                    composite: false,
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
        c.checksum_type = Some(ChecksumType::from_static(if s.composite {
            ChecksumType::COMPOSITE
        } else {
            ChecksumType::FULL_OBJECT
        }));
    }
    c
}

/// The algorithm and checksum type a multipart upload declares, checked against what S3
/// allows: SHA-1/SHA-256 only as composite, CRC-64/NVME only as full-object; CRC-32(C)
/// either (composite unless asked otherwise).
pub(crate) fn multipart_plan(
    algorithm: Option<&ChecksumAlgorithm>,
    kind: Option<&ChecksumType>,
) -> S3Result<Option<(&'static str, bool)>> {
    let Some(a) = algorithm else {
        if kind.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
            ));
        }
        return Ok(None);
    };
    let alg = algorithm_named(a.as_str()).ok_or_else(|| {
        s3_error!(
            InvalidRequest,
            "Unsupported checksum algorithm: {}",
            a.as_str()
        )
    })?;
    let composite = match kind.map(|k| k.as_str().to_ascii_uppercase()) {
        None => alg != "CRC64NVME",
        Some(k) if k == ChecksumType::COMPOSITE => true,
        Some(k) if k == ChecksumType::FULL_OBJECT => false,
        Some(k) => {
            return Err(s3_error!(InvalidRequest, "Unknown checksum type: {k}"));
        }
    };
    match (alg, composite) {
        ("SHA1" | "SHA256", false) | ("CRC64NVME", true) => Err(s3_error!(
            InvalidRequest,
            "The {} checksum type cannot be used with the {alg} checksum algorithm.",
            if composite {
                "COMPOSITE"
            } else {
                "FULL_OBJECT"
            }
        )),
        _ => Ok(Some((alg, composite))),
    }
}

fn crc_algorithm(alg: &str) -> Option<(crc_fast::CrcAlgorithm, usize)> {
    match alg {
        "CRC32" => Some((crc_fast::CrcAlgorithm::Crc32IsoHdlc, 4)),
        "CRC32C" => Some((crc_fast::CrcAlgorithm::Crc32Iscsi, 4)),
        "CRC64NVME" => Some((crc_fast::CrcAlgorithm::Crc64Nvme, 8)),
        _ => None,
    }
}

fn decode_value(v: &str) -> S3Result<Vec<u8>> {
    B64.decode(v)
        .map_err(|_| s3_error!(InvalidPart, "a part has a malformed checksum"))
}

/// The checksum of a multipart object from its parts' checksums (each with the part's
/// size). Composite: the algorithm over the concatenated raw part checksums, then `-N`.
/// Full-object: the CRCs combined as if computed over the whole content, which CRCs allow
/// without reading a byte.
pub(crate) fn multipart_checksum(
    alg: &'static str,
    composite: bool,
    parts: &[(&StoredChecksum, u64)],
) -> S3Result<StoredChecksum> {
    let value = if composite {
        let mut h = hasher_for(alg)?;
        for (c, _) in parts {
            h.update(&decode_value(&c.value)?);
        }
        let whole = h.finalize();
        let v = get(&whole, alg).ok_or_else(|| s3_error!(InternalError, "no {alg} computed"))?;
        format!("{v}-{}", parts.len())
    } else {
        let (crc, width) = crc_algorithm(alg).ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "{alg} has no full-object multipart checksum"
            )
        })?;
        let mut acc: Option<u64> = None;
        for (c, size) in parts {
            let raw = decode_value(&c.value)?;
            if raw.len() != width {
                return Err(s3_error!(
                    InvalidPart,
                    "a part has a malformed {alg} checksum"
                ));
            }
            let mut b = [0u8; 8];
            b[8 - width..].copy_from_slice(&raw);
            let v = u64::from_be_bytes(b);
            acc = Some(match acc {
                None => v,
                Some(a) => crc_fast::checksum_combine(crc, a, v, *size),
            });
        }
        let v = acc.ok_or_else(|| s3_error!(InvalidPart, "the upload lists no parts"))?;
        B64.encode(&v.to_be_bytes()[8 - width..])
    };
    Ok(StoredChecksum {
        algorithm: alg.to_owned(),
        value,
        composite,
    })
}

/// A hasher for one algorithm by its S3 name.
pub(crate) fn hasher_for(alg: &str) -> S3Result<ChecksumHasher> {
    let alg = algorithm_named(alg)
        .ok_or_else(|| s3_error!(InvalidRequest, "Unsupported checksum algorithm: {alg}"))?;
    Ok(ChecksumPlan {
        expected: Checksum::default(),
        algorithms: vec![alg],
        content_md5: None,
    }
    .hasher())
}

/// The stored checksum a [`hasher_for`] hasher computed.
pub(crate) fn finish(h: ChecksumHasher, alg: &str) -> S3Result<StoredChecksum> {
    let c = h.finalize();
    let value = get(&c, alg)
        .cloned()
        .ok_or_else(|| s3_error!(InternalError, "no {alg} computed"))?;
    Ok(StoredChecksum {
        algorithm: alg.to_owned(),
        value,
        composite: false,
    })
}

/// Compares a checksum the client sent with CompleteMultipartUpload to the one computed.
pub(crate) fn check_claim(claimed: &Checksum, computed: &StoredChecksum) -> S3Result<()> {
    for alg in ALGORITHMS {
        if let Some(want) = get(claimed, alg) {
            let same = alg == computed.algorithm
                && (want == &computed.value
                    || computed.value.split('-').next() == Some(want.as_str()));
            if !same {
                return Err(s3_error!(
                    BadDigest,
                    "The {alg} you specified ({want}) did not match the calculated checksum ({} {})",
                    computed.algorithm,
                    computed.value
                ));
            }
        }
    }
    Ok(())
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

    fn crc(alg: &'static str, data: &[u8]) -> StoredChecksum {
        let plan = ChecksumPlan {
            expected: Checksum::default(),
            algorithms: vec![alg],
            content_md5: None,
        };
        let mut h = plan.hasher();
        h.update(data);
        let c = h.finalize();
        StoredChecksum {
            algorithm: alg.into(),
            value: get(&c, alg).unwrap().clone(),
            composite: false,
        }
    }

    #[test]
    fn full_object_crcs_combine_to_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for alg in ["CRC32", "CRC32C", "CRC64NVME"] {
            let whole = crc(alg, &data);
            let (a, b) = data.split_at(123_457);
            let (pa, pb) = (crc(alg, a), crc(alg, b));
            let combined =
                multipart_checksum(alg, false, &[(&pa, a.len() as u64), (&pb, b.len() as u64)])
                    .unwrap();
            assert_eq!(combined.value, whole.value, "{alg}");
        }
        let (pa, pb) = (crc("SHA256", b"ab"), crc("SHA256", b"cd"));
        let c = multipart_checksum("SHA256", true, &[(&pa, 2), (&pb, 2)]).unwrap();
        assert!(c.value.ends_with("-2"));
        assert!(
            multipart_plan(
                Some(&ChecksumAlgorithm::from_static("SHA256")),
                Some(&ChecksumType::from_static("FULL_OBJECT"))
            )
            .is_err()
        );
        assert!(
            multipart_plan(
                Some(&ChecksumAlgorithm::from_static("CRC64NVME")),
                Some(&ChecksumType::from_static("COMPOSITE"))
            )
            .is_err()
        );
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
