//! `inet_ip`: not implemented yet.

use anyhow::{bail, Result};

use super::Decoder;
use crate::config::DecoderSpec;

pub fn build(_spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    bail!("decoder inet_ip is not implemented yet")
}
