//! inlet's Iceberg sink (work in progress).
