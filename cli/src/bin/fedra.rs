//! `fedra`: the data scientist's CLI (see `fedra_cli::commands`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    fedra_cli::commands::main().await
}
