//! A cron expression: parsed, and when it parses, its next runs found in zones with DST
//! changes, from ordinary and extreme instants.
#![no_main]
use kasad::cron::Schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = Schedule::parse(text) else {
        return;
    };
    for tz in [chrono_tz::UTC, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe, chrono_tz::Asia::Kathmandu] {
        for after in [0, 1_711_846_799_000, 1_764_000_000_000, 253_402_300_799_000, -62_135_596_800_000] {
            let _ = s.next_after(after, tz);
        }
    }
});
