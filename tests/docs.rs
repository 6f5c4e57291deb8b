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
        let after_help = cmd.get_after_help().map(|text| text.to_string());
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
            if let Some(text) = &after_help {
                out.extend_from_slice(after_help_sections(text).as_bytes());
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

/// The text after --help as man page sections: each "Examples:" or "Exit
/// status:" paragraph becomes its section, kept line for line (clap_mangen
/// would print it as one filled paragraph).
fn after_help_sections(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let section = match line {
            "Examples:" => Some(".SH EXAMPLES"),
            "Exit status:" => Some(".SH \"EXIT STATUS\""),
            _ => None,
        };
        if let Some(heading) = section {
            if open {
                out.push_str(".fi\n");
            }
            out.push_str(heading);
            out.push_str("\n.nf\n");
            open = true;
            continue;
        }
        // The blank line before a heading only separated it in --help.
        let before_heading = lines
            .peek()
            .is_some_and(|next| *next == "Examples:" || *next == "Exit status:");
        if line.is_empty() && before_heading {
            continue;
        }
        out.push_str(&roff_line(line));
        out.push('\n');
    }
    if open {
        out.push_str(".fi\n");
    }
    out
}

#[test]
fn after_help_headings_become_sections() {
    let text = "Examples:\n  bpfsnap run\n\nExit status:\n  0  ok";
    assert_eq!(
        after_help_sections(text),
        ".SH EXAMPLES\n.nf\n  bpfsnap run\n.fi\n.SH \"EXIT STATUS\"\n.nf\n  0  ok\n.fi\n"
    );
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
        if path.starts_with("man/") {
            let page = String::from_utf8_lossy(&contents);
            assert!(
                page.contains(".SH \"EXIT STATUS\""),
                "{path} documents no exit status"
            );
        }
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
