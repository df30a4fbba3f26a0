//! What every service's configuration shares: reading the TOML file into the
//! service's typed config (unknown keys are refused by the types'
//! `deny_unknown_fields`), and reporting every problem found at once.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config is invalid:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// Reads and parses `path`; does not validate.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// `Ok` if no problem was found, else every one of them (each naming its key).
pub fn finish(errs: Vec<String>) -> Result<(), ConfigError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Small {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn errors_name_the_file_and_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = load::<Small>(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.toml"), "{e}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "nme = \"x\"\n").unwrap();
        let e = load::<Small>(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("nme"), "{e}");
        assert!(finish(Vec::new()).is_ok());
        let e = finish(vec!["a: one".into(), "b: two".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("a: one") && e.contains("b: two"), "{e}");
    }
}
