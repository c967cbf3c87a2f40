//! Bytes read back from the database and the staging log (a damaged SD card): sealed blocks
//! and the staging log's records decode to an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(cols) = kasad::store::block::decode_columns(data) {
        for i in 0..cols.len().min(64) {
            let _ = cols.ts(i);
            let _ = cols.sample(i);
        }
    }
    // The staging log file as found after a crash.
    let _ = kasad::store::staging::replayable(data);
});
