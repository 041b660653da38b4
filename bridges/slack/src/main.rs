//! `docent-slack serve --config FILE` and `docent-slack config check FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use docent_slack::Config;

#[derive(Parser)]
#[command(name = "docent-slack", version, about = "Slack bridge for Docent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Slack's Events API, interactivity and slash commands.
    Serve {
        #[arg(
            long,
            env = "DOCENT_SLACK_CONFIG",
            default_value = "/etc/docent/docent-slack.toml"
        )]
        config: PathBuf,
    },
    /// Validate a config file (every problem with its TOML path).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(&file) {
            Ok(c) => {
                if !c.maps_by_email() {
                    println!(
                        "{}: note: neither slack.team_id nor slack.enterprise_id is set, so users \
                         are mapped by Slack id aliases only, never by e-mail",
                        file.display()
                    );
                }
                println!(
                    "{}: ok (listen {}, docent {}, {} channel audience(s), default {})",
                    file.display(),
                    c.listen,
                    c.docent.addr,
                    c.audiences.len(),
                    c.default_audience.act_as()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(1)
            }
        },
        Command::Serve { config } => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&path)?;
    if !cfg.maps_by_email() {
        tracing::warn!(
            "neither slack.team_id nor slack.enterprise_id is set: users are mapped by Slack id \
             aliases only, never by e-mail"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let metrics = match cfg.metrics_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let running = docent_slack::start(cfg, listener, metrics).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
