//! The `dev` and `emulator` commands in a build without the emulator (the production image):
//! they take any arguments and say how to get a build that has it.

use std::process::ExitCode;

use super::CliError;

/// The arguments of `dev` in a build without the emulator: whatever was given.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Ignored: this build has no emulator.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub ignored: Vec<String>,
}

/// The arguments of `emulator` in a build without the emulator.
pub type EmulatorArgs = DevArgs;

/// What `dev` and `emulator` answer in this build.
pub(super) fn refuse() -> Result<ExitCode, CliError> {
    Err(
        "this build of datashare-gateway has no Redshift emulator (it was built without the \
         `emulator` cargo feature, as the production image is): build with the default features \
         (`cargo build --release`) to use `dev` and `emulator`"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_names_the_feature_and_the_build_that_has_it() {
        let message = super::refuse().expect_err("refused").to_string();
        assert!(message.contains("`emulator` cargo feature"), "{message}");
        assert!(message.contains("cargo build --release"), "{message}");
    }
}
