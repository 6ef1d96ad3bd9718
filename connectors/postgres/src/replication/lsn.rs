//! WAL positions as PostgreSQL writes them (`16/B374D848`).

/// A WAL position (PostgreSQL's `pg_lsn`): a byte offset into the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form: two hexadecimal numbers of 1 to 8 digits each, separated
    /// by `/` (the high and low 32 bits). Anything else, signs and spaces included, is `None`,
    /// as `pg_lsn` input refuses it too.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.split_once('/')?;
        Some(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

fn half(s: &str) -> Option<u32> {
    // from_str_radix alone would accept a leading `+`.
    if (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

impl std::fmt::Display for Lsn {
    /// Upper-case hex without padding, exactly as PostgreSQL prints it, so the text can be
    /// compared with `pg_replication_slots` and pasted into SQL.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn parses_postgres_text() {
        assert_eq!(Lsn::parse("16/B374D848"), Some(Lsn(0x16_B374_D848)));
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("0/1"), Some(Lsn(1)));
        assert_eq!(Lsn::parse("1/0"), Some(Lsn(1 << 32)));
        assert_eq!(Lsn::parse("ab/cdef0123"), Some(Lsn(0xAB_CDEF_0123)));
        assert_eq!(Lsn::parse("FFFFFFFF/FFFFFFFF"), Some(Lsn(u64::MAX)));
        assert_eq!(Lsn::parse("00000000/00000010"), Some(Lsn(16)));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "/",
            "16",
            "16/",
            "/B374D848",
            "g/1",
            "1/2/3",
            "100000000/0",
            "0/100000000",
            "+1/2",
            "1/-2",
            " 1/2",
            "1/2 ",
            "0x1/2",
        ] {
            assert_eq!(Lsn::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn displays_as_postgres_does() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!(Lsn(1 << 32).to_string(), "1/0");
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        for text in ["16/B374D848", "0/0", "1/0", "FFFFFFFF/FFFFFFFF", "A/1"] {
            let lsn = Lsn::parse(text).expect("valid");
            assert_eq!(lsn.to_string(), text);
        }
    }

    #[test]
    fn orders_by_position() {
        assert!(Lsn::parse("1/0") > Lsn::parse("0/FFFFFFFF"));
        assert!(Lsn::parse("0/10") < Lsn::parse("0/11"));
    }
}
