//! Build helpers: `cargo run -p xtask -- assets DIR` writes the man page and shell completions
//! generated from the clap definition, for the packages.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use ecr_refresherd::cli::Cli;

fn assets(out: PathBuf) -> std::io::Result<()> {
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("config.toml"),
        ecr_refresherd::config::packaged_config(),
    )?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    // ecr-refresherd.1 and one page per subcommand (ecr-refresherd-run.1, ...).
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "ecr-refresherd", &completions)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "assets" => match assets(PathBuf::from(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {dir}: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo run -p xtask -- assets DIR");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn packaged_config_holds_no_settings() {
        let text = ecr_refresherd::config::packaged_config();
        let table: toml::Table = text.parse().expect("valid TOML");
        assert!(table.is_empty(), "{table:?}");
        // Every setting of the example is still there to uncomment.
        for key in [
            "refresh_at",
            "[[registry]]",
            "[[target]]",
            "/run/containers/0/auth.json",
        ] {
            assert!(
                text.contains(&format!("# {key}")) || text.contains(key),
                "{key}"
            );
        }
    }
}
