//! Stage 1: the state on disk. The data directory, the database (a staging log replayed and a
//! pending compaction done first), the keys, the audit hold, the demo's admin, the tariff
//! seed and the first-run setup code.

use super::StartOptions;
use crate::audit::{Event, EventType, Severity};
use crate::auth::Role;
use crate::auth::keys::{self, SecretKey};
use crate::auth::setup::SetupState;
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::store::audit::Pending;
use crate::store::users::User;
use crate::store::{self, Store};
use anyhow::Context;

/// What every later stage stands on.
pub(super) struct Base {
    pub store: Store,
    pub jwt_key: SecretKey,
    pub audit_key: SecretKey,
    pub setup: SetupState,
}

/// Opens everything on disk and brings it to what the configuration says.
pub(super) async fn open(
    settings: &Settings,
    clock: &SharedClock,
    opts: &StartOptions,
) -> anyhow::Result<Base> {
    let store = open_store(settings).await?;
    let (jwt_key, audit_key) = load_keys(settings)?;
    {
        let (s, hold) = (store.clone(), settings.audit.compliance_hold);
        tokio::task::spawn_blocking(move || s.audit_set_hold(hold)).await??;
    }
    if let Some(pw) = &opts.admin_password {
        let (s, k, pw, now) = (store.clone(), audit_key.clone(), pw.clone(), clock.now_ms());
        tokio::task::spawn_blocking(move || ensure_admin(&s, &k, &pw, now)).await??;
    }
    seed_tariff(&store, settings).await?;
    let setup = first_run(&store, settings).await?;
    Ok(Base {
        store,
        jwt_key,
        audit_key,
        setup,
    })
}

/// Stores the config's tariff as the first version (with its zone written out, so a later
/// change of `timezone` cannot move it) unless one is stored.
async fn seed_tariff(store: &Store, settings: &Settings) -> anyhow::Result<()> {
    let seed = crate::domain::tariff::Compiled::new(&settings.tariff, settings.tz())
        .map_err(|e| anyhow::anyhow!("[tariff] {e}"))?
        .pinned();
    let (s, first) = (store.clone(), seed.clone());
    let stored = tokio::task::spawn_blocking(move || s.tariffs_seed(&first)).await??;
    if stored.first() != Some(&seed) {
        tracing::info!(
            "[tariff] in the config differs from the stored first version; prices change through PUT /api/tariffs"
        );
    }
    Ok(())
}

/// The scrape token of `/metrics` (first line of `[metrics] token_file`), if configured.
pub fn metrics_token(settings: &Settings) -> anyhow::Result<Option<String>> {
    let Some(path) = &settings.metrics.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("while reading [metrics] token_file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "[metrics] token_file {}: the token must be at least 16 characters",
        path.display()
    );
    Ok(Some(token))
}

/// Opens (creating if needed) the data directory and the store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("while creating data_dir {}", settings.data_dir.display()))?;
    let path = settings.db_path();
    let cache = settings.storage.cache_mb;
    let reserve = settings.storage.reserve_mb;
    let p = path.clone();
    let staging = settings.staging_path();
    tokio::task::spawn_blocking(move || {
        let store = Store::open(&p, cache)?.with_reserve(reserve << 20);
        // What the staging log made durable after the last checkpoint, before anything else
        // writes.
        match crate::store::staging::Staging::open(&staging) {
            Ok((mut log, batches)) if !batches.is_empty() => {
                let n = store::writer::replay(&store, &mut log, batches)?;
                tracing::info!(batches = n, "staging log replayed into the database");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, path = %staging.display(),
                "the staging log cannot be read; its readings are not replayed"),
        }
        if store.meta(crate::retention::COMPACT_PENDING)? == 0 {
            return Ok(store);
        }
        if let Err(e) = store.check_space(reserve << 20) {
            tracing::warn!(error = %e, "compaction after retention waits for a start with space");
            return Ok(store);
        }
        // A maintenance window: nothing else holds the store yet.
        tracing::info!("compacting the database after retention");
        let store = store.compact()?;
        store.set_meta(crate::retention::COMPACT_PENDING, 0)?;
        Ok::<_, crate::store::Error>(store)
    })
    .await?
    .with_context(|| format!("while opening {}", path.display()))
}

/// Opens the staging log (already replayed by [`open_store`]); without one (a file system
/// that refuses it), the database commits durably every `commit_interval` instead.
pub async fn open_staging(settings: &Settings) -> Option<crate::store::staging::Staging> {
    let path = settings.staging_path();
    let res =
        tokio::task::spawn_blocking(move || crate::store::staging::Staging::open(&path)).await;
    match res {
        Ok(Ok((log, _))) => Some(log),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "no staging log: the database commits durably every commit_interval");
            None
        }
        Err(_) => None,
    }
}

/// Loads (or creates, mode 0600) the token-signing and audit keys in the data directory.
pub fn load_keys(settings: &Settings) -> anyhow::Result<(SecretKey, SecretKey)> {
    let jwt = keys::load_or_create(&settings.data_dir.join("jwt.key"))
        .context("while loading jwt.key")?;
    let audit = keys::load_or_create(&settings.data_dir.join("audit.key"))
        .context("while loading audit.key")?;
    Ok((jwt, audit))
}

/// Creates user `admin` with `password` unless a user of that name exists; returns whether
/// it was created.
pub fn ensure_admin(
    store: &Store,
    audit_key: &SecretKey,
    password: &str,
    now_ms: i64,
) -> anyhow::Result<bool> {
    if store.user_by_name("admin")?.is_some() {
        return Ok(false);
    }
    let user = User {
        id: 0,
        username: "admin".into(),
        password_hash: crate::auth::password::hash(password)?,
        role: Role::Admin,
        permissions: vec![],
        disabled: false,
        created_ms: now_ms,
        updated_ms: now_ms,
        token_version: 0,
    };
    let mut ev = Event::new(EventType::UserCreated, Severity::Info);
    ev.username = Some("kasad".into());
    ev.resource = Some("user:admin".into());
    store.create_user(user, Some(Pending::new(audit_key, ev, now_ms)))?;
    Ok(true)
}

/// The first-run setup code, while no user exists: made (or read) and said in the log.
pub(super) async fn first_run(
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<crate::auth::setup::SetupState> {
    let s = store.clone();
    if !tokio::task::spawn_blocking(move || s.no_users()).await?? {
        crate::auth::setup::remove(&settings.data_dir);
        return Ok(crate::auth::setup::SetupState::new(
            None,
            &settings.data_dir,
        ));
    }
    let code = crate::auth::setup::load_or_create(&settings.data_dir)
        .context("while writing the setup code")?;
    let file = crate::auth::setup::path(&settings.data_dir);
    tracing::warn!(
        setup_code = %code,
        file = %file.display(),
        "no user exists yet: open the web pages and create the first administrator with this setup code"
    );
    Ok(crate::auth::setup::SetupState::new(
        Some(code),
        &settings.data_dir,
    ))
}
