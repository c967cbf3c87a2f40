//! Rule bodies checked against the settings: the allow-lists of e-mail and webhook channels
//! (as scheduled exports have them), the devices named, and how many rules there may be.

use crate::config::Settings;
use crate::domain::alert::{Channel, MAX_RULES, Out, RuleBody, RuleError};
use crate::store::DeviceRecord;

/// Why a rule is refused: an error code and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// `VALIDATION_ERROR`, `INVALID_DELIVERY`, `DEVICE_NOT_FOUND` or `LIMIT_EXCEEDED`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
}

impl From<RuleError> for Refused {
    fn from(e: RuleError) -> Self {
        Self {
            code: "VALIDATION_ERROR",
            message: e.to_string(),
        }
    }
}

/// Checks `body` for a household with `devices` and `existing` other rules.
pub fn check(
    body: &RuleBody,
    s: &Settings,
    devices: &[DeviceRecord],
    existing: usize,
) -> Result<(), Refused> {
    if existing >= MAX_RULES {
        return Err(Refused {
            code: "LIMIT_EXCEEDED",
            message: format!("at most {MAX_RULES} alert rules"),
        });
    }
    let wanted = body.check()?;
    if body.kind != crate::domain::alert::Kind::BudgetForecast {
        crate::store::select::select(&wanted, devices).map_err(|e| Refused {
            code: e.code,
            message: e.message,
        })?;
    }
    for c in &body.channels {
        let r = match c {
            Channel::Named(_) => Ok(()),
            Channel::Out(Out::Email { recipients }) => {
                crate::notify::check_recipients(recipients, s)
            }
            Channel::Out(Out::Webhook { url, secret }) => {
                crate::notify::check_webhook(url, secret.as_deref(), s)
            }
        };
        r.map_err(|message| Refused {
            code: "INVALID_DELIVERY",
            message: format!("channels: {message}"),
        })?;
    }
    Ok(())
}
