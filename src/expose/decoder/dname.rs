//! `dname`: not implemented yet.

use anyhow::{bail, Result};

use super::Decoder;
use crate::config::DecoderSpec;

pub fn build(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder dname is not implemented yet")
}
