//! Which stored devices a selection names: `"all"`, device ids, IP addresses, `room:` names;
//! what exports, schedules and alert rules take as `devices`.

use super::DeviceRecord;
use crate::domain::{DeviceId, DeviceType};

/// Why a selection selects nothing: an error code and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotSelected {
    /// `VALIDATION_ERROR` (an empty list) or `DEVICE_NOT_FOUND`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The stored devices a `devices` value selects, in a stable order (by name, then id). A strip
/// (by id or IP) selects its outlets; `"all"` selects every device that has readings of its
/// own (plugs and outlets).
pub fn select<'a>(
    wanted: &[String],
    all: &'a [DeviceRecord],
) -> Result<Vec<&'a DeviceRecord>, NotSelected> {
    let leaves = |d: &&DeviceRecord| d.info.device_type != DeviceType::Strip;
    if wanted.is_empty() {
        return Err(NotSelected {
            code: "VALIDATION_ERROR",
            message: "devices: list at least one device id or IP, or \"all\"".into(),
        });
    }
    let mut out: Vec<&DeviceRecord> = Vec::new();
    for w in wanted {
        let w = w.trim();
        let room = w
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("room:"))
            .map(|_| w[5..].trim());
        let hits: Vec<&DeviceRecord> = if w.eq_ignore_ascii_case("all") {
            all.iter().filter(leaves).collect()
        } else if let Some(room) = room {
            all.iter()
                .filter(leaves)
                .filter(|d| d.room(all).is_some_and(|r| r.eq_ignore_ascii_case(room)))
                .collect()
        } else {
            let direct: Vec<&DeviceRecord> = all
                .iter()
                .filter(|d| d.info.device_id.as_str() == w || d.info.ip() == w)
                .collect();
            let parents: Vec<&DeviceId> = direct
                .iter()
                .filter(|d| d.info.device_type == DeviceType::Strip)
                .map(|d| &d.info.device_id)
                .collect();
            all.iter()
                .filter(|d| {
                    (direct.iter().any(|x| std::ptr::eq(*x, *d)) && leaves(d))
                        || d.info
                            .parent_id
                            .as_ref()
                            .is_some_and(|p| parents.contains(&p))
                })
                .collect()
        };
        if hits.is_empty() {
            let message = match room {
                Some(r) => format!("devices: no device is in the room {r:?}"),
                None => format!("devices: no known device has the id or IP {w:?}"),
            };
            return Err(NotSelected {
                code: "DEVICE_NOT_FOUND",
                message,
            });
        }
        for h in hits {
            if !out.iter().any(|o| std::ptr::eq(*o, h)) {
                out.push(h);
            }
        }
    }
    out.sort_by(|a, b| {
        (a.name(), a.info.device_id.as_str()).cmp(&(b.name(), b.info.device_id.as_str()))
    });
    Ok(out)
}
