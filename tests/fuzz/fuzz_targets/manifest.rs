//! A manifest as a peer or the database hands it over, and the slices of a range of it: the
//! slices of an accepted range cover it exactly, in order, each inside its chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use store::{ByteRange, Manifest};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (bounds, body) = data.split_at(16);
    let Ok(m) = Manifest::decode(body) else {
        return;
    };
    let word = |i: usize| u64::from_le_bytes(bounds[i..i + 8].try_into().unwrap_or([0; 8]));
    let size = m.size();
    let (start, end) = if size == 0 {
        (0, 0)
    } else {
        (word(0) % size, word(8) % (size + 1))
    };
    let Ok(range) = ByteRange::new(start, end, size) else {
        return;
    };
    let mut covered = 0u64;
    for s in m.slices(range) {
        assert!(s.len > 0 || range.is_empty(), "an empty slice");
        assert!(
            u64::from(s.offset) + u64::from(s.len) <= u64::from(s.chunk.len),
            "a slice outside its chunk: {s:?}"
        );
        covered += u64::from(s.len);
    }
    assert_eq!(
        covered,
        range.len(),
        "the slices of {range:?} do not cover it"
    );
    let _ = Manifest::decode(&m.encode()).expect("an encoded manifest decodes");
});
