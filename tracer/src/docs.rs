//! Man pages and shell completions, generated from the clap definitions, for
//! packages: `pathtrace generate-docs DIR` writes `DIR/man/*.1` (one page for
//! `pathtrace` and one per subcommand) and `DIR/completions/`.
use std::{fs, io, path::Path};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The completion files, named where each shell's packages put them.
const COMPLETIONS: &[(Shell, &str)] = &[
    (Shell::Bash, "pathtrace"),
    (Shell::Zsh, "_pathtrace"),
    (Shell::Fish, "pathtrace.fish"),
];

pub fn generate(dir: &Path) -> io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let mut cmd = Cli::command();
    cmd.build();
    write_page(&man, "pathtrace", cmd.clone())?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("pathtrace-{}", sub.get_name());
        write_page(&man, &name, sub.clone().name(name.clone()))?;
    }
    for (shell, file) in COMPLETIONS {
        let mut out = fs::File::create(completions.join(file))?;
        clap_complete::generate(*shell, &mut Cli::command(), "pathtrace", &mut out);
    }
    Ok(())
}

fn write_page(man: &Path, name: &str, cmd: clap::Command) -> io::Result<()> {
    let mut out = fs::File::create(man.join(format!("{name}.1")))?;
    clap_mangen::Man::new(cmd).render(&mut out)
}
