//! What an authenticated peer can send: length-prefixed postcard frames of every message
//! type, read back to back from one stream as the transport reads them; a registry state
//! machine fed decoded commands; and the failure detector's datagrams. The first byte picks.
#![no_main]

use foca::{AccumulatingRuntime, Config, Foca, PostcardCodec};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use swarm::member::Member;
use swarm::registry::state::{Command, State};
use swarm::wire::{Hello, Notice, Request, Response, read_frame};

async fn frames<T: for<'de> serde::Deserialize<'de>>(mut r: &[u8]) {
    while read_frame::<_, T>(&mut r).await.is_ok() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => futures::executor::block_on(frames::<Request>(rest)),
        1 => futures::executor::block_on(frames::<Response>(rest)),
        2 => futures::executor::block_on(frames::<Hello>(rest)),
        3 => futures::executor::block_on(frames::<Notice>(rest)),
        4 => {
            if let Ok(cmds) = postcard::from_bytes::<Vec<Command>>(rest) {
                let mut s = State::default();
                for c in cmds {
                    let _ = s.apply(c);
                }
            }
        }
        _ => {
            let me = Member {
                id: store::NodeId([7; 16]),
                addr: "127.0.0.1:7400".parse().expect("address"),
                http: None,
                storage: true,
                incarnation: 0,
            };
            let mut foca = Foca::new(
                me,
                Config::simple(),
                rand::rngs::StdRng::seed_from_u64(0),
                PostcardCodec,
            );
            let mut rt = AccumulatingRuntime::new();
            for packet in rest.split(|b| *b == 0xA5) {
                let _ = foca.handle_data(packet, &mut rt);
            }
        }
    }
});
