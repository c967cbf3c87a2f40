//! Alert rules (`/api/alerts/rules`: DEVICE_READ to read, SYSTEM_CONFIG to change, each change
//! audited as `ALERT_RULE_CHANGED` with the old and new rule; `…/test` sends a test notice) and
//! alerts (`GET /api/alerts?state=`, `…/acknowledge` and `…/snooze` with DEVICE_CONTROL).

use super::AppState;
use super::devices::blocking;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guard::CurrentUser;
use crate::alerts::send::{Notice, send_once};
use crate::audit::{EventType, Severity};
use crate::clock::rfc3339;
use crate::domain::alert::{Alert, Channel, Out, Rule, RuleBody, State};
use crate::store::audit::Pending;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

/// A rule as the API shows it: a webhook shows only its origin (its path is often its
/// token) and whether it is signed, never its secret.
fn rule_json(r: &Rule) -> Value {
    let mut v = json!(r.body);
    if let Some(cs) = v["channels"].as_array_mut() {
        for (c, orig) in cs.iter_mut().zip(&r.body.channels) {
            if let Channel::Out(Out::Webhook { url, secret }) = orig {
                c["url"] = json!(crate::notify::origin(url));
                c["secret"] = Value::Null;
                c["signed"] = json!(secret.is_some());
            }
        }
    }
    v["rule_id"] = json!(r.rule_id);
    v["created_at"] = json!(rfc3339(r.created_ms));
    v["updated_at"] = json!(rfc3339(r.updated_ms));
    v
}

fn alert_json(a: &Alert) -> Value {
    json!({"alert_id": a.alert_id, "rule_id": a.rule_id, "device_id": a.device_id,
        "kind": a.kind, "state": a.state, "raised_at": rfc3339(a.raised_ms),
        "resolved_at": a.resolved_ms.map(rfc3339), "acknowledged_at": a.acknowledged_ms.map(rfc3339),
        "snoozed_until": a.snoozed_until_ms.map(rfc3339), "message": a.message, "value": a.value})
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::not_found_what(
        "RULE_NOT_FOUND",
        "Rule not found",
        format!("No alert rule {id:?}"),
    )
}

/// Checks `body` against the settings, the devices and the number of other rules.
fn checked(st: &AppState, body: &RuleBody, others: usize) -> Result<(), ApiError> {
    let devices = st.store.device_records()?;
    crate::alerts::rules::check(body, st.work.alerts.settings(), &devices, others)
        .map_err(|e| ApiError::bad_request(e.code, e.message))
}

/// `GET /api/alerts/rules`.
pub async fn list_rules(AxState(st): AxState<AppState>) -> Result<Json<Value>, ApiError> {
    let store = st.store.clone();
    let rules = blocking(move || store.alert_rules()).await??;
    Ok(Json(
        json!({"rules": rules.iter().map(rule_json).collect::<Vec<_>>()}),
    ))
}

/// `GET /api/alerts/rules/{rule_id}`.
pub async fn get_rule(
    AxState(st): AxState<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (store, rid) = (st.store.clone(), id.clone());
    let r = blocking(move || store.alert_rule(&rid)).await??;
    r.map(|r| Json(rule_json(&r)))
        .ok_or_else(|| rule_not_found(&id))
}

/// Stores `new` (replacing `old`), audited.
async fn store_rule(
    st: &AppState,
    cu: &CurrentUser,
    old: Option<Rule>,
    new: Rule,
) -> Result<(), ApiError> {
    let (store, key, now) = (
        st.store.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let mut ev = cu.event(EventType::AlertRuleChanged, Severity::Info);
    ev.resource = Some(format!("alert_rule:{}", new.rule_id));
    ev.details =
        json!({"rule_id": new.rule_id, "old": old.as_ref().map(rule_json), "new": rule_json(&new)});
    blocking(move || store.alert_rule_put(&new, Some(Pending::new(&key, ev, now)))).await??;
    Ok(())
}

/// `POST /api/alerts/rules` → 201.
pub async fn create_rule(
    AxState(st): AxState<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiJson(body): ApiJson<RuleBody>,
) -> Result<Response, ApiError> {
    let others = st.store.alert_rules()?.len();
    checked(&st, &body, others)?;
    let now = st.clock.now_ms();
    let rule = Rule {
        rule_id: format!("ar_{}", crate::random::random_token::<9>()),
        body,
        created_ms: now,
        updated_ms: now,
    };
    store_rule(&st, &cu, None, rule.clone()).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule))).into_response())
}

/// `PUT /api/alerts/rules/{rule_id}`: the whole rule again.
pub async fn put_rule(
    AxState(st): AxState<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RuleBody>,
) -> Result<Json<Value>, ApiError> {
    let old = st
        .store
        .alert_rule(&id)?
        .ok_or_else(|| rule_not_found(&id))?;
    let others = st.store.alert_rules()?.len() - 1;
    checked(&st, &body, others)?;
    let new = Rule {
        body,
        updated_ms: st.clock.now_ms(),
        ..old.clone()
    };
    store_rule(&st, &cu, Some(old), new.clone()).await?;
    // A changed rule starts again: its open alerts resolve, its runs and timers are forgotten.
    let (alerts, rid) = (st.work.alerts.clone(), new.rule_id.clone());
    blocking(move || alerts.forget_rule(&rid)).await??;
    Ok(Json(rule_json(&new)))
}

/// `DELETE /api/alerts/rules/{rule_id}` → 204; its open alerts resolve.
pub async fn delete_rule(
    AxState(st): AxState<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let old = st
        .store
        .alert_rule(&id)?
        .ok_or_else(|| rule_not_found(&id))?;
    let (store, alerts, key, now) = (
        st.store.clone(),
        st.work.alerts.clone(),
        st.auth.audit_key.clone(),
        st.clock.now_ms(),
    );
    let mut ev = cu.event(EventType::AlertRuleChanged, Severity::Info);
    ev.resource = Some(format!("alert_rule:{id}"));
    ev.details = json!({"rule_id": id, "old": rule_json(&old), "new": null});
    blocking(move || -> crate::store::Result<()> {
        store.alert_rule_delete(&id, Some(Pending::new(&key, ev, now)))?;
        alerts.forget_rule(&id)
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/alerts/rules/{rule_id}/test`: a test notice on every channel now; what each did.
pub async fn test_rule(
    AxState(st): AxState<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let rule = st
        .store
        .alert_rule(&id)?
        .ok_or_else(|| rule_not_found(&id))?;
    let now = st.clock.now_ms();
    let alert = Alert {
        alert_id: "test".into(),
        rule_id: rule.rule_id.clone(),
        device_id: None,
        kind: rule.body.kind,
        state: State::Open,
        raised_ms: now,
        resolved_ms: None,
        acknowledged_ms: None,
        notified_ms: Some(now),
        snoozed_until_ms: None,
        message: format!("A test of the alert rule \"{}\"", rule.body.name),
        value: None,
    };
    let notice = Notice::new("alert.test", &alert, &rule);
    let mut results = Vec::new();
    for c in &rule.body.channels {
        let (channel, result) = match c {
            Channel::Named(n) => {
                if *n == crate::domain::alert::Named::Mqtt {
                    let _ = st.work.alerts.mqtt.send(notice.clone());
                }
                (json!(n), Ok("shown with the alerts".to_owned()))
            }
            Channel::Out(out) => (
                json!(match out {
                    Out::Email { .. } => "email",
                    Out::Webhook { .. } => "webhook",
                }),
                send_once(&notice, out, st.work.alerts.settings()).await,
            ),
        };
        results.push(match result {
            Ok(m) => json!({"channel": channel, "ok": true, "message": m}),
            Err(m) => json!({"channel": channel, "ok": false, "message": m}),
        });
    }
    Ok(Json(json!({"rule_id": id, "results": results})))
}

/// `GET /api/alerts` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    state: Option<State>,
    #[serde(default = "hundred")]
    limit: usize,
}

fn hundred() -> usize {
    100
}

/// `GET /api/alerts?state=open|acknowledged|resolved&limit=`: newest first.
pub async fn list(
    AxState(st): AxState<AppState>,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1_000).contains(&q.limit) {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "limit: 1 to 1000",
        ));
    }
    let store = st.store.clone();
    let mut all = blocking(move || store.alerts()).await??;
    all.retain(|a| q.state.is_none_or(|s| a.state == s));
    all.sort_by(|a, b| {
        b.raised_ms
            .cmp(&a.raised_ms)
            .then(a.alert_id.cmp(&b.alert_id))
    });
    let total = all.len();
    let alerts: Vec<Value> = all.iter().take(q.limit).map(alert_json).collect();
    Ok(Json(json!({"alerts": alerts, "total": total})))
}

/// `POST /api/alerts/{alert_id}/acknowledge`.
pub async fn acknowledge(
    AxState(st): AxState<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (alerts, ev) = (
        st.work.alerts.clone(),
        cu.event(EventType::AlertAcknowledged, Severity::Info),
    );
    let aid = id.clone();
    let a = blocking(move || alerts.acknowledge(&aid, ev)).await??;
    a.map(|a| Json(alert_json(&a)))
        .ok_or_else(|| alert_not_found(&id))
}

fn alert_not_found(id: &str) -> ApiError {
    ApiError::not_found_what(
        "ALERT_NOT_FOUND",
        "Alert not found",
        format!("No alert {id:?}"),
    )
}

/// `POST /api/alerts/{alert_id}/snooze` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snooze {
    minutes: u32,
}

/// `POST /api/alerts/{alert_id}/snooze`: `{"minutes": N}` (1 to 10,080).
pub async fn snooze(
    AxState(st): AxState<AppState>,
    Extension(cu): Extension<CurrentUser>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Snooze>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=crate::domain::alert::MAX_MINUTES).contains(&body.minutes) {
        return Err(ApiError::bad_request(
            "VALIDATION_ERROR",
            "minutes: 1 to 10080",
        ));
    }
    let (alerts, ev) = (
        st.work.alerts.clone(),
        cu.event(EventType::AlertAcknowledged, Severity::Info),
    );
    let aid = id.clone();
    let a = blocking(move || alerts.snooze(&aid, body.minutes, ev)).await??;
    a.map(|a| Json(alert_json(&a)))
        .ok_or_else(|| alert_not_found(&id))
}
