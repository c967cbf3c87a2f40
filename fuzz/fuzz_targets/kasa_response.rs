//! A device's answer: the TCP frame (length prefix, XOR payload, size cap), the UDP datagram
//! (decrypted), and the JSON itself, through every parser the poller and discovery use.
#![no_main]
use kasad::protocol::{cipher, frame, messages};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    });
    let mut r = data;
    let framed = rt.block_on(frame::read_frame(&mut r, 64 * 1024)).ok();
    let addr = "127.0.0.2:9999".parse().unwrap();
    for bytes in [framed, Some(cipher::decrypt(data)), Some(data.to_vec())]
        .into_iter()
        .flatten()
    {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Ok(s) = messages::SysInfo::from_response(&v) {
            let _ = kasad::poller::registry::infos_from_sysinfo(addr, &s);
        }
        let _ = messages::Realtime::from_response(&v);
        let _ = messages::parse_stats(&v, "get_daystat");
        let _ = messages::parse_stats(&v, "get_monthstat");
        let _ = messages::utc_offset_ms(&v, 1_764_000_000_000);
        let _ = messages::extract(&v, "emeter", "get_realtime");
    }
});
