//! `wactl keygen`: a token signing key pair in PEM files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use common::token::keyfile;
use ed25519_dalek::SigningKey;

use crate::cli::KeygenArgs;

pub(crate) fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    if !common::proto::ids::valid_user_id(&args.id) {
        bail!(
            "key id {:?} must be 1-64 characters of [A-Za-z0-9._-]",
            args.id
        );
    }
    let (private, public) = write_pair(&args.out, &args.id, args.force)?;
    println!("signing key {}", private.display());
    println!("public key  {}", public.display());
    Ok(())
}

/// Writes `DIR/ID.pem` (0600) and `DIR/ID.pub` (0644); refuses to replace existing
/// files unless `force`.
pub(crate) fn write_pair(dir: &Path, id: &str, force: bool) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let private = dir.join(format!("{id}.pem"));
    let public = dir.join(format!("{id}.pub"));
    if !force {
        for p in [&private, &public] {
            if p.exists() {
                bail!("{} exists already (--force replaces it)", p.display());
            }
        }
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    common::fsutil::write_private(&private, keyfile::signing_pem(&key).as_bytes())
        .with_context(|| format!("cannot write {}", private.display()))?;
    common::fsutil::write_public(
        &public,
        keyfile::verifying_pem(&key.verifying_key()).as_bytes(),
    )
    .with_context(|| format!("cannot write {}", public.display()))?;
    Ok((private, public))
}
