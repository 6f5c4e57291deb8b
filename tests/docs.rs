//! The man pages (man/) and shell completions (completions/) are generated
//! from the clap definition but committed, so that packagers need no Rust
//! toolchain to ship them. This test fails when they no longer match the
//! command line; `make docs` (`BPFSNAP_UPDATE_DOCS=1 cargo test --test docs`)
//! rewrites them.

use std::fs;
use std::path::Path;

use bpfsnap::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

/// Every generated file: its path relative to the crate root and its contents.
fn rendered() -> Vec<(String, Vec<u8>)> {
    // As clap_mangen::generate_to does: no page, so no bpfsnap-help(1) reference.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Gives each subcommand its page title (bpfsnap-run) and synopsis (bpfsnap run).
    cmd.build();
    let source = format!("bpfsnap {}", cmd.get_version().unwrap_or_default());
    let man = |cmd: clap::Command| {
        let mut out = Vec::new();
        // No `.date(..)`: it defaults to empty, which keeps the pages reproducible.
        let examples = cmd.get_after_help().map(|text| text.to_string());
        let has_subcommands = cmd.has_subcommands();
        let has_version = cmd.get_version().is_some();
        let page = Man::new(cmd).source(&source);
        (|| -> std::io::Result<()> {
            page.render_title(&mut out)?;
            page.render_name_section(&mut out)?;
            page.render_synopsis_section(&mut out)?;
            page.render_description_section(&mut out)?;
            page.render_options_section(&mut out)?;
            if has_subcommands {
                page.render_subcommands_section(&mut out)?;
            }
            // clap_mangen would print the examples as one filled paragraph.
            if let Some(text) = &examples {
                out.extend_from_slice(b".SH EXAMPLES\n.nf\n");
                for line in text.lines().skip_while(|line| line.starts_with("Examples")) {
                    out.extend_from_slice(roff_line(line).as_bytes());
                    out.push(b'\n');
                }
                out.extend_from_slice(b".fi\n");
            }
            if has_version {
                page.render_version_section(&mut out)?;
            }
            Ok(())
        })()
        .expect("render man page");
        out
    };
    let mut files = vec![("man/bpfsnap.1".to_owned(), man(cmd.clone()))];
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let path = format!("man/bpfsnap-{}.1", sub.get_name());
        files.push((path, man(sub.clone())));
    }
    for (shell, path) in [
        (Shell::Bash, "completions/bpfsnap.bash"),
        (Shell::Zsh, "completions/_bpfsnap"),
        (Shell::Fish, "completions/bpfsnap.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "bpfsnap", &mut out);
        files.push((path.to_owned(), out));
    }
    files
}

/// A line of literal text for roff's no-fill mode.
fn roff_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[test]
fn generated_docs_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("BPFSNAP_UPDATE_DOCS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (path, contents) in rendered() {
        let file = root.join(&path);
        if update {
            fs::create_dir_all(file.parent().unwrap()).expect("create directory");
            fs::write(&file, &contents).unwrap_or_else(|err| panic!("write {path}: {err}"));
        } else if fs::read(&file).ok().as_deref() != Some(contents.as_slice()) {
            stale.push(format!("{path} is stale: run `make docs`"));
        }
    }
    assert!(stale.is_empty(), "\n{}", stale.join("\n"));
}
