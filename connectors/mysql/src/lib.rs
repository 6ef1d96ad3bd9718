//! inlet's MySQL/MariaDB connector (in progress).

mod charset;
mod config;
mod error;
mod json;
mod types;
mod values;

pub use config::{MysqlConnector, MysqlSourceConfig, TlsMode};
pub use error::MysqlError;
