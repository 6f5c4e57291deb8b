//! Label decoders: turn the raw bytes of one map-key label into its value.
//!
//! Each decoder is one small type behind [`Decoder`], in a file of its own with
//! a table-driven test. A label runs its decoders as a chain (ebpf_exporter's
//! model): the first sees the label's bytes in the key, each next one the
//! previous one's output; the result becomes a (valid UTF-8) label value.
//!
//! Depends on the spec stage alone (a [`DecoderSpec`] and a label's size
//! build a [`Chain`]); the plan stage builds each label's chain once.

mod cgroup;
pub mod container;
mod dname;
pub mod errno;
mod hex;
mod ifname;
mod inet_ip;
mod kstack;
mod ksym;
mod majorminor;
mod pci;
mod regexp;
mod static_map;
mod string;
mod syscall;
#[rustfmt::skip]
#[allow(dead_code)] // one table per architecture; each build uses one
mod syscall_table;
mod uint;
mod uint64;

use std::fmt;

use anyhow::{bail, Result};

use crate::spec::DecoderSpec;

pub use string::until_nul;
pub use uint::host_uint;

/// One decoding step.
pub trait Decoder: Send + Sync {
    /// Decodes `input` into `out` (which the caller has cleared).
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError>;

    /// Whether distinct inputs always give distinct outputs, valid UTF-8:
    /// a reader of many keys then need not compare decoded values to find
    /// keys whose labels are equal (`uint`, `hex`; not `string`, whose bytes
    /// after a NUL are dropped, nor `ksym`, which names a whole function).
    fn injective(&self) -> bool {
        false
    }

    /// Whether no other input decodes to what `input` does, unless that
    /// input is itself not canonical (`string`: no byte after the NUL, and
    /// valid UTF-8). A reader of many keys compares values only when some
    /// input is not canonical. Every input of an injective decoder is.
    fn canonical(&self, _input: &[u8]) -> bool {
        self.injective()
    }

    /// Whether it reads its input as a host-endian unsigned integer: keys
    /// are then ordered by that number rather than by its bytes.
    fn reads_integer(&self) -> bool {
        false
    }

    /// Starts in the background what decoding will need, once the probes
    /// are attached (`ksym`, `kstack`: reading kallsyms), so that the first
    /// snapshot does not wait for it.
    fn prepare(&self) {}
}

/// Why one key's label could not be decoded; the key is then skipped and,
/// unless `skip` is set, counted in `bpfsnap_decoder_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub decoder: &'static str,
    pub reason: String,
    /// Not an error: the decoder asks to drop this key's whole label set
    /// (ebpf_exporter's ErrSkipLabelSet, e.g. `regexp` without a match).
    pub skip: bool,
}

impl DecodeError {
    pub fn new(decoder: &'static str, reason: impl Into<String>) -> Self {
        DecodeError {
            decoder,
            reason: reason.into(),
            skip: false,
        }
    }

    /// Drop the label set without counting an error.
    pub fn skip(decoder: &'static str) -> Self {
        DecodeError {
            decoder,
            reason: "label set skipped".into(),
            skip: true,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "decoder {}: {}", self.decoder, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Every decoder: its name and how to build it for a label of `size` bytes
/// (each module's `build` checks the spec's options and the size).
type Builder = fn(&DecoderSpec, usize) -> Result<Box<dyn Decoder>>;
const DECODERS: &[(&str, Builder)] = &[
    ("cgroup", cgroup::build),
    ("container_id", container::build_id),
    ("container_image", container::build_image),
    ("container_name", container::build_name),
    ("dname", dname::build),
    ("errno", errno::build),
    ("hex", hex::build),
    ("ifname", ifname::build),
    ("inet_ip", inet_ip::build),
    ("kstack", kstack::build),
    ("ksym", ksym::build),
    ("kube_container", container::build_kube_container),
    ("kube_namespace", container::build_kube_namespace),
    ("kube_pod", container::build_kube_pod),
    ("majorminor", majorminor::build),
    ("pci_class", pci::build_class),
    ("pci_device", pci::build_device),
    ("pci_subclass", pci::build_subclass),
    ("pci_vendor", pci::build_vendor),
    ("regexp", regexp::build),
    ("static_map", static_map::build),
    ("string", string::build),
    ("syscall", syscall::build),
    ("uint", uint::build),
    ("uint64", uint64::build),
];

/// Names of every decoder, for error messages and docs.
pub fn names() -> impl Iterator<Item = &'static str> {
    DECODERS.iter().map(|(name, _)| *name)
}

/// Builds the decoder a spec names for a label of `size` bytes.
fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    match DECODERS.iter().find(|(name, _)| *name == spec.name) {
        Some((_, build)) => build(spec, size),
        None => bail!(
            "unknown decoder {:?}: known decoders are {}",
            spec.name,
            names().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Fails when a spec carries options its decoder does not take (they would be
/// silently ignored otherwise).
pub fn no_options(spec: &DecoderSpec) -> Result<()> {
    if spec.static_map.is_some() || spec.regexps.is_some() || spec.allow_unknown {
        bail!(
            "decoder {} takes no options (static_map, regexps, allow_unknown)",
            spec.name
        );
    }
    Ok(())
}

/// A label's decoders, run in order.
pub struct Chain {
    decoders: Vec<Box<dyn Decoder>>,
}

impl Chain {
    pub fn build(specs: &[DecoderSpec], size: usize) -> Result<Chain> {
        let decoders = specs
            .iter()
            .map(|spec| build(spec, size))
            .collect::<Result<_>>()?;
        Ok(Chain { decoders })
    }

    /// Whether distinct inputs give distinct values (every decoder is
    /// [`Decoder::injective`]).
    pub fn injective(&self) -> bool {
        self.decoders.iter().all(|decoder| decoder.injective())
    }

    /// Whether no other key bytes give the value `input` gives, unless they
    /// are not canonical themselves (see [`Decoder::canonical`]).
    pub fn canonical(&self, input: &[u8]) -> bool {
        match self.decoders.split_first() {
            None => std::str::from_utf8(input).is_ok(),
            Some((first, rest)) => first.canonical(input) && rest.iter().all(|d| d.injective()),
        }
    }

    /// Whether the key's bytes are a host-endian integer to its first
    /// decoder (see [`Decoder::reads_integer`]).
    pub fn reads_integer(&self) -> bool {
        self.decoders
            .first()
            .is_some_and(|decoder| decoder.reads_integer())
    }

    /// Lets every decoder start what it will need ([`Decoder::prepare`]).
    pub fn prepare(&self) {
        for decoder in &self.decoders {
            decoder.prepare();
        }
    }

    /// Decodes a label's bytes into its value. Bytes that are not UTF-8 (kernel
    /// strings can be anything) become U+FFFD so the output is always valid.
    pub fn decode(&self, input: &[u8]) -> Result<String, DecodeError> {
        let mut value = String::new();
        self.decode_into(input, &mut Scratch::default(), &mut value)?;
        Ok(value)
    }

    /// [`Chain::decode`], appending the value to `out` (nothing when a
    /// decoder fails), with buffers kept in `scratch` from one call to the
    /// next: a map of a million keys allocates nothing per value.
    pub fn decode_into(
        &self,
        input: &[u8],
        scratch: &mut Scratch,
        out: &mut String,
    ) -> Result<(), DecodeError> {
        let Scratch { current, next } = scratch;
        current.clear();
        match self.decoders.split_first() {
            None => current.extend_from_slice(input),
            Some((first, rest)) => {
                // The first decoder reads the key's bytes in place.
                first.decode(input, current)?;
                for decoder in rest {
                    next.clear();
                    decoder.decode(current, next)?;
                    std::mem::swap(current, next);
                }
            }
        }
        match std::str::from_utf8(current) {
            Ok(text) => out.push_str(text),
            Err(_) => out.push_str(&String::from_utf8_lossy(current)),
        }
        Ok(())
    }
}

/// Buffers [`Chain::decode_into`] reuses.
#[derive(Default)]
pub struct Scratch {
    current: Vec<u8>,
    next: Vec<u8>,
}

/// Runs a decoder over a table of (input, expected output) cases.
#[cfg(test)]
fn check_table(decoder: &dyn Decoder, cases: &[(&[u8], Result<&str, &str>)]) {
    for (input, expected) in cases {
        let mut out = Vec::new();
        let got = decoder
            .decode(input, &mut out)
            .map(|()| String::from_utf8_lossy(&out).into_owned());
        match (expected, got) {
            (Ok(want), Ok(got)) => assert_eq!(&got, want, "input {input:?}"),
            (Err(want), Err(err)) => assert!(err.reason.contains(want), "input {input:?}: {err}"),
            (want, got) => panic!("input {input:?}: expected {want:?}, got {got:?}"),
        }
    }
}

/// A temporary directory for a test's statics, which are never dropped (a
/// `TempDir` in one would stay behind in /tmp after every run): every such
/// directory is under one of the test process's, removed as it exits.
#[cfg(test)]
fn lasting_temp_dir() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static PARENT: OnceLock<std::path::PathBuf> = OnceLock::new();
    extern "C" fn remove_parent() {
        if let Some(parent) = PARENT.get() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
    let parent = PARENT.get_or_init(|| {
        let parent = tempfile::Builder::new()
            .prefix("bpfsnap-unit-")
            .tempdir()
            .unwrap()
            .keep();
        // SAFETY: registers a plain function, run once as the process exits.
        unsafe { libc::atexit(remove_parent) };
        parent
    });
    tempfile::tempdir_in(parent).unwrap().keep()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(names: &[&str]) -> Vec<DecoderSpec> {
        names.iter().map(|name| DecoderSpec::named(name)).collect()
    }

    #[test]
    fn chains_decoders_in_order() {
        let chain = Chain::build(&specs(&["uint", "syscall"]), 4).unwrap();
        assert_eq!(
            chain.decode(&39u32.to_ne_bytes()).unwrap(),
            syscall::name(39).unwrap()
        );
        assert_eq!(chain.decode(&1000u32.to_ne_bytes()).unwrap(), "1000");
    }

    #[test]
    fn no_decoders_passes_bytes_through_as_valid_utf8() {
        let chain = Chain::build(&[], 3).unwrap();
        assert_eq!(chain.decode(b"a\xffb").unwrap(), "a\u{fffd}b");
    }

    #[test]
    fn unknown_decoder_is_an_error() {
        let err = Chain::build(&specs(&["nope"]), 4)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unknown decoder \"nope\""), "{err}");
    }
}
