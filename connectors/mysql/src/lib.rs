//! inlet's MySQL/MariaDB connector (work in progress).
