//! The `plenary-loadtest` binary: parses flags, builds the runtime, runs a load test (or the
//! bench), prints the report and exits 0 (passed), 1 (could not run) or 2 (thresholds
//! missed).

use std::process::ExitCode;

use clap::Parser;
use plenary_loadtest::cli::{Cli, Command};
use plenary_loadtest::{bench, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Combine { files }) = &cli.command {
        return match plenary_loadtest::combine::load(files) {
            Ok(reports) => {
                println!("{}", plenary_loadtest::combine::combine(&reports));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let threads = match &cli.command {
        Some(Command::Bench(b)) => b.threads,
        Some(Command::Combine { .. }) => 1,
        Some(Command::Churn(_)) => 1,
        None => cli.run.threads,
    }
    .clamp(1, 64);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Some(Command::Bench(args)) => match bench::bench(&args).await {
                Ok(result) => {
                    println!("{}", bench::render(&result));
                    if let Some(path) = &args.json {
                        if let Err(e) = write_json(path, &result) {
                            eprintln!("error: {e}");
                            return ExitCode::from(1);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
            Some(Command::Combine { .. }) => ExitCode::SUCCESS,
            Some(Command::Churn(args)) => match plenary_loadtest::churn::churn(&args).await {
                Ok(report) => {
                    println!("{}", report.render());
                    if let Some(path) = &args.json {
                        if let Err(e) = write_json(path, &report) {
                            eprintln!("error: {e}");
                            return ExitCode::from(1);
                        }
                    }
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            },
            None => {
                let config = cli.run.to_config();
                match run(&config).await {
                    Ok(report) => {
                        println!("{}", report.render());
                        if let Some(path) = &cli.run.json {
                            if let Err(e) = write_json(path, &report) {
                                eprintln!("error: {e}");
                                return ExitCode::from(1);
                            }
                        }
                        if report.thresholds.iter().all(|v| v.passed) {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(2)
                        }
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(1)
                    }
                }
            }
        }
    })
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
