//! The parsers of client input in the S3 layer, each checking what must hold of what it
//! accepts (see `gateway::s3::fuzzing`). The first byte picks the parser.
#![no_main]

use gateway::s3::fuzzing as f;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // Selectors 0-7 as first written (the committed seeds use them); 8 and up came later.
    match which % 16 {
        0 => f::continuation_token(&text),
        1 => {
            let size = rest.len() as u64 * 1_000_003;
            f::copy_source_range(&text, size)
        }
        2 => f::tagging_header(&text),
        3 => f::tagging_xml(rest),
        4 => {
            let (domain, host) = text.split_once('\n').unwrap_or(("s3.test", &text));
            f::host_header(domain, host)
        }
        5 => {
            // The CORS document, then (after a NUL) origin, method and headers lines.
            let mut parts = rest.splitn(2, |b| *b == 0);
            let xml = parts.next().unwrap_or_default();
            let request = String::from_utf8_lossy(parts.next().unwrap_or_default());
            f::cors(xml, &request)
        }
        6 => f::version_id(&text),
        7 => f::http_date(&text),
        8 => {
            let size = rest.len() as u64 * 7_919;
            f::range_header(&text, size)
        }
        _ => f::http_date(&text),
    }
});
