//! aws-chunked PUT bodies (signed chunk chains, checksum trailers, unsigned streaming) sent
//! through a node's whole HTTP stack onto a store in a temporary directory, kept across
//! inputs. The input format and what must hold: `gateway::s3::fuzzing::Uploads`.
#![no_main]

use std::sync::LazyLock;

use gateway::s3::fuzzing::Uploads;
use libfuzzer_sys::fuzz_target;

struct Node {
    uploads: Uploads,
    _dir: tempfile::TempDir,
}

static NODE: LazyLock<Node> = LazyLock::new(|| {
    // Where tests/fuzz/run says (tmpfs when there is one), else the system's temp.
    let base = std::env::var_os("S3SWARM_FUZZ_TMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("s3swarm-fuzz-chunked-")
        .tempdir_in(base)
        .expect("temp dir");
    Node {
        uploads: Uploads::open(dir.path()),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    NODE.uploads.put(data);
});
