//! What a person says about a device, kept by kasad and never sent to the device: a name
//! (shown everywhere in place of the device's own alias), a room, the rated power, notes, and
//! for the insights what kind of load it is and the power above which it is running.

use serde::{Deserialize, Serialize};

/// Longest name or room, in characters.
pub const MAX_NAME: usize = 64;
/// Longest notes, in characters.
pub const MAX_NOTES: usize = 1_000;
/// Largest rated power, W.
pub const MAX_RATED_W: f64 = 100_000.0;

/// A device's labels; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceLabels {
    /// kasad's name for it (else the device's alias is shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The room it is in (strip outlets without one are in their strip's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Rated power, W (over `[exports.rated_power]` in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_power_w: Option<f64>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// What kind of load it is (absent: learned from its readings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_kind: Option<LoadKind>,
    /// Power above which a programme load is running, W (absent: learned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_threshold_w: Option<f64>,
}

/// What kind of load a device feeds, which decides the insights it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadKind {
    /// Learned from its readings (never stored).
    Auto,
    /// Switches itself on and off all day: a fridge, a freezer, a thermostat heater.
    Cycling,
    /// Runs programmes now and then: a washer, a dishwasher, a dryer, a printer.
    Programme,
    /// Anything else: a lamp, a TV, a computer.
    Steady,
}

impl LoadKind {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            LoadKind::Auto => "auto",
            LoadKind::Cycling => "cycling",
            LoadKind::Programme => "programme",
            LoadKind::Steady => "steady",
        }
    }
}

/// Why labels are refused: the field and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LabelError {
    /// `name`, `room`, `rated_power_w` or `notes`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn text(
    field: &'static str,
    v: &Option<String>,
    max: usize,
    lines: bool,
) -> Result<(), LabelError> {
    let Some(s) = v else { return Ok(()) };
    let n = s.chars().count();
    let control = s
        .chars()
        .any(|c| c.is_control() && !(lines && (c == '\n' || c == '\t')));
    if n == 0 || n > max || control || s.trim().is_empty() {
        let what = if lines { "" } else { "no control characters, " };
        return Err(LabelError {
            field,
            message: format!("1 to {max} characters, {what}not only spaces (got {n})"),
        });
    }
    Ok(())
}

impl DeviceLabels {
    /// Checks every field: name and room 1–64 characters of any script without control
    /// characters, rated power and run threshold above 0 and at most 100 kW, notes up to
    /// 1,000 characters.
    pub fn check(&self) -> Result<(), LabelError> {
        text("name", &self.name, MAX_NAME, false)?;
        text("room", &self.room, MAX_NAME, false)?;
        text("notes", &self.notes, MAX_NOTES, true)?;
        if let Some(w) = self.rated_power_w
            && !(w.is_finite() && w > 0.0 && w <= MAX_RATED_W)
        {
            return Err(LabelError {
                field: "rated_power_w",
                message: format!("a number of watts above 0 and at most {MAX_RATED_W}"),
            });
        }
        if let Some(w) = self.run_threshold_w
            && !(w.is_finite() && w > 0.0 && w <= MAX_RATED_W)
        {
            return Err(LabelError {
                field: "run_threshold_w",
                message: format!("a number of watts above 0 and at most {MAX_RATED_W}"),
            });
        }
        if self.load_kind == Some(LoadKind::Auto) {
            return Err(LabelError {
                field: "load_kind",
                message: "auto is the absence of a kind, not a stored one".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(s: &str) -> DeviceLabels {
        DeviceLabels {
            name: Some(s.into()),
            ..DeviceLabels::default()
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(named("Kühlschrank 冷蔵庫").check().is_ok());
        assert!(named(&"x".repeat(64)).check().is_ok());
        assert_eq!(named(&"x".repeat(65)).check().unwrap_err().field, "name");
        assert!(named("a\u{7}b").check().is_err());
        assert!(named("tab\there").check().is_err());
        assert!(named("").check().is_err());
        assert!(named("   ").check().is_err());
        let notes = DeviceLabels {
            notes: Some("line one\nline two".into()),
            ..DeviceLabels::default()
        };
        assert!(notes.check().is_ok());
        for w in [0.0, -1.0, 100_001.0, f64::NAN] {
            let l = DeviceLabels {
                rated_power_w: Some(w),
                ..DeviceLabels::default()
            };
            assert_eq!(l.check().unwrap_err().field, "rated_power_w", "{w}");
        }
        assert!(DeviceLabels::default().check().is_ok());
        let l = DeviceLabels {
            run_threshold_w: Some(0.0),
            ..DeviceLabels::default()
        };
        assert_eq!(l.check().unwrap_err().field, "run_threshold_w");
        let l: DeviceLabels = serde_json::from_str(r#"{"load_kind":"programme"}"#).unwrap();
        assert_eq!(l.load_kind, Some(LoadKind::Programme));
        assert!(l.check().is_ok());
    }
}
