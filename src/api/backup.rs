//! `POST /api/admin/backup`: a backup (see [`crate::backup`]) streamed to an admin.

use super::AppState;
use super::devices::blocking;
use super::error::ApiError;
use super::guard::CurrentUser;
use crate::audit::{EventType, Severity};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Writes the backup to a hidden file in the data directory, unlinks it once open, and streams
/// it (the open handle keeps the bytes until the download ends); audited as BACKUP_CREATED.
pub async fn create(
    State(st): State<AppState>,
    Extension(cu): Extension<CurrentUser>,
) -> Result<Response, ApiError> {
    // A backup holds the signing and audit keys and every password hash: whoever has one can
    // act as any user, so SYSTEM_CONFIG alone is not enough.
    if cu.user.role != crate::auth::Role::Admin {
        return Err(ApiError::forbidden(
            "Backups hold the signing keys and password hashes: only admins may download one",
        ));
    }
    // Pending readings first become durable, so that the backup holds them.
    st.devices.flusher.flush().await?;
    let now = st.clock.now_ms();
    let dir = st
        .store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".api-backup-{}.zip",
        crate::random::random_token::<9>()
    ));
    let (store, path) = (st.store.clone(), tmp.clone());
    let made = blocking(move || crate::backup::create(&store, &path, now)).await?;
    let manifest = made.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ApiError::internal(e)
    })?;
    let file = tokio::fs::File::open(&tmp)
        .await
        .map_err(ApiError::internal)?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let _ = std::fs::remove_file(&tmp);
    let mut ev = cu.event(EventType::BackupCreated, Severity::Info);
    ev.resource = Some("backup".into());
    ev.details = json!({"files": manifest.files, "size": len});
    st.audit(ev).await;
    let name = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .format("kasad-backup-%Y%m%d-%H%M%S.zip");
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
