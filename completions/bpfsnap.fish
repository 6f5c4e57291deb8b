# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bpfsnap_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_bpfsnap_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bpfsnap_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bpfsnap_using_subcommand
    set -l cmd (__fish_bpfsnap_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s v -l verbose -d 'Say what is happening on stderr, including libbpf\'s messages'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s V -l version -d 'Print version'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "run" -d 'Attach programs, sample for a window, write the metrics, detach'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "check" -d 'Validate configs and their BPF objects without loading anything into the kernel (no root needed); lists every problem, one per line'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "list" -d 'List the built-in programs: what they measure, whether they are in the default set, and whether they can attach on this kernel'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l config-dir -d 'Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l configs -d 'Configs to use from --config-dir, comma-separated; a name not found there may be a built-in' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s b -l builtin -d 'Built-in programs to use, comma-separated' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l for -d 'Length of the sampling window, e.g. 500ms, 30s, 2m. SIGINT or SIGTERM ends it early; what was gathered is still written' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s o -l output -d 'Where to write the metrics: a file, replaced atomically (for node_exporter\'s textfile collector use a name ending in .prom), or - for standard output' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l namespace -d 'Prefix of every metric name; `ebpf_exporter` gives ebpf_exporter\'s names, so existing dashboards keep working' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l format -d 'Output format [default: pretty when writing to a terminal, else text]' -r -f -a "text\t'Prometheus text exposition format 0.0.4 (for files, pipes, node_exporter)'
pretty\t'Tables and histogram bars for a person at a terminal'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s v -l verbose -d 'Say what is happening on stderr, including libbpf\'s messages'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l config-dir -d 'Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l configs -d 'Configs to use from --config-dir, comma-separated; a name not found there may be a built-in' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s b -l builtin -d 'Built-in programs to use, comma-separated' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s v -l verbose -d 'Say what is happening on stderr, including libbpf\'s messages'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s h -l help -d 'Print help'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s l -l long -d 'Also show metrics, attach points, cardinality and cost'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s v -l verbose -d 'Say what is happening on stderr, including libbpf\'s messages'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s h -l help -d 'Print help'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run check list help" -f -a "run" -d 'Attach programs, sample for a window, write the metrics, detach'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run check list help" -f -a "check" -d 'Validate configs and their BPF objects without loading anything into the kernel (no root needed); lists every problem, one per line'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run check list help" -f -a "list" -d 'List the built-in programs: what they measure, whether they are in the default set, and whether they can attach on this kernel'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run check list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
