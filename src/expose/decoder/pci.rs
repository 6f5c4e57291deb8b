//! `pci_vendor`, `pci_device`, `pci_class`, `pci_subclass`: not implemented yet.

use anyhow::{bail, Result};

use super::Decoder;
use crate::config::DecoderSpec;

pub fn build_vendor(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder pci_vendor is not implemented yet")
}

pub fn build_device(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder pci_device is not implemented yet")
}

pub fn build_class(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder pci_class is not implemented yet")
}

pub fn build_subclass(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder pci_subclass is not implemented yet")
}
