//! `pathtrace`: parse the command line, dispatch, map errors to exit codes.
use std::{io::IsTerminal, sync::Arc};

use clap::{CommandFactory, Parser};
use tracer::{
    cli::{Cli, ColorChoice, Command, CompareArgs, DropsArgs, OutputArgs, RunArgs, TraceArgs},
    compare::CompareSink,
    demo,
    drops::DropsOptions,
    error::Error,
    filter::FlowFilter,
    loader::LoadOptions,
    privileges,
    ruletrace::NetnsTarget,
    session::{self, TraceOptions},
};

fn use_color(o: &OutputArgs) -> bool {
    match o.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    }
}

fn run_options(run: &RunArgs, filters: Vec<FlowFilter>) -> Result<TraceOptions, Error> {
    for f in &filters {
        if f.is_empty() {
            return Err(Error::Usage(
                "give at least one of --src, --dst, --sport, --dport or --proto".into(),
            ));
        }
        f.validate().map_err(|e| Error::Usage(e.to_string()))?;
    }
    let engine_sockets = tracer::names::api_sockets(run.docker_socket.as_deref());
    let mut rule_netns = Vec::new();
    if run.no_rules && !run.netns.is_empty() {
        return Err(Error::Usage(
            "--netns and --no-rules contradict each other".into(),
        ));
    }
    if !run.no_rules {
        rule_netns.push(
            NetnsTarget::current()
                .map_err(|e| Error::Runtime(format!("reading this namespace: {e}")))?,
        );
        for spec in &run.netns {
            let t = NetnsTarget::named(spec, &engine_sockets).map_err(Error::Usage)?;
            if !rule_netns.iter().any(|r| r.inode == t.inode) {
                rule_netns.push(t);
            }
        }
    }
    Ok(TraceOptions {
        filters,
        json: run.output.json,
        color: use_color(&run.output),
        count: run.count,
        duration: run.duration,
        load: LoadOptions {
            tier: run.tier,
            ring_bytes: run.ring_bytes,
            tracked_max: run.tracked_max,
            ..Default::default()
        },
        rule_netns,
        engine_sockets,
    })
}

fn trace_options(args: &TraceArgs) -> Result<TraceOptions, Error> {
    let mut filter = args.filter.to_filter();
    filter.both_directions = !args.run.no_replies;
    run_options(&args.run, vec![filter])
}

fn compare(args: &CompareArgs) -> Result<(), Error> {
    let flows = args.flows().map_err(Error::Usage)?;
    let labels = [flows[0].to_string(), flows[1].to_string()];
    let opts = run_options(&args.run, flows.to_vec())?;
    privileges::check().map_err(Error::Privileges)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut sink = CompareSink::new(&mut out, opts.json, opts.color, labels, opts.count);
    runtime()?
        .block_on(session::run(&opts, &mut sink, Arc::default(), None))
        .map(|_| ())
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("starting the runtime: {e}")))
}

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
        Some(Command::Demo(args)) => {
            privileges::check().map_err(Error::Privileges)?;
            let color = use_color(&args.output);
            runtime()?.block_on(demo::run(&args, color))
        }
        Some(Command::Drops(args)) => drops(&args),
        Some(Command::Compare(args)) => compare(&args),
        Some(Command::Trace(args)) => trace(&args),
        None => trace(&cli.trace),
    }
}

fn trace(args: &TraceArgs) -> Result<(), Error> {
    let opts = trace_options(args)?;
    privileges::check().map_err(Error::Privileges)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printer = session::Printer::new(&mut out, opts.json, opts.color, opts.count);
    runtime()?
        .block_on(session::run(&opts, &mut printer, Arc::default(), None))
        .map(|_| ())
}

fn drops(args: &DropsArgs) -> Result<(), Error> {
    let filter = args.filter.to_filter();
    filter.validate().map_err(|e| Error::Usage(e.to_string()))?;
    privileges::check().map_err(Error::Privileges)?;
    let opts = DropsOptions {
        filter,
        json: args.output.json,
        color: use_color(&args.output),
        duration: args.duration,
        count: args.count,
        max_rate: args.max_rate,
        interval: args.interval,
        redraw: std::io::stdout().is_terminal() && !args.output.json,
        tier: args.tier,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let rt = runtime()?;
    if args.top {
        rt.block_on(tracer::drops::run_top(&opts, &mut out))
            .map(|_| ())
    } else {
        rt.block_on(tracer::drops::run_stream(&opts, &mut out))
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
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("pathtrace: {first}");
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
