//! Secret files: the one reader in `common`, which refuses group- or
//! world-readable files.

pub use common::secret::{SecretError, read};
