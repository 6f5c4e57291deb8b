# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bpfsnap_global_optspecs
    string join \n v/verbose q/quiet log.level= log.format= h/help V/version
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

complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -s V -l version -d 'Print version'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "run" -d 'Attach programs, sample for a window, write the metrics, detach'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "serve" -d 'Keep the probes attached and answer Prometheus scrapes over HTTP: each scrape of /metrics takes a fresh snapshot'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "check" -d 'Validate configs and their BPF objects without loading anything into the kernel (no root needed); lists every problem, one per line'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "list" -d 'List the built-in programs: for each, whether it is in the default set, whether it can attach on this kernel, its metrics with their labels, and what it measures (the description names its attach points); within 100 columns'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "build" -d 'Compile your BPF program NAME.bpf.c into NAME.bpf.o beside it, with the headers bpfsnap embeds (vmlinux.h, libbpf\'s bpf/*.h, bpfsnap.h): only clang is needed'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "stop" -d 'Detach and unpin everything an earlier `run --pin DIR` left in bpffs'
complete -c bpfsnap -n "__fish_bpfsnap_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l config-dir -d 'Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l configs -d 'Configs to use from --config-dir, comma-separated; a name not found there may be a built-in' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s b -l builtin -d 'Built-in programs to use, comma-separated' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l by -d '`container`: use each selected (or default) built-in\'s NAME_by_container twin where it has one, labelled namespace, pod and container (see --container-root)' -r -f -a "container\t'The cgroup of the event\'s owner, named as its container'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l namespace -d 'Prefix of every metric name; `ebpf_exporter` gives ebpf_exporter\'s names, so existing dashboards keep working' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l btf -d 'The kernel\'s types in BTF, for a kernel without /sys/kernel/btf/vmlinux (BTFHub\'s archives have them for older distribution kernels): libbpf relocates CO-RE programs against it. Programs that attach through the kernel\'s own BTF (tp_btf, fentry, so the built-ins) still need the kernel\'s' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l config.skip-cache-size -d 'ebpf_exporter\'s flag, accepted so its command lines work, and ignored: bpfsnap decodes each distinct label value once per window, with no cache to size' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l keep-caps -d 'Capabilities to keep once the probes are attached: none, all, or a list such as syslog,dac_override. CAP_SYSLOG is kept automatically for the ksym and kstack decoders, and CAP_BPF where the kernel checks it for every map read. (ebpf_exporter\'s --capabilities.keep, whose default is all.)' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l container-root -d 'Where the host\'s / is mounted, for the container decoders: its sys/fs/cgroup, run/containerd, run/containers, var/lib/containers and var/lib/docker are read below it (e.g. /host in a DaemonSet)' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l container-host -d 'What the container decoders give for a cgroup that is not a container\'s, e.g. host [default: the cgroup\'s path]' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l container-include -d 'Keep only keys of containers whose FIELD (namespace, pod or container: its name) matches REGEX (unanchored, as the regexp decoder\'s; repeatable: one match per field named), in every label decoded by a container decoder; dropped before series are made' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l container-exclude -d 'Drop keys of containers whose FIELD matches REGEX (repeatable), as --container-include keeps them' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l for -d 'Length of the sampling window, e.g. 500ms, 30s, 2m [default: 10s; with --pin: none, the window is the time since the last run]. SIGINT or SIGTERM ends it early; what was gathered is still written' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l interval -d 'Keep the probes attached and rewrite the output every DURATION until SIGINT/SIGTERM (which writes the last, partial window). Counters are cumulative since the start; the window gauges cover the last interval' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l counts -d 'With --interval: what each window\'s counts cover. `cumulative` (Prometheus counters: everything since the start, for rate() and increase()) or `window` (that window only, each snapshot minus the one before, as BCC tools print; written as gauges) [default: window for the pretty format on a terminal, else cumulative]' -r -f -a "cumulative\t'Everything since the programs were attached: Prometheus counters, for rate() and increase()'
window\t'The last window (or scrape) only: each snapshot minus the one before'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l count -d 'With --interval: stop after N windows' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s o -l output -d 'Where to write the metrics: a file, replaced atomically (for node_exporter\'s textfile collector use a name ending in .prom), - for standard output, or an existing character device or FIFO, written in place' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l pin -d 'Leave the programs attached and their maps pinned under DIR (on bpffs, e.g. /sys/fs/bpf/bpfsnap): the first run attaches them, later runs read the maps at once, and the counters count all the time, between runs too; `bpfsnap stop --pin DIR` removes them' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l lock-timeout -d 'How long to wait for another bpfsnap writing the same output' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l format -d 'Output format [default: pretty when writing to a terminal, else text]' -r -f -a "text\t'Prometheus text exposition format 0.0.4 (for files, pipes, node_exporter)'
pretty\t'Tables and histogram bars for a person at a terminal'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l top -d 'Rows per table in the terminal view (pretty format; 0: all)' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l strict -d 'A program that cannot attach fails its config. Without it the config\'s other programs run, a warning names the one that did not attach and bpfsnap_program_attached says 0 for it (ebpf_exporter\'s default; this is its --config.strict)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -l allow-untrusted-files -d 'Load config and object files even if they are writable by others or owned by another user'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l config-dir -d 'Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l configs -d 'Configs to use from --config-dir, comma-separated; a name not found there may be a built-in' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -s b -l builtin -d 'Built-in programs to use, comma-separated' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l by -d '`container`: use each selected (or default) built-in\'s NAME_by_container twin where it has one, labelled namespace, pod and container (see --container-root)' -r -f -a "container\t'The cgroup of the event\'s owner, named as its container'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l namespace -d 'Prefix of every metric name; `ebpf_exporter` gives ebpf_exporter\'s names, so existing dashboards keep working' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l btf -d 'The kernel\'s types in BTF, for a kernel without /sys/kernel/btf/vmlinux (BTFHub\'s archives have them for older distribution kernels): libbpf relocates CO-RE programs against it. Programs that attach through the kernel\'s own BTF (tp_btf, fentry, so the built-ins) still need the kernel\'s' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l config.skip-cache-size -d 'ebpf_exporter\'s flag, accepted so its command lines work, and ignored: bpfsnap decodes each distinct label value once per window, with no cache to size' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l keep-caps -d 'Capabilities to keep once the probes are attached: none, all, or a list such as syslog,dac_override. CAP_SYSLOG is kept automatically for the ksym and kstack decoders, and CAP_BPF where the kernel checks it for every map read. (ebpf_exporter\'s --capabilities.keep, whose default is all.)' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l container-root -d 'Where the host\'s / is mounted, for the container decoders: its sys/fs/cgroup, run/containerd, run/containers, var/lib/containers and var/lib/docker are read below it (e.g. /host in a DaemonSet)' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l container-host -d 'What the container decoders give for a cgroup that is not a container\'s, e.g. host [default: the cgroup\'s path]' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l container-include -d 'Keep only keys of containers whose FIELD (namespace, pod or container: its name) matches REGEX (unanchored, as the regexp decoder\'s; repeatable: one match per field named), in every label decoded by a container decoder; dropped before series are made' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l container-exclude -d 'Drop keys of containers whose FIELD matches REGEX (repeatable), as --container-include keeps them' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l listen -l web.listen-address -d 'Address to listen on (exporter-toolkit\'s --web.listen-address): HOST:PORT (an IPv4 address or a host name, resolved at start), [IPV6]:PORT, :PORT for every address, or fd://N for a listening socket left open as descriptor N (ebpf_exporter\'s form). Repeat it to listen on several. The default answers this machine only; 9435 is ebpf_exporter\'s port, which bpfsnap serve replaces' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l web.config.file -d 'exporter-toolkit\'s web configuration file (YAML), as node_exporter and ebpf_exporter take it: TLS (tls_server_config) and basic authentication (basic_auth_users, bcrypt hashes). It is read again when it or a file it names changes. See https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l web.telemetry-path -d 'Path under which the metrics are served' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l web.max-requests -d 'Scrapes answered at once; more get HTTP 503 (exporter-toolkit\'s flag; --max-requests is its old name). Idle and half-open connections do not count' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l scrape-timeout -d 'A scrape that takes longer gets HTTP 503' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l on-error -d 'When gathering fails: `fail` answers HTTP 500 with the error, `partial` serves what was gathered. Both count in bpfsnap_scrape_errors_total' -r -f -a "fail\t''
partial\t''"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l counts -d 'What each scrape\'s counts cover: `cumulative` (since the start) or `window` (since the previous scrape, whoever made it: give each scraper its own bpfsnap; written as gauges)' -r -f -a "cumulative\t'Everything since the programs were attached: Prometheus counters, for rate() and increase()'
window\t'The last window (or scrape) only: each snapshot minus the one before'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l scrape-delay -d 'Testing aid: make every scrape take at least this long, to exercise the in-flight limit and the scrape timeout' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l faulty-scrapes -d 'Testing aid: --scrape-delay and --scrape-error apply to the first N scrapes only, so later scrapes show what they counted' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l web.header-timeout -d 'A connection that has not sent a whole request head (or ended its TLS handshake) this long after connecting or after its previous response is closed. Longer than Prometheus\' default scrape interval (1m), so that a scraper\'s kept-alive connection stays open; hidden, for tests to use a short one' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l strict -d 'A program that cannot attach fails its config. Without it the config\'s other programs run, a warning names the one that did not attach and bpfsnap_program_attached says 0 for it (ebpf_exporter\'s default; this is its --config.strict)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l allow-untrusted-files -d 'Load config and object files even if they are writable by others or owned by another user'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l web.systemd-socket -d 'Listen on the sockets systemd passes (socket activation, as exporter-toolkit\'s flag: LISTEN_FDS from descriptor 3) instead of --web.listen-address'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -l scrape-error -d 'Testing aid: make gathering fail as if reading the maps had failed, to exercise --on-error'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l config-dir -d 'Directory holding NAME.toml or NAME.yaml and NAME.bpf.o for --configs' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l configs -d 'Configs to use from --config-dir, comma-separated; a name not found there may be a built-in' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s b -l builtin -d 'Built-in programs to use, comma-separated' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l by -d '`container`: use each selected (or default) built-in\'s NAME_by_container twin where it has one, labelled namespace, pod and container (see --container-root)' -r -f -a "container\t'The cgroup of the event\'s owner, named as its container'"
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s l -l long -d 'Also show the exact attach points, why a program is unavailable, the cardinality bound of its labels and its cost'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand list" -s h -l help -d 'Print help'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -s o -l output -d 'Where to write the object (default: NAME.bpf.o beside the source, where a config NAME.toml or NAME.yaml finds it)' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -s I -l include -d 'Another directory to search for #include "..." files, after the source\'s own (repeatable; e.g. ebpf_exporter\'s include/)' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand build" -s h -l help -d 'Print help'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -l pin -d 'The directory given to `run --pin`' -r -F
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -l log.level -d 'Show messages of this level and above, as exporter-toolkit\'s flag: debug (libbpf\'s own messages too), info, warn or error. In place of -v and -q' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -l log.format -d 'Write each message as a record, as exporter-toolkit\'s loggers do: logfmt (time=… level=… msg=…) or json, with a timestamp unless stderr is the journal. Without it, plain lines' -r
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -s v -l verbose -d 'Say what is happening on stderr; twice (-vv) also libbpf\'s own messages (CO-RE relocations, the verifier\'s logs: long)'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -s q -l quiet -d 'Print only errors on stderr'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand stop" -s h -l help -d 'Print help'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "run" -d 'Attach programs, sample for a window, write the metrics, detach'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "serve" -d 'Keep the probes attached and answer Prometheus scrapes over HTTP: each scrape of /metrics takes a fresh snapshot'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "check" -d 'Validate configs and their BPF objects without loading anything into the kernel (no root needed); lists every problem, one per line'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "list" -d 'List the built-in programs: for each, whether it is in the default set, whether it can attach on this kernel, its metrics with their labels, and what it measures (the description names its attach points); within 100 columns'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "build" -d 'Compile your BPF program NAME.bpf.c into NAME.bpf.o beside it, with the headers bpfsnap embeds (vmlinux.h, libbpf\'s bpf/*.h, bpfsnap.h): only clang is needed'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "stop" -d 'Detach and unpin everything an earlier `run --pin DIR` left in bpffs'
complete -c bpfsnap -n "__fish_bpfsnap_using_subcommand help; and not __fish_seen_subcommand_from run serve check list build stop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
