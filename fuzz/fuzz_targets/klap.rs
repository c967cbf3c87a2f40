//! The newer devices' answers: a 20002 discovery datagram (header, CRC rule, JSON, transport
//! choice), a KLAP body (signature, AES-CBC, padding) under a fixed session, checked and
//! unchecked, and the SMART JSON through every parser the poller uses.
#![no_main]
use kasad::protocol::{klap, port20002, smart};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = port20002::checked_payload(data);
    if let Ok(a) = port20002::parse_answer(data) {
        let _ = a.transports();
        let _ = a.family();
    }
    let s = klap::Session::new(&[1; 16], &[2; 16], &[3; 32]);
    let seq = data
        .get(..4)
        .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let _ = s.open(seq, data, true);
    if let Ok(plain) = s.open(seq, data, false) {
        assert_eq!(s.open(seq, &s.seal(seq, &plain), true).unwrap(), plain);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = smart::SmartInfo::parse(&v);
    let _ = smart::responses(&v, &["get_device_info", "get_energy_usage", "get_emeter_data"]);
    let _ = smart::child_result(&v);
    let _ = smart::result(&v, "get_device_info");
    let get = |k: &str| v.get(k);
    let _ = smart::SmartEnergy::combine(get("usage"), get("emeter"), get("current"));
});
