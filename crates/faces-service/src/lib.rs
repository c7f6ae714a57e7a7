//! The faces service: upload → durable queue → worker → store → live feed, on one port.
//!
//! ```text
//!  POST /image ──► validate, stream to storage ──► submissions + jobs (one transaction) ──► 202
//!                                                      │
//!        workers ◄── claim (lease) ────────────────────┘
//!           │ decode, detect, draw (blocking thread)
//!           ├──► storage: processed_faces/<aa>/<bb>/<uuid>.jpg
//!           └──► record result + outbox row ──► relay (seq order) ──► feed ──► /faces
//! ```
//!
//! [`App::start`] runs it all in-process (the `spawn_app` of the tests);
//! [`run`] adds signal handling for `faces serve` and `faces worker`.

#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod app;
pub mod budget;
pub mod client_address;
pub mod config;
pub mod db;
pub mod error;
pub mod fault;
pub mod feed;
pub mod leftovers;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod recognition;
pub mod refresh;
pub mod retention;
pub mod server;
pub mod state;
pub mod store;
pub mod submission;
pub mod worker;

pub use app::{run, App, Role};
pub use config::Config;
pub use state::AppState;
