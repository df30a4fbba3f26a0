//! The checks of a loaded [`Config`]: [`Config::validate`] (the values
//! alone) and [`Config::check_files`] (every file the service reads), each
//! naming every problem at once with its key.

use std::path::Path;

use common::config::finish;

use super::{Config, ConfigError, Mode, Provider, TokenKey};

impl Config {
    /// Reads and parses `path`; does not validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        common::config::load(path)
    }

    /// Checks the values themselves, without touching the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errs = self.coordination.problems();
        if self.name.is_empty() {
            errs.push("name: must not be empty".to_string());
        }
        if self.mode == Mode::Production && self.sms.provider == Provider::Log {
            errs.push(
                "sms.provider: \"log\" writes codes to a file and is for development only; it is refused with mode = \"production\"".to_string(),
            );
        }
        if self.tokens.key_id.is_empty() {
            errs.push("tokens.key_id: must not be empty".to_string());
        }
        let mut ids = std::collections::HashSet::from([self.tokens.key_id.as_str()]);
        for k in &self.tokens.verify_keys {
            if !ids.insert(&k.id) {
                errs.push(format!("tokens.verify_keys.id: {:?} appears twice", k.id));
            }
        }
        let c = &self.codes;
        if c.max_checks == 0 {
            errs.push("codes.max_checks: must be at least 1".to_string());
        }
        if c.resend_waits.is_empty() {
            errs.push("codes.resend_waits: at least one wait is needed".to_string());
        }
        let longest = c.resend_waits.iter().max().copied().unwrap_or_default();
        if c.forget_after < longest {
            errs.push(format!(
                "codes.forget_after: must be at least the longest resend wait ({})",
                humantime::format_duration(longest)
            ));
        }
        let l = &self.limits;
        for (key, r) in [
            ("limits.per_number", l.per_number),
            ("limits.per_address", l.per_address),
            ("limits.per_prefix", l.per_prefix),
            ("limits.global", l.global),
            ("limits.per_network", l.per_network),
            ("pumping.tightened", self.pumping.tightened),
            ("limits.pin_per_account", l.pin_per_account),
            ("limits.pin_per_address", l.pin_per_address),
            ("limits.verify_per_address", l.verify_per_address),
        ] {
            if r.count == 0 || r.per.is_zero() {
                errs.push(format!("{key}: count and per must be more than zero"));
            }
        }
        if !(1..=15).contains(&l.prefix_digits) {
            errs.push("limits.prefix_digits: must be 1 to 15".to_string());
        }
        if l.max_body.as_u64() < 256 {
            errs.push("limits.max_body: must be at least 256 B".to_string());
        }
        if self.mode == Mode::Production && self.countries.allow.is_empty() {
            errs.push(
                "countries.allow: required with mode = \"production\": list the country codes you serve (e.g. [\"+1\", \"+44\"]), so premium-rate ranges never get an SMS".to_string(),
            );
        }
        for p in &self.countries.allow {
            let digits = p.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                errs.push(format!(
                    "countries.allow: {p:?} is not a number prefix such as \"+44\""
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.pumping.min_verified_ratio) {
            errs.push("pumping.min_verified_ratio: must be between 0 and 1".to_string());
        }
        for (key, d) in [
            ("cluster.timeout", self.cluster.timeout),
            ("tokens.ttl", self.tokens.ttl),
            ("codes.ttl", c.ttl),
            ("pin.lockout", self.pin.lockout),
            ("pin.lapse_after", self.pin.lapse_after),
            ("pumping.window", self.pumping.window),
            ("sms.webhook.timeout", self.sms.webhook.timeout),
            ("sms.command.timeout", self.sms.command.timeout),
        ] {
            if d.is_zero() {
                errs.push(format!("{key}: must be more than zero"));
            }
        }
        if self.pin.max_wrong == 0 {
            errs.push("pin.max_wrong: must be at least 1".to_string());
        }
        if self.sms.provider == Provider::Webhook {
            let w = &self.sms.webhook;
            match w.url.parse::<http::Uri>() {
                Ok(u) if u.scheme_str() == Some("http")
                    && u.host().is_some()
                    && self.mode == Mode::Production =>
                {
                    errs.push(format!(
                        "sms.webhook.url: {:?} is plain http://: refused with mode = \"production\" (the codes and the gateway's credentials would cross the network in clear); use https://",
                        w.url
                    ))
                }
                Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {
                }
                _ => errs.push(format!(
                    "sms.webhook.url: {:?} is not an http:// or https:// URL",
                    w.url
                )),
            }
            if !w.body.contains("{code}") && !w.body.contains("{message}") {
                errs.push(
                    "sms.webhook.body: must contain {code} or {message}, or no code is sent"
                        .to_string(),
                );
            }
            if http::HeaderValue::from_str(&w.content_type).is_err() {
                errs.push("sms.webhook.content_type: not a valid header value".to_string());
            }
        }
        self.tls.validate(&mut errs);
        self.cluster.files().validate(&mut errs);
        TokenKey::validate_list(
            "tokens.verify_keys",
            &self.tokens.verify_keys,
            false,
            &mut errs,
        );
        self.shutdown.validate(&mut errs);
        self.admin.validate(&mut errs);
        self.log.validate(&mut errs);
        let mut seen = std::collections::HashSet::new();
        for t in &self.test_numbers {
            if crate::phone::Number::parse(&t.number).is_err() {
                errs.push(format!(
                    "test_numbers.number: {:?} is not an E.164 number",
                    t.number
                ));
            } else if !seen.insert(&t.number) {
                errs.push(format!("test_numbers.number: {:?} appears twice", t.number));
            }
            if !crate::codes::valid_code(&t.code) {
                errs.push(format!(
                    "test_numbers.code: the code of {:?} must be 6 digits",
                    t.number
                ));
            }
        }
        finish(errs)
    }

    /// Loads every file the service reads at start and reports each one that
    /// would stop it.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut errs = Vec::new();
        self.tls.check_files(&mut errs);
        self.cluster.files().check_files(&mut errs);
        self.admin.check_files(&mut errs);
        if let Err(e) = crate::tokens::read_signing_key(&self.tokens.signing_key) {
            errs.push(format!("tokens.signing_key: {e}"));
        }
        TokenKey::check_list("tokens.verify_keys", &self.tokens.verify_keys, &mut errs);
        if let Err(e) = crate::secret::read(&self.pin.pepper_file, 16) {
            errs.push(format!("pin.pepper_file: {e}"));
        }
        match self.sms.provider {
            Provider::Log => {
                if let Some(dir) = self.sms.log.file.parent()
                    && let Err(e) = std::fs::create_dir_all(dir)
                {
                    errs.push(format!(
                        "sms.log.file: cannot create {}: {e}",
                        dir.display()
                    ));
                }
            }
            Provider::Webhook => {
                let w = &self.sms.webhook;
                if w.url.starts_with("https://")
                    && let Err(e) = common::tls::load_certs(&w.ca_file)
                {
                    errs.push(format!("sms.webhook.ca_file: {e}"));
                }
                if let Some(f) = &w.auth_header_file
                    && let Err(e) = crate::secret::read(f, 1)
                {
                    errs.push(format!("sms.webhook.auth_header_file: {e}"));
                }
            }
            Provider::Command => {
                if !self.sms.command.program.is_file() {
                    errs.push(format!(
                        "sms.command.program: {} is not a file",
                        self.sms.command.program.display()
                    ));
                }
            }
        }
        finish(errs)
    }
}
