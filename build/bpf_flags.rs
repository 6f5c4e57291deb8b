/// The clang flags every bpfsnap BPF object is compiled with — the
/// built-ins, the examples and test programs (build.rs), a user's program
/// (`bpfsnap build`) — before `-D__TARGET_ARCH_…` and the include
/// directories: BTF for CO-RE (`-g`), and no stack protector, which BPF
/// has no use for.
pub const BPF_CFLAGS: [&str; 6] = ["-g", "-O2", "-target", "bpf", "-Wall", "-fno-stack-protector"];
