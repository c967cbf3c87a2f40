//! The columns of a device_data export: the text fields, the numeric value fields with their
//! units, decimals and default aggregation, the aggregation functions, and custom fields.

use super::formula::{Formula, FormulaError};
use super::request::{CustomFieldBody, RequestError, bad};

/// A device_data column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Field {
    /// Reading time or period start.
    Timestamp,
    /// Device IP.
    DeviceIp,
    /// Device id.
    DeviceId,
    /// Device name.
    DeviceName,
    /// A numeric value, index into [`VALUE_FIELDS`].
    Value(usize),
    /// How the row's energy was obtained (opt-in, [`PROVENANCE_FIELDS`]).
    Quality,
    /// The share of an aggregated row's energy that was measured (opt-in).
    MeasuredShare,
}

/// A numeric column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueField {
    /// Its name in requests and headers.
    pub name: &'static str,
    /// Its title in `GET /api/exports/metrics`.
    pub title: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Its unit (`currency`: the tariff's).
    pub unit: &'static str,
    /// Decimals rendered (unless the request says).
    pub decimals: u8,
    /// The aggregation used unless the request names one.
    pub default_agg: Agg,
}

/// The numeric fields, in column order.
pub const VALUE_FIELDS: [ValueField; 7] = [
    ValueField {
        name: "power_w",
        title: "Power (Watts)",
        description: "Power draw: the reading, or the mean over the row's period",
        unit: "W",
        decimals: 3,
        default_agg: Agg::Average,
    },
    ValueField {
        name: "energy_kwh",
        title: "Energy (kWh)",
        description: "Energy used in the row's interval or period, from the device's own counter (not cumulative)",
        unit: "kWh",
        decimals: 6,
        default_agg: Agg::Sum,
    },
    ValueField {
        name: "voltage",
        title: "Voltage (Volts)",
        description: "Mains voltage: the reading, or the mean over the period",
        unit: "V",
        decimals: 3,
        default_agg: Agg::Average,
    },
    ValueField {
        name: "current",
        title: "Current (Amps)",
        description: "Current: the reading, or the mean over the period",
        unit: "A",
        decimals: 3,
        default_agg: Agg::Average,
    },
    ValueField {
        name: "cost",
        title: "Cost",
        description: "Cost of the row's energy at the configured price (not cumulative)",
        unit: "currency",
        decimals: 4,
        default_agg: Agg::Sum,
    },
    ValueField {
        name: "total_kwh",
        title: "Total energy (kWh)",
        description: "The device's cumulative energy counter at the end of the row (resets when the device does)",
        unit: "kWh",
        decimals: 6,
        default_agg: Agg::Last,
    },
    ValueField {
        name: "is_on",
        title: "Relay on",
        description: "Relay state: the reading, or on at any time in the period",
        unit: "",
        decimals: 0,
        default_agg: Agg::Max,
    },
];

/// Index of `is_on` in [`VALUE_FIELDS`].
pub const IS_ON: usize = 6;

/// Index of `energy_kwh`.
pub const ENERGY: usize = 1;

/// Index of `power_w`.
pub const POWER: usize = 0;

/// A text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextField {
    /// Its name in requests and headers.
    pub name: &'static str,
    /// Its title.
    pub title: &'static str,
    /// What it is.
    pub description: &'static str,
}

/// The text fields, in column order.
pub const TEXT_FIELDS: [TextField; 4] = [
    TextField {
        name: "timestamp",
        title: "Timestamp",
        description: "Reading time, or the start of the period, in the export's time zone (RFC 3339)",
    },
    TextField {
        name: "device_ip",
        title: "Device IP",
        description: "The device's address",
    },
    TextField {
        name: "device_id",
        title: "Device ID",
        description: "Stable device id (strip outlets: the outlet's id)",
    },
    TextField {
        name: "device_name",
        title: "Device name",
        description: "Name set in the Kasa app",
    },
];

/// The provenance fields: named in `fields` only (never in the default columns).
pub const PROVENANCE_FIELDS: [TextField; 2] = [
    TextField {
        name: "quality",
        title: "Quality",
        description: "How the row's energy was obtained: per reading measured or imported; per aggregated row measured when all of it was, otherwise mixed",
    },
    TextField {
        name: "measured_share",
        title: "Measured share",
        description: "Aggregated rows: the share (0-1) of the row's energy that was measured rather than backfilled, spread over a gap or imported",
    },
];

impl Field {
    /// Parses a field name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "timestamp" => Field::Timestamp,
            "device_ip" => Field::DeviceIp,
            "device_id" => Field::DeviceId,
            "device_name" => Field::DeviceName,
            "quality" => Field::Quality,
            "measured_share" => Field::MeasuredShare,
            _ => Field::Value(VALUE_FIELDS.iter().position(|f| f.name == s)?),
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Field::Timestamp => "timestamp",
            Field::DeviceIp => "device_ip",
            Field::DeviceId => "device_id",
            Field::DeviceName => "device_name",
            Field::Value(i) => VALUE_FIELDS[i].name,
            Field::Quality => "quality",
            Field::MeasuredShare => "measured_share",
        }
    }
}

/// Every field a request may name: the default columns and the opt-in provenance fields.
pub(super) fn known_field_names() -> Vec<&'static str> {
    let mut names = default_field_names();
    names.extend(PROVENANCE_FIELDS.iter().map(|f| f.name));
    names
}

/// The columns of a request that names no `fields`.
pub(super) fn default_field_names() -> Vec<&'static str> {
    TEXT_FIELDS
        .iter()
        .map(|f| f.name)
        .chain(VALUE_FIELDS.iter().map(|f| f.name))
        .collect()
}

/// An aggregation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Agg {
    /// Mean (power, voltage, current: over the readings).
    Average,
    /// Sum.
    Sum,
    /// Smallest.
    Min,
    /// Largest.
    Max,
    /// First value in the period.
    First,
    /// Last value in the period.
    Last,
    /// Number of values.
    Count,
}

impl Agg {
    /// The name used in requests and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Agg::Average => "average",
            Agg::Sum => "sum",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::First => "first",
            Agg::Last => "last",
            Agg::Count => "count",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "average" | "avg" | "mean" => Agg::Average,
            "sum" => Agg::Sum,
            "min" => Agg::Min,
            "max" => Agg::Max,
            "first" => Agg::First,
            "last" => Agg::Last,
            "count" => Agg::Count,
            _ => return None,
        })
    }
}

/// A custom field, parsed. Stored as its name, formula text and unit, and parsed again when
/// read back (the text was checked when the export was created).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "CustomText", try_from = "CustomText")]
pub struct Custom {
    /// Name.
    pub name: String,
    /// Formula text.
    pub text: String,
    /// Unit.
    pub unit: Option<String>,
    /// Parsed formula.
    pub formula: Formula,
}

/// A custom field as stored.
#[derive(serde::Serialize, serde::Deserialize)]
struct CustomText {
    name: String,
    text: String,
    unit: Option<String>,
}

impl From<Custom> for CustomText {
    fn from(c: Custom) -> Self {
        Self {
            name: c.name,
            text: c.text,
            unit: c.unit,
        }
    }
}

impl TryFrom<CustomText> for Custom {
    type Error = FormulaError;

    fn try_from(c: CustomText) -> Result<Self, FormulaError> {
        let resolve = |v: &str| FORMULA_VARS.iter().position(|n| *n == v);
        Ok(Self {
            formula: Formula::parse(&c.text, &resolve)?,
            name: c.name,
            text: c.text,
            unit: c.unit,
        })
    }
}

/// Formula variable names in the order of [`super::kind::device_data::formula_values`].
pub const FORMULA_VARS: [&str; 10] = [
    "power_w",
    "energy_kwh",
    "voltage",
    "current",
    "cost",
    "total_kwh",
    "is_on",
    "rated_power",
    "price_per_kwh",
    "device_id",
];

pub(super) fn parse_customs(
    list: Option<&Vec<CustomFieldBody>>,
    taken: &[&str],
    max: usize,
) -> Result<(Vec<Custom>, Vec<Custom>), RequestError> {
    let (mut rows, mut aggs) = (Vec::new(), Vec::new());
    let list = list.map(Vec::as_slice).unwrap_or_default();
    if list.len() > max {
        return Err(bad(format!(
            "custom_fields: at most {max} custom fields ([exports] max_custom_fields)"
        )));
    }
    let mut names: Vec<&str> = taken.to_vec();
    for (i, c) in list.iter().enumerate() {
        let ok_name = !c.name.is_empty()
            && c.name.len() <= 64
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ' ' || ch == '-');
        if !ok_name {
            return Err(bad(format!(
                "custom_fields[{i}].name must be 1–64 letters, digits, spaces, '_' or '-'"
            )));
        }
        if names.contains(&c.name.as_str()) {
            return Err(bad(format!(
                "custom_fields[{i}].name {:?} is already a column",
                c.name
            )));
        }
        names.push(&c.name);
        let resolve = |v: &str| FORMULA_VARS.iter().position(|n| *n == v);
        let formula = Formula::parse(&c.formula, &resolve).map_err(|e: FormulaError| {
            bad(format!(
                "custom_fields[{i}].formula: {e} (variables: {})",
                FORMULA_VARS.join(", ")
            ))
        })?;
        let custom = Custom {
            name: c.name.clone(),
            text: c.formula.clone(),
            unit: c.unit.clone(),
            formula,
        };
        if custom.formula.is_aggregate() {
            aggs.push(custom);
        } else {
            rows.push(custom);
        }
    }
    Ok((rows, aggs))
}
