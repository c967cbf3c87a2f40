//! `kasad statement verify FILE [--public-key FILE_OR_FINGERPRINT]`: checks a signed statement
//! with no configuration and no daemon — a tenant can run it on any machine with kasad.

use crate::export::signed;
use anyhow::Context;
use clap::Subcommand;
use std::path::{Path, PathBuf};

/// Arguments of `kasad statement`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: StatementCmd,
}

#[derive(Debug, Subcommand)]
enum StatementCmd {
    /// Verify a statement (PDF, JSON or CSV): exits 0 printing the signer's fingerprint when
    /// untouched, non-zero naming the problem when any byte was changed.
    Verify {
        /// The statement file.
        file: PathBuf,
        /// The signer to expect: a fingerprint (`SHA256:…`), or a file holding one, the
        /// base64 public key, or the JSON of `GET /api/statements/public-key`.
        #[arg(long)]
        public_key: Option<String>,
    },
}

/// Runs `kasad statement …`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.cmd {
        StatementCmd::Verify { file, public_key } => {
            let expected = public_key.as_deref().map(expected_signer).transpose()?;
            let bytes = read_statement(&file)?;
            match signed::verify(&bytes, expected.as_deref()) {
                Ok(v) => {
                    println!(
                        "{}: valid {} statement, signed by {}",
                        file.display(),
                        v.format,
                        v.fingerprint
                    );
                    if expected.is_none() {
                        println!(
                            "note: anyone can sign with a key of their own: compare that fingerprint with the issuer's, or pass --public-key"
                        );
                    }
                    Ok(())
                }
                Err(e) => anyhow::bail!("{}: NOT VALID: {e}", file.display()),
            }
        }
    }
}

/// At most this much is read (the API's upload limit).
const MAX: u64 = crate::api::statements::MAX_UPLOAD as u64;

fn read_statement(file: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a file", file.display());
    }
    if meta.len() > MAX {
        anyhow::bail!(
            "{} is larger than a statement can be ({} MiB)",
            file.display(),
            MAX >> 20
        );
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// The fingerprint `arg` names: itself, or what the file it names holds.
fn expected_signer(arg: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let text = if Path::new(arg).is_file() {
        let meta = std::fs::metadata(arg)?;
        if meta.len() > 64 * 1024 {
            anyhow::bail!("{arg} is too large to be a public key");
        }
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_owned()
    };
    let text = text.trim();
    if text.starts_with("SHA256:") {
        return Ok(text.to_owned());
    }
    let b64 = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v["public_key"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{arg}: JSON without \"public_key\""))?,
        Err(_) => text.to_owned(),
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .with_context(|| {
            format!("--public-key {arg}: neither a SHA256: fingerprint nor a base64 Ed25519 key")
        })?;
    Ok(crate::auth::signing::fingerprint(&key))
}
