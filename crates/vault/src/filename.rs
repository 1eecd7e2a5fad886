//! Metadata encoded in Kerberos Agent file names:
//! `timestamp_size-microseconds_instanceName_regionCoordinates_numberOfChanges_token.mp4`.
//! Used only when the structured headers are absent; never as a path.

#[derive(Debug, Default, Clone, PartialEq)]
pub struct KerberosName {
    pub timestamp: Option<i64>,
    pub instance_name: Option<String>,
    pub region: Option<String>,
    pub changes: Option<i64>,
}

pub fn parse(file_name: &str) -> KerberosName {
    let stem = file_name.strip_suffix(".mp4").unwrap_or(file_name);
    let parts: Vec<&str> = stem.split('_').collect();
    if parts.len() < 6 {
        return KerberosName { timestamp: parts[0].parse().ok().filter(|t| *t > 0), ..Default::default() };
    }
    // The instance name may itself contain '_': it is everything between the second field and
    // the last three.
    let n = parts.len();
    KerberosName {
        timestamp: parts[0].parse().ok().filter(|t| *t > 0),
        instance_name: Some(parts[2..n - 3].join("_")).filter(|s| !s.is_empty()),
        region: Some(parts[n - 3].to_string()).filter(|r| is_region(r)),
        changes: parts[n - 2].parse().ok(),
    }
}

fn is_region(s: &str) -> bool {
    let fields: Vec<&str> = s.split('-').collect();
    fields.len() == 4 && fields.iter().all(|f| f.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_agent_names() {
        let n = parse("1700000000_6-967003_frontdoor_200-200-400-400_24_769.mp4");
        assert_eq!(n.timestamp, Some(1_700_000_000));
        assert_eq!(n.instance_name.as_deref(), Some("frontdoor"));
        assert_eq!(n.region.as_deref(), Some("200-200-400-400"));
        assert_eq!(n.changes, Some(24));
        let n = parse("1700000000_6-967003_back_yard_0-0-0-0_3_1.mp4");
        assert_eq!(n.instance_name.as_deref(), Some("back_yard"));
    }

    #[test]
    fn tolerates_other_names() {
        assert_eq!(parse("clip.mp4"), KerberosName::default());
        assert_eq!(parse("1700000001.mp4").timestamp, Some(1_700_000_001));
        assert_eq!(parse("x_y_z_bad-region_q_t.mp4").region, None);
    }
}
