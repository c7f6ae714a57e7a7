//! The `faces` binary: the service, its worker and the offline detector behind one CLI.

mod allocator;
mod bench;
mod bench_recognition;
mod detect;
mod upload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faces_service::{Config, Role};

#[derive(Parser)]
#[command(
    name = "faces",
    version,
    about = "Face detection service and command-line tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: API, live feed, web page and workers on one port (the default).
    Serve {
        #[command(flatten)]
        config: Config,
        /// API only: leave the queue to `faces worker` processes.
        #[arg(long, env = "FACES_NO_WORKERS")]
        no_workers: bool,
    },
    /// Run detection workers only (scale-out), no HTTP.
    Worker {
        #[command(flatten)]
        config: Config,
    },
    /// Create or update the database schema, then exit.
    Migrate {
        #[command(flatten)]
        config: Config,
    },
    /// Find faces in image files or folders; one JSON line per image on stdout.
    Detect(detect::DetectArgs),
    /// Upload files or folders to a running server; one JSON line per file with its result.
    Upload(upload::UploadArgs),
    /// Print the OpenAPI document (as served at `/openapi.json`).
    Openapi,
    /// Measure speed (see docs/benchmarks/README.md).
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Detector latency by image size, mode and threads; decode, detect and draw apart.
    Detector(bench::DetectorBenchArgs),
    /// Embedding time per face (beside dlib's with --compare-dlib) and search time.
    Recognition(bench_recognition::RecognitionBenchArgs),
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Detect(args)) => detect::run(args),
        Some(Command::Upload(args)) => upload::run(args),
        Some(Command::Bench(Bench::Detector(args))) => bench::run(args),
        Some(Command::Bench(Bench::Recognition(args))) => bench_recognition::run(args),
        Some(Command::Serve {
            mut config,
            no_workers,
        }) => {
            if no_workers {
                config.workers = 0;
            }
            service(config, Role::Serve)
        }
        Some(Command::Worker { config }) => service(config, Role::Worker),
        Some(Command::Migrate { config }) => migrate(config),
        Some(Command::Openapi) => openapi(),
        None => service(Config::embedded_defaults(), Role::Serve),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FACES_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn service(config: Config, role: Role) -> anyhow::Result<bool> {
    init_logging();
    runtime()?.block_on(faces_service::run(config, role))?;
    Ok(true)
}

fn openapi() -> anyhow::Result<bool> {
    use faces_service::api::openapi::{ApiDoc, OpenApi};
    use std::io::Write;
    let json = ApiDoc::openapi().to_pretty_json()?;
    // `faces openapi | head` closes the pipe early: that is the reader's choice, not an error.
    match writeln!(std::io::stdout(), "{json}") {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(true),
    }
}

fn migrate(config: Config) -> anyhow::Result<bool> {
    init_logging();
    std::fs::create_dir_all(&config.data_dir)?;
    runtime()?.block_on(async {
        faces_service::db::Db::connect(&config.database_url())
            .await?
            .close()
            .await;
        tracing::info!("database is up to date");
        anyhow::Ok(true)
    })
}
