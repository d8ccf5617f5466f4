//! The signature screen that runs before s3s on every request: a method, a request target
//! and header lines from the input, at a time from its first eight bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (t, rest) = data.split_at(8);
    let now = i64::from_le_bytes(t.try_into().unwrap_or([0; 8]));
    gateway::s3::fuzzing::signature_screen(&String::from_utf8_lossy(rest), now);
});
