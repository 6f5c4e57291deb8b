//! `ifname`: not implemented yet.

use anyhow::{bail, Result};

use super::Decoder;
use crate::config::DecoderSpec;

pub fn build(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder ifname is not implemented yet")
}
