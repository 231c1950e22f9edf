//! banger's side of the Firecracker API.
//!
//! - [`models`]: typed request and response bodies, named as in the official definition.
//! - [`client`]: [`client::FirecrackerClient`], HTTP/1.1 over the VMM's Unix API socket with a
//!   deadline per call and Firecracker's `fault_message` in its errors.
//! - [`calls`]: every request the client makes, as data (method, path, body), so the contract
//!   test can check each one against the definition.
//! - [`schema`]: a validator for the Swagger 2.0 subset the definition uses, over the embedded
//!   `api/firecracker.yaml`; shared by the contract test and the simulator (`banger-fcsim`).

pub mod calls;
pub mod client;
pub mod models;
pub mod schema;

pub use client::{ClientError, FirecrackerClient};
