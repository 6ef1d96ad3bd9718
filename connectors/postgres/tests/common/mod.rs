//! The connector's test servers come from the shared `inlet-testkit` crate.
#![allow(dead_code)] // each test binary uses its own subset

pub use inlet_testkit::PgServer;
