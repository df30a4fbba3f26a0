//! The JSON Web Tokens the providers want: ES256 for APNs (signed with the
//! team's `.p8` key) and for VAPID (RFC 8292), RS256 for Google's OAuth 2
//! service-account grant.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;

/// A signing key for one of the two algorithms.
pub enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

impl Signer {
    /// An ES256 key from a PKCS#8 PEM (an APNs `.p8` file).
    pub fn es256_pem(pem: &[u8]) -> Result<Signer, String> {
        let der = pkcs8(pem)?;
        EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map(Signer::Es256)
        .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))
    }

    /// An RS256 key from a PKCS#8 PEM (a service account's `private_key`).
    pub fn rs256_pem(pem: &[u8]) -> Result<Signer, String> {
        let der = pkcs8(pem)?;
        RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map(Signer::Rs256)
            .map_err(|e| format!("not an RSA PKCS#8 key: {e}"))
    }

    /// The public key of an ES256 key, uncompressed (65 bytes).
    pub fn es256_public(&self) -> Option<&[u8]> {
        use ring::signature::KeyPair as _;
        match self {
            Signer::Es256(k) => Some(k.public_key().as_ref()),
            Signer::Rs256(_) => None,
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::Rs256(_) => "RS256",
        }
    }

    /// `header.claims.signature`, the header naming the algorithm (and
    /// `kid` when given).
    pub fn sign(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = serde_json::json!({ "alg": self.alg(), "typ": "JWT" });
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Es256(k) => k
                .sign(&rng, input.as_bytes())
                .expect("ECDSA signing does not fail")
                .as_ref()
                .to_vec(),
            Signer::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .expect("RSA signing does not fail");
                sig
            }
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn pkcs8(pem: &[u8]) -> Result<PrivatePkcs8KeyDer<'static>, String> {
    PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| format!("no PKCS#8 private key (BEGIN PRIVATE KEY): {e}"))
}
