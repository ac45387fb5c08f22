//! The tower layers. Both sides share one core ([`call`]): a span per call, ended with the
//! response body, and one duration measurement with bounded attributes.

mod body;
mod call;
mod client;
mod future;
mod server;
#[cfg(test)]
mod tests;

pub use body::TracedBody;
pub use client::{ClientLayer, ClientService};
pub use future::ResponseFuture;
pub use server::{ServerLayer, ServerService};
