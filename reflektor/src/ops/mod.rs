//! Operations: what an operator and a load balancer talk to.
//!
//! - `GET /_reflektor/hosts`, `POST /_reflektor/hosts`, `DELETE /_reflektor/hosts/{id}`:
//!   the pool, with health, cursor, lag in records and seconds, last error ([`hosts`]).
//! - `GET /_reflektor/dead-letters`, `POST /_reflektor/dead-letters/{id}/redrive`.
//! - `GET /_reflektor/ui`: the operations page ([`ui`]): hosts, dead letters with redrive, add
//!   and remove a host, live intake and delivery rates, all through the endpoints above with
//!   the token the operator types in.
//! - `GET /metrics`: Prometheus text; every metric name is in [`metrics`].
//! - `GET /healthz`: 200 while the process serves. `GET /readyz`: 200 once the log is open and
//!   the process is not shutting down, else 503.
//!
//! `/_reflektor/*` requires the bearer token when `--token` is set; the three `GET`s above it
//! do not (scrapers and probes).

mod health;
pub(crate) mod hosts;
pub mod metrics;
pub(crate) mod ui;

pub(crate) use health::{healthz, metrics_text, readyz};
