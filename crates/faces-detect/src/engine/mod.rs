//! The engines that run the network, behind one small interface ([`Network`]):
//! an image in, the network's raw outputs out, which [`crate::anchors`] decodes.
//!
//! - [`native`]: this network written out over our own AVX2 / AVX-512 kernels, the default;
//! - [`rten`]: a general ONNX engine in pure Rust, for CPUs without AVX2/FMA and as
//!   the tests' reference;
//! - `onnxruntime` (cargo feature): the same ONNX file on ONNX Runtime.

pub(crate) mod native;
mod network;
#[cfg(feature = "onnxruntime")]
pub(crate) mod onnxruntime;
pub(crate) mod profile;
pub(crate) mod rten;

pub(crate) use network::Network;
