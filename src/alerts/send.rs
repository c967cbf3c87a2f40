//! Notices of alerts on their way out: the bell needs none (every alert is listed), MQTT gets
//! every notice, e-mail the raised ones, webhooks raised and resolved ones; e-mail and webhooks
//! are retried as scheduled-export deliveries are (`[delivery] retries`, `retry_backoff`).

use super::Alerts;
use crate::clock::rfc3339;
use crate::domain::alert::{Alert, Channel, Named, Out, Rule};
use serde_json::{Value, json};
use std::sync::Arc;

/// One notice: what happened to which alert of which rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `alert.raised`, `alert.resolved` or `alert.test`.
    pub event: &'static str,
    /// The alert as it is now.
    pub alert: Alert,
    /// The rule's name.
    pub rule_name: String,
    /// The rule's channels.
    pub channels: Vec<Channel>,
}

impl Notice {
    /// A notice of `alert` under `rule`.
    pub fn new(event: &'static str, alert: &Alert, rule: &Rule) -> Self {
        Self {
            event,
            alert: alert.clone(),
            rule_name: rule.body.name.clone(),
            channels: rule.body.channels.clone(),
        }
    }

    /// The JSON a webhook and MQTT get.
    pub fn json(&self) -> Value {
        let a = &self.alert;
        json!({"event": self.event, "alert_id": a.alert_id, "rule_id": a.rule_id,
            "rule_name": self.rule_name, "device_id": a.device_id, "kind": a.kind,
            "state": a.state, "raised_at": rfc3339(a.raised_ms),
            "resolved_at": a.resolved_ms.map(rfc3339), "message": a.message, "value": a.value})
    }

    fn subject(&self) -> String {
        let what = if self.event == "alert.test" {
            "test"
        } else {
            "alert"
        };
        format!("kasad {what}: {}", self.rule_name)
    }

    fn text(&self) -> String {
        format!(
            "{}\n\nRule: {}\nKind: {}\nRaised: {}\nAlert: {}\n",
            self.alert.message,
            self.rule_name,
            self.alert.kind.name(),
            rfc3339(self.alert.raised_ms),
            self.alert.alert_id
        )
    }
}

/// Sends `out` once; what happened, in words.
pub async fn send_once(
    n: &Notice,
    out: &Out,
    s: &crate::config::Settings,
) -> Result<String, String> {
    match out {
        Out::Email { recipients } => {
            let msg = crate::notify::plain(recipients, &n.subject(), n.text(), s)
                .map_err(|e| e.to_string())?;
            crate::notify::send_mail(msg, s)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("sent to {}", recipients.join(", ")))
        }
        Out::Webhook { url, secret } => {
            crate::notify::webhook(url, secret.as_deref(), &n.json(), s)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// Sends `n` on every channel of its rule, in the background, with retries.
pub fn deliver(alerts: Arc<Alerts>, n: Notice) {
    for c in n.channels.clone() {
        match c {
            Channel::Named(Named::Page) => {}
            Channel::Named(Named::Mqtt) => {
                // Nobody listening (MQTT off) is not an error.
                let _ = alerts.mqtt.send(n.clone());
            }
            Channel::Out(out) => {
                if matches!(out, Out::Email { .. }) && n.event == "alert.resolved" {
                    continue;
                }
                let (alerts, n) = (alerts.clone(), n.clone());
                tokio::spawn(async move {
                    let s = alerts.settings();
                    let mut wait = s.delivery.retry_backoff.0;
                    for attempt in 0..=s.delivery.retries {
                        match send_once(&n, &out, s).await {
                            Ok(_) => return,
                            Err(e) if attempt < s.delivery.retries => {
                                tracing::info!(alert = %n.alert.alert_id, error = %e, "alert notice failed; retrying");
                                tokio::time::sleep(wait).await;
                                wait = (wait * 2).min(std::time::Duration::from_secs(3_600));
                            }
                            Err(e) => {
                                tracing::warn!(alert = %n.alert.alert_id, error = %e, "alert notice not delivered")
                            }
                        }
                    }
                });
            }
        }
    }
}
