//! `kasad setup-code`: the first-run setup code, while no user exists (made anew if lost).

use crate::admin::Request;

/// Arguments of `kasad setup-code`: the configuration file.
pub type Args = super::ConfigArgs;

/// Prints the code, or that kasad is set up.
pub async fn run(a: Args) -> anyhow::Result<()> {
    let config = a.config;
    let v = super::admin(&config, Request::SetupCode).await?;
    match v["setup_code"].as_str() {
        Some(code) => println!(
            "{code}\nOpen kasad's web pages and create the first administrator with this code."
        ),
        None => {
            println!("kasad is set up: a user exists. Log in, or use `kasad user add`.")
        }
    }
    Ok(())
}
