use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Started as a parser process by the daemon (see `docent::parse::isolate`).
    if let Some(code) = docent::parse::isolate::worker_main() {
        return code;
    }
    let cli = docent::cli::Cli::parse();
    if cli.ends_with_its_reader() {
        docent::telemetry::end_quietly_when_stdout_closes();
    }
    // PDFs are parsed in child processes running this executable: on Linux the image this
    // process runs (`/proc/self/exe`), which stays this build after an upgrade replaces the
    // file at the path (a review: children ran the new binary, or none).
    let own = std::path::Path::new("/proc/self/exe");
    let exe = match own.exists() {
        true => Ok(own.to_path_buf()),
        false => std::env::current_exe(),
    };
    match exe {
        Ok(exe) => docent::parse::isolate::use_worker_process(exe),
        Err(e) => eprintln!("warning: PDFs are parsed in this process (no path to it: {e})"),
    }
    docent::telemetry::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(docent::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // A blocking task held in a system call (a hung network mount) would keep the runtime's
    // drop, and the process, waiting for ever.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
