//! `pathtrace`: parse the command line, dispatch, map errors to exit codes.
use clap::{CommandFactory, Parser};
use tracer::{
    cli::{Cli, Command},
    cmd,
    error::Error,
};

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "pathtrace",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Some(Command::GenerateDocs { dir }) => tracer::docs::generate(&dir)
            .map_err(|e| Error::Runtime(format!("writing docs into {}: {e}", dir.display()))),
        Some(Command::Demo(args)) => cmd::demo::run_blocking(&args),
        Some(Command::Drops(args)) => cmd::drops::run(&args),
        Some(Command::Compare(args)) => cmd::compare::run(&args),
        Some(Command::Trace(args)) => cmd::trace::run(&args),
        None => cmd::trace::run(&cli.trace),
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("pathtrace: {}", tracer::cli_error::render(&e));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        let code = e.exit_code();
        if code != 0 {
            eprintln!("pathtrace: {e}");
        }
        std::process::exit(code);
    }
}
