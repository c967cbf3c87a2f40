//! `kasad user …`: add, list, change the password of, disable, delete and unlock users, with
//! the daemon running (over its admin socket) or stopped (on the database itself).

use crate::admin::Request;
use crate::auth::{Permission, Role};
use clap::Subcommand;
use std::path::PathBuf;

/// Arguments of `kasad user`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: UserCmd,
    /// Configuration file (TOML), for the data directory.
    #[arg(long, global = true, default_value = super::DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create a user (the password is read from stdin with --password-stdin, else generated
    /// and printed).
    Add {
        /// Login name.
        name: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// Extra permission (repeatable), e.g. AUDIT_READ.
        #[arg(long = "permission")]
        permissions: Vec<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Set a user's password.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user; their tokens stop working at once.
    Disable {
        /// Login name.
        name: String,
    },
    /// Delete a user.
    Delete {
        /// Login name.
        name: String,
    },
    /// Clear a username's login throttle in the running daemon (after a stranger's failed
    /// logins).
    Unlock {
        /// Login name.
        name: String,
    },
}

fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok((line.trim_end_matches(['\r', '\n']).to_owned(), false))
    } else {
        Ok((crate::random::random_token::<12>(), true))
    }
}

fn user_request(cmd: UserCmd) -> anyhow::Result<(Request, Option<String>)> {
    Ok(match cmd {
        UserCmd::Add {
            name,
            role,
            permissions,
            password_stdin,
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role must be admin, operator or viewer"))?;
            let permissions = permissions
                .iter()
                .map(|p| {
                    Permission::parse(p).ok_or_else(|| anyhow::anyhow!("unknown permission {p:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (pw, generated) = password(password_stdin)?;
            let show = generated.then(|| pw.clone());
            (
                Request::UserAdd {
                    username: name,
                    role,
                    permissions,
                    password: pw,
                },
                show,
            )
        }
        UserCmd::List => (Request::UserList, None),
        UserCmd::Passwd {
            name,
            password_stdin,
        } => {
            let (pw, generated) = password(password_stdin)?;
            let show = generated.then(|| pw.clone());
            (
                Request::UserPasswd {
                    username: name,
                    password: pw,
                },
                show,
            )
        }
        UserCmd::Disable { name } => (Request::UserDisable { username: name }, None),
        UserCmd::Delete { name } => (Request::UserDelete { username: name }, None),
        UserCmd::Unlock { name } => (Request::UserUnlock { username: name }, None),
    })
}

/// Runs the user command and prints its answer (and a generated password).
pub async fn run(a: Args) -> anyhow::Result<()> {
    let (req, generated) = user_request(a.cmd)?;
    let v = super::admin(&a.config, req).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if let Some(pw) = generated {
        println!("generated password: {pw}");
    }
    Ok(())
}
