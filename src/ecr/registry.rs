//! ECR registry host names: parsing and validation of every shape ECR serves (pure).

use std::fmt;

/// The AWS partition a private registry lives in; it decides which credentials can work there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Partition {
    /// The commercial partition.
    Aws,
    /// China.
    AwsCn,
    /// AWS GovCloud (US).
    AwsUsGov,
    /// The European Sovereign Cloud.
    AwsEusc,
    /// US ISO (C2S).
    AwsIso,
    /// US ISOB (SC2S).
    AwsIsoB,
    /// EU ISOE.
    AwsIsoE,
    /// US ISOF.
    AwsIsoF,
}

impl Partition {
    /// The partition's name, as in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
            Partition::AwsEusc => "aws-eusc",
            Partition::AwsIso => "aws-iso",
            Partition::AwsIsoB => "aws-iso-b",
            Partition::AwsIsoE => "aws-iso-e",
            Partition::AwsIsoF => "aws-iso-f",
        }
    }
}

/// A registry the daemon can log in to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Registry {
    /// A private ECR registry: one account in one region.
    Private {
        /// The 12-digit account id.
        account: String,
        /// The region the API lives in.
        region: String,
        /// The partition.
        partition: Partition,
        /// The host uses the FIPS endpoint (`dkr.ecr-fips` / `dkr-ecr-fips`); the API call does too.
        fips: bool,
        /// The host is a dual-stack (IPv4+IPv6) endpoint; the API call uses dual-stack too.
        dual_stack: bool,
    },
    /// ECR Public (`public.ecr.aws`), whose API lives in us-east-1.
    Public,
}

/// The region of the ECR Public API.
pub const PUBLIC_REGION: &str = "us-east-1";

/// The shapes we accept, shown to the user when a host is rejected.
pub const ACCEPTED_SHAPES: &str = "\
accepted registry hosts:
  <12-digit account>.dkr.ecr[-fips].<region>.amazonaws.com        (also .amazonaws.com.cn, .amazonaws.eu,
                                                                 .c2s.ic.gov, .sc2s.sgov.gov, .cloud.adc-e.uk, .csp.hci.ic.gov)
  <12-digit account>.dkr-ecr[-fips].<region>.on.aws              (dual-stack; also .on.amazonwebservices.com.cn)
  public.ecr.aws, ecr-public.aws.com                             (ECR Public)";

/// Why a host was rejected (the message names the part that is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct HostError {
    /// Why the host is not an ECR registry host.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> HostError {
    HostError {
        reason: reason.into(),
    }
}

/// DNS suffixes of `dkr.ecr` hosts, with the partitions whose regions may use them.
const IPV4_SUFFIXES: &[(&str, &[Partition])] = &[
    ("amazonaws.com", &[Partition::Aws, Partition::AwsUsGov]),
    ("amazonaws.com.cn", &[Partition::AwsCn]),
    ("amazonaws.eu", &[Partition::AwsEusc]),
    ("c2s.ic.gov", &[Partition::AwsIso]),
    ("sc2s.sgov.gov", &[Partition::AwsIsoB]),
    ("cloud.adc-e.uk", &[Partition::AwsIsoE]),
    ("csp.hci.ic.gov", &[Partition::AwsIsoF]),
];

/// DNS suffixes of dual-stack `dkr-ecr` hosts.
const DUAL_STACK_SUFFIXES: &[(&str, &[Partition])] = &[
    ("on.aws", &[Partition::Aws, Partition::AwsUsGov]),
    ("on.amazonwebservices.com.cn", &[Partition::AwsCn]),
];

/// The partition a region name belongs to, by its prefix (as the SDK's partition table does).
pub fn partition_of_region(region: &str) -> Partition {
    if region.starts_with("cn-") {
        Partition::AwsCn
    } else if region.starts_with("us-gov-") {
        Partition::AwsUsGov
    } else if region.starts_with("eusc-") {
        Partition::AwsEusc
    } else if region.starts_with("us-isob-") {
        Partition::AwsIsoB
    } else if region.starts_with("us-isof-") || region.starts_with("eu-isof-") {
        Partition::AwsIsoF
    } else if region.starts_with("eu-isoe-") {
        Partition::AwsIsoE
    } else if region.starts_with("us-iso-") {
        Partition::AwsIso
    } else {
        Partition::Aws
    }
}

/// A region name: lowercase letter groups and a trailing number, e.g. `us-east-1`, `us-iso-east-1`.
fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl Registry {
    /// Parses a registry host name as written in a docker `auths` key (bare host, no scheme, no port).
    pub fn parse(host: &str) -> Result<Registry, HostError> {
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.contains("://") || host.contains('/') {
            return Err(bad(
                "write the bare host name, without a scheme (https://) or a path",
            ));
        }
        if host.contains(':') {
            return Err(bad("ECR hosts have no port"));
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("write the host in lowercase"));
        }
        if host == "public.ecr.aws" || host == "ecr-public.aws.com" {
            return Ok(Registry::Public);
        }
        let Some((account, rest)) = host.split_once('.') else {
            return Err(bad("not an ECR host"));
        };
        let (dual_stack, fips, rest) = if let Some(r) = rest.strip_prefix("dkr.ecr-fips.") {
            (false, true, r)
        } else if let Some(r) = rest.strip_prefix("dkr.ecr.") {
            (false, false, r)
        } else if let Some(r) = rest.strip_prefix("dkr-ecr-fips.") {
            (true, true, r)
        } else if let Some(r) = rest.strip_prefix("dkr-ecr.") {
            (true, false, r)
        } else {
            return Err(bad(
                "not an ECR host: expected <account>.dkr.ecr.<region>.<domain>",
            ));
        };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!(
                "the account id must be 12 digits, found {account:?}"
            )));
        }
        let Some((region, suffix)) = rest.split_once('.') else {
            return Err(bad("the region and domain are missing"));
        };
        if !valid_region(region) {
            return Err(bad(format!(
                "{region:?} is not a region name (like us-east-1)"
            )));
        }
        let suffixes = if dual_stack {
            DUAL_STACK_SUFFIXES
        } else {
            IPV4_SUFFIXES
        };
        let Some((_, partitions)) = suffixes.iter().find(|(s, _)| *s == suffix) else {
            return Err(bad(format!("unknown ECR domain {suffix:?}")));
        };
        let partition = partition_of_region(region);
        if !partitions.contains(&partition) {
            return Err(bad(format!(
                "region {region} (partition {}) is not served under {suffix}",
                partition.as_str()
            )));
        }
        Ok(Registry::Private {
            account: account.to_string(),
            region: region.to_string(),
            partition,
            fips,
            dual_stack,
        })
    }

    /// The region whose API issues this registry's token.
    pub fn api_region(&self) -> &str {
        match self {
            Registry::Private { region, .. } => region,
            Registry::Public => PUBLIC_REGION,
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host part of a docker `auths` key, as docker's `ConvertToHostname` computes it:
/// without `http://`/`https://` and without any path.
pub fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private(account: &str, region: &str, p: Partition, fips: bool, ds: bool) -> Registry {
        Registry::Private {
            account: account.into(),
            region: region.into(),
            partition: p,
            fips,
            dual_stack: ds,
        }
    }

    #[test]
    fn valid_hosts() {
        use Partition::*;
        let a = "123456789012";
        let cases: &[(&str, Registry)] = &[
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                private(a, "us-east-1", Aws, false, false),
            ),
            (
                "123456789012.dkr.ecr.eu-west-3.amazonaws.com",
                private(a, "eu-west-3", Aws, false, false),
            ),
            (
                "123456789012.dkr.ecr.ap-southeast-5.amazonaws.com",
                private(a, "ap-southeast-5", Aws, false, false),
            ),
            (
                "123456789012.dkr.ecr-fips.us-east-2.amazonaws.com",
                private(a, "us-east-2", Aws, true, false),
            ),
            (
                "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com",
                private(a, "us-gov-west-1", AwsUsGov, false, false),
            ),
            (
                "123456789012.dkr.ecr-fips.us-gov-east-1.amazonaws.com",
                private(a, "us-gov-east-1", AwsUsGov, true, false),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                private(a, "cn-north-1", AwsCn, false, false),
            ),
            (
                "123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn",
                private(a, "cn-northwest-1", AwsCn, false, false),
            ),
            (
                "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu",
                private(a, "eusc-de-east-1", AwsEusc, false, false),
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov",
                private(a, "us-iso-east-1", AwsIso, false, false),
            ),
            (
                "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov",
                private(a, "us-isob-east-1", AwsIsoB, false, false),
            ),
            (
                "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk",
                private(a, "eu-isoe-west-1", AwsIsoE, false, false),
            ),
            (
                "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov",
                private(a, "us-isof-south-1", AwsIsoF, false, false),
            ),
            (
                "123456789012.dkr-ecr.us-east-1.on.aws",
                private(a, "us-east-1", Aws, false, true),
            ),
            (
                "123456789012.dkr-ecr-fips.us-west-2.on.aws",
                private(a, "us-west-2", Aws, true, true),
            ),
            (
                "123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn",
                private(a, "cn-north-1", AwsCn, false, true),
            ),
            (
                "000000000000.dkr.ecr.us-east-1.amazonaws.com",
                private("000000000000", "us-east-1", Aws, false, false),
            ),
            ("public.ecr.aws", Registry::Public),
            ("ecr-public.aws.com", Registry::Public),
        ];
        for (host, want) in cases {
            assert_eq!(Registry::parse(host).as_ref(), Ok(want), "{host}");
        }
    }

    #[test]
    fn invalid_hosts() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (
                "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "scheme",
            ),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/", "scheme"),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com:443", "port"),
            ("123456789012.DKR.ECR.us-east-1.amazonaws.com", "lowercase"),
            ("12345678901.dkr.ecr.us-east-1.amazonaws.com", "12 digits"),
            ("1234567890123.dkr.ecr.us-east-1.amazonaws.com", "12 digits"),
            ("12345678901a.dkr.ecr.us-east-1.amazonaws.com", "12 digits"),
            (
                "123456789012.ecr.us-east-1.amazonaws.com",
                "not an ECR host",
            ),
            ("123456789012.dkr.ecr.amazonaws.com", "region"),
            ("123456789012.dkr.ecr.useast1.amazonaws.com", "region name"),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.org",
                "unknown ECR domain",
            ),
            (
                "123456789012.dkr.ecr.us-east-1.on.aws",
                "unknown ECR domain",
            ),
            (
                "123456789012.dkr-ecr.us-east-1.amazonaws.com",
                "unknown ECR domain",
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com",
                "not served",
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com.cn",
                "not served",
            ),
            (
                "123456789012.dkr.ecr.us-iso-east-1.amazonaws.com",
                "not served",
            ),
            ("123456789012.dkr.ecr.us-east-1.c2s.ic.gov", "not served"),
            (
                "123456789012.dkr-ecr.us-east-1.on.amazonwebservices.com.cn",
                "not served",
            ),
            ("123456789012.dkr.ecr.us-east-1", "missing"),
            ("docker.io", "not an ECR host"),
            ("localhost", "not an ECR host"),
            ("ecr.aws", "not an ECR host"),
            ("gallery.ecr.aws", "not an ECR host"),
            ("123456789012.dkr.ecr.us-east-.amazonaws.com", "region name"),
            (
                "123456789012.dkr.ecr.us-east-123.amazonaws.com",
                "region name",
            ),
        ];
        for (host, want) in cases {
            let err = Registry::parse(host).expect_err(host);
            assert!(
                err.reason.contains(want),
                "{host}: {:?} lacks {want:?}",
                err.reason
            );
        }
    }

    #[test]
    fn key_host_strips_scheme_and_path() {
        let cases = [
            ("h.example", "h.example"),
            ("https://h.example", "h.example"),
            ("http://h.example", "h.example"),
            ("https://h.example/v2/", "h.example"),
            ("h.example/v1/", "h.example"),
            ("h.example:5000", "h.example:5000"),
        ];
        for (key, want) in cases {
            assert_eq!(key_host(key), want, "{key}");
        }
    }

    #[test]
    fn api_region() {
        assert_eq!(Registry::Public.api_region(), "us-east-1");
        let r = Registry::parse("123456789012.dkr.ecr.eu-central-1.amazonaws.com").unwrap();
        assert_eq!(r.api_region(), "eu-central-1");
    }
}
