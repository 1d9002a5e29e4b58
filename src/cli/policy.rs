//! `datashare-gateway policy validate|check`: test a policy set before deploying it.
//!
//! Exit codes: `validate` 0 valid, 1 invalid or unreadable; `check` 0 Allow, 1 Deny, 2 when no
//! decision can be made (invalid policies, invalid request, unreadable files).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use crate::arn::AccountId;
use crate::call::{Operation, Principal};
use crate::identity::PrincipalDirectory;
use crate::operations::EachRedshiftOperation;
use crate::ops::Rpc;
use crate::policy::{Policies, PolicyConfig, PolicyError};
use crate::upstream::Forward;

/// The `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory against the schema. Exit 0 when valid, 1 otherwise (errors
    /// name file:line:column).
    Validate {
        /// The directory of `*.cedar` files.
        dir: PathBuf,
        /// A Cedar schema file; the gateway's embedded schema when omitted.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Decide one request as the gateway would. Exit 0 on Allow, 1 on Deny, 2 when no decision
    /// can be made.
    Check {
        /// The directory of `*.cedar` files.
        #[arg(long)]
        policies: PathBuf,
        /// A Cedar schema file; the gateway's embedded schema when omitted.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// The caller's principal id (SPIFFE id, DNS name, CN or x-caller-id).
        #[arg(long)]
        principal: String,
        /// The caller's groups, comma-separated; added to those from `--principals`.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// A TOML file with a `[principals]` table (such as the gateway config) to look the
        /// principal's groups up in.
        #[arg(long)]
        principals: Option<PathBuf>,
        /// The method: AssociateConsumer, DisassociateConsumer or ListConsumerDataShares.
        #[arg(long, default_value = "AssociateConsumer")]
        method: String,
        /// The request in proto JSON field names, e.g.
        /// `{"data_share_arn": "arn:...", "consumer_arn": "arn:...", "allow_writes": true}`
        /// (a `status` as its enum number).
        #[arg(long)]
        request: String,
        /// The account a request acts in when it names none (`upstream.default_account`):
        /// the consumer of entire-account and region associations without `consumer_account`.
        #[arg(long, default_value = "444455556666")]
        consumer_account: String,
        /// The gateway's region (`upstream.region`): ARNs and regions of another partition are
        /// refused, as the gateway refuses them.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// The approvals the request has, by principals other than the requester
        /// (`context.approvals`): 0 shows whether it needs any, 1 whether one suffices.
        #[arg(long, default_value_t = 0)]
        approvals: u32,
    },
}

/// Any TOML document with a `[principals]` table; other keys are ignored.
#[derive(Debug, Deserialize)]
struct PrincipalsFile {
    #[serde(default)]
    principals: PrincipalDirectory,
}

const CANNOT_DECIDE: u8 = 2;

/// Runs a `policy` subcommand.
pub(super) fn run_command(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Validate { dir, schema } => validate(dir, schema),
        PolicyCommand::Check {
            policies,
            schema,
            principal,
            groups,
            principals,
            method,
            request,
            consumer_account,
            region,
            approvals,
        } => {
            let args = CheckArgs {
                policies,
                schema,
                principal,
                groups,
                principals,
                request,
                consumer_account,
                region,
                approvals,
            };
            check_method(&method, args)
        }
    }
}

fn validate(dir: PathBuf, schema: Option<PathBuf>) -> ExitCode {
    let config = PolicyConfig {
        schema,
        watch: false,
        ..PolicyConfig::new(dir)
    };
    match Policies::validate_set(&config, &crate::operations::policy_probes()) {
        Ok(summary) => {
            println!(
                "ok: {} policies in {} valid against the schema",
                summary.ids.len(),
                config.dir.display()
            );
            // Per file, so a file that contributes fewer policies than expected stands out.
            for file in &summary.files {
                let noun = if file.policies == 1 {
                    "policy"
                } else {
                    "policies"
                };
                println!("  {}: {} {noun}", file.name, file.policies);
            }
            println!("sha256: {}", summary.sha256);
            println!("policy ids:");
            for id in &summary.ids {
                println!("  {id}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            print_error(&err);
            ExitCode::FAILURE
        }
    }
}

struct CheckArgs {
    policies: PathBuf,
    schema: Option<PathBuf>,
    principal: String,
    groups: Vec<String>,
    principals: Option<PathBuf>,
    request: String,
    consumer_account: String,
    region: String,
    approvals: u32,
}

/// `policy check --method METHOD`: the check of that operation, one of those Redshift carries
/// out (the registry's).
fn check_method(method: &str, args: CheckArgs) -> ExitCode {
    struct Dispatch<'a> {
        method: &'a str,
        args: Option<CheckArgs>,
        exit: Option<ExitCode>,
        names: Vec<&'static str>,
    }
    impl EachRedshiftOperation for Dispatch<'_> {
        fn operation<Op>(&mut self)
        where
            Op: Rpc + Forward,
            Op::Params: serde::de::DeserializeOwned,
        {
            self.names.push(Op::METHOD);
            if Op::METHOD == self.method
                && let Some(args) = self.args.take()
            {
                self.exit = Some(check::<Op>(args));
            }
        }
    }
    let mut dispatch = Dispatch {
        method,
        args: Some(args),
        exit: None,
        names: Vec::new(),
    };
    crate::operations::for_each_redshift(&mut dispatch);
    dispatch.exit.unwrap_or_else(|| {
        cannot_decide(format!(
            "--method {method:?}: must be {}",
            dispatch.names.join(", ")
        ))
    })
}

fn check<Op>(args: CheckArgs) -> ExitCode
where
    Op: Operation,
    Op::Params: serde::de::DeserializeOwned,
{
    let consumer_account = match AccountId::parse(&args.consumer_account) {
        Ok(a) => a,
        Err(err) => {
            return cannot_decide(format!(
                "--consumer-account {:?}: {err}",
                args.consumer_account
            ));
        }
    };
    let mut groups: Vec<String> = args.groups.into_iter().filter(|g| !g.is_empty()).collect();
    if let Some(file) = &args.principals {
        match principals_from(file) {
            Ok(directory) => {
                if let Some(entry) = directory.get(&args.principal) {
                    groups.extend(entry.groups.iter().cloned());
                }
            }
            Err(message) => return cannot_decide(message),
        }
    }
    groups.sort();
    groups.dedup();
    let params = match serde_json::from_str::<Op::Params>(&args.request) {
        Ok(params) => params,
        Err(err) => {
            return cannot_decide(format!(
                "--request is not a valid {} request: {err}",
                Op::METHOD
            ));
        }
    };
    let region = match crate::arn::Region::parse(&args.region) {
        Ok(region) => region,
        Err(err) => return cannot_decide(format!("--region {:?}: {err}", args.region)),
    };
    let env = crate::call::ValidationEnv {
        default_account: Some(consumer_account),
        partition: crate::arn::Partition::of_region(&region),
    };
    let request = match Op::validate(&params, &env) {
        Ok(r) => r,
        Err(violations) => {
            let text: Vec<String> = violations
                .iter()
                .map(|v| format!("  {}: {}", v.field, v.description))
                .collect();
            return cannot_decide(format!(
                "invalid request (the gateway would answer INVALID_ARGUMENT):\n{}",
                text.join("\n")
            ));
        }
    };
    let config = PolicyConfig {
        schema: args.schema,
        watch: false,
        ..PolicyConfig::new(args.policies)
    };
    let policies = match Policies::load(config, crate::operations::policy_probes()) {
        Ok(p) => p,
        Err(err) => {
            print_error(&err);
            return ExitCode::from(CANNOT_DECIDE);
        }
    };
    let principal = Principal {
        id: args.principal,
        groups,
    };
    let evaluation = policies.explain_with::<Op>(
        &principal,
        &request,
        &crate::call::ApprovalFacts::with_approvals(args.approvals),
    );
    let decision = &evaluation.decision;
    println!(
        "decision: {}",
        if decision.allowed { "ALLOW" } else { "DENY" }
    );
    println!("principal: {}", principal.id);
    println!("groups: {}", principal.groups.join(","));
    if decision.determining_policies.is_empty() {
        println!(
            "determining policies: (none{})",
            if decision.allowed {
                ""
            } else {
                ": nothing permits this request"
            }
        );
    } else {
        println!(
            "determining policies: {}",
            decision.determining_policies.join(", ")
        );
    }
    for err in &evaluation.errors {
        println!("error: {err}");
    }
    if decision.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn principals_from(file: &Path) -> Result<PrincipalDirectory, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("cannot read {}: {err}", file.display()))?;
    toml::from_str::<PrincipalsFile>(&text)
        .map(|f| f.principals)
        .map_err(|err| format!("{}: {err}", file.display()))
}

fn cannot_decide(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(CANNOT_DECIDE)
}

fn print_error(err: &PolicyError) {
    eprintln!("error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
