//! What the fuzz targets share.

/// A directory for a target's store: where tests/fuzz/run says (tmpfs when there is one, so
/// fsyncs cost nothing; removed when the run ends, as libFuzzer exits without dropping it),
/// else the system's temp.
pub fn store_dir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("S3SWARM_FUZZ_TMP")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("temp dir")
}
