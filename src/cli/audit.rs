//! `kasad audit verify|verify-export`: the audit chain, in the database or in an export.

use crate::admin::Request;
use crate::config::Settings;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

/// Arguments of `kasad audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: AuditCmd,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, global = true, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Verify the hash chain; exits non-zero naming the first bad sequence number.
    Verify,
    /// Verify an audit_logs export (CSV or JSON, uncompressed) with this appliance's audit
    /// key; exits non-zero naming the first entry that fails.
    VerifyExport {
        /// The exported file.
        file: PathBuf,
    },
}

/// Verifies the chain (exits non-zero naming the first bad entry).
pub async fn run(a: Args) -> anyhow::Result<()> {
    let config = a.config;
    match a.cmd {
        AuditCmd::VerifyExport { file } => verify_export(&config, &file),
        AuditCmd::Verify => {
            let v = super::admin(&config, Request::AuditVerify).await?;
            if v["ok"] == true {
                println!("audit log OK: {} entries verified", v["checked"]);
                Ok(())
            } else {
                anyhow::bail!(
                    "audit log FAILED at sequence {}: {}",
                    v["first_bad_seq"],
                    v["reason"].as_str().unwrap_or_default()
                )
            }
        }
    }
}

fn verify_export(config: &std::path::Path, file: &std::path::Path) -> anyhow::Result<()> {
    let settings = Settings::load(Some(config))?;
    let key = crate::auth::keys::load(&settings.data_dir.join("audit.key"))
        .context("while reading the audit key (run as the kasad user or root)")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let entries = crate::export::kind::audit_logs::parse_export(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    match crate::export::kind::audit_logs::verify(&key, &entries) {
        Ok(n) => {
            println!("audit export OK: {n} entries verified");
            Ok(())
        }
        Err(e) => anyhow::bail!("audit export FAILED: {e}"),
    }
}
