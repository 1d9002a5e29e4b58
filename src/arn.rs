//! Amazon Resource Names for Redshift datashares and namespaces, IAM roles, and AWS region names.
//!
//! The gateway's one place ARNs are parsed: the validator, the policy layer and the accounts
//! table use it. The emulator (the `datashare-emulator` crate) has its own parser on purpose, so
//! a bug here is not hidden by the same bug in the stand-in for AWS. Parsing never panics on any
//! input (see the property tests below).

use std::fmt;

/// The longest ARN accepted. Redshift's model bounds strings only by `i32::MAX`; 2048 is the
/// bound IAM documents for ARNs and keeps every value small enough to log and audit.
pub const MAX_ARN_LEN: usize = 2048;
/// The longest datashare name: Redshift identifiers are at most 127 bytes.
pub const MAX_DATASHARE_NAME_LEN: usize = 127;
/// The longest region name accepted (`ap-southeast-5` style names are 14 bytes; leave room).
pub const MAX_REGION_LEN: usize = 32;

/// The AWS partitions the gateway serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Partition {
    /// Commercial regions.
    #[default]
    Aws,
    /// China regions.
    AwsCn,
    /// AWS GovCloud (US).
    AwsUsGov,
}

impl Partition {
    /// The partition as it is written in an ARN.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }

    fn parse(s: &str) -> Result<Self, ArnError> {
        match s {
            "aws" => Ok(Partition::Aws),
            "aws-cn" => Ok(Partition::AwsCn),
            "aws-us-gov" => Ok(Partition::AwsUsGov),
            _ => Err(ArnError::UnknownPartition),
        }
    }

    /// The partition a region belongs to.
    pub fn of_region(region: &Region) -> Self {
        let r = region.as_str();
        if r.starts_with("cn-") {
            Partition::AwsCn
        } else if r.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value is not a valid ARN, region, account or namespace id. Each message states the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ARN_LEN} bytes")]
    TooLong,
    #[error("must have the form arn:{{partition}}:{{service}}:{{region}}:{{account}}:{{resource}}")]
    NotAnArn,
    #[error("partition must be one of aws, aws-cn, aws-us-gov")]
    UnknownPartition,
    #[error("service must be redshift for a datashare ARN")]
    NotRedshiftDatashare,
    #[error("service must be redshift (provisioned) or redshift-serverless for a namespace ARN")]
    NotNamespaceService,
    #[error(
        "region must look like us-east-1 (lowercase letters and digits, dash-separated, at most {MAX_REGION_LEN} bytes)"
    )]
    BadRegion,
    #[error("region does not belong to the ARN's partition")]
    RegionOutsidePartition,
    #[error("account must be exactly 12 digits")]
    BadAccount,
    #[error("resource must be datashare:{{namespace-guid}}/{{name}}")]
    BadDatashareResource,
    #[error("resource must be namespace:{{guid}} (provisioned) or namespace/{{guid}} (serverless)")]
    BadNamespaceResource,
    #[error("namespace id must be a GUID (8-4-4-4-12 hexadecimal digits)")]
    BadGuid,
    #[error(
        "datashare name must be a Redshift identifier: 1 to {MAX_DATASHARE_NAME_LEN} bytes, a letter or '_' first, then letters, digits, '_' or '$' (no spaces, quotes, marks or symbols)"
    )]
    BadDatashareName,
    #[error(
        "datashare name mixes scripts (such as Latin and Cyrillic letters that look alike); a name must be written in one script, or in Latin with Chinese, Japanese or Korean"
    )]
    MixedScriptDatashareName,
    #[error("must be an IAM role ARN, arn:{{partition}}:iam::{{account}}:role/{{path/}}{{name}}")]
    NotARole,
}

/// A 12-digit AWS account id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    /// Parses a 12-digit account id.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_owned()))
        } else {
            Err(ArnError::BadAccount)
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS region name such as `us-east-1`, `us-gov-west-1` or `cn-north-1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Region(String);

impl Region {
    /// Parses a region name: dash-separated lowercase words, the first two letters, the last a
    /// number (`us-east-1`, `us-gov-west-1`, `ap-southeast-5`, `us-isob-east-1`).
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        if s.is_empty() {
            return Err(ArnError::Empty);
        }
        if s.len() > MAX_REGION_LEN {
            return Err(ArnError::BadRegion);
        }
        let parts: Vec<&str> = s.split('-').collect();
        let well_formed = parts.len() >= 3
            && parts[0].len() == 2
            && parts[0].bytes().all(|b| b.is_ascii_lowercase())
            && parts[1..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts.last().is_some_and(|p| {
                !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit())
            });
        if well_formed {
            Ok(Region(s.to_owned()))
        } else {
            Err(ArnError::BadRegion)
        }
    }

    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The regions the AWS SDK this gateway is built with knows in the partitions the gateway serves
/// (the explicit regions of its partition table, `aws-sdk-sts` 1.124, for `aws`, `aws-cn` and
/// `aws-us-gov`, without the `*-global` pseudo-regions). A configured
/// region must be one of them: a typo such as `us-east-99` has the shape of a region and would
/// otherwise surface only as connection errors on the first call.
pub const KNOWN_REGIONS: &[&str] = &[
    // aws
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    // aws-cn
    "cn-north-1",
    "cn-northwest-1",
    // aws-us-gov
    "us-gov-east-1",
    "us-gov-west-1",
];

/// Why a configured region is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfiguredRegionError {
    /// Not even the shape of a region.
    #[error(transparent)]
    Shape(#[from] ArnError),
    /// The shape of a region, but not one the SDK knows.
    #[error(
        "not an AWS region this build knows (the AWS SDK's list, such as us-east-1, eu-west-1, \
         cn-north-1, us-gov-west-1); a region launched after this release needs a newer gateway"
    )]
    Unknown,
}

impl Region {
    /// A region named in the configuration: [`Region::parse`]'s shape, and one of
    /// [`KNOWN_REGIONS`].
    pub fn parse_configured(s: &str) -> Result<Self, ConfiguredRegionError> {
        let region = Region::parse(s)?;
        if KNOWN_REGIONS.contains(&s) {
            Ok(region)
        } else {
            Err(ConfiguredRegionError::Unknown)
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Redshift namespace id: a GUID, kept in lower case as Redshift prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceId(String);

impl NamespaceId {
    /// Parses a GUID of the form 8-4-4-4-12 hexadecimal digits.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        let ok = groups.len() == lens.len()
            && groups
                .iter()
                .zip(lens)
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(NamespaceId(s.to_ascii_lowercase()))
        } else {
            Err(ArnError::BadGuid)
        }
    }

    /// The GUID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `arn:{partition}:iam::{account}:role/{path/}{name}`: a role the gateway assumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn {
    /// The partition.
    pub partition: Partition,
    /// The account the role belongs to.
    pub account: AccountId,
    /// The role's path and name (`datashare-gateway`, `team/datashare-gateway`).
    pub name: String,
}

impl RoleArn {
    /// Parses an IAM role ARN. IAM is global: the region field is empty.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let ["arn", partition, "iam", "", account, resource] = six_fields(s)? else {
            return Err(ArnError::NotARole);
        };
        let partition = Partition::parse(partition)?;
        let account = AccountId::parse(account)?;
        let name = resource.strip_prefix("role/").ok_or(ArnError::NotARole)?;
        // IAM's role path and name characters.
        let name_ok = !name.is_empty()
            && name.len() <= 512
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c));
        if !name_ok {
            return Err(ArnError::NotARole);
        }
        Ok(RoleArn {
            partition,
            account,
            name: name.to_owned(),
        })
    }
}

/// The six colon-separated fields every ARN has; the resource may contain further colons.
struct ArnParts<'a> {
    partition: Partition,
    service: &'a str,
    region: Region,
    account: AccountId,
    resource: &'a str,
}

/// The six colon-separated fields of an ARN, after the checks every ARN gets; the last (the
/// resource) may contain further colons.
fn six_fields(s: &str) -> Result<[&str; 6], ArnError> {
    if s.is_empty() {
        return Err(ArnError::Empty);
    }
    if s.len() > MAX_ARN_LEN {
        return Err(ArnError::TooLong);
    }
    let mut it = s.splitn(6, ':');
    match [
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ] {
        [Some(a), Some(b), Some(c), Some(d), Some(e), Some(f)] => Ok([a, b, c, d, e, f]),
        _ => Err(ArnError::NotAnArn),
    }
}

fn split_arn(s: &str) -> Result<ArnParts<'_>, ArnError> {
    let ["arn", partition, service, region, account, resource] = six_fields(s)? else {
        return Err(ArnError::NotAnArn);
    };
    let partition = Partition::parse(partition)?;
    let region = Region::parse(region).map_err(|_| ArnError::BadRegion)?;
    if Partition::of_region(&region) != partition {
        return Err(ArnError::RegionOutsidePartition);
    }
    let account = AccountId::parse(account)?;
    Ok(ArnParts {
        partition,
        service,
        region,
        account,
        resource,
    })
}

/// `arn:{partition}:redshift:{region}:{account}:datashare:{namespace-guid}/{name}`
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DataShareArn {
    /// The partition.
    pub partition: Partition,
    /// The producer's region.
    pub region: Region,
    /// The producer account.
    pub account: AccountId,
    /// The producer namespace that owns the datashare.
    pub namespace: NamespaceId,
    /// The datashare's name, as created with `CREATE DATASHARE`.
    pub name: String,
}

impl DataShareArn {
    /// Parses a datashare ARN.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let parts = split_arn(s)?;
        if parts.service != "redshift" {
            return Err(ArnError::NotRedshiftDatashare);
        }
        let rest = parts
            .resource
            .strip_prefix("datashare:")
            .ok_or(ArnError::BadDatashareResource)?;
        let (guid, name) = rest.split_once('/').ok_or(ArnError::BadDatashareResource)?;
        let namespace = NamespaceId::parse(guid)?;
        datashare_name(name)?;
        Ok(DataShareArn {
            partition: parts.partition,
            region: parts.region,
            account: parts.account,
            namespace,
            name: name.to_owned(),
        })
    }

    /// The ARN of the producer namespace that owns this datashare.
    pub fn producer_namespace_arn(&self) -> NamespaceArn {
        NamespaceArn {
            partition: self.partition,
            region: self.region.clone(),
            account: self.account.clone(),
            namespace: self.namespace.clone(),
            kind: NamespaceKind::Provisioned,
        }
    }
}

/// Checks a datashare name. Redshift's standard identifiers (`CREATE DATASHARE` takes one) are
/// 1–127 bytes: an ASCII letter, `_` or a multibyte UTF-8 character first, then ASCII letters,
/// digits, `_`, `$` or multibyte characters; no quotes or spaces. Of the multibyte characters the
/// gateway takes only those Unicode allows in identifiers (UTS #39's General Security Profile)
/// that are not marks, in one script (or Latin with CJK): a name a person reads as another (Cyrillic
/// `а` for Latin `a`, a no-break space, a combining accent, an emoji) is not the name policy was
/// written for.
fn datashare_name(name: &str) -> Result<(), ArnError> {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};
    let identifier_char = |c: char, first: bool| match c {
        'A'..='Z' | 'a'..='z' | '_' => true,
        '0'..='9' | '$' => !first,
        c if c.is_ascii() => false,
        c => c.identifier_allowed() && c.general_category_group() != GeneralCategoryGroup::Mark,
    };
    let mut chars = name.chars();
    let well_formed = name.len() <= MAX_DATASHARE_NAME_LEN
        && chars.next().is_some_and(|c| identifier_char(c, true))
        && chars.all(|c| identifier_char(c, false));
    if !well_formed {
        return Err(ArnError::BadDatashareName);
    }
    // UTS #39's "highly restrictive" level: one script, or Latin with the scripts written
    // beside it (Han with Hiragana and Katakana, Han with Bopomofo, Han with Hangul); Latin
    // with Cyrillic or Greek is not. `$` is Redshift's, outside Unicode's identifier set.
    if !name
        .replace('$', "")
        .check_restriction_level(RestrictionLevel::HighlyRestrictive)
    {
        return Err(ArnError::MixedScriptDatashareName);
    }
    Ok(())
}

impl fmt::Display for DataShareArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:redshift:{}:{}:datashare:{}/{}",
            self.partition, self.region, self.account, self.namespace, self.name
        )
    }
}

/// Whether a namespace belongs to a provisioned cluster or to Redshift Serverless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    /// `arn:{p}:redshift:{region}:{account}:namespace:{guid}`
    Provisioned,
    /// `arn:{p}:redshift-serverless:{region}:{account}:namespace/{guid}`
    Serverless,
}

/// A consumer (or producer) namespace ARN, provisioned or serverless.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceArn {
    /// The partition.
    pub partition: Partition,
    /// The namespace's region.
    pub region: Region,
    /// The account that owns the namespace.
    pub account: AccountId,
    /// The namespace GUID.
    pub namespace: NamespaceId,
    /// Provisioned or serverless.
    pub kind: NamespaceKind,
}

impl NamespaceArn {
    /// Parses a provisioned or serverless namespace ARN.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        let parts = split_arn(s)?;
        let (kind, guid) = match parts.service {
            "redshift" => (
                NamespaceKind::Provisioned,
                parts
                    .resource
                    .strip_prefix("namespace:")
                    .ok_or(ArnError::BadNamespaceResource)?,
            ),
            "redshift-serverless" => (
                NamespaceKind::Serverless,
                parts
                    .resource
                    .strip_prefix("namespace/")
                    .ok_or(ArnError::BadNamespaceResource)?,
            ),
            _ => return Err(ArnError::NotNamespaceService),
        };
        Ok(NamespaceArn {
            partition: parts.partition,
            region: parts.region,
            account: parts.account,
            namespace: NamespaceId::parse(guid)?,
            kind,
        })
    }
}

impl fmt::Display for NamespaceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            NamespaceKind::Provisioned => write!(
                f,
                "arn:{}:redshift:{}:{}:namespace:{}",
                self.partition, self.region, self.account, self.namespace
            ),
            NamespaceKind::Serverless => write!(
                f,
                "arn:{}:redshift-serverless:{}:{}:namespace/{}",
                self.partition, self.region, self.account, self.namespace
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_parse_with_their_partition_and_account() {
        let role = RoleArn::parse("arn:aws-cn:iam::444455556666:role/team/datashare-gateway")
            .expect("a role");
        assert_eq!(role.partition, Partition::AwsCn);
        assert_eq!(role.account.as_str(), "444455556666");
        assert_eq!(role.name, "team/datashare-gateway");
        for bad in [
            "arn:aws:iam::444455556666:user/x",
            "arn:aws:iam:us-east-1:444455556666:role/x",
            "arn:aws:sts::444455556666:role/x",
            "arn:aws:iam::4444:role/x",
            "arn:aws:iam::444455556666:role/",
            "arn:aws:iam::444455556666:role/a b",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
    }
    use proptest::prelude::*;

    const SHARE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";

    #[test]
    fn parses_a_datashare_arn_and_prints_it_back() {
        let arn = DataShareArn::parse(SHARE).unwrap();
        assert_eq!(arn.partition, Partition::Aws);
        assert_eq!(arn.region.as_str(), "us-east-1");
        assert_eq!(arn.account.as_str(), "111122223333");
        assert_eq!(
            arn.namespace.as_str(),
            "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f"
        );
        assert_eq!(arn.name, "sales_share");
        assert_eq!(arn.to_string(), SHARE);
        assert_eq!(
            arn.producer_namespace_arn().to_string(),
            "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f"
        );
    }

    #[test]
    fn datashare_names_are_identifiers_in_one_script() {
        let name = |n: &str| {
            DataShareArn::parse(&format!(
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/{n}"
            ))
            .map(|arn| arn.name)
        };
        for ok in [
            "sales_share",
            "_staging$2",
            "продажи",
            "売上_share",
            "売り上げ",
            "ventes_élevées",
        ] {
            assert_eq!(name(ok).as_deref(), Ok(ok), "{ok}");
        }
        let long = "a".repeat(MAX_DATASHARE_NAME_LEN);
        assert!(name(&long).is_ok());
        let bad = [
            ("", ArnError::BadDatashareName),
            (&*format!("{long}a"), ArnError::BadDatashareName),
            ("1sales", ArnError::BadDatashareName),
            ("$sales", ArnError::BadDatashareName),
            ("sales share", ArnError::BadDatashareName),
            ("sales\u{a0}share", ArnError::BadDatashareName),
            ("sales-share", ArnError::BadDatashareName),
            ("sales\"share", ArnError::BadDatashareName),
            ("sales:share", ArnError::BadDatashareName),
            ("sales/share", ArnError::BadDatashareName),
            ("sales_share\u{301}", ArnError::BadDatashareName),
            ("sales_\u{1f4b0}", ArnError::BadDatashareName),
            ("sales\u{200b}share", ArnError::BadDatashareName),
            // Cyrillic а (U+0430) and е (U+0435) among Latin letters.
            ("s\u{430}les_share", ArnError::MixedScriptDatashareName),
            ("sal\u{435}s", ArnError::MixedScriptDatashareName),
        ];
        for (n, err) in bad {
            assert_eq!(name(n), Err(err), "{n:?}");
        }
    }

    #[test]
    fn rejects_datashare_arns_with_the_rule_broken() {
        let cases = [
            ("", ArnError::Empty),
            ("not-an-arn", ArnError::NotAnArn),
            (
                "arn:aws:redshift:us-east-1:111122223333",
                ArnError::NotAnArn,
            ),
            (
                "arn:azure:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s",
                ArnError::UnknownPartition,
            ),
            (
                "arn:aws:s3:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s",
                ArnError::NotRedshiftDatashare,
            ),
            (
                "arn:aws:redshift:US-EAST-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s",
                ArnError::BadRegion,
            ),
            (
                "arn:aws-cn:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s",
                ArnError::RegionOutsidePartition,
            ),
            (
                "arn:aws:redshift:us-east-1:11112222333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/s",
                ArnError::BadAccount,
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:namespace:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f",
                ArnError::BadDatashareResource,
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f",
                ArnError::BadDatashareResource,
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:not-a-guid/s",
                ArnError::BadGuid,
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/",
                ArnError::BadDatashareName,
            ),
            (
                "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/a/b",
                ArnError::BadDatashareName,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(DataShareArn::parse(input), Err(want), "{input}");
        }
        let long = format!("{SHARE}{}", "x".repeat(MAX_ARN_LEN));
        assert_eq!(DataShareArn::parse(&long), Err(ArnError::TooLong));
    }

    #[test]
    fn parses_provisioned_and_serverless_namespaces_in_every_partition() {
        let cases = [
            (
                "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                NamespaceKind::Provisioned,
            ),
            (
                "arn:aws:redshift-serverless:us-east-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                NamespaceKind::Serverless,
            ),
            (
                "arn:aws-cn:redshift:cn-north-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                NamespaceKind::Provisioned,
            ),
            (
                "arn:aws-us-gov:redshift-serverless:us-gov-west-1:444455556666:namespace/0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                NamespaceKind::Serverless,
            ),
        ];
        for (input, kind) in cases {
            let arn = NamespaceArn::parse(input).unwrap();
            assert_eq!(arn.kind, kind);
            assert_eq!(arn.to_string(), input);
        }
    }

    #[test]
    fn rejects_namespace_arns_of_the_wrong_shape() {
        let cases = [
            (
                "arn:aws:redshift:us-east-1:444455556666:namespace/5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                ArnError::BadNamespaceResource,
            ),
            (
                "arn:aws:redshift-serverless:us-east-1:444455556666:namespace:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
                ArnError::BadNamespaceResource,
            ),
            (
                "arn:aws:ec2:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
                ArnError::NotNamespaceService,
            ),
            (
                "arn:aws:redshift:us-east-1:444455556666:namespace:zzzz",
                ArnError::BadGuid,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(NamespaceArn::parse(input), Err(want), "{input}");
        }
    }

    #[test]
    fn region_names_follow_aws_shape() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-northwest-1",
            "ap-southeast-5",
            "us-isob-east-1",
        ] {
            assert!(Region::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "useast1",
            "US-EAST-1",
            "us-east-1a",
            "us--1",
            "us-east-100",
            "u1-east-1",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configured_regions_are_ones_the_sdk_knows() {
        for known in KNOWN_REGIONS {
            let region = Region::parse_configured(known).unwrap();
            assert_eq!(region.as_str(), *known);
        }
        assert_eq!(
            Region::parse_configured("us-east-99"),
            Err(ConfiguredRegionError::Unknown)
        );
        assert_eq!(
            Region::parse_configured("mars-1"),
            Err(ConfiguredRegionError::Shape(ArnError::BadRegion))
        );
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(s in ".{0,300}") {
            let _ = DataShareArn::parse(&s);
            let _ = NamespaceArn::parse(&s);
            let _ = Region::parse(&s);
        }

        #[test]
        fn arn_shaped_strings_never_panic_and_round_trip(
            part in "(aws|aws-cn|aws-us-gov|x)",
            region in "[a-z]{2}(-[a-z]{1,6}){1,2}-[0-9]{1,2}",
            acct in "[0-9]{11,13}",
            guid in "[0-9a-fA-F-]{30,40}",
            name in "[^/:]{0,130}",
        ) {
            let s = format!("arn:{part}:redshift:{region}:{acct}:datashare:{guid}/{name}");
            if let Ok(arn) = DataShareArn::parse(&s) {
                prop_assert_eq!(DataShareArn::parse(&arn.to_string()), Ok(arn));
            }
        }
    }
}
