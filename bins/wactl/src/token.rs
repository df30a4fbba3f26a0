//! `wactl token`: mint a credential token from a signing key file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use common::token::{TokenClaims, TokenSigner, keyfile};

use crate::cli::TokenArgs;

pub(crate) fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let token = mint(
        &args.key,
        &args.key_id,
        &args.user,
        args.device,
        args.generation,
        args.ttl,
    )?;
    println!("{token}");
    Ok(())
}

/// A token for `user` signed with the key in `key_path`, valid for `ttl`.
pub(crate) fn mint(
    key_path: &Path,
    key_id: &str,
    user: &str,
    device: u32,
    generation: u32,
    ttl: Duration,
) -> anyhow::Result<String> {
    if !common::proto::ids::valid_user_id(user) {
        bail!(
            "{user:?} is not a valid user id (1-64 characters of [A-Za-z0-9._-], not starting with . or -)"
        );
    }
    let key = keyfile::read_signing(key_path)
        .with_context(|| format!("cannot load the signing key {}", key_path.display()))?;
    let now = common::fsutil::now_ms() / 1000;
    let claims = TokenClaims {
        user: user.to_string(),
        device,
        generation,
        expires_at: now.saturating_add(ttl.as_secs().max(1)),
        key_id: String::new(),
        issued_at: now,
        account: String::new(),
    };
    Ok(TokenSigner::new(key_id, key).sign(claims))
}
