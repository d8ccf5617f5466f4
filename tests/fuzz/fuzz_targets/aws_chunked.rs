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
    let dir = s3swarm_fuzz::store_dir("s3swarm-fuzz-chunked-");
    Node {
        uploads: Uploads::open(dir.path()),
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    NODE.uploads.put(data);
});
