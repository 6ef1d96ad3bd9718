//! Partition transforms from the config (`day(ts)`, `bucket[16](id)`, `truncate[4](name)`,
//! a bare column for identity), parsed into Iceberg's transform names.

/// One partition field as configured: a transform applied to a source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    pub column: String,
    /// Iceberg's transform name: `identity`, `year`, `month`, `day`, `hour`, `bucket[N]`,
    /// `truncate[W]`.
    pub transform: String,
}

impl PartitionField {
    /// Parses `name`, `transform(name)` or `transform[N](name)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some(open) = text.find('(') else {
            if text.is_empty() || text.contains([')', '[', ']']) {
                return Err("expected a column name or transform(column)".into());
            }
            return Ok(Self {
                column: text.to_string(),
                transform: "identity".into(),
            });
        };
        let Some(column) = text[open + 1..].strip_suffix(')') else {
            return Err("missing the closing ')'".into());
        };
        let transform = text[..open].trim();
        let column = column.trim();
        if column.is_empty() {
            return Err("the column name is empty".into());
        }
        let valid = match transform {
            "identity" | "year" | "month" | "day" | "hour" => true,
            t => {
                let arg = t
                    .strip_prefix("bucket[")
                    .or_else(|| t.strip_prefix("truncate["))
                    .and_then(|rest| rest.strip_suffix(']'));
                arg.and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 0)
            }
        };
        if !valid {
            return Err(format!(
                "unknown transform {transform:?}; use identity, year, month, day, hour, \
                 bucket[N] or truncate[W]"
            ));
        }
        Ok(Self {
            column: column.to_string(),
            transform: transform.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transforms() {
        assert_eq!(
            PartitionField::parse("bucket[16](id)").unwrap(),
            PartitionField {
                column: "id".into(),
                transform: "bucket[16]".into()
            }
        );
        assert_eq!(PartitionField::parse("ts").unwrap().transform, "identity");
        assert_eq!(PartitionField::parse("day( ts )").unwrap().column, "ts");
        assert!(PartitionField::parse("week(ts)").is_err());
        assert!(PartitionField::parse("bucket[0](id)").is_err());
        assert!(PartitionField::parse("day(ts").is_err());
    }
}
