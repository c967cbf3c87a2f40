//! An export request body: deserialized as the API does, then planned (validation, date
//! ranges, devices, fields, filters, custom fields, privacy) against a small device list.
#![no_main]
use kasad::export::plan::{PlanCtx, plan};
use kasad::export::request::CreateRequest;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static DEVICES: OnceLock<Vec<kasad::store::DeviceRecord>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<CreateRequest>(data) else {
        return;
    };
    let devices = DEVICES.get_or_init(|| {
        let addr = "127.0.0.2:9999".parse().unwrap();
        let req = kasad::protocol::messages::sysinfo_request();
        (0..3)
            .flat_map(|i| {
                let mut d = kasad::sim::SimDevice::new(kasad::sim::fleet_spec(i), 0);
                let s = kasad::protocol::messages::SysInfo::from_response(&d.handle(&req, 0)).unwrap();
                kasad::poller::registry::infos_from_sysinfo(addr, &s).unwrap()
            })
            .enumerate()
            .map(|(key, info)| kasad::store::DeviceRecord { info, key: key as u32, first_seen_ms: 0, labels: Default::default(), forgotten_ms: None })
            .collect()
    });
    let limits = kasad::config::Exports::default();
    // As in the daemon, which always holds at least the tariff from its configuration.
    let tariffs = kasad::tariff::Versions::compile(
        &[kasad::tariff::Tariff::default()],
        chrono_tz::Europe::Berlin,
    )
    .unwrap();
    let ctx = PlanCtx {
        devices,
        default_tz: chrono_tz::Europe::Berlin,
        limits: &limits,
        tariffs: &tariffs,
        privacy_key: b"fuzz",
        now_ms: 1_764_000_000_000,
    };
    let _ = plan(&req, &ctx, None);
});
