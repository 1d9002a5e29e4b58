//! The account ids, region names, namespace GUIDs and ARNs the emulator reads and writes.
//!
//! Written apart from the gateway's parser on purpose: the emulator stands in for AWS in the
//! gateway's tests, so a parsing bug shared by both would pass every one of them. The formats
//! are AWS's documented ones, and only as much of them as the emulator needs: it builds ARNs
//! for the namespaces and datashares it holds and looks up the ones callers send.

use std::fmt;

/// The longest datashare name: Redshift identifiers are at most 127 bytes.
const MAX_NAME_BYTES: usize = 127;

/// Why a value was refused. Each message states the rule, since fixture errors show it as is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArnError {
    #[error("an account id is exactly 12 digits")]
    Account,
    #[error("a region name is a two-letter code, one or more words and a number, e.g. us-east-1")]
    Region,
    #[error("a namespace GUID is 32 hexadecimal digits grouped 8-4-4-4-12")]
    Guid,
    #[error(
        "a datashare name is 1 to {MAX_NAME_BYTES} bytes with no '/', ':' or control characters"
    )]
    DataShareName,
    #[error("the partition {given:?} is not the one region {region} is in ({expected})")]
    Partition {
        given: String,
        region: String,
        expected: &'static str,
    },
    #[error(
        "a namespace ARN is arn:PARTITION:redshift:REGION:ACCOUNT:namespace:GUID or arn:PARTITION:redshift-serverless:REGION:ACCOUNT:namespace/GUID"
    )]
    NamespaceArn,
    #[error("a datashare ARN is arn:PARTITION:redshift:REGION:ACCOUNT:datashare:GUID/NAME")]
    DataShareArn,
    #[error(
        "a role ARN is arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME, the name 1 to 64 of A-Z a-z 0-9 _ + = , . @ -"
    )]
    RoleArn,
}

/// A 12-digit AWS account id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountId(String);

impl AccountId {
    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let digits = text.chars().filter(char::is_ascii_digit).count();
        if digits == 12 && text.len() == 12 {
            Ok(AccountId(text.to_owned()))
        } else {
            Err(ArnError::Account)
        }
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A region name such as `us-east-1`, `us-gov-west-1`, `cn-north-1` or `ap-southeast-5`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Region(String);

/// Region-name prefixes outside the commercial partition, and the partition each is in.
const PARTITIONS_BY_PREFIX: [(&str, &str); 6] = [
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-iso-", "aws-iso"),
    ("us-isob-", "aws-iso-b"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-isof-", "aws-iso-f"),
];

impl Region {
    /// Accepts `cc-word[-word...]-N`: a two-letter code, lower-case words, a one- or two-digit
    /// number.
    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let lower_word = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase());
        let well_formed = text.rsplit_once('-').is_some_and(|(words, number)| {
            let number_ok =
                (1..=2).contains(&number.len()) && number.bytes().all(|b| b.is_ascii_digit());
            let mut words = words.split('-');
            let code_ok = words.next().is_some_and(|c| c.len() == 2 && lower_word(c));
            let mut rest = words.peekable();
            let rest_ok = rest.peek().is_some() && rest.all(lower_word);
            number_ok && code_ok && rest_ok
        });
        if well_formed {
            Ok(Region(text.to_owned()))
        } else {
            Err(ArnError::Region)
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition the region is in, as an ARN spells it.
    pub(crate) fn partition(&self) -> &'static str {
        PARTITIONS_BY_PREFIX
            .iter()
            .find(|(prefix, _)| self.0.starts_with(prefix))
            .map_or("aws", |(_, partition)| partition)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A namespace GUID, kept in lower case: Redshift prints GUIDs that way, and the emulator
/// compares ARNs as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamespaceGuid(String);

impl NamespaceGuid {
    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        const DASHES: [usize; 4] = [8, 13, 18, 23];
        let ok = text.len() == 36
            && text.bytes().enumerate().all(|(i, b)| {
                if DASHES.contains(&i) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            });
        if ok {
            Ok(NamespaceGuid(text.to_ascii_lowercase()))
        } else {
            Err(ArnError::Guid)
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Provisioned cluster or Redshift Serverless: the two spell a namespace ARN differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NamespaceKind {
    Provisioned,
    Serverless,
}

/// The fields before the resource, which every Redshift ARN has.
#[derive(Debug)]
struct Prefix<'a> {
    service: &'a str,
    region: Region,
    account: AccountId,
    resource: &'a str,
}

/// Splits `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE` and checks the fields every Redshift
/// ARN shares; `shape` is the error when a field is missing. The partition must be the region's.
fn prefix(text: &str, shape: ArnError) -> Result<Prefix<'_>, ArnError> {
    let Some((partition, service, region, account, resource)) = fields(text) else {
        return Err(shape);
    };
    let region = Region::parse(region)?;
    if partition != region.partition() {
        return Err(ArnError::Partition {
            given: partition.to_owned(),
            region: region.0.clone(),
            expected: region.partition(),
        });
    }
    Ok(Prefix {
        service,
        region,
        account: AccountId::parse(account)?,
        resource,
    })
}

/// The five fields after `arn:`; the last (the resource) keeps any further colons.
fn fields(text: &str) -> Option<(&str, &str, &str, &str, &str)> {
    let rest = text.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    let (service, rest) = rest.split_once(':')?;
    let (region, rest) = rest.split_once(':')?;
    let (account, resource) = rest.split_once(':')?;
    Some((partition, service, region, account, resource))
}

/// A namespace ARN, provisioned or serverless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamespaceArn {
    region: Region,
    account: AccountId,
    guid: NamespaceGuid,
    kind: NamespaceKind,
}

impl NamespaceArn {
    pub(crate) fn new(
        region: Region,
        account: AccountId,
        guid: NamespaceGuid,
        kind: NamespaceKind,
    ) -> Self {
        NamespaceArn {
            region,
            account,
            guid,
            kind,
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let p = prefix(text, ArnError::NamespaceArn)?;
        let found = match p.service {
            "redshift" => p
                .resource
                .strip_prefix("namespace:")
                .map(|guid| (NamespaceKind::Provisioned, guid)),
            "redshift-serverless" => p
                .resource
                .strip_prefix("namespace/")
                .map(|guid| (NamespaceKind::Serverless, guid)),
            _ => None,
        };
        let (kind, guid) = found.ok_or(ArnError::NamespaceArn)?;
        Ok(NamespaceArn::new(
            p.region,
            p.account,
            NamespaceGuid::parse(guid)?,
            kind,
        ))
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    pub(crate) fn guid(&self) -> &NamespaceGuid {
        &self.guid
    }
}

impl fmt::Display for NamespaceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (service, separator) = match self.kind {
            NamespaceKind::Provisioned => ("redshift", ':'),
            NamespaceKind::Serverless => ("redshift-serverless", '/'),
        };
        write!(
            f,
            "arn:{}:{service}:{}:{}:namespace{separator}{}",
            self.region.partition(),
            self.region,
            self.account,
            self.guid
        )
    }
}

/// A datashare ARN: the producer namespace's region, account and GUID, and the share's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DataShareArn {
    region: Region,
    account: AccountId,
    guid: NamespaceGuid,
    name: String,
}

impl DataShareArn {
    /// Fails only when `name` could not appear in an ARN.
    pub(crate) fn new(
        region: Region,
        account: AccountId,
        guid: NamespaceGuid,
        name: &str,
    ) -> Result<Self, ArnError> {
        let name_ok = (1..=MAX_NAME_BYTES).contains(&name.len())
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_control);
        if !name_ok {
            return Err(ArnError::DataShareName);
        }
        Ok(DataShareArn {
            region,
            account,
            guid,
            name: name.to_owned(),
        })
    }

    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let p = prefix(text, ArnError::DataShareArn)?;
        let (guid, name) = match p.service {
            "redshift" => p
                .resource
                .strip_prefix("datashare:")
                .and_then(|r| r.split_once('/')),
            _ => None,
        }
        .ok_or(ArnError::DataShareArn)?;
        DataShareArn::new(p.region, p.account, NamespaceGuid::parse(guid)?, name)
    }
}

impl fmt::Display for DataShareArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:redshift:{}:{}:datashare:{}/{}",
            self.region.partition(),
            self.region,
            self.account,
            self.guid,
            self.name
        )
    }
}

/// An IAM role ARN, `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME` (IAM ARNs have no region).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoleArn {
    partition: String,
    account: AccountId,
    name: String,
}

/// IAM's role-name characters: `[\w+=,.@-]`, with `\w` as ASCII word characters.
pub(crate) fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

impl RoleArn {
    pub(crate) fn parse(text: &str) -> Result<Self, ArnError> {
        let (partition, service, region, account, resource) =
            fields(text).ok_or(ArnError::RoleArn)?;
        let path_and_name = resource.strip_prefix("role/").ok_or(ArnError::RoleArn)?;
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        let name_ok = (1..=64).contains(&name.len()) && name.chars().all(is_iam_name_char);
        let partition_ok = !partition.is_empty()
            && partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-');
        if service != "iam" || !region.is_empty() || !name_ok || !partition_ok {
            return Err(ArnError::RoleArn);
        }
        Ok(RoleArn {
            partition: partition.to_owned(),
            account: AccountId::parse(account)?,
            name: name.to_owned(),
        })
    }

    pub(crate) fn partition(&self) -> &str {
        &self.partition
    }

    pub(crate) fn account(&self) -> &AccountId {
        &self.account
    }

    /// The name without the path: what an assumed-role ARN shows.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f";

    #[test]
    fn account_ids_are_twelve_ascii_digits() {
        assert!(AccountId::parse("111122223333").is_ok());
        for bad in [
            "",
            "11112222333",
            "1111222233334",
            "11112222333a",
            "١١١١٢٢٢٢٣٣٣٣",
        ] {
            assert_eq!(AccountId::parse(bad), Err(ArnError::Account), "{bad}");
        }
    }

    #[test]
    fn region_names_and_their_partitions() {
        for (name, partition) in [
            ("us-east-1", "aws"),
            ("ap-southeast-5", "aws"),
            ("eu-central-2", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
        ] {
            assert_eq!(
                Region::parse(name).unwrap().partition(),
                partition,
                "{name}"
            );
        }
        for bad in [
            "",
            "us",
            "us-1",
            "useast-1",
            "us-east",
            "us-east-",
            "us-East-1",
            "u-east-1",
            "us-east-100",
            "us--east-1",
            "-us-east-1",
            "us-east-1a",
            "us_east_1",
        ] {
            assert_eq!(Region::parse(bad), Err(ArnError::Region), "{bad}");
        }
    }

    #[test]
    fn guids_are_lower_cased_and_need_every_dash_in_place() {
        let upper = GUID.to_ascii_uppercase();
        assert_eq!(NamespaceGuid::parse(&upper).unwrap().as_str(), GUID);
        for bad in [
            "",
            "9c7a6f301b2c4d5e8f900a1b2c3d4e5f",
            "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5",
            "9c7a6f30-1b2c-4d5e-8f900-a1b2c3d4e5f",
            "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5g",
            "9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4é",
        ] {
            assert_eq!(NamespaceGuid::parse(bad), Err(ArnError::Guid), "{bad}");
        }
    }

    #[test]
    fn namespace_arns_print_back_as_parsed_for_both_kinds() {
        for text in [
            format!("arn:aws:redshift:us-east-1:444455556666:namespace:{GUID}"),
            format!("arn:aws-cn:redshift-serverless:cn-north-1:444455556666:namespace/{GUID}"),
            format!("arn:aws-us-gov:redshift:us-gov-west-1:444455556666:namespace:{GUID}"),
        ] {
            let arn = NamespaceArn::parse(&text).unwrap();
            assert_eq!(arn.to_string(), text);
            assert_eq!(arn.guid().as_str(), GUID);
        }
        let built = NamespaceArn::new(
            Region::parse("eu-west-1").unwrap(),
            AccountId::parse("111122223333").unwrap(),
            NamespaceGuid::parse(GUID).unwrap(),
            NamespaceKind::Serverless,
        );
        assert_eq!(
            built.to_string(),
            format!("arn:aws:redshift-serverless:eu-west-1:111122223333:namespace/{GUID}")
        );
        assert_eq!(built.region().as_str(), "eu-west-1");
    }

    #[test]
    fn namespace_arns_of_the_wrong_shape_are_refused() {
        let cases = [
            (
                format!("arn:aws:redshift:us-east-1:444455556666:namespace/{GUID}"),
                ArnError::NamespaceArn,
            ),
            (
                format!("arn:aws:redshift-serverless:us-east-1:444455556666:namespace:{GUID}"),
                ArnError::NamespaceArn,
            ),
            (
                format!("arn:aws:s3:us-east-1:444455556666:namespace:{GUID}"),
                ArnError::NamespaceArn,
            ),
            (
                format!("arn:aws:redshift:us-east-1:444455556666:datashare:{GUID}/x"),
                ArnError::NamespaceArn,
            ),
            (
                format!("aws:redshift:us-east-1:444455556666:namespace:{GUID}"),
                ArnError::NamespaceArn,
            ),
            (
                "arn:aws:redshift:us-east-1".to_owned(),
                ArnError::NamespaceArn,
            ),
            (
                format!("arn:aws:redshift:us-east-1:44445555666:namespace:{GUID}"),
                ArnError::Account,
            ),
            (
                format!("arn:aws:redshift:useast1:444455556666:namespace:{GUID}"),
                ArnError::Region,
            ),
            (
                "arn:aws:redshift:us-east-1:444455556666:namespace:nope".to_owned(),
                ArnError::Guid,
            ),
            (
                format!("arn:aws:redshift:us-east-1:444455556666:namespace:{GUID}/x"),
                ArnError::Guid,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(NamespaceArn::parse(&text), Err(want), "{text}");
        }
        let mismatch = format!("arn:aws:redshift:cn-north-1:444455556666:namespace:{GUID}");
        assert!(matches!(
            NamespaceArn::parse(&mismatch),
            Err(ArnError::Partition {
                expected: "aws-cn",
                ..
            })
        ));
    }

    #[test]
    fn datashare_arns_round_trip_with_the_guid_lower_cased() {
        let text = format!("arn:aws:redshift:us-east-1:111122223333:datashare:{GUID}/sales_share");
        let upper = text.replace(GUID, &GUID.to_ascii_uppercase());
        assert_eq!(DataShareArn::parse(&upper).unwrap().to_string(), text);
    }

    #[test]
    fn datashare_names_that_would_break_the_arn_are_refused() {
        let build = |name: &str| {
            DataShareArn::new(
                Region::parse("us-east-1").unwrap(),
                AccountId::parse("111122223333").unwrap(),
                NamespaceGuid::parse(GUID).unwrap(),
                name,
            )
        };
        assert!(build("a").is_ok());
        assert!(build(&"n".repeat(127)).is_ok());
        for bad in ["", "a/b", "a:b", "a\nb", &"n".repeat(128)] {
            assert_eq!(build(bad), Err(ArnError::DataShareName), "{bad:?}");
        }
        for text in [
            format!("arn:aws:redshift:us-east-1:111122223333:datashare:{GUID}"),
            format!("arn:aws:redshift:us-east-1:111122223333:datashare/{GUID}/x"),
            format!("arn:aws:redshift-serverless:us-east-1:111122223333:datashare:{GUID}/x"),
        ] {
            assert_eq!(
                DataShareArn::parse(&text),
                Err(ArnError::DataShareArn),
                "{text}"
            );
        }
        let nested = format!("arn:aws:redshift:us-east-1:111122223333:datashare:{GUID}/a/b");
        assert_eq!(DataShareArn::parse(&nested), Err(ArnError::DataShareName));
    }

    #[test]
    fn odd_input_is_refused_without_panicking() {
        for text in [
            "",
            "arn:",
            "arn:::::",
            "arn:aws:redshift:é:é:é",
            "\u{0}",
            "arn:aws:redshift:us-east-1:111122223333:",
        ] {
            assert!(NamespaceArn::parse(text).is_err(), "{text:?}");
            assert!(DataShareArn::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn role_arns_keep_the_name_without_the_path() {
        let r = RoleArn::parse("arn:aws:iam::444455556666:role/datashare-gateway").unwrap();
        assert_eq!(
            (r.partition(), r.account().to_string().as_str(), r.name()),
            ("aws", "444455556666", "datashare-gateway")
        );
        let r = RoleArn::parse("arn:aws-cn:iam::444455556666:role/team/a/b.c@d").unwrap();
        assert_eq!((r.partition(), r.name()), ("aws-cn", "b.c@d"));
        for bad in [
            "arn:aws:iam:us-east-1:444455556666:role/x",
            "arn:aws:sts::444455556666:role/x",
            "arn:aws:iam::444455556666:user/x",
            "arn:aws:iam::444455556666:role/",
            "arn:aws:iam::444455556666:role/a b",
            "arn:aws:iam::44445555666:role/x",
            "arn::iam::444455556666:role/x",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
    }
}
