//! The `kasad` command line: a runtime for [`kasad::cli::main`].

fn main() -> anyhow::Result<()> {
    // A bounded blocking pool: under load, hundreds of short blocking tasks would otherwise
    // each get a thread (and glibc a malloc arena), which costs memory a Pi does not have.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(32)
        .build()?
        .block_on(kasad::cli::main())
}
