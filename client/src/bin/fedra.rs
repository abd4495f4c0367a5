//! `fedra`: the data scientist's CLI (see `fedra_client::cli`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    fedra_client::cli::main().await
}
